package e2e

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shareless/shareless/agent"
	"github.com/shareless/shareless/internal/lab"
	"github.com/shareless/shareless/internal/novaemit"
	"github.com/shareless/shareless/internal/rabbit"
	"github.com/shareless/shareless/internal/testenv"
	"github.com/shareless/shareless/localapi"
	"github.com/shareless/shareless/replicator"
	"github.com/shareless/shareless/replicator/vfs"
	"github.com/shareless/shareless/virt"
)

// The agent's files, as every host sees them inside its own mount
// namespace: under the directories the lab makes private to each host
// (/etc/libvirt, /run/libvirt, /var/lib/libvirt), so that one path, and
// so one hook script, serves every host.
const (
	confPath   = "/etc/libvirt/shareless/shareless.conf"
	socketPath = "/run/libvirt/shareless/agent.sock"
	statePath  = "/var/lib/libvirt/shareless/state"
	storePath  = "/var/lib/libvirt/shareless/store"
)

const (
	// grain and chunk are the agents' tracking block and copy unit.
	grain = 64 << 10
	chunk = 1 << 20
	// bandwidth slows the post-copy (bytes per second) so that a fault
	// lands in the middle of it.
	bandwidth = 4 << 20
	// hookWait bounds how long the destination's hook waits for its
	// replicas before refusing a migration.
	hookWait = 8 * time.Second
	// diskSize is each guest's managed disk; the first dataSize bytes
	// hold pseudo-random data, the rest is a hole.
	diskSize = 32 << 20
	dataSize = 24 << 20
	// chapUser and secretUsage name the CHAP login QEMU uses; the password
	// is the value of the libvirt secret of that usage on each host.
	chapUser    = "shareless"
	secretUsage = agent.SecretUsage
	apiPort     = 3270
	iscsiPort   = 3260
	metricsAddr = "127.0.0.1:9470" // on each host's own loopback
)

// cloud is two compute hosts of a lab, each with a shareless agent, and
// the broker that carries Nova's notifications.
type cloud struct {
	lab    *lab.Lab
	bin    string
	broker *rabbit.Server
	a, b   *node
}

// node is one compute host: its libvirtd (as Nova's libvirt driver
// reaches it) and its agent.
type node struct {
	t     *testing.T
	host  *lab.Host
	name  string // Nova's host name
	conn  *virt.Conn
	bin   string
	agent *lab.Proc
	// What a deployment sets beyond the agents' common configuration:
	// [store] instances_path (Nova's, for hard links), the copy's
	// bandwidth limit (0: bandwidth) and whole sections, written before
	// [peers] ([replicator] stays last, for setMethod).
	instancesPath string
	bandwidth     int64
	extraConf     string
}

// instance is a Nova instance of the tiny guest whose one disk is a
// managed disk, created in A's store before A's agent starts (the agent
// serves the disks of its store; nothing else puts disks there).
type instance struct {
	uuid   string
	domain string
	ref    agent.DiskRef
	seed   uint64 // of its pseudo-random data
	// adopt: the data starts in a local file disk on A, which the agent
	// adopts (shareless adopt creates the managed disk).
	adopt bool
}

// startCloud brings up the lab, the broker and both agents, with one
// instance per name, created on A; the instances named in adopt start on
// a local file disk instead.
func startCloud(t *testing.T, names []string, adopt ...string) (*cloud, map[string]*instance) {
	t.Helper()
	testenv.SkipIfShort(t)
	testenv.NeedCommands(t, append(rabbit.Commands(), "qemu-img")...)
	novaemit.Need(t)
	c := &cloud{}
	work := t.TempDir()
	c.bin = buildShareless(t, work)
	c.lab = lab.Start(t, lab.Options{Hooks: hooks(c.bin)})

	brokerDir := filepath.Join(work, "rabbit")
	if err := os.Mkdir(brokerDir, 0o700); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	var err error
	if c.broker, err = rabbit.Start(ctx, brokerDir); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.broker.Close() })
	brokerAddr := c.lab.Expose(t, fmt.Sprintf("127.0.0.1:%d", c.broker.AMQPPort))
	transport := fmt.Sprintf("rabbit://guest:guest@%s/", brokerAddr)

	chap := randomHex(t, 8) // 16 characters: what QEMU's libiscsi accepts
	psk := randomHex(t, 32)
	c.a = c.newNode(t, c.lab.A())
	c.b = c.newNode(t, c.lab.B())
	for _, n := range []*node{c.a, c.b} {
		if err := n.configure(transport, chap, psk, c.a, c.b); err != nil {
			t.Fatal(err)
		}
	}
	insts := map[string]*instance{}
	for i, name := range names {
		inst := &instance{uuid: testenv.UUID(), domain: "shl-" + c.lab.ID + "-" + name, seed: uint64(i + 1),
			adopt: slices.Contains(adopt, name)}
		if inst.ref, err = agent.NewDiskRef(inst.uuid, "disk"); err != nil {
			t.Fatal(err)
		}
		if !inst.adopt {
			if err := c.a.createDisk(inst); err != nil {
				t.Fatal(err)
			}
		}
		insts[name] = inst
	}
	for _, n := range []*node{c.a, c.b} {
		if err := n.startAgent(); err != nil {
			t.Fatal(err)
		}
	}
	// Before the broker closes (cleanups run backwards), each agent must
	// stop as systemd stops it: SIGTERM, exit status 0.
	t.Cleanup(func() {
		for _, n := range []*node{c.a, c.b} {
			n.stopAgent()
		}
	})
	return c, insts
}

