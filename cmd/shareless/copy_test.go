package main

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"github.com/shareless/shareless/iscsi/target/targettest"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/shareless/shareless/blockdev"
	"github.com/shareless/shareless/internal/testenv"
	"github.com/shareless/shareless/internal/tgtd"
	"github.com/shareless/shareless/iscsi/chap"
	"github.com/shareless/shareless/iscsi/scsi"
	"github.com/shareless/shareless/iscsi/target"
)

// TestMain lets a test run this binary as the shareless command, for the
// cases that need a real process (signals), or as TestReplicaCrash's replica
// process.
func TestMain(m *testing.M) {
	if os.Getenv("SHARELESS_TEST_AS_MAIN") == "1" {
		main()
	}
	if os.Getenv(replicaChildEnv) != "" {
		if err := replicaChild(); err != nil {
			fmt.Fprintln(os.Stderr, "replica process:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

const (
	copyIQN    = "iqn.2026-11.io.shareless.test:copy"
	copyUser   = "copy-user"
	copySecret = "copy-secret-123"
)

// image writes a test image: data at the start, a hole, an all-zero
// written region (allocated zeroes), more data, and a hole at the end.
func image(t *testing.T, path string, size int64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 3<<20+4096)
	rand.Read(data)
	f.WriteAt(data, 0)
	f.WriteAt(make([]byte, 2<<20), 8<<20) // allocated, but zero
	f.WriteAt(data[:1<<20], 12<<20+512)
	f.WriteAt(data[:4096], size-64<<10)
}

// garbage fills a file with random bytes, so that a copy has to zero what
// the source does not hold.
func garbage(t *testing.T, path string, size int64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// One random MiB, made distinct per MiB by its offset.
	b := make([]byte, 1<<20)
	rand.Read(b)
	for off := int64(0); off < size; off += int64(len(b)) {
		binary.LittleEndian.PutUint64(b, uint64(off))
		if _, err := f.WriteAt(b[:min(int64(len(b)), size-off)], off); err != nil {
			t.Fatal(err)
		}
	}
}

func allocated(t *testing.T, path string) int64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

func sameFiles(t *testing.T, a, b string) {
	t.Helper()
	if out, err := exec.Command("cmp", a, b).CombinedOutput(); err != nil {
		t.Fatalf("cmp %s %s: %v: %s", a, b, err, out)
	}
}

type copyEnv struct {
	srv       *tgtd.Server
	lun       string // backing file of LUN 1
	url       string
	secret    string // path of the secret file
	qemuURL   string // with the password, for qemu-img
	imageSize int64
}

func startCopyTarget(t *testing.T, size int64) *copyEnv {
	t.Helper()
	testenv.NeedCommands(t, "cmp", "qemu-img")
	srv := tgtd.Start(t)
	dir := t.TempDir()
	lun := filepath.Join(dir, "lun.img")
	garbage(t, lun, size)
	srv.AddTarget(tgtd.Target{IQN: copyIQN, LUNs: []string{lun}, Thin: true, User: copyUser, Secret: copySecret,
		Params: map[string]string{"MaxRecvDataSegmentLength": "262144"}})
	secret := filepath.Join(dir, "secret")
	os.WriteFile(secret, []byte(copySecret+"\n"), 0o600)
	return &copyEnv{srv: srv, lun: lun, secret: secret, imageSize: size,
		url:     fmt.Sprintf("iscsi://%s@%s/%s/1", copyUser, srv.Addr(), copyIQN),
		qemuURL: fmt.Sprintf("iscsi://%s%%%s@%s/%s/1", copyUser, copySecret, srv.Addr(), copyIQN)}
}

// shareless runs the command in-process and returns its exit status and
// output.
func shareless(args ...string) (int, string, string) {
	var out, errb syncBuffer
	code := run(args, strings.NewReader(""), &out, &errb)
	return code, out.String(), errb.String()
}

// syncBuffer is a bytes.Buffer for writers in several goroutines (the
// logger and the progress reporter); notify, if set, sees every write.
type syncBuffer struct {
	mu     sync.Mutex
	b      bytes.Buffer
	notify func(p []byte)
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.notify != nil {
		s.notify(p)
	}
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestCopyFileISCSIFile(t *testing.T) {
	testenv.SkipIfShort(t)
	const size = 32 << 20
	ce := startCopyTarget(t, size)
	dir := t.TempDir()
	src := filepath.Join(dir, "src.img")
	image(t, src, size)

	code, out, errs := shareless("copy", "--depth", "8", "--chap-secret-file", ce.secret, src, ce.url)
	if code != 0 {
		t.Fatalf("copy file to iSCSI: exit %d: %s", code, errs)
	}
	t.Log(out)
	if !strings.Contains(out, "zero bytes skipped:") || !strings.Contains(out, "bytes written:") {
		t.Errorf("summary lacks the counters: %s", out)
	}
	sameFiles(t, src, ce.lun)
	// The LUN started full of garbage; where the source has holes it got
	// WRITE SAME with UNMAP, which tgtd turns into holes of its file.
	if got := allocated(t, ce.lun); got > 8<<20 {
		t.Errorf("the LUN's backing file allocates %d bytes, want the source's holes deallocated", got)
	}
	if out, err := exec.Command("qemu-img", "compare", "-f", "raw", "-F", "raw", src, ce.qemuURL).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img compare: %v: %s", err, out)
	}

	dst := filepath.Join(dir, "dst.img")
	code, out, errs = shareless("copy", "--chap-secret-file", ce.secret, ce.url, dst)
	if code != 0 {
		t.Fatalf("copy iSCSI to file: exit %d: %s", code, errs)
	}
	t.Log(out)
	sameFiles(t, src, dst)
	// The source holds 4 MiB + 1 MiB + 4 KiB of data; the rest must stay
	// holes in the copy.
	if got, limit := allocated(t, dst), int64(7<<20); got > limit {
		t.Errorf("destination allocates %d bytes, want at most %d (sparse)", got, limit)
	}

	// Into an existing file full of garbage: holes must read as zeroes.
	code, _, errs = shareless("copy", "--chap-secret-file", ce.secret, ce.url, src+".over")
	if code != 0 {
		t.Fatal(errs)
	}
	garbage(t, dst, size)
	if code, _, errs = shareless("copy", src, dst); code != 0 {
		t.Fatalf("file to existing file: exit %d: %s", code, errs)
	}
	sameFiles(t, src, dst)
	if got := allocated(t, dst); got > 7<<20 {
		t.Errorf("overwritten destination allocates %d bytes, want holes punched", got)
	}
}

func TestCopyErrors(t *testing.T) {
	testenv.SkipIfShort(t)
	ce := startCopyTarget(t, 4<<20)
	dir := t.TempDir()
	src := filepath.Join(dir, "src.img")
	image(t, src, 16<<20)
	wrong := filepath.Join(dir, "wrong")
	os.WriteFile(wrong, []byte("not-the-secret-at-all"), 0o600)
	dead := testenv.FreePort(t)
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"bad URL", []string{src, "iscsi://host/only-a-target"}, "target-iqn/lun"},
		{"bad URL with password", []string{src, "iscsi://u%topsecret-pw@host/only-a-target"}, "u%<redacted>@host"},
		{"bad LUN", []string{src, "iscsi://host/iqn.x:y/lun"}, "LUN"},
		{"wrong secret", []string{"--chap-secret-file", wrong, ce.url, filepath.Join(dir, "out1")}, "authentication"},
		{"unreachable", []string{fmt.Sprintf("iscsi://127.0.0.1:%d/%s/1", dead, copyIQN), filepath.Join(dir, "out2")}, "connect"},
		{"size mismatch", []string{"--chap-secret-file", ce.secret, src, ce.url}, "size mismatch"},
		{"missing source", []string{filepath.Join(dir, "nope"), filepath.Join(dir, "out3")}, "no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errs := shareless(append([]string{"copy"}, tc.args...)...)
			if code != 2 {
				t.Errorf("exit %d, want 2; stderr: %s", code, errs)
			}
			if out != "" {
				t.Errorf("stdout %q, want nothing reported as done", out)
			}
			if lines := strings.Count(strings.TrimSpace(errs), "\n") + 1; lines != 1 || !strings.Contains(errs, tc.want) {
				t.Errorf("stderr %q: want one line mentioning %q", errs, tc.want)
			}
			if strings.Contains(errs, "topsecret") || strings.Contains(errs, copySecret) {
				t.Errorf("stderr reveals a secret: %q", errs)
			}
		})
	}
	for _, out := range []string{"out1", "out2"} {
		if _, err := os.Stat(filepath.Join(dir, out)); err == nil {
			t.Errorf("%s was created by a copy that could not start", out)
		}
	}
}

