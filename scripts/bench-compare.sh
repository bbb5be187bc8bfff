#!/usr/bin/env bash
# Side-by-side throughput and latency of cairn and etcd on this machine.
#
# Starts a 3-member cluster of each in turn, with the same flags, on
# loopback and on the same disk, runs etcd's benchmark tool against it, and
# prints each figure with the ratio cairn/etcd. Rounds alternate between the
# two to spread the machine's noise; the median of the rounds is reported.
#
# usage: scripts/bench-compare.sh ETCD_BIN BENCHMARK_BIN [ROUNDS]
#   ETCD_BIN       an etcd server binary (v3.7)
#   BENCHMARK_BIN  etcd's tools/benchmark binary
# The cairn binary is bin/cairn (make build). Data goes to $BENCH_DIR
# (default: a fresh directory under ./.bench, on the repository's disk).
set -euo pipefail

etcd_bin=${1:?usage: $0 ETCD_BIN BENCHMARK_BIN [ROUNDS]}
bench_bin=${2:?usage: $0 ETCD_BIN BENCHMARK_BIN [ROUNDS]}
rounds=${3:-3}
cairn_bin=${CAIRN_BIN:-$(dirname "$0")/../bin/cairn}
base=${BENCH_DIR:-$(pwd)/.bench/$(date +%s)}
mkdir -p "$base"

ports=(23790 23800 23791 23801 23792 23802)
endpoints="127.0.0.1:${ports[0]},127.0.0.1:${ports[2]},127.0.0.1:${ports[4]}"
cluster="m1=http://127.0.0.1:${ports[1]},m2=http://127.0.0.1:${ports[3]},m3=http://127.0.0.1:${ports[5]}"
pids=()

start_cluster() { # $1 = binary, $2 = data dir
	pids=()
	for i in 0 1 2; do
		local c=${ports[$((2 * i))]} p=${ports[$((2 * i + 1))]}
		"$1" --name "m$((i + 1))" --data-dir "$2/m$((i + 1))" \
			--listen-client-urls "http://127.0.0.1:$c" --advertise-client-urls "http://127.0.0.1:$c" \
			--listen-peer-urls "http://127.0.0.1:$p" --initial-advertise-peer-urls "http://127.0.0.1:$p" \
			--initial-cluster "$cluster" --initial-cluster-token bench --initial-cluster-state new \
			--snapshot-count 10000 --heartbeat-interval 100 --election-timeout 1000 \
			--quota-backend-bytes 8589934592 --log-level error >"$2/m$((i + 1)).log" 2>&1 &
		pids+=($!)
	done
	for _ in $(seq 100); do
		if "$bench_bin" --endpoints "$endpoints" --conns 1 --clients 1 put --total 1 >/dev/null 2>&1; then
			return 0
		fi
		sleep 0.2
	done
	echo "cluster did not come up; logs in $2" >&2
	exit 1
}

stop_cluster() {
	kill "${pids[@]}" 2>/dev/null || true
	wait "${pids[@]}" 2>/dev/null || true
}
trap stop_cluster EXIT

# Each case: a name and the benchmark arguments. Reads target one key that
# the put cases wrote.
cases=(
	"put, 100 clients (req/s)|--conns 10 --clients 100 put --key-size 8 --sequential-keys --total 40000 --val-size 256"
	"put, 1 client (ms avg)|--conns 1 --clients 1 put --key-size 8 --sequential-keys --total 2000 --val-size 256"
	"range linearizable, 100 clients (req/s)|--conns 10 --clients 100 range 00000001 --consistency l --total 60000"
	"range serializable, 100 clients (req/s)|--conns 10 --clients 100 range 00000001 --consistency s --total 60000"
	"range linearizable, 1 client (ms avg)|--conns 1 --clients 1 range 00000001 --consistency l --total 5000"
)

declare -A results
for round in $(seq "$rounds"); do
	for sys in etcd cairn; do
		bin=$etcd_bin
		[ "$sys" = cairn ] && bin=$cairn_bin
		dir="$base/$sys-$round"
		mkdir -p "$dir"
		start_cluster "$bin" "$dir"
		for c in "${cases[@]}"; do
			name=${c%%|*}
			args=${c#*|}
			# shellcheck disable=SC2086
			out=$("$bench_bin" --endpoints "$endpoints" $args 2>&1)
			if [[ $name == *"req/s"* ]]; then
				v=$(awk '/Requests\/sec:/ {print $2}' <<<"$out")
			else
				# One client in a closed loop: mean latency is 1/throughput,
				# which the tool prints with more digits than its average.
				v=$(awk '/Requests\/sec:/ {printf "%.3f", 1000 / $2}' <<<"$out")
			fi
			results["$sys|$name"]+="$v "
		done
		stop_cluster
		rm -rf "$dir"
	done
done

median() { tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
printf '%-42s %12s %12s %14s\n' "case ($rounds rounds, median)" etcd cairn "cairn/etcd"
for c in "${cases[@]}"; do
	name=${c%%|*}
	e=$(median "${results["etcd|$name"]}")
	k=$(median "${results["cairn|$name"]}")
	ratio=$(awk -v e="$e" -v k="$k" 'BEGIN {printf "%.2f", k / e}')
	printf '%-42s %12s %12s %14s\n' "$name" "$e" "$k" "$ratio"
done