// buildShareless builds the binary into dir.
func buildShareless(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "shareless")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/shareless").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// hooks is the libvirt hook every host runs: bin's, asking the host's
// agent.
func hooks(bin string) map[string][]byte {
	return map[string][]byte{"shareless": fmt.Appendf(nil, "#!/bin/sh\nexec %s hook --socket %s --state-dir %s --timeout 30s qemu \"$@\"\n",
		bin, socketPath, statePath)}
}

func (c *cloud) newNode(t *testing.T, h *lab.Host) *node {
	t.Helper()
	conn, err := virt.Connect(t.Context(), virt.Config{URI: h.URI(), Logger: lab.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &node{t: t, host: h, name: h.Hostname, conn: conn, bin: c.bin}
}

// outside is the path of a host-private file as the test sees it.
func (n *node) outside(inside string) string {
	for _, m := range []struct{ in, out string }{{"/etc/libvirt", "etc"}, {"/run/libvirt", "run"}, {"/var/lib/libvirt", "lib"}} {
		if rest, ok := strings.CutPrefix(inside, m.in); ok {
			return filepath.Join(n.host.Dir, m.out, rest)
		}
	}
	panic("not a host-private path: " + inside)
}

// configure writes the agent's configuration and secrets, and defines the
// CHAP secret in the host's libvirt, as a deployment does once per host.
func (n *node) configure(transport, chap, psk string, peers ...*node) error {
	dir := filepath.Dir(n.outside(confPath))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for f, v := range map[string]string{"chap": chap, "psk": psk} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte(v+"\n"), 0o600); err != nil {
			return err
		}
	}
	var peerLines strings.Builder
	for _, p := range peers {
		fmt.Fprintf(&peerLines, "%s = %s:%d\n", p.name, p.host.Addr, apiPort)
	}
	conf := fmt.Sprintf(`[DEFAULT]
host = %s
state_path = %s
log_level = debug

[amqp]
transport_url = %s
reconnect_min = 200ms
reconnect_max = 2s

[iscsi]
listen = 127.0.0.1, %s
port = %d
chap_user = %s
chap_secret_file = /etc/libvirt/shareless/chap

[store]
path = %s
instances_path = %s

[api]
listen = %s:%d
psk_file = /etc/libvirt/shareless/psk
socket = %s
metrics_listen = %s

%s
[peers]
%s
[replicator]
grain = %d
chunk = %d
bandwidth_limit = %d
source_timeout = 60s
hook_wait = %s
`, n.name, statePath, transport, n.host.Addr, iscsiPort, chapUser, storePath, n.instancesPath, n.host.Addr, apiPort, socketPath, metricsAddr,
		n.extraConf, peerLines.String(), grain, chunk, cmp.Or(n.bandwidth, bandwidth), hookWait)
	if err := os.WriteFile(n.outside(confPath), []byte(conf), 0o600); err != nil {
		return err
	}
	// The agent defines the same secret once it reaches libvirtd; the
	// deployment's own, defined first, cannot race a guest's first boot.
	ctx := n.t.Context()
	s, err := n.conn.DefineISCSISecret(ctx, secretUsage, "shareless managed disks")
	if err != nil {
		return err
	}
	return n.conn.SetSecretValue(ctx, s, []byte(chap))
}

