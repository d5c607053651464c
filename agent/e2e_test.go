package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	mrand "math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/shareless/shareless/internal/novaemit"
	"github.com/shareless/shareless/internal/rabbit"
	"github.com/shareless/shareless/internal/testenv"
	"github.com/shareless/shareless/localapi"
	"github.com/shareless/shareless/replicator"
	"github.com/shareless/shareless/replicator/vfs"
)

// The end-to-end tests run real agents (the shareless binary, as separate
// processes so that one can be SIGKILLed), one real RabbitMQ and Nova's
// notifier library, on loopback with distinct ports. Only the processes the
// tests start are stopped, by PID.

// shared is what the package's end-to-end tests share: the binary, built
// by the first test that needs it, and the broker, started by the first
// test that needs one.
var shared struct {
	binOnce sync.Once
	dir     string
	bin     string
	binErr  error

	once   sync.Once
	broker *rabbit.Server
	err    error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.broker != nil {
		shared.broker.Close()
	}
	if shared.dir != "" {
		os.RemoveAll(shared.dir)
	}
	os.Exit(code)
}

// needBinary builds the shareless binary once, into shared.bin.
func needBinary(t *testing.T) {
	t.Helper()
	shared.binOnce.Do(func() {
		if shared.dir, shared.binErr = os.MkdirTemp("", "agent-e2e-"); shared.binErr != nil {
			return
		}
		shared.bin = filepath.Join(shared.dir, "shareless")
		args := []string{"build", "-o", shared.bin}
		if raceBuild {
			args = append(args, "-race")
		}
		if out, err := exec.Command("go", append(args, "../cmd/shareless")...).CombinedOutput(); err != nil {
			shared.binErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if shared.binErr != nil {
		t.Fatal(shared.binErr)
	}
}

func needE2E(t *testing.T) {
	t.Helper()
	testenv.SkipIfShort(t)
	testenv.NeedCommands(t, append(rabbit.Commands(), "qemu-io", "qemu-img")...)
	novaemit.Need(t)
	needBinary(t)
	shared.once.Do(func() {
		brokerDir := filepath.Join(shared.dir, "rabbit")
		if shared.err = os.Mkdir(brokerDir, 0o700); shared.err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		shared.broker, shared.err = rabbit.Start(ctx, brokerDir)
	})
	if shared.err != nil {
		t.Fatal(shared.err)
	}
}

const (
	testCHAP  = "0123456789abcdef" // 16 bytes: what QEMU's libiscsi accepts
	testGrain = 64 << 10
	testChunk = 1 << 20
)

// host is one agent process and its files.
type host struct {
	t                                 *testing.T
	name, dir, conf, sock, store, log string
	iscsiPort, apiPort, metricsPort   int

	cmd    *exec.Cmd
	exited chan struct{}
}

type clusterOpts struct {
	hookWait  time.Duration
	bandwidth string // [replicator] bandwidth_limit
	method    string // [replicator] method
}

// newCluster writes the configuration of two agents that know each other
// as peers; they are not started.
func newCluster(t *testing.T, o clusterOpts) (a, b *host) {
	t.Helper()
	needE2E(t)
	base := t.TempDir()
	psk := filepath.Join(base, "psk")
	chap := filepath.Join(base, "chap")
	for f, v := range map[string]string{psk: "test pre-shared key " + t.Name(), chap: testCHAP} {
		if err := os.WriteFile(f, []byte(v+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// Host names are per test, so are the agents' queues.
	prefix := strings.ToLower(regexp.MustCompile(`[^A-Za-z0-9]+`).ReplaceAllString(t.Name(), "-"))
	hs := []*host{{name: prefix + "-a"}, {name: prefix + "-b"}}
	ports, err := testenv.FreePorts(3 * len(hs))
	if err != nil {
		t.Fatal(err)
	}
	for i, h := range hs {
		h.t = t
		h.dir = filepath.Join(base, h.name)
		h.conf, h.sock = filepath.Join(h.dir, "shareless.conf"), filepath.Join(h.dir, "agent.sock")
		h.store, h.log = filepath.Join(h.dir, "store"), filepath.Join(h.dir, "agent.log")
		h.iscsiPort, h.apiPort, h.metricsPort = ports[3*i], ports[3*i+1], ports[3*i+2]
		if err := os.MkdirAll(h.dir, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if o.hookWait == 0 {
		o.hookWait = 30 * time.Second
	}
	if o.bandwidth == "" {
		o.bandwidth = "0"
	}
	if o.method == "" {
		o.method = "copy"
	}
	for _, h := range hs {
		conf := fmt.Sprintf(`[DEFAULT]
host = %s
state_path = %s
log_level = debug

[amqp]
transport_url = %s
reconnect_min = 100ms
reconnect_max = 2s

[iscsi]
listen = 127.0.0.1
port = %d
chap_user = shareless
chap_secret_file = %s

[store]
path = %s

[libvirt]
# No libvirtd: these agents must not touch the machine's own.
uri = %s

[api]
listen = 127.0.0.1:%d
psk_file = %s
socket = %s
metrics_listen = 127.0.0.1:%d

[peers]
%s = 127.0.0.1:%d
%s = 127.0.0.1:%d

[replicator]
grain = %d
chunk = %d
bandwidth_limit = %s
method = %s
source_timeout = 20s
hook_wait = %s
`, h.name, filepath.Join(h.dir, "state"), shared.broker.TransportURL(), h.iscsiPort, chap, h.store, filepath.Join(h.dir, "no-libvirt-sock"),
			h.apiPort, psk, h.sock, h.metricsPort, hs[0].name, hs[0].apiPort, hs[1].name, hs[1].apiPort,
			testGrain, testChunk, o.bandwidth, o.method, o.hookWait)
		if err := os.WriteFile(h.conf, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for _, h := range hs {
			h.stop()
			if b, _ := os.ReadFile(h.log); bytes.Contains(b, []byte("WARNING: DATA RACE")) {
				t.Errorf("agent %s had a data race", h.name)
			}
		}
		if t.Failed() {
			for _, h := range hs {
				b, _ := os.ReadFile(h.log)
				t.Logf("log of %s:\n%s", h.name, tail(string(b), 60))
			}
		}
	})
	return hs[0], hs[1]
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// start runs the agent and waits until its local API answers.
func (h *host) start() {
	h.t.Helper()
	logf, err := os.OpenFile(h.log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		h.t.Fatal(err)
	}
	defer logf.Close()
	h.cmd = exec.Command(shared.bin, "agent", "--config-file", h.conf)
	h.cmd.Stdout, h.cmd.Stderr = logf, logf
	h.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := h.cmd.Start(); err != nil {
		h.t.Fatal(err)
	}
	h.exited = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { cmd.Wait(); close(done) }(h.cmd, h.exited)
	testenv.Eventually(h.t, 15*time.Second, "agent "+h.name+" answers", func() (bool, string) {
		select {
		case <-h.exited:
			b, _ := os.ReadFile(h.log)
			h.t.Fatalf("agent %s exited:\n%s", h.name, tail(string(b), 20))
		default:
		}
		_, err := localapi.NewClient(h.sock).Status(context.Background())
		return err == nil, fmt.Sprint(err)
	})
}

// signal sends sig to the agent's process and waits for it to exit.
func (h *host) signal(sig syscall.Signal) {
	if h.cmd == nil {
		return
	}
	syscall.Kill(h.cmd.Process.Pid, sig)
	select {
	case <-h.exited:
	case <-time.After(15 * time.Second):
		syscall.Kill(h.cmd.Process.Pid, syscall.SIGKILL)
		<-h.exited
	}
	h.cmd = nil
}

// stop stops the agent as systemd does; it must exit cleanly.
func (h *host) stop() {
	cmd := h.cmd
	h.signal(syscall.SIGTERM)
	if cmd != nil && cmd.ProcessState.ExitCode() != 0 {
		h.t.Errorf("agent %s: %v after SIGTERM", h.name, cmd.ProcessState)
	}
}

func (h *host) kill() { h.signal(syscall.SIGKILL) }

func (h *host) status() localapi.Status {
	h.t.Helper()
	raw, err := localapi.NewClient(h.sock).Status(context.Background())
	if err != nil {
		h.t.Fatalf("status of %s: %v", h.name, err)
	}
	var st localapi.Status
	if err := json.Unmarshal(raw, &st); err != nil {
		h.t.Fatal(err)
	}
	return st
}

func migration(st localapi.Status, inst, role string) (localapi.Migration, bool) {
	for _, m := range st.Migrations {
		if m.Instance == inst && m.Role == role {
			return m, true
		}
	}
	return localapi.Migration{}, false
}

func diskOf(st localapi.Status, ref DiskRef) (localapi.Disk, bool) {
	for _, d := range st.Disks {
		if d.Instance == ref.Instance && d.Disk == ref.Disk {
			return d, true
		}
	}
	return localapi.Disk{}, false
}

// shareless runs the binary (the hook, status) and returns its exit code
// and output.
func shareless(t *testing.T, stdin string, args ...string) (code int, stdout, stderr string, took time.Duration) {
	t.Helper()
	cmd := exec.Command(shared.bin, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	err := cmd.Run()
	took = time.Since(start)
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), out.String(), errb.String(), took
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0, out.String(), errb.String(), took
}

// seedDisk creates a managed disk in h's store (the agent is not running)
// filled with pseudo-random data, and returns its contents.
func seedDisk(t *testing.T, h *host, ref DiskRef, size int) []byte {
	t.Helper()
	st, err := replicator.NewStore(vfs.OS{}, h.store, replicator.StoreOptions{Grain: testGrain, Chunk: testChunk})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := st.Create(context.Background(), ref.storeName(), int64(size))
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, size)
	r := mrand.NewChaCha8([32]byte{1})
	r.Read(data[:size*3/4]) // the last quarter stays a hole of zeroes
	ctx := context.Background()
	if err := rep.WriteAt(ctx, data, 0, false); err != nil {
		t.Fatal(err)
	}
	if err := rep.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := rep.Close(); err != nil {
		t.Fatal(err)
	}
	return data
}

// lm is a line of Nova's live migration: event from publisher's
// nova-compute, with payload.host set to payloadHost.
func lm(event, inst, publisher, payloadHost string) novaemit.Line {
	return novaemit.Line{Sample: filepath.Join("..", "testdata", "nova-notifications", "resolved", "instance-live_migration_"+event+".json"),
		PublisherID: "nova-compute:" + publisher, UUID: inst, Host: payloadHost}
}

func emit(t *testing.T, lines ...novaemit.Line) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := novaemit.Emit(ctx, shared.broker.TransportURL(), "messagingv2", lines); err != nil {
		t.Fatal(err)
	}
}

// domainXML is the domain as libvirt hands it to the hook: the disk is a
// network disk on the local portal, valid on both hosts.
func domainXML(ref DiskRef, port int) string {
	return fmt.Sprintf(`<domain type='qemu'><name>instance-00000001</name><uuid>%s</uuid><devices>
<disk type='network' device='disk'><driver name='qemu' type='raw'/>
<source protocol='iscsi' name='%s/0'><host name='127.0.0.1' port='%d'/></source><target dev='vda' bus='virtio'/></disk>
</devices></domain>`, ref.Instance, ref.IQN(), port)
}

func hook(t *testing.T, h *host, ref DiskRef, args ...string) (int, string, time.Duration) {
	t.Helper()
	code, _, stderr, took := shareless(t, domainXML(ref, h.iscsiPort),
		append([]string{"hook", "--socket", h.sock, "--state-dir", filepath.Join(h.dir, "state")}, args...)...)
	return code, stderr, took
}

// lunURL is ref's LUN on h as QEMU names it, CHAP included.
func lunURL(h *host, ref DiskRef) string {
	return fmt.Sprintf("iscsi://shareless%%%s@127.0.0.1:%d/%s/0", testCHAP, h.iscsiPort, ref.IQN())
}

// qemuIO runs qemu-io commands on ref's LUN on h.
func qemuIO(t *testing.T, h *host, ref DiskRef, cmds ...string) error {
	t.Helper()
	args := []string{"-f", "raw"}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	out, err := exec.Command("qemu-io", append(args, lunURL(h, ref))...).CombinedOutput()
	if err != nil || bytes.Contains(out, []byte("failed")) {
		return fmt.Errorf("qemu-io %v: %v\n%s", cmds, err, out)
	}
	return nil
}

// readLUN reads ref's whole LUN on h with qemu-img.
func readLUN(t *testing.T, h *host, ref DiskRef) []byte {
	t.Helper()
	out := filepath.Join(t.TempDir(), "read.raw")
	if b, err := exec.Command("qemu-img", "convert", "-f", "raw", "-O", "raw", lunURL(h, ref), out).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img convert: %v\n%s", err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// sameBytes fails the test at the first differing offset.
func sameBytes(t *testing.T, what string, got, want []byte) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d bytes, want %d", what, len(got), len(want))
	}
	if i := firstDiff(got, want); i >= 0 {
		t.Fatalf("%s: first difference at offset %d (got %#x, want %#x)", what, i, got[i], want[i])
	}
}

func firstDiff(a, b []byte) int {
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return -1
}

// guestWrite is a write a guest makes on the destination during the copy.
type guestWrite struct {
	off, n  int
	pattern byte
}

func (w guestWrite) qemuIO() string { return fmt.Sprintf("write -P %#x %d %d", w.pattern, w.off, w.n) }

func (w guestWrite) apply(b []byte) {
	for i := w.off; i < w.off+w.n; i++ {
		b[i] = w.pattern
	}
}

// waitPhase waits until h's record of inst in role reaches phase.
func waitPhase(t *testing.T, h *host, inst, role, phase string, timeout time.Duration) {
	t.Helper()
	testenv.Eventually(t, timeout, fmt.Sprintf("%s %s %s", h.name, role, phase), func() (bool, string) {
		m, ok := migration(h.status(), inst, role)
		return ok && m.Phase == phase, fmt.Sprintf("%+v", m)
	})
}

// prepared replays a migration's beginning in Nova's order up to the
// destination's migrate hook, which must let libvirt proceed.
func prepared(t *testing.T, a, b *host, ref DiskRef) {
	t.Helper()
	emit(t, lm("pre-start", ref.Instance, b.name, a.name), lm("pre-end", ref.Instance, b.name, a.name))
	if code, stderr, _ := hook(t, b, ref, "qemu", "instance-00000001", "migrate", "begin", "-"); code != 0 {
		t.Fatalf("hook migrate begin on the destination: exit %d: %s", code, stderr)
	}
}

// TestMigrationThereAndBack: a VM with a managed disk moves A→B as Nova
// orders it; B's replica serves the guest at once, copies in the background
// while A says it is not safe to power off, and ends with A's bytes plus the
// guest's writes made on B. Then it moves back B→A, and A fetches only the
// blocks B's guest modified (design.md §2 rule 7).
func TestMigrationThereAndBack(t *testing.T) {
	a, b := newCluster(t, clusterOpts{bandwidth: "4MiB"})
	ref, _ := NewDiskRef(testenv.UUID(), "disk")
	eph, _ := NewDiskRef(ref.Instance, "disk.eph0") // a second disk of the same VM
	const size = 24 << 20
	want := seedDisk(t, a, ref, size)
	wantEph := seedDisk(t, a, eph, 4<<20)
	a.start()
	b.start()

	prepared(t, a, b, ref)
	// Pass-through: B serves A's bytes before anything is copied.
	if err := qemuIO(t, b, ref, fmt.Sprintf("read -P 0 %d 65536", size-65536)); err != nil {
		t.Fatal(err)
	}
	// The switch-over: the guest runs on B; Nova's post.start comes from A.
	emit(t, lm("post-start", ref.Instance, a.name, a.name))
	waitPhase(t, b, ref.Instance, "dest", "copying", 20*time.Second)
	code, out, stderr, _ := shareless(t, "", "status", "--socket", a.sock)
	if code != 0 || !regexp.MustCompile(`safe to power off: no \([12] replicas still copying from this host, ETA`).MatchString(out) {
		t.Fatalf("status on A while B copies: exit %d\n%s%s", code, out, stderr)
	}
	t.Logf("status on A while copying:\n%s", out)
	writes := []guestWrite{{off: size - 8<<20, n: 256 << 10, pattern: 0xab}, {off: 5<<20 + 4096, n: 8192, pattern: 0xcd}}
	for _, w := range writes {
		if err := qemuIO(t, b, ref, w.qemuIO()); err != nil {
			t.Fatal(err)
		}
		w.apply(want)
	}
	if d, _ := diskOf(b.status(), ref); d.State != "copying" {
		t.Logf("note: the copy finished before the guest's writes (%+v); they still count", d)
	}
	emit(t, lm("post_dest-start", ref.Instance, b.name, a.name), lm("post_dest-end", ref.Instance, b.name, b.name),
		lm("post-end", ref.Instance, a.name, a.name))

	waitPhase(t, b, ref.Instance, "dest", "copied", time.Minute)
	waitPhase(t, a, ref.Instance, "source", "copied", 20*time.Second)
	code, out, _, _ = shareless(t, "", "status", "--socket", a.sock)
	if code != 0 || !strings.Contains(out, "safe to power off: yes") {
		t.Fatalf("status on A after the copy: exit %d\n%s", code, out)
	}
	if m, _ := migration(b.status(), ref.Instance, "dest"); !m.Home {
		t.Errorf("B did not record the new home: %+v", m)
	}
	sameBytes(t, "B's disk after the copy", readLUN(t, b, ref), want)
	sameBytes(t, "B's second disk after the copy", readLUN(t, b, eph), wantEph)

	checkMetrics(t, b, ref)

	// The way back. A still holds its sealed image, which is exactly what
	// B's replica copied: only the modified blocks move.
	emit(t, lm("pre-start", ref.Instance, a.name, b.name), lm("pre-end", ref.Instance, a.name, b.name))
	if code, stderr, _ := hook(t, a, ref, "qemu", "instance-00000001", "migrate", "begin", "-"); code != 0 {
		t.Fatalf("hook migrate begin on A: exit %d: %s", code, stderr)
	}
	emit(t, lm("post-start", ref.Instance, b.name, b.name), lm("post_dest-start", ref.Instance, a.name, b.name),
		lm("post_dest-end", ref.Instance, a.name, a.name), lm("post-end", ref.Instance, b.name, b.name))
	waitPhase(t, a, ref.Instance, "dest", "copied", time.Minute)
	waitPhase(t, b, ref.Instance, "source", "copied", 20*time.Second)
	d, _ := diskOf(a.status(), ref)
	modified := int64(4*testGrain + testGrain) // the two writes, in whole tracking blocks
	if d.BytesCopied != modified {
		t.Errorf("way back copied %d bytes, want the %d modified on B", d.BytesCopied, modified)
	}
	if d, _ := diskOf(a.status(), eph); d.BytesCopied != 0 {
		t.Errorf("way back copied %d bytes of the disk B's guest did not write", d.BytesCopied)
	}
	sameBytes(t, "A's disk after the way back", readLUN(t, a, ref), want)
	sameBytes(t, "A's second disk after the way back", readLUN(t, a, eph), wantEph)
	_, out, _, _ = shareless(t, "", "status", "--socket", a.sock)
	t.Logf("status on A after the way back:\n%s", out)
}

// switchedOver starts two agents with a seeded disk of size bytes on A and
// takes its migration to B past the switch-over: B is copying from A.
func switchedOver(t *testing.T, o clusterOpts, size int) (a, b *host, ref DiskRef, want []byte) {
	t.Helper()
	a, b = newCluster(t, o)
	ref, _ = NewDiskRef(testenv.UUID(), "disk")
	want = seedDisk(t, a, ref, size)
	a.start()
	b.start()
	prepared(t, a, b, ref)
	emit(t, lm("post-start", ref.Instance, a.name, a.name))
	waitPhase(t, b, ref.Instance, "dest", "copying", 20*time.Second)
	return a, b, ref, want
}

// TestMethodB: with [replicator] method = remote, B's replica stays
// remote-only after the switch-over: the guest's writes land on B, every
// other read goes to A, nothing is copied, and the migration does not end.
// `shareless copy-now` switches it to copying; the copy completes and B's
// disk holds A's bytes plus the guest's writes.
func TestMethodB(t *testing.T) {
	const size = 8 << 20
	a, b, ref, want := switchedOver(t, clusterOpts{method: "remote"}, size)
	writes := []guestWrite{{off: 1 << 20, n: 128 << 10, pattern: 0xab}, {off: 5<<20 + 4096, n: 8192, pattern: 0xcd}}
	for _, w := range writes {
		if err := qemuIO(t, b, ref, w.qemuIO()); err != nil {
			t.Fatal(err)
		}
		w.apply(want)
	}
	emit(t, lm("post_dest-start", ref.Instance, b.name, a.name), lm("post_dest-end", ref.Instance, b.name, b.name),
		lm("post-end", ref.Instance, a.name, a.name))
	// The guest reads its whole disk on B, twice: A's blocks come from A
	// each time and stay there.
	sameBytes(t, "B's remote-only disk", readLUN(t, b, ref), want)
	sameBytes(t, "B's remote-only disk read again", readLUN(t, b, ref), want)
	time.Sleep(2 * time.Second) // a copier would have moved the 8 MiB by now
	d, _ := diskOf(b.status(), ref)
	written := int64(2*testGrain + testGrain) // the two writes, in whole tracking blocks
	if d.State != "remote" || d.Mode != "remote" || d.BytesLocal != written || d.BytesCopied != 0 {
		t.Fatalf("B's disk under Method B: %+v, want remote with only the %d bytes written here", d, written)
	}
	if m, _ := migration(b.status(), ref.Instance, "dest"); m.Phase == "copied" {
		t.Fatalf("migration ended without a copy: %+v", m)
	}
	remote := metric(t, b, fmt.Sprintf(`shareless_disk_read_remote_bytes_total{instance=%q,disk="disk"}`, ref.Instance))
	if remote < 2*(size-written) {
		t.Errorf("B read %d bytes from A, want at least the %d of two whole reads", remote, 2*(size-written))
	}
	code, out, stderr, _ := shareless(t, "", "status", "--socket", b.sock)
	if code != 0 || !strings.Contains(out, "remote (remote-only: shareless copy-now)") {
		t.Fatalf("status on B: exit %d\n%s%s", code, out, stderr)
	}
	t.Logf("status on B under Method B:\n%s", out)
	t.Logf("B read %d bytes from A; %d bytes local, 0 copied", remote, d.BytesLocal)

	code, out, stderr, _ = shareless(t, "", "copy-now", "--socket", b.sock, ref.Instance)
	if code != 0 || out != "instance "+ref.Instance+": copying now: disk\n" {
		t.Fatalf("copy-now: exit %d, stdout %q, stderr %q", code, out, stderr)
	}
	waitPhase(t, b, ref.Instance, "dest", "copied", time.Minute)
	waitPhase(t, a, ref.Instance, "source", "copied", 20*time.Second)
	d, _ = diskOf(b.status(), ref)
	if d.State != "complete" || d.Mode != "copy" || d.BytesCopied != size-written {
		t.Errorf("B's disk after copy-now: %+v, want complete with %d bytes copied", d, size-written)
	}
	sameBytes(t, "B's disk after copy-now", readLUN(t, b, ref), want)
}

// TestCopyNowSurvivesRestart: under method = remote, `shareless copy-now`
// switched B's replica to copying; B's agent is SIGKILLed mid-copy and
// started again under the same configuration. The replica reopens copying
// (the switch is in its metadata), not remote-only, and the copy completes.
func TestCopyNowSurvivesRestart(t *testing.T) {
	const size = 8 << 20
	a, b, ref, want := switchedOver(t, clusterOpts{method: "remote", bandwidth: "2MiB"}, size)
	emit(t, lm("post_dest-start", ref.Instance, b.name, a.name), lm("post_dest-end", ref.Instance, b.name, b.name),
		lm("post-end", ref.Instance, a.name, a.name))
	if d, _ := diskOf(b.status(), ref); d.Mode != "remote" {
		t.Fatalf("B's disk under method = remote: %+v", d)
	}
	code, out, stderr, _ := shareless(t, "", "copy-now", "--socket", b.sock, ref.Instance)
	if code != 0 || out != "instance "+ref.Instance+": copying now: disk\n" {
		t.Fatalf("copy-now: exit %d, stdout %q, stderr %q", code, out, stderr)
	}
	testenv.Eventually(t, 20*time.Second, "B copies", func() (bool, string) {
		d, _ := diskOf(b.status(), ref)
		return d.BytesCopied > 0 && d.BytesLocal < size, fmt.Sprintf("%+v", d)
	})
	b.kill()
	b.start()
	waitPhase(t, b, ref.Instance, "dest", "copying", 20*time.Second)
	if d, _ := diskOf(b.status(), ref); d.Mode != "copy" || d.State == "remote" {
		t.Fatalf("B's disk after the restart: %+v, want it copying as copy-now asked", d)
	}
	waitPhase(t, b, ref.Instance, "dest", "copied", time.Minute)
	sameBytes(t, "B's disk copied across the restart", readLUN(t, b, ref), want)
}

// metric reads one sample of h's /metrics.
func metric(t *testing.T, h *host, series string) int64 {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", h.metricsPort))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m bytes.Buffer
	m.ReadFrom(resp.Body)
	for _, l := range strings.Split(m.String(), "\n") {
		if v, ok := strings.CutPrefix(l, series+" "); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				t.Fatalf("metric %s: %v", series, err)
			}
			return n
		}
	}
	t.Fatalf("metrics of %s lack %s:\n%s", h.name, series, m.String())
	return 0
}

// checkMetrics reads b's /metrics after a complete copy of ref.
func checkMetrics(t *testing.T, b *host, ref DiskRef) {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", b.metricsPort))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m bytes.Buffer
	m.ReadFrom(resp.Body)
	for _, line := range []string{
		fmt.Sprintf(`shareless_replica_bytes_remaining{instance=%q,disk="disk"} 0`, ref.Instance),
		`shareless_notifications_total{outcome="applied"}`,
	} {
		if !strings.Contains(m.String(), line) {
			t.Errorf("metrics of B lack %q:\n%s", line, m.String())
		}
	}
}

// TestMigrationSurvivesSIGKILL: each agent is SIGKILLed in the middle of
// the copy and started again; both resume from what they persisted (the
// node's journal, the replica's metadata) and the copy completes exactly,
// the guest's writes on B included.
func TestMigrationSurvivesSIGKILL(t *testing.T) {
	const size = 24 << 20
	a, b, ref, want := switchedOver(t, clusterOpts{bandwidth: "3MiB"}, size)

	local := func(min int64) func() (bool, string) {
		return func() (bool, string) {
			d, _ := diskOf(b.status(), ref)
			return d.BytesLocal >= min && d.BytesLocal < size, fmt.Sprintf("%+v", d)
		}
	}
	testenv.Eventually(t, 20*time.Second, "B copied a little", local(2<<20))
	w1 := guestWrite{off: size - 4<<20, n: 128 << 10, pattern: 0x5a}
	if err := qemuIO(t, b, ref, w1.qemuIO()); err != nil {
		t.Fatal(err)
	}
	w1.apply(want)
	before, _ := diskOf(b.status(), ref)
	b.kill()
	b.start()
	waitPhase(t, b, ref.Instance, "dest", "copying", 20*time.Second)
	after, _ := diskOf(b.status(), ref)
	t.Logf("B killed at %d bytes local, resumed at %d", before.BytesLocal, after.BytesLocal)

	// The source dies too; B's reads wait for it (bounded) and go on.
	testenv.Eventually(t, 30*time.Second, "B copied more", local(before.BytesLocal+2<<20))
	a.kill()
	time.Sleep(time.Second)
	a.start()
	w2 := guestWrite{off: 12<<20 + 512, n: 4096, pattern: 0xa5}
	if err := qemuIO(t, b, ref, w2.qemuIO()); err != nil {
		t.Fatal(err)
	}
	w2.apply(want)
	emit(t, lm("post_dest-start", ref.Instance, b.name, a.name), lm("post_dest-end", ref.Instance, b.name, b.name),
		lm("post-end", ref.Instance, a.name, a.name))
	waitPhase(t, b, ref.Instance, "dest", "copied", time.Minute)
	waitPhase(t, a, ref.Instance, "source", "copied", 30*time.Second)
	sameBytes(t, "B's disk after two crashes", readLUN(t, b, ref), want)
}

// TestNoWayBackWhileCopying: while B still copies from A, Nova may try to
// move the VM back to A; A's migrate hook refuses (the new replica would
// read from one that reads from A) and A keeps serving B's copy, which
// completes.
func TestNoWayBackWhileCopying(t *testing.T) {
	a, b, ref, want := switchedOver(t, clusterOpts{bandwidth: "2MiB"}, 8<<20)

	emit(t, lm("pre-start", ref.Instance, a.name, b.name))
	code, stderr, _ := hook(t, a, ref, "qemu", "instance-00000001", "migrate", "begin", "-")
	if code == 0 || !strings.Contains(stderr, "still copies this instance's disks from this host") {
		t.Fatalf("way back during the copy: exit %d: %s", code, stderr)
	}
	emit(t, lm("rollback-start", ref.Instance, b.name, b.name), lm("rollback_dest-start", ref.Instance, a.name, b.name),
		lm("rollback_dest-end", ref.Instance, a.name, b.name), lm("rollback-end", ref.Instance, b.name, b.name))
	waitPhase(t, b, ref.Instance, "dest", "copied", time.Minute)
	sameBytes(t, "B's disk", readLUN(t, b, ref), want)
}

// TestHookBound: libvirt's migrate hook on the destination never waits
// longer than [replicator] hook_wait for replicas (nor the hook's own
// --timeout), and refuses — exit non-zero, which aborts the migration.
func TestHookBound(t *testing.T) {
	const wait = 4 * time.Second
	// Timings include starting the hook process, which takes seconds on a
	// loaded CI machine; the margins are far below the hook's 60 s default,
	// which is what an unbounded wait would hit.
	const margin = 5 * time.Second
	a, b := newCluster(t, clusterOpts{hookWait: wait})
	b.start()
	ref, _ := NewDiskRef(testenv.UUID(), "disk")

	// No pre.start ever comes: the replicas are never ready.
	code, stderr, took := hook(t, b, ref, "qemu", "instance-00000001", "migrate", "begin", "-")
	// The node answers on the first tick (1 s) after the deadline.
	if code == 0 || !strings.Contains(stderr, "replicas not ready in time") || took < wait || took > wait+margin {
		t.Fatalf("no replicas: exit %d after %v (bound %v): %s", code, took, wait, stderr)
	}
	// The hook's own bound holds when it is shorter.
	code, stderr, took = hook(t, b, ref, "--timeout", "500ms", "qemu", "instance-00000001", "migrate", "begin", "-")
	if code == 0 || !strings.Contains(stderr, "did not answer in time") || took >= wait {
		t.Fatalf("--timeout 500ms: exit %d after %v: %s", code, took, stderr)
	}
	// Nova begins, but the source's agent is down: preparing fails and
	// the hook refuses at once with the reason.
	emit(t, lm("pre-start", ref.Instance, b.name, a.name))
	code, stderr, took = hook(t, b, ref, "qemu", "instance-00000001", "migrate", "begin", "-")
	if code == 0 || !strings.Contains(stderr, "replicas failed") || took >= wait {
		t.Fatalf("source down: exit %d after %v: %s", code, took, stderr)
	}
	t.Logf("refusal: %s", strings.TrimSpace(stderr))

	// An adopted instance must not boot Nova's stale file disk.
	guard := filepath.Join(b.dir, "state", "guard")
	if err := os.MkdirAll(guard, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(guard, "instance-00000001"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	fileXML := fmt.Sprintf(`<domain><name>instance-00000001</name><uuid>%s</uuid><devices><disk type='file' device='disk'><source file='/var/lib/nova/instances/%s/disk'/></disk></devices></domain>`, ref.Instance, ref.Instance)
	code, _, stderr, _ = shareless(t, fileXML, "hook", "--socket", b.sock, "qemu", "instance-00000001", "prepare", "begin", "-")
	if code == 0 || !strings.Contains(stderr, "was adopted") {
		t.Fatalf("adopted instance on a file disk: exit %d: %s", code, stderr)
	}
	if code, stderr, _ := hook(t, b, ref, "qemu", "instance-00000001", "prepare", "begin", "-"); code != 0 {
		t.Fatalf("adopted instance on its managed disk: exit %d: %s", code, stderr)
	}
}

// TestRollback: Nova rolls the migration back before the switch-over; B
// discards its replica and A's export is writable again.
func TestRollback(t *testing.T) {
	a, b := newCluster(t, clusterOpts{})
	ref, _ := NewDiskRef(testenv.UUID(), "disk")
	seedDisk(t, a, ref, 4<<20)
	a.start()
	b.start()
	prepared(t, a, b, ref)
	if _, ok := diskOf(b.status(), ref); !ok {
		t.Fatal("B does not serve the replica")
	}
	// Seal A as a destination does before copying, so that the rollback
	// has something to undo.
	psk, _ := os.ReadFile(filepath.Join(filepath.Dir(a.dir), "psk"))
	p := &peerClient{host: a.name, addr: fmt.Sprintf("127.0.0.1:%d", a.apiPort),
		sign: newSigner(strings.TrimSpace(string(psk)), time.Now), http: http.DefaultClient}
	impostor := *p
	impostor.sign = newSigner("not the cloud's key", time.Now)
	if _, err := impostor.seal(context.Background(), ref.Instance); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("the agent took a seal signed with the wrong key: %v", err)
	}
	if _, err := p.seal(context.Background(), ref.Instance); err != nil {
		t.Fatal(err)
	}
	if d, _ := diskOf(a.status(), ref); !d.Sealed {
		t.Fatalf("A not sealed: %+v", d)
	}
	if err := qemuIO(t, a, ref, "write -P 0x11 0 4096"); err == nil {
		t.Fatal("a sealed export accepted a write")
	}

	emit(t, lm("rollback-start", ref.Instance, a.name, a.name), lm("rollback_dest-start", ref.Instance, b.name, a.name),
		lm("rollback_dest-end", ref.Instance, b.name, a.name), lm("rollback-end", ref.Instance, a.name, a.name))
	waitPhase(t, b, ref.Instance, "dest", "rolled-back", 20*time.Second)
	waitPhase(t, a, ref.Instance, "source", "rolled-back", 20*time.Second)
	testenv.Eventually(t, 10*time.Second, "B's replica gone", func() (bool, string) {
		_, open := diskOf(b.status(), ref)
		entries, _ := os.ReadDir(b.store)
		return !open && len(entries) == 0, fmt.Sprintf("open %v, store %v", open, entries)
	})
	testenv.Eventually(t, 10*time.Second, "A unsealed", func() (bool, string) {
		d, _ := diskOf(a.status(), ref)
		return !d.Sealed, fmt.Sprintf("%+v", d)
	})
	if err := qemuIO(t, a, ref, "write -P 0x11 0 4096", "read -P 0x11 0 4096"); err != nil {
		t.Fatalf("A's export after the rollback: %v", err)
	}
	if err := qemuIO(t, b, ref, "read 0 4096"); err == nil {
		t.Fatal("B still serves the discarded replica")
	}
}
