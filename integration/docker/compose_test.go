package docker

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// The docker and compose plumbing: building the image, running the compose
// project, finding its containers and networks by their compose labels, and
// removing everything the run created.

const (
	composeFile = "deploy/docker-compose.yml"
	// labelProject is set by Compose (v1 and v2) on every container,
	// network and volume of a project.
	labelProject = "com.docker.compose.project"
	labelService = "com.docker.compose.service"
	labelNetwork = "com.docker.compose.network"
	// scaleProfile holds the services that a plain `up` leaves alone:
	// cairn4 and cairn5, which join the running cluster.
	scaleProfile = "scale"
)

// project is one run's compose project.
type project struct {
	t       *testing.T
	root    string   // repository root
	compose []string // "docker compose" or "docker-compose"
	name    string   // compose project name, unique per run
	image   string   // image tag, unique per run
	env     []string // CAIRN_* variables the compose file reads
}

// newProject picks the compose command, a unique project name and image
// tag. It creates nothing.
func newProject(t *testing.T) *project {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, composeFile)); err != nil {
		t.Fatalf("repository root: %v", err)
	}
	if out, err := exec.Command("docker", "info", "--format", "{{.ServerVersion}}").CombinedOutput(); err != nil {
		t.Fatalf("docker engine not reachable (docker info: %v): %s", err, bytes.TrimSpace(out))
	}
	compose, err := composeCommand()
	if err != nil {
		t.Fatal(err)
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	suffix := hex.EncodeToString(b[:])
	return &project{
		t:       t,
		root:    root,
		compose: compose,
		name:    "cairndt-" + suffix,
		image:   "cairn:dt-" + suffix,
	}
}

// composeCommand returns CAIRN_COMPOSE if set, else `docker compose` if the
// plugin is installed, else docker-compose (v1).
func composeCommand() ([]string, error) {
	if c := strings.Fields(os.Getenv("CAIRN_COMPOSE")); len(c) > 0 {
		return c, nil
	}
	if exec.Command("docker", "compose", "version").Run() == nil {
		return []string{"docker", "compose"}, nil
	}
	if _, err := exec.LookPath("docker-compose"); err == nil {
		return []string{"docker-compose"}, nil
	}
	return nil, errors.New("neither `docker compose` nor docker-compose is installed")
}

// cmd runs a command with a timeout and returns its combined output; the
// error carries the command line and the output.
func (p *project) cmd(ctx context.Context, timeout time.Duration, env []string, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c := exec.CommandContext(ctx, name, args...)
	c.Dir = p.root
	c.Env = append(os.Environ(), env...)
	c.WaitDelay = 5 * time.Second
	out, err := c.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return string(out), nil
}

func (p *project) docker(ctx context.Context, args ...string) (string, error) {
	return p.cmd(ctx, 2*time.Minute, nil, "docker", args...)
}

// composeRun runs a compose subcommand in this project. Naming a service
// of the scale profile enables it; the rest of the file is as a plain `up`
// sees it.
func (p *project) composeRun(ctx context.Context, args ...string) (string, error) {
	full := append(append(slices.Clone(p.compose[1:]), "-f", composeFile, "-p", p.name), args...)
	return p.cmd(ctx, 2*time.Minute, p.env, p.compose[0], full...)
}

// composeAll is composeRun with the scale profile enabled: for commands on
// cairn4 and cairn5, and for logs and down, which Compose v2 would
// otherwise run without them (v1 includes them either way).
func (p *project) composeAll(ctx context.Context, args ...string) (string, error) {
	return p.composeRun(ctx, append([]string{"--profile", scaleProfile}, args...)...)
}

// setEnv sets one of the variables the compose file reads, for every later
// compose command.
func (p *project) setEnv(name, value string) {
	p.env = slices.DeleteFunc(p.env, func(kv string) bool { return strings.HasPrefix(kv, name+"=") })
	p.env = append(p.env, name+"="+value)
}

// mustCompose is composeRun that fails the test.
func (p *project) mustCompose(ctx context.Context, args ...string) {
	p.t.Helper()
	if _, err := p.composeRun(ctx, args...); err != nil {
		p.t.Fatal(err)
	}
}

// buildImage builds the static binary and the image from deploy/Dockerfile
// in a build context that holds only the binary.
func (p *project) buildImage(ctx context.Context) {
	p.t.Helper()
	dir := p.t.TempDir()
	bin := filepath.Join(dir, "bin", "cairn")
	// The same flags as `make build`: static, trimmed, stripped.
	c := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", "-s -w", "-o", bin, "./cmd/cairn")
	c.Dir = p.root
	c.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := c.CombinedOutput(); err != nil {
		p.t.Fatalf("go build: %v\n%s", err, out)
	}
	// Removed at the end of the test (registered before the build, so a
	// half-finished build is cleaned up too).
	p.t.Cleanup(func() {
		if _, err := p.docker(context.Background(), "image", "rm", "-f", p.image); err != nil && !strings.Contains(err.Error(), "No such image") {
			p.t.Logf("cleanup: %v", err)
		}
	})
	if _, err := p.docker(ctx, "build", "-q", "-f", filepath.Join(p.root, "deploy", "Dockerfile"), "-t", p.image, dir); err != nil {
		p.t.Fatal(err)
	}
}

