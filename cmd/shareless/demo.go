package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/shareless/shareless/blockdev"
	"github.com/shareless/shareless/iscsi/chap"
	"github.com/shareless/shareless/iscsi/initiator"
	"github.com/shareless/shareless/iscsi/scsi"
	"github.com/shareless/shareless/iscsi/target"
	"github.com/shareless/shareless/replicator"
	"github.com/shareless/shareless/replicator/vfs"
)

const demoHelp = `usage: shareless demo [--dir DIR] [--size BYTES] [--rate BYTES/S] [--writes N] [-v]

Runs Method C on one machine, over real iSCSI on 127.0.0.1: two stores act as
hosts A and B. A creates a disk and fills part of it; B builds a post-copy
replica of it, served by its own target, while QEMU (qemu-io) writes through
B's LUN during the copy; then the disk goes back to A, which copies only the
blocks B modified. Every image is checked at the end.
`

// demoDisk is the disk's name in both stores; its IQN is the same on both
// hosts, as a managed disk's is.
const (
	demoDisk = "disk0"
	demoIQN  = "iqn.2026-11.io.shareless:demo.disk0"
	demoUser = "shareless-demo"
)

func runDemo(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Usage = func() { fmt.Fprint(e.stderr, demoHelp); fs.PrintDefaults() }
	dir := fs.String("dir", "", "working directory (default: a temporary one, removed afterwards)")
	size := fs.Int64("size", 1<<30, "disk size in bytes")
	rate := fs.Int64("rate", 0, "copy bandwidth limit in bytes per second (default: the disk size / 15 s, so that the guest's writes meet the copy)")
	verbose := fs.Bool("v", false, "log the components' events")
	writes := fs.Int("writes", 0, "4 KiB writes QEMU makes through B's LUN during the copy (default: 1% of the disk)")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if fs.NArg() != 0 || *size < 16<<20 || *size%(1<<20) != 0 {
		return usagef("--size must be a whole number of MiB, at least 16 MiB, and there are no arguments")
	}
	if *writes == 0 {
		*writes = int(*size / 100 / 4096)
	}
	if *rate == 0 {
		*rate = *size / 15
	}
	log := slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if *verbose {
		log = e.log
	}
	if _, err := exec.LookPath("qemu-io"); err != nil {
		return fmt.Errorf("qemu-io not found: run 'make demo', which installs it (scripts/deps.sh)")
	}
	if *dir == "" {
		tmp, err := os.MkdirTemp("", "shareless-demo-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		*dir = tmp
	}
	d := &demo{out: e.stdout, log: log, dir: *dir, size: *size, rate: *rate, writes: *writes}
	return d.run(ctx)
}

type demo struct {
	outMu        sync.Mutex // the guest's goroutine prints too
	out          io.Writer
	log          *slog.Logger
	dir          string
	size, rate   int64
	writes       int
	user, secret string
	secretFile   string
}

// host is one side of the demo: a store and the target serving its disk.
type host struct {
	name    string
	store   *replicator.Store
	disk    *replicator.Replica
	target  *target.Target
	stopped chan error
	addr    string
}

func (d *demo) printf(format string, a ...any) {
	d.outMu.Lock()
	defer d.outMu.Unlock()
	fmt.Fprintf(d.out, format+"\n", a...)
}

func (d *demo) run(ctx context.Context) error {
	if err := d.makeSecret(); err != nil {
		return err
	}
	a, err := d.newHost("A")
	if err != nil {
		return err
	}
	b, err := d.newHost("B")
	if err != nil {
		return err
	}
	d.printf("shareless demo: hosts A and B are two stores under %s; iSCSI on 127.0.0.1 with CHAP", d.dir)

	// Host A: a base disk with data, exported as the local QEMU would see it.
	if a.disk, err = a.store.Create(ctx, demoDisk, d.size); err != nil {
		return err
	}
	written, err := fillDisk(ctx, a.disk)
	if err != nil {
		return err
	}
	if err := a.serve(ctx, d); err != nil {
		return err
	}
	defer a.stop()
	d.printf("A: disk %s of %s, %s of data written, image %s, exported as %s on %s", demoDisk, human(d.size), human(written), a.disk.ID(), demoIQN, a.addr)

	// Host B: the VM arrives; its disk is a replica of A's, pass-through until
	// A seals.
	srcA, err := d.dial(ctx, a.addr)
	if err != nil {
		return err
	}
	var plan replicator.Plan
	if b.disk, plan, err = b.store.Replicate(ctx, demoDisk, a.disk.Origin(), srcA, replicator.ReplicaOptions{Rate: d.rate}); err != nil {
		return err
	}
	if err := b.serve(ctx, d); err != nil {
		return err
	}
	defer b.stop()
	d.printf("B: replica of %s (plan %s) exported on %s", demoDisk, plan, b.addr)

	// Switch-over: A's VM has stopped, A seals, B may copy.
	if err := a.disk.Seal(ctx); err != nil {
		return err
	}
	if _, err := b.disk.SourceSealed(ctx, nil); err != nil {
		return err
	}
	d.printf("switch-over: A sealed its disk; B copies it in the background at up to %s/s", human(d.rate))

	// The guest writes through B's LUN while the copy runs.
	start := time.Now()
	type result struct {
		ws  []guestWrite
		err error
	}
	guestDone := make(chan result, 1)
	go func() {
		ws, err := d.guestWrites(ctx, b.addr)
		guestDone <- result{ws, err}
	}()
	if err := d.waitComplete(ctx, "B", b.disk); err != nil {
		return err
	}
	st := b.disk.Stats()
	d.printf("B: copy complete %s after the switch-over: %s copied from A, %s read from A in all",
		time.Since(start).Round(10*time.Millisecond), human(st.BytesCopied), human(st.SourceBytes))
	res := <-guestDone
	if res.err != nil {
		return res.err
	}
	// B holds every block: the VM no longer needs A, which may power off.
	if err := srcA.Close(); err != nil {
		return err
	}
	if err := d.verify(ctx, b.disk, a.disk, res.ws); err != nil {
		return fmt.Errorf("B's image: %w", err)
	}
	d.printf("B: image verified: A's data plus QEMU's %d writes", len(res.ws))

	// The way back: A takes the VM back and copies only what B modified.
	b.disk.SetRate(0)
	srcB, err := d.dial(ctx, b.addr)
	if err != nil {
		return err
	}
	defer srcB.Close()
	back, err := d.goBack(ctx, a, b, srcB)
	if err != nil {
		return err
	}
	d.printf("way back: done in %s with plan %s from A's own image plus B's %d modified blocks of %s: moved %s of a %s disk (%.2f%%); the modified set is %s",
		back.elapsed.Round(10*time.Millisecond), back.plan, back.delta.Modified.Count(), human(back.delta.Grain),
		human(back.moved), human(d.size), 100*float64(back.moved)/float64(d.size), human(back.delta.Modified.Count()*back.delta.Grain))
	if err := d.verify(ctx, a.disk, b.disk, nil); err != nil {
		return fmt.Errorf("A's image after the way back: %w", err)
	}
	d.printf("A: image verified equal to B's")
	return errors.Join(a.disk.Close(), b.disk.Close())
}

// trip is what one way back did.
type trip struct {
	plan    replicator.Plan
	delta   *replicator.Delta
	elapsed time.Duration // from the source's seal to a complete, durable disk
	moved   int64         // bytes the new replica read from its source
}

// goBack moves the disk home from away, where the guest ran last, as a
// migration back does (rule 7): home, which holds the sealed image away
// copied, replicates away's disk, which src reads; away seals and hands over
// its Delta; home copies the modified blocks and serves the disk again.
// away's disk stays open and sealed; src is the caller's to close.
func (d *demo) goBack(ctx context.Context, home, away *host, src replicator.Source) (trip, error) {
	var t trip
	var err error
	if err := errors.Join(home.stopTarget(), home.disk.Close()); err != nil {
		return t, err
	}
	if home.disk, t.plan, err = home.store.Replicate(ctx, demoDisk, away.disk.Origin(), src, replicator.ReplicaOptions{}); err != nil {
		return t, err
	}
	if err := away.disk.Seal(ctx); err != nil {
		return t, err
	}
	if t.delta, err = away.disk.Delta(); err != nil {
		return t, err
	}
	start := time.Now()
	if t.plan, err = home.disk.SourceSealed(ctx, t.delta); err != nil {
		return t, err
	}
	d.printf("way back: %s sealed; %s rebuilds %s with plan %s", away.name, home.name, demoDisk, t.plan)
	if err := d.waitComplete(ctx, home.name, home.disk); err != nil {
		return t, err
	}
	if err := home.disk.Flush(ctx); err != nil {
		return t, err
	}
	t.elapsed, t.moved = time.Since(start), home.disk.Stats().SourceBytes
	return t, home.serve(ctx, d)
}

func (d *demo) makeSecret() error {
	raw := make([]byte, 12)
	if _, err := rand.Read(raw); err != nil {
		return err
	}
	d.user, d.secret = demoUser, hex.EncodeToString(raw)
	d.secretFile = filepath.Join(d.dir, "chap-secret")
	return os.WriteFile(d.secretFile, []byte(d.secret), 0o600)
}

func (d *demo) credentials() (chap.Credentials, error) {
	s, err := chap.NewSecret([]byte(d.secret))
	return chap.Credentials{User: d.user, Secret: s}, err
}

func (d *demo) newHost(name string) (*host, error) {
	st, err := replicator.NewStore(vfs.OS{}, filepath.Join(d.dir, "host"+name), replicator.StoreOptions{
		Log: d.log.With("host", name),
	})
	if err != nil {
		return nil, err
	}
	return &host{name: name, store: st}, nil
}

// serve exports the host's disk on a free loopback port.
func (h *host) serve(ctx context.Context, d *demo) error {
	var err error
	h.target, h.addr, h.stopped, err = d.serveDevice(ctx, h.name, h.disk, h.disk.ID().String())
	return err
}

// serveDevice exports dev as the demo disk's LUN, with CHAP, on a free
// loopback port; stopped receives what Serve returns.
func (d *demo) serveDevice(ctx context.Context, name string, dev blockdev.Device, id string) (t *target.Target, addr string, stopped chan error, err error) {
	creds, err := d.credentials()
	if err != nil {
		return nil, "", nil, err
	}
	t, err = target.New(target.Config{
		IQN:    demoIQN,
		LUNs:   []target.LUN{{Device: dev, Unit: scsi.UnitConfig{ID: id}}},
		Listen: []string{"127.0.0.1:0"},
		CHAP:   &creds,
		Logger: d.log.With("host", name),
	})
	if err != nil {
		return nil, "", nil, err
	}
	stopped = make(chan error, 1)
	go func() { stopped <- t.Serve(ctx) }()
	return t, t.Addrs()[0].String(), stopped, nil
}

func (h *host) stopTarget() error {
	if h.target == nil {
		return nil
	}
	err := h.target.Close()
	<-h.stopped
	h.target = nil
	return err
}

func (h *host) stop() { h.stopTarget() }

func (d *demo) dial(ctx context.Context, addr string) (*initiator.Session, error) {
	cfg, err := d.initiatorConfig(addr)
	if err != nil {
		return nil, err
	}
	return initiator.Dial(ctx, cfg)
}

// initiatorConfig is how our initiator logs in to the demo disk at addr.
func (d *demo) initiatorConfig(addr string) (initiator.Config, error) {
	creds, err := d.credentials()
	return initiator.Config{Addr: addr, Target: demoIQN, Credentials: initiator.Credentials{CHAP: creds}, Logger: d.log}, err
}

// fillDisk writes distinct data into the first half of every 4 MiB of the
// disk, leaving the rest as holes, and flushes.
func fillDisk(ctx context.Context, disk blockdev.Device) (int64, error) {
	const stride, run = 4 << 20, 2 << 20
	buf := make([]byte, run)
	var written int64
	for off := int64(0); off < disk.Size(); off += stride {
		if _, err := rand.Read(buf); err != nil {
			return 0, err
		}
		if err := disk.WriteAt(ctx, buf, off, false); err != nil {
			return 0, err
		}
		written += run
	}
	return written, disk.Flush(ctx)
}

// guestWrite is one write QEMU made through B's LUN.
type guestWrite struct {
	off     int64
	pattern byte
}

// guestWrites runs qemu-io against B's LUN: scattered 4 KiB writes with
// known patterns, then a flush, while the copy runs.
func (d *demo) guestWrites(ctx context.Context, addr string) ([]guestWrite, error) {
	blocks := d.size / 4096
	seen := map[int64]bool{}
	var ws []guestWrite
	for len(ws) < d.writes {
		n, err := rand.Int(rand.Reader, big.NewInt(blocks))
		if err != nil {
			return nil, err
		}
		off := n.Int64() * 4096
		if seen[off] {
			continue
		}
		seen[off] = true
		ws = append(ws, guestWrite{off: off, pattern: byte(1 + len(ws)%250)})
	}
	script := filepath.Join(d.dir, "qemu-io.cmds")
	var cmds strings.Builder
	for _, w := range ws {
		fmt.Fprintf(&cmds, "write -q -P %d %d 4096\n", w.pattern, w.off)
	}
	cmds.WriteString("flush\n")
	if err := os.WriteFile(script, []byte(cmds.String()), 0o644); err != nil {
		return nil, err
	}
	start := time.Now()
	if err := d.qemuIO(ctx, addr, script); err != nil {
		return nil, err
	}
	d.printf("QEMU (qemu-io): %d scattered 4 KiB writes and a flush through B's LUN in %s",
		len(ws), time.Since(start).Round(10*time.Millisecond))
	return ws, nil
}

// qemuImageOpts are qemu's --image-opts for the demo disk's LUN at addr,
// logged in with the demo's CHAP user and the secret object "sec0".
func (d *demo) qemuImageOpts(addr string) string {
	return fmt.Sprintf("driver=raw,file.driver=iscsi,file.transport=tcp,file.portal=%s,file.target=%s,file.lun=0,file.user=%s,file.password-secret=sec0",
		addr, demoIQN, d.user)
}

// qemuIO runs the qemu-io commands in the file script against the demo
// disk's LUN at addr, as QEMU's own iSCSI initiator (libiscsi). It fails if
// qemu-io does, or if a command reports an error.
func (d *demo) qemuIO(ctx context.Context, addr, script string) error {
	stdin, err := os.Open(script)
	if err != nil {
		return err
	}
	defer stdin.Close()
	cmd := exec.CommandContext(ctx, "qemu-io", "--object", "secret,id=sec0,file="+d.secretFile, "--image-opts", d.qemuImageOpts(addr))
	cmd.Stdin = stdin
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("qemu-io: %w: %s", err, bytes.TrimSpace(out))
	}
	// With -q, qemu-io prints nothing but its prompts and failures.
	if msg := bytes.TrimSpace(bytes.ReplaceAll(out, []byte("qemu-io>"), nil)); len(msg) != 0 {
		return fmt.Errorf("qemu-io: %s", msg)
	}
	return nil
}

