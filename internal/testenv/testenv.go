// Package testenv lets tests that need a real component (tgtd, qemu-img,
// RabbitMQ, ...) find it, and decides what happens when it is missing:
// under `make test` (SHARELESS_STRICT=1) the test fails, elsewhere it skips.
package testenv

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"testing"
)

// Strict reports whether missing components fail tests instead of skipping.
func Strict() bool { return os.Getenv("SHARELESS_STRICT") == "1" }

// NeedCommands returns the paths of the named executables, or ends the test.
func NeedCommands(t testing.TB, names ...string) []string {
	t.Helper()
	paths := make([]string, len(names))
	for i, n := range names {
		p, err := exec.LookPath(n)
		if err != nil {
			missing(t, "%s not found (scripts/deps.sh installs it)", n)
		}
		paths[i] = p
	}
	return paths
}

// NeedRoot ends the test unless it runs as root (network namespaces, tgtd).
func NeedRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		missing(t, "needs root")
	}
}

// SkipIfShort skips slow tests under -short, which make test never sets.
func SkipIfShort(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("slow test skipped with -short")
	}
}

func missing(t testing.TB, format string, a ...any) {
	t.Helper()
	if Strict() {
		t.Fatalf(format, a...)
	}
	t.Skipf(format, a...)
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
// A test that needs several ports takes them in one FreePorts call: ports
// taken one at a time, before anything binds them, can come back equal.
func FreePort(t testing.TB) int {
	t.Helper()
	ports, err := FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	return ports[0]
}

// FreePorts returns n distinct TCP ports on 127.0.0.1 that were free a
// moment ago: every port stays bound until all are chosen. It takes no
// testing.TB so that a TestMain can use it.
func FreePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("free port: %w", err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// Report records a measurement a test wants the operator to see (a
// conformance count, a migration's downtime). It goes to the test log and,
// when SHARELESS_REPORT names a file (make test sets it), is appended there,
// because go test hides the output of passing tests.
func Report(t testing.TB, format string, a ...any) {
	t.Helper()
	line := fmt.Sprintf(format, a...)
	t.Log(line)
	path := os.Getenv("SHARELESS_REPORT")
	if path == "" {
		return
	}
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		t.Errorf("report: %v", err)
		return
	}
	defer f.Close()
	// One write per line: O_APPEND keeps lines of parallel test
	// processes whole.
	if _, err := fmt.Fprintf(f, "%s: %s\n", t.Name(), line); err != nil {
		t.Errorf("report: %v", err)
	}
}