// up starts the project on free host ports, retrying with new ports if
// another process took one in the meantime. It registers the cleanup
// first, so a failed start is cleaned up too.
func (p *project) up(ctx context.Context, extraEnv ...string) [3]int {
	p.t.Helper()
	p.t.Cleanup(p.down)
	for attempt := 1; ; attempt++ {
		ports := [3]int(freePorts(p.t, 3))
		p.env = append([]string{
			"CAIRN_IMAGE=" + p.image,
			"CAIRN_CLIENT_HOST=127.0.0.1",
			fmt.Sprintf("CAIRN1_CLIENT_PORT=%d", ports[0]),
			fmt.Sprintf("CAIRN2_CLIENT_PORT=%d", ports[1]),
			fmt.Sprintf("CAIRN3_CLIENT_PORT=%d", ports[2]),
			"CAIRN_CLUSTER_TOKEN=" + p.name,
		}, extraEnv...)
		_, err := p.composeRun(ctx, "up", "-d")
		if err == nil {
			return ports
		}
		if attempt < 3 && (strings.Contains(err.Error(), "already allocated") || strings.Contains(err.Error(), "address already in use")) {
			p.t.Logf("a host port was taken meanwhile, retrying: %v", err)
			if _, derr := p.composeAll(ctx, "down", "-v", "--remove-orphans", "-t", "1"); derr != nil {
				p.t.Logf("down before retry: %v", derr)
			}
			continue
		}
		p.t.Fatal(err)
	}
}

// upService creates and starts one service of the scale profile
// (`--profile scale up -d --no-deps <service>`: the profile's other service
// stays down and the running members are left alone) on a free
// host port, retrying with a new port if another process took it in the
// meantime. env are the variables it reads (its --initial-cluster); the
// port is returned.
func (p *project) upService(ctx context.Context, service string, env ...string) int {
	p.t.Helper()
	for _, kv := range env {
		name, value, _ := strings.Cut(kv, "=")
		p.setEnv(name, value)
	}
	for attempt := 1; ; attempt++ {
		port := freePorts(p.t, 1)[0]
		p.setEnv(strings.ToUpper(service)+"_CLIENT_PORT", fmt.Sprint(port))
		_, err := p.composeAll(ctx, "up", "-d", "--no-deps", service)
		if err == nil {
			return port
		}
		if attempt < 3 && (strings.Contains(err.Error(), "already allocated") || strings.Contains(err.Error(), "address already in use")) {
			// The next up re-creates the container: its port changed.
			p.t.Logf("a host port was taken meanwhile, retrying: %v", err)
			continue
		}
		p.t.Fatal(err)
	}
}

// down removes the project even when the test failed: first its logs (the
// last lines on failure; all of them to the file CAIRN_DOCKER_LOGS names, if
// set), then `compose down -v --remove-orphans` (with the scale profile,
// so cairn4 and cairn5 and their volumes go too), then anything that still
// carries the project's label.
func (p *project) down() {
	ctx := context.Background()
	if path := os.Getenv("CAIRN_DOCKER_LOGS"); path != "" {
		out, err := p.composeAll(ctx, "logs", "--no-color", "--timestamps")
		if err == nil {
			err = os.WriteFile(path, []byte(out), 0o644)
		}
		if err != nil {
			p.t.Logf("CAIRN_DOCKER_LOGS: %v", err)
		}
	}
	if p.t.Failed() {
		if out, err := p.composeAll(ctx, "logs", "--no-color", "--tail", "60"); err != nil {
			p.t.Logf("compose logs: %v", err)
		} else {
			p.t.Logf("--- last lines of every member's log:\n%s", out)
		}
	}
	if _, err := p.composeAll(ctx, "down", "-v", "--remove-orphans", "-t", "5"); err != nil {
		p.t.Logf("cleanup: %v", err)
	}
	filter := "label=" + labelProject + "=" + p.name
	for _, kind := range []struct{ list, rm []string }{
		{[]string{"ps", "-aq"}, []string{"rm", "-fv"}},
		{[]string{"network", "ls", "-q"}, []string{"network", "rm"}},
		{[]string{"volume", "ls", "-q"}, []string{"volume", "rm", "-f"}},
	} {
		out, err := p.docker(ctx, append(kind.list, "--filter", filter)...)
		if err != nil {
			p.t.Logf("cleanup: %v", err)
			continue
		}
		if ids := strings.Fields(out); len(ids) > 0 {
			p.t.Logf("cleanup: removing leftovers %v %v", kind.list, ids)
			if _, err := p.docker(ctx, append(kind.rm, ids...)...); err != nil {
				p.t.Errorf("cleanup: %v", err)
			}
		}
	}
}

// container returns the ID of a service's container.
func (p *project) container(ctx context.Context, service string) string {
	p.t.Helper()
	return p.oneID(ctx, "ps", "-aq", "--filter", "label="+labelProject+"="+p.name, "--filter", "label="+labelService+"="+service)
}

// network returns the ID of one of the project's networks (by its name in
// the compose file).
func (p *project) network(ctx context.Context, name string) string {
	p.t.Helper()
	return p.oneID(ctx, "network", "ls", "-q", "--filter", "label="+labelProject+"="+p.name, "--filter", "label="+labelNetwork+"="+name)
}

func (p *project) oneID(ctx context.Context, args ...string) string {
	p.t.Helper()
	out, err := p.docker(ctx, args...)
	if err != nil {
		p.t.Fatal(err)
	}
	ids := strings.Fields(out)
	if len(ids) != 1 {
		p.t.Fatalf("docker %s: want one ID, got %q", strings.Join(args, " "), ids)
	}
	return ids[0]
}

// exitCode is the exit status of a stopped container.
func (p *project) exitCode(ctx context.Context, id string) string {
	p.t.Helper()
	out, err := p.docker(ctx, "inspect", "-f", "{{.State.Running}} {{.State.ExitCode}}", id)
	if err != nil {
		p.t.Fatal(err)
	}
	return strings.TrimSpace(out)
}

// freePorts returns n distinct free TCP ports on 127.0.0.1.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	ports := make([]int, n)
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			_ = ln.Close()
		}
	}()
	for i := range ports {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		ports[i] = ln.Addr().(*net.TCPAddr).Port
	}
	return ports
}