// waitComplete prints the replica's progress until it holds every block.
func (d *demo) waitComplete(ctx context.Context, name string, r *replicator.Replica) error {
	// Poll often, so that a caller timing the copy is not off by the
	// printing interval.
	const poll, every = 5 * time.Millisecond, 500 * time.Millisecond
	tick := time.NewTicker(poll)
	defer tick.Stop()
	var printed time.Time
	for {
		st := r.Stats()
		if st.BytesRemaining == 0 {
			return nil
		}
		if !st.SourceDownSince.IsZero() {
			return fmt.Errorf("%s: source unreachable since %s", name, st.SourceDownSince.Format(time.TimeOnly))
		}
		if time.Since(printed) >= every {
			printed = time.Now()
			eta := "?"
			if st.ETA > 0 {
				eta = st.ETA.Round(time.Second).String()
			}
			d.printf("%s: %s  %s of %s local, %s/s, ETA %s", name, bar(st.BytesLocal, st.Size), human(st.BytesLocal), human(st.Size),
				human(int64(st.Rate)), eta)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("interrupted with %s of %s copied: %w", human(st.BytesLocal), human(st.Size), ctx.Err())
		case <-tick.C:
		}
	}
}

func bar(done, total int64) string {
	const width = 30
	fill := 0
	if total > 0 {
		fill = int(done * width / total)
	}
	return "[" + strings.Repeat("#", fill) + strings.Repeat(".", width-fill) + "]"
}

// verify compares got with want, block by block, where the guest's writes
// (if any) replace want's data.
func (d *demo) verify(ctx context.Context, got, want blockdev.Device, guest []guestWrite) error {
	patterns := map[int64]byte{}
	for _, w := range guest {
		patterns[w.off] = w.pattern
	}
	const step = 4 << 20
	g, w := make([]byte, step), make([]byte, step)
	for off := int64(0); off < d.size; off += step {
		if err := got.ReadAt(ctx, g, off); err != nil {
			return err
		}
		if err := want.ReadAt(ctx, w, off); err != nil {
			return err
		}
		for blk := off; blk < off+step; blk += 4096 {
			if p, ok := patterns[blk]; ok {
				copy(w[blk-off:blk-off+4096], bytes.Repeat([]byte{p}, 4096))
			}
		}
		if !bytes.Equal(g, w) {
			i := 0
			for g[i] == w[i] {
				i++
			}
			return fmt.Errorf("differs at offset %d", off+int64(i))
		}
	}
	return nil
}