// TestCopySurvivesTargetRestart kills tgtd in the middle of a copy and
// starts it again: the copy must resume and end exact.
func TestCopySurvivesTargetRestart(t *testing.T) {
	testenv.SkipIfShort(t)
	const size = 256 << 20
	ce := startCopyTarget(t, size)
	copyAcrossRestart(t, size, ce.url, ce.secret, ce.lun, func() {
		ce.srv.Kill()
		time.Sleep(500 * time.Millisecond)
		ce.srv.Restart()
	})
}

// TestCopySurvivesOwnTargetRestart does the same with our target running
// as a `shareless export` process that is killed with SIGKILL.
func TestCopySurvivesOwnTargetRestart(t *testing.T) {
	testenv.SkipIfShort(t)
	const size = 256 << 20
	ce := startCopyTarget(t, 4<<20) // for its secret file
	lun := filepath.Join(t.TempDir(), "own.img")
	garbage(t, lun, size)
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	const iqn = "iqn.2026-11.io.shareless.test:own"
	export := func() *exec.Cmd {
		cmd := exec.Command(os.Args[0], "export", "--listen", addr, "--iqn", iqn,
			"--chap-user", copyUser, "--chap-secret-file", ce.secret, lun)
		cmd.Env = append(os.Environ(), "SHARELESS_TEST_AS_MAIN=1")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		for deadline := time.Now().Add(10 * time.Second); ; {
			if c, err := net.Dial("tcp", addr); err == nil {
				c.Close()
				return cmd
			}
			if time.Now().After(deadline) {
				t.Fatal("shareless export did not come up")
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	proc := export()
	t.Cleanup(func() { proc.Process.Kill(); proc.Wait() })
	url := fmt.Sprintf("iscsi://%s@%s/%s/0", copyUser, addr, iqn)
	copyAcrossRestart(t, size, url, ce.secret, lun, func() {
		proc.Process.Kill()
		proc.Wait()
		time.Sleep(300 * time.Millisecond)
		proc = export()
	})
}

// copyAcrossRestart copies a random image to url and calls restart once
// some data went through; the copy must succeed and match.
func copyAcrossRestart(t *testing.T, size int64, url, secret, lun string, restart func()) {
	t.Helper()
	src := filepath.Join(t.TempDir(), "src.img")
	garbage(t, src, size)
	done := make(chan struct{})
	started := make(chan struct{})
	var once sync.Once
	var code int
	var out syncBuffer
	errb := syncBuffer{notify: func(p []byte) {
		if bytes.HasPrefix(p, []byte("copy: ")) && !bytes.HasPrefix(p, []byte("copy:   0.0%")) {
			once.Do(func() { close(started) })
		}
	}}
	go func() {
		defer close(done)
		code = run([]string{"copy", "--depth", "4", "--progress-interval", "10ms", "--chap-secret-file", secret, src, url},
			strings.NewReader(""), &out, &errb)
	}()
	select {
	case <-started:
	case <-time.After(time.Minute):
		t.Fatal("copy made no progress")
	}
	select {
	case <-done:
		t.Fatalf("copy finished before the target was killed (exit %d); make the image larger", code)
	default:
	}
	begin := time.Now()
	restart()
	<-done
	if code != 0 {
		t.Fatalf("copy across a target restart: exit %d: %s", code, errb.String())
	}
	if !strings.Contains(errb.String(), "reinstated") {
		t.Errorf("no reconnection logged: %s", errb.String())
	}
	sameFiles(t, src, lun)
	testenv.Report(t, "copy of %d MiB resumed across a target kill and restart, %v after the kill; destination exact (cmp)",
		size>>20, time.Since(begin).Round(time.Millisecond))
}

// TestCopyInterrupt sends SIGINT to a running copy: it must stop, say how
// far it got and exit non-zero.
func TestCopyInterrupt(t *testing.T) {
	testenv.SkipIfShort(t)
	const size = 512 << 20
	dir := t.TempDir()
	src := filepath.Join(dir, "src.img")
	garbage(t, src, size)
	dst := filepath.Join(dir, "dst.img")
	cmd := exec.Command(os.Args[0], "copy", "--depth", "1", "--progress-interval", "10ms", src, dst)
	cmd.Env = append(os.Environ(), "SHARELESS_TEST_AS_MAIN=1")
	var out syncBuffer
	var once sync.Once
	started := make(chan struct{})
	errb := syncBuffer{notify: func(p []byte) {
		if bytes.HasPrefix(p, []byte("copy: ")) {
			once.Do(func() { close(started) })
		}
	}}
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-started:
	case <-time.After(time.Minute):
		t.Fatal("copy printed no progress")
	}
	cmd.Process.Signal(os.Interrupt)
	err := cmd.Wait()
	if err == nil {
		t.Fatalf("interrupted copy exited 0: %s", out.String())
	}
	if out.String() != "" {
		t.Errorf("interrupted copy reported on stdout: %s", out.String())
	}
	if !strings.Contains(errb.String(), "interrupted") || !strings.Contains(errb.String(), "complete only below offset") {
		t.Errorf("stderr does not say how far it got: %s", errb.String())
	}
	if !strings.Contains(errb.String(), "copy: ") {
		t.Errorf("no progress lines: %s", errb.String())
	}
}

// startOwnTarget serves path as LUN 0 of iqn with CHAP through
// iscsi/target, in-process, and returns the LUN's URL without password.
func startOwnTarget(t *testing.T, iqn, path string) string {
	t.Helper()
	dev, err := blockdev.OpenFile(path, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dev.Close() })
	sec, err := chap.NewSecret([]byte(copySecret))
	if err != nil {
		t.Fatal(err)
	}
	_, addr := targettest.Start(t, target.Config{IQN: iqn, Listen: []string{"127.0.0.1:0"},
		LUNs: []target.LUN{{Device: dev, Unit: scsi.UnitConfig{ID: path}}},
		CHAP: &chap.Credentials{User: copyUser, Secret: sec}})
	return fmt.Sprintf("iscsi://%s@%s/%s/0", copyUser, addr, iqn)
}

// TestCopyOwnTarget copies file -> our LUN -> tgtd LUN -> file, so that
// every direction between a file, tgtd and iscsi/target is crossed.
func TestCopyOwnTarget(t *testing.T) {
	testenv.SkipIfShort(t)
	const size = 32 << 20
	ce := startCopyTarget(t, size)
	dir := t.TempDir()
	ownLUN := filepath.Join(dir, "own.img")
	garbage(t, ownLUN, size)
	own := startOwnTarget(t, "iqn.2026-11.io.shareless.test:own", ownLUN)
	src := filepath.Join(dir, "src.img")
	image(t, src, size)
	dst := filepath.Join(dir, "dst.img")
	for _, step := range [][2]string{{src, own}, {own, ce.url}, {ce.url, own}, {own, dst}} {
		code, _, errs := shareless("copy", "--chap-secret-file", ce.secret, step[0], step[1])
		if code != 0 {
			t.Fatalf("copy %s %s: exit %d: %s", step[0], step[1], code, errs)
		}
	}
	sameFiles(t, src, ownLUN)
	sameFiles(t, src, ce.lun)
	sameFiles(t, src, dst)
	if got := allocated(t, dst); got > 7<<20 {
		t.Errorf("destination allocates %d bytes, want holes", got)
	}
	ownQemu := strings.Replace(own, copyUser+"@", copyUser+"%"+copySecret+"@", 1)
	if out, err := exec.Command("qemu-img", "compare", "-f", "raw", "-F", "raw", src, ownQemu).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img compare with our target: %v: %s", err, out)
	}
}
