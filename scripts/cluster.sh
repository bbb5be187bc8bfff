#!/usr/bin/env bash
# Runs every process of a Procfile (default: ./Procfile), prefixing each
# output line with the process name, until Ctrl-C or until one exits; then
# stops them all.
set -euo pipefail
procfile=${1:-Procfile}
pids=()
stop() {
	trap - INT TERM EXIT
	[ ${#pids[@]} -gt 0 ] && kill -TERM "${pids[@]}" 2>/dev/null || true
	wait
}
trap stop INT TERM EXIT
while IFS= read -r line; do
	[[ -z $line || $line == \#* ]] && continue
	name=${line%%:*}
	cmd=${line#*: }
	bash -c "exec $cmd" > >(sed -u "s/^/$name | /") 2>&1 &
	pids+=($!)
done <"$procfile"
echo "started ${#pids[@]} processes from $procfile; Ctrl-C stops them" >&2
wait -n "${pids[@]}"
echo "a process exited; stopping the others" >&2