// createDisk puts inst's managed disk, filled with its data, into the
// node's store. The agent must not be running.
func (n *node) createDisk(inst *instance) error {
	ctx := n.t.Context()
	st, err := replicator.NewStore(vfs.OS{}, n.outside(storePath), replicator.StoreOptions{Grain: grain, Chunk: chunk})
	if err != nil {
		return err
	}
	rep, err := st.Create(ctx, inst.ref.String(), diskSize)
	if err != nil {
		return err
	}
	if err := rep.WriteAt(ctx, inst.data()[:dataSize], 0, false); err != nil {
		rep.Close()
		return err
	}
	if err := rep.Flush(ctx); err != nil {
		rep.Close()
		return err
	}
	return rep.Close()
}

// data is the disk's content at creation.
func (inst *instance) data() []byte {
	b := make([]byte, diskSize)
	mrand.NewChaCha8([32]byte{byte(inst.seed)}).Read(b[:dataSize])
	return b
}

// startAgent runs the node's agent inside its host and waits until its
// local API answers.
func (n *node) startAgent() error {
	p, err := n.host.Spawn(n.bin, "agent", "--config-file", confPath)
	if err != nil {
		return err
	}
	n.agent = p
	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case <-p.Exited():
			return fmt.Errorf("agent on %s exited:\n%s", n.host.Name, tailFile(p.Log, 20))
		default:
		}
		_, err := n.status()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("agent on %s does not answer: %w\n%s", n.host.Name, err, tailFile(p.Log, 20))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stopAgent stops the agent with SIGTERM; it must exit cleanly.
func (n *node) stopAgent() {
	if err := n.agent.Stop(15 * time.Second); err != nil {
		n.t.Errorf("agent on %s: %v", n.host.Name, err)
	}
	if st := n.agent.ExitState(); st != nil && !st.Success() {
		n.t.Errorf("agent on %s: %v after SIGTERM\n%s", n.host.Name, st, tailFile(n.agent.Log, 20))
	}
}

// sourceReadBytes is what n's agent read from inst's source since it
// opened the replica: the copier, remote reads and the rest of partially
// written blocks, i.e. the bytes the copy moved between the hosts
// (shareless_replica_source_read_bytes_total, agent/API.md). The metrics
// listen on the host's own loopback.
func (n *node) sourceReadBytes(inst *instance) (int64, error) {
	return n.metric(fmt.Sprintf("shareless_replica_source_read_bytes_total{instance=%q,disk=%q}", inst.uuid, inst.ref.Disk))
}

// metric reads one series of n's /metrics.
func (n *node) metric(series string) (int64, error) {
	hc := &http.Client{Transport: &http.Transport{DialContext: n.host.Dial}, Timeout: 5 * time.Second}
	defer hc.CloseIdleConnections()
	resp, err := hc.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	key := series + " "
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, key); ok {
			return strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		}
	}
	return 0, fmt.Errorf("no %s in the metrics of %s", key, n.host.Name)
}

func (n *node) status() (localapi.Status, error) {
	ctx, cancel := context.WithTimeout(n.t.Context(), 5*time.Second)
	defer cancel()
	raw, err := localapi.NewClient(n.outside(socketPath)).Status(ctx)
	if err != nil {
		return localapi.Status{}, err
	}
	var st localapi.Status
	err = json.Unmarshal(raw, &st)
	return st, err
}

// disk is inst's managed disk as the node's agent reports it.
func (n *node) disk(inst *instance) (localapi.Disk, bool) {
	st, err := n.status()
	if err != nil {
		return localapi.Disk{}, false
	}
	for _, d := range st.Disks {
		if d.Instance == inst.uuid && d.Disk == inst.ref.Disk {
			return d, true
		}
	}
	return localapi.Disk{}, false
}

// migration is the node's record of inst in role ("source", "dest").
func (n *node) migration(inst *instance, role string) (localapi.Migration, bool) {
	st, err := n.status()
	if err != nil {
		return localapi.Migration{}, false
	}
	for _, m := range st.Migrations {
		if m.Instance == inst.uuid && m.Role == role {
			return m, true
		}
	}
	return localapi.Migration{}, false
}

// image is the outside path of inst's image in the node's store.
func (n *node) image(inst *instance) string {
	return filepath.Join(n.outside(storePath), inst.ref.String(), "image")
}

func tailFile(path string, lines int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	l := strings.Split(string(bytes.TrimRight(b, "\n")), "\n")
	return strings.Join(l[max(0, len(l)-lines):], "\n")
}

func randomHex(t *testing.T, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}
