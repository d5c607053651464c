package lab

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// RunDir records each running lab (its owner, what it spawned, its host
// directories), so that the next lab can clean up after a run that died
// without its cleanup: a test binary killed by `go test -timeout` or a
// signal runs no t.Cleanup, and would leave libvirtd, QEMU, tgtd and
// namespaces behind for ever.
const RunDir = "/run/shareless-lab"

// register records the lab as owned by this process.
func (l *Lab) register() error {
	dir := filepath.Join(RunDir, l.ID)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	self, err := procIdentity(os.Getpid())
	if err != nil {
		return err
	}
	l.teardown = append(l.teardown, func() { os.RemoveAll(dir) })
	if err := os.WriteFile(filepath.Join(dir, "owner"), []byte(self+"\n"), 0o644); err != nil {
		return err
	}
	return l.record("dir", l.Dir)
}

// record appends a line to one of the lab's registry files.
func (l *Lab) record(file, line string) error {
	f, err := os.OpenFile(filepath.Join(RunDir, l.ID, file), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = fmt.Fprintln(f, line)
	return err
}

// procIdentity is "PID STARTTIME": a PID alone may be reused.
func procIdentity(pid int) (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", err
	}
	// Fields after the command name, which may contain spaces; the
	// start time is field 22 of the line, 20th after the name.
	rest := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	if len(rest) < 20 {
		return "", fmt.Errorf("short /proc/%d/stat", pid)
	}
	return strconv.Itoa(pid) + " " + rest[19], nil
}

// alive reports whether the process with this identity still runs.
func alive(identity string) bool {
	f := strings.Fields(identity)
	if len(f) != 2 {
		return false
	}
	pid, err := strconv.Atoi(f[0])
	if err != nil {
		return false
	}
	now, err := procIdentity(pid)
	return err == nil && now == identity
}

// sweep cleans up labs whose owner died: it kills what they spawned (by
// recorded PID and start time) and their QEMU (by pid file), deletes
// their namespaces, and removes their directory.
func sweep(t testing.TB) {
	entries, _ := os.ReadDir(RunDir)
	for _, e := range entries {
		dir := filepath.Join(RunDir, e.Name())
		owner, err := os.ReadFile(filepath.Join(dir, "owner"))
		if err == nil && alive(strings.TrimSpace(string(owner))) {
			continue
		}
		t.Logf("lab: cleaning up after dead lab run %s", e.Name())
		for _, id := range lines(filepath.Join(dir, "procs")) {
			if alive(id) {
				pid, _ := strconv.Atoi(strings.Fields(id)[0])
				t.Logf("lab cleanup: killing pid %d", pid)
				logErr(t, syscall.Kill(pid, syscall.SIGKILL))
			}
		}
		for _, hostDir := range lines(filepath.Join(dir, "hosts")) {
			killQEMU(t, hostDir)
		}
		out, _ := exec.Command("ip", "netns", "list").Output()
		for _, line := range strings.Split(string(out), "\n") {
			if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], "shl-"+e.Name()+"-") {
				logErr(t, run("ip", "netns", "del", f[0]))
			}
		}
		for _, labDir := range lines(filepath.Join(dir, "dir")) {
			logErr(t, os.RemoveAll(labDir))
		}
		logErr(t, os.RemoveAll(dir))
	}
}

func lines(path string) []string {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	for s := bufio.NewScanner(f); s.Scan(); {
		if line := strings.TrimSpace(s.Text()); line != "" {
			out = append(out, line)
		}
	}
	return out
}

// killQEMU kills QEMU processes of a host directory whose libvirtd is gone
// (libvirtd does not stop its domains when it exits), found by the pid
// files in the host's private /run/libvirt/qemu.
func killQEMU(t testing.TB, hostDir string) {
	files, _ := filepath.Glob(filepath.Join(hostDir, "run", "qemu", "*.pid"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil || !strings.Contains(string(cmdline), "qemu") {
			continue // already gone, or the pid was reused
		}
		t.Logf("lab cleanup: killing leftover QEMU pid %d (%s)", pid, f)
		logErr(t, syscall.Kill(pid, syscall.SIGKILL))
	}
}
