package main

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/shareless/shareless/blockdev"
	"github.com/shareless/shareless/replicator"
)

const benchHelp = `usage: shareless bench replica [--dir DIR] [--size BYTES] [--reads N]

Measures the post-copy replica against a peer in the same run, over real
iSCSI on 127.0.0.1, and prints one line per case:

  bench replica/<case>: ours=<v> peer=<v> ratio=<v>

  copy            copy rate of a replica from a source export (our target)
                  against qemu-img convert -m 16 -W -O raw from that export
  randread-qd32-copiedN
                  4 KiB reads at queue depth 32 (qemu-img bench, strided over
                  the disk: every read in another copy chunk and tracking
                  block, none read twice) through a replica while it copies,
                  starting when N percent of it is copied, against the same
                  through a plain export of a local file
  randread-qd32-complete
                  the same once the replica holds every block
                  (each randread case runs three turns, each against the
                  peer measured just before it; the median turn is printed,
                  and every turn with its CPU time per read: this process,
                  both hosts' targets, the replica and its copier, plus
                  qemu-img)
  wayback-Npct-time, wayback-Npct-bytes
                  the way back after N percent of the blocks were modified,
                  against the full copy of the copy case; bytes are the
                  Data-In payload of READs counted on the wire

A ratio above 1 favours us for copy and randread; for the way back, one
below 1 does (the goal for bytes: the modified set, N percent).
`

func runBench(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Usage = func() { fmt.Fprint(e.stderr, benchHelp); fs.PrintDefaults() }
	dir := fs.String("dir", "", "working directory (default: a temporary one, removed afterwards)")
	size := fs.Int64("size", 1<<30, "disk size in bytes")
	reads := fs.Int("reads", 0, "4 KiB reads per randread run (default: one per 4 tracking blocks)")
	if len(args) == 0 || args[0] != "replica" {
		fs.Usage()
		return usagef("bench takes a suite: replica")
	}
	if err := fs.Parse(args[1:]); err != nil {
		return usageError{err}
	}
	if fs.NArg() != 0 || *size < 64<<20 || *size%(1<<20) != 0 || *reads < 0 {
		return usagef("--size must be a whole number of MiB, at least 64 MiB, --reads not negative, and there are no more arguments")
	}
	for _, c := range []string{"qemu-img"} {
		if _, err := exec.LookPath(c); err != nil {
			return fmt.Errorf("%s not found: run 'make bench', which installs it (scripts/deps.sh)", c)
		}
	}
	if *dir == "" {
		tmp, err := os.MkdirTemp("", "shareless-bench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		*dir = tmp
	}
	d := &demo{out: io.Discard, log: slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		dir: *dir, size: *size}
	if *reads == 0 {
		// Enough for the peer's run to last a fifth of a second on
		// this kind of machine, few enough that the copied50 case ends
		// before the copy does.
		*reads = int(*size / replicator.DefaultGrain / 4)
	}
	b := &replicaBench{demo: d, out: e.stdout, reads: *reads}
	return b.run(ctx)
}

type replicaBench struct {
	*demo
	out   io.Writer
	reads int
}

// result prints one case. For the ratio, higher must mean better for us:
// callers pass ours and peer in that sense.
func (b *replicaBench) result(name, unit string, ours, peer float64) {
	fmt.Fprintf(b.out, "bench replica/%s: ours=%.4g%s peer=%.4g%s ratio=%.3f\n", name, ours, unit, peer, unit, ours/peer)
}

func (b *replicaBench) note(format string, a ...any) {
	fmt.Fprintf(b.out, "  "+format+"\n", a...)
}

func (b *replicaBench) run(ctx context.Context) error {
	if err := b.makeSecret(); err != nil {
		return err
	}
	a, err := b.newHost("A")
	if err != nil {
		return err
	}
	h, err := b.newHost("B")
	if err != nil {
		return err
	}
	if a.disk, err = a.store.Create(ctx, demoDisk, b.size); err != nil {
		return err
	}
	rng := rand.New(rand.NewPCG(1, 1))
	if err := fillAll(ctx, a.disk, rng); err != nil {
		return err
	}
	if err := a.disk.Seal(ctx); err != nil {
		return err
	}
	if err := a.serve(ctx, b.demo); err != nil {
		return err
	}
	defer a.stop()
	b.note("disk of %s, every byte data; host A's sealed disk served by our target on %s", human(b.size), a.addr)

	// (a) A full copy by a replica against qemu-img convert, in turns,
	// each from a clean page cache (both are bound by the local disk's
	// writes); the medians are compared.
	src, err := b.dial(ctx, a.addr)
	if err != nil {
		return err
	}
	defer src.Close()
	var oursT, peerT []time.Duration
	for i := range copyTurns {
		if i > 0 {
			h.stop()
			if err := errors.Join(h.disk.Close(), h.store.Remove(demoDisk)); err != nil {
				return err
			}
		}
		syscall.Sync()
		t, err := b.copyOnce(ctx, a, h, src, 0)
		if err != nil {
			return err
		}
		syscall.Sync()
		p, err := b.qemuConvert(ctx, a.addr)
		if err != nil {
			return err
		}
		oursT, peerT = append(oursT, t), append(peerT, p)
	}
	full := median(oursT)
	b.result("copy", "MiB/s", mibps(b.size, full), mibps(b.size, median(peerT)))
	b.note("copy times, ours %v, qemu-img convert %v", oursT, peerT)

	// (b) Reads through a replica while it copies, at the start of the copy
	// (nearly every read goes to the source) and half way, then once it is
	// complete, each against a plain export of a local file with the same
	// data measured just before (on a shared machine the peer's own rate
	// drifts from one minute to the next).
	plain := filepath.Join(b.dir, "plain.raw")
	if err := saveImage(ctx, a.disk, plain); err != nil {
		return err
	}
	defer os.Remove(plain)
	f, err := blockdev.OpenFile(plain, false)
	if err != nil {
		return err
	}
	defer f.Close()
	pt, paddr, pstopped, err := b.serveDevice(ctx, "plain", f, "plain")
	if err != nil {
		return err
	}
	defer func() { pt.Close(); <-pstopped }()
	peerReads := func() (benchRun, error) {
		syscall.Sync()
		return b.qemuBench(ctx, paddr)
	}
	for _, at := range []int64{0, 50} {
		var turns []readTurn
		for range readTurns {
			peer, err := peerReads()
			if err != nil {
				return err
			}
			h.stop()
			if err := errors.Join(h.disk.Close(), h.store.Remove(demoDisk)); err != nil {
				return err
			}
			// The copy runs at a tenth of the disk per second, so that it
			// is still running when the reads end.
			if _, err := b.copyOnce(ctx, a, h, src, b.size/10); err != nil {
				return err
			}
			for h.disk.Stats().BytesLocal < b.size*at/100 {
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(5 * time.Millisecond):
				}
			}
			before := h.disk.Stats().BytesLocal
			ours, err := b.qemuBench(ctx, h.addr)
			if err != nil {
				return err
			}
			st := h.disk.Stats()
			if st.State != replicator.StateCopying {
				return fmt.Errorf("the replica finished copying during the read run: lower --reads")
			}
			turns = append(turns, readTurn{ours, peer, before, st.BytesLocal})
		}
		b.readResult(fmt.Sprintf("randread-qd32-copied%d", at), turns)
	}

	// The same reads once the replica is complete: the cost of the
	// replica's own read path, without the source.
	h.disk.SetRate(0)
	if err := errors.Join(b.waitComplete(ctx, h.name, h.disk), src.Close()); err != nil {
		return err
	}
	var turns []readTurn
	for range readTurns {
		peer, err := peerReads()
		if err != nil {
			return err
		}
		syscall.Sync()
		ours, err := b.qemuBench(ctx, h.addr)
		if err != nil {
			return err
		}
		turns = append(turns, readTurn{ours, peer, b.size, b.size})
	}
	b.readResult("randread-qd32-complete", turns)

	// (c) The way back, against the full copy of (a).
	home, away := a, h
	for _, share := range []float64{0.01, 0.10} {
		guest, err := b.dial(ctx, away.addr)
		if err != nil {
			return err
		}
		n, err := modify(ctx, guest, rng, replicator.DefaultGrain, share, false)
		if err := errors.Join(err, guest.Close()); err != nil {
			return err
		}
		var wire wireCount
		t, err := b.countedWayBack(ctx, home, away, &wire)
		if err != nil {
			return err
		}
		moved := wire.readIn
		name := fmt.Sprintf("wayback-%dpct", int(share*100))
		b.result(name+"-time", "s", t.elapsed.Seconds(), full.Seconds())
		b.result(name+"-bytes", "MiB", float64(moved)/(1<<20), float64(b.size)/(1<<20))
		b.note("%d scattered 4 KiB writes in distinct %s blocks; modified set %s, READ data on the wire %s, GET LBA STATUS answers %d bytes (plan %s)",
			n, human(replicator.DefaultGrain), human(t.delta.Modified.Count()*t.delta.Grain), human(moved), wire.dataIn.Load()-moved, t.plan)
		home, away = away, home
	}
	return errors.Join(a.disk.Close(), h.disk.Close())
}

// copyOnce makes to's disk a full replica of from's, which src reads, and
// serves it. With no rate limit it returns when the copy is complete and
// durable, with the time it took; with one, as soon as it copies.
func (b *replicaBench) copyOnce(ctx context.Context, from, to *host, src replicator.Source, rate int64) (time.Duration, error) {
	var err error
	if to.disk, _, err = to.store.Replicate(ctx, demoDisk, from.disk.Origin(), src, replicator.ReplicaOptions{Rate: rate}); err != nil {
		return 0, err
	}
	if err := to.serve(ctx, b.demo); err != nil {
		return 0, err
	}
	start := time.Now()
	if _, err := to.disk.SourceSealed(ctx, nil); err != nil || rate > 0 {
		return 0, err
	}
	for to.disk.State() != replicator.StateComplete {
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
	return time.Since(start), to.disk.Flush(ctx)
}

func (b *replicaBench) qemuConvert(ctx context.Context, addr string) (time.Duration, error) {
	out := filepath.Join(b.dir, "convert.raw")
	defer os.Remove(out)
	start := time.Now()
	cmd := exec.CommandContext(ctx, "qemu-img", "convert", "--object", "secret,id=sec0,file="+b.secretFile,
		"--image-opts", "-m", "16", "-W", "-O", "raw", b.qemuImageOpts(addr), out)
	if msg, err := cmd.CombinedOutput(); err != nil {
		return 0, fmt.Errorf("qemu-img convert: %w: %s", err, bytes.TrimSpace(msg))
	}
	return time.Since(start), nil
}

// benchStep spreads qemu-img bench's reads over the disk: it reads at
// offsets step apart (modulo the size), and a step just over 1 MiB puts
// every read in another copy chunk and another tracking block.
const benchStep = 1<<20 + 20<<10

var benchRunTime = regexp.MustCompile(`Run completed in ([0-9.]+) seconds`)

// benchRun is what one qemu-img bench run measured: reads per second, and
// CPU time per read of this process (targets, replica, copier, source) and
// qemu-img together, which the machine's other load disturbs less than the
// rate.
type benchRun struct {
	iops float64
	cpu  time.Duration
}

// cpuTime is the user and system time of this process and of its waited-for
// children.
func cpuTime() time.Duration {
	var t time.Duration
	for _, who := range []int{syscall.RUSAGE_SELF, syscall.RUSAGE_CHILDREN} {
		var ru syscall.Rusage
		if syscall.Getrusage(who, &ru) == nil {
			t += time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		}
	}
	return t
}

// qemuBench runs qemu-img bench's 4 KiB reads at queue depth 32 on the
// demo disk's LUN at addr.
func (b *replicaBench) qemuBench(ctx context.Context, addr string) (benchRun, error) {
	// qemu-img bench takes no --object, so the CHAP secret goes in the URL
	// (libiscsi's user%password form): tolerable for a throwaway secret on
	// loopback, never for a real one.
	url := fmt.Sprintf("iscsi://%s%%%s@%s/%s/0", b.user, b.secret, addr, demoIQN)
	cmd := exec.CommandContext(ctx, "qemu-img", "bench", "-f", "raw",
		"-c", strconv.Itoa(b.reads), "-d", "32", "-s", "4096", "-S", strconv.Itoa(benchStep), "-t", "none", url)
	cpu := cpuTime()
	out, err := cmd.CombinedOutput()
	if err != nil {
		return benchRun{}, fmt.Errorf("qemu-img bench: %w: %s", err, bytes.TrimSpace(out))
	}
	cpu = cpuTime() - cpu
	m := benchRunTime.FindSubmatch(out)
	if m == nil {
		return benchRun{}, fmt.Errorf("qemu-img bench: no run time in %q", out)
	}
	secs, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil || secs <= 0 {
		return benchRun{}, fmt.Errorf("qemu-img bench: run time %q", m[1])
	}
	return benchRun{iops: float64(b.reads) / secs, cpu: cpu / time.Duration(b.reads)}, nil
}

// copyTurns is how many times each side of the copy case runs.
const copyTurns = 5

// readTurns is how many times each randread case runs, each turn against
// the peer measured just before it.
const readTurns = 3

// readTurn is one run of a randread case: ours and the peer's, and what
// the replica held before and after the reads.
type readTurn struct {
	ours, peer    benchRun
	before, after int64
}

func (t readTurn) ratio() float64 { return t.ours.iops / t.peer.iops }

// readResult prints the turn with the median ratio, and every turn.
func (b *replicaBench) readResult(name string, turns []readTurn) {
	s := slices.Clone(turns)
	slices.SortFunc(s, func(x, y readTurn) int { return cmp.Compare(x.ratio(), y.ratio()) })
	m := s[len(s)/2]
	b.result(name, "IOPS", m.ours.iops, m.peer.iops)
	for _, t := range turns {
		b.note("turn: ours %.4g peer %.4g ratio %.3f; CPU per read ours %v peer %v; the replica held %s of %s before the reads, %s after",
			t.ours.iops, t.peer.iops, t.ratio(), t.ours.cpu.Round(100*time.Nanosecond), t.peer.cpu.Round(100*time.Nanosecond),
			human(t.before), human(b.size), human(t.after))
	}
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

func mibps(n int64, d time.Duration) float64 { return float64(n) / (1 << 20) / d.Seconds() }

// fillAll writes pseudo-random data over the whole device and flushes, so
// that neither side of a comparison can skip holes or zeroes.
func fillAll(ctx context.Context, dev blockdev.Device, rng *rand.Rand) error {
	buf := make([]byte, 4<<20)
	for off := int64(0); off < dev.Size(); off += int64(len(buf)) {
		p := buf[:min(int64(len(buf)), dev.Size()-off)]
		fillRandom(rng, p)
		if err := dev.WriteAt(ctx, p, off, false); err != nil {
			return err
		}
	}
	return dev.Flush(ctx)
}

// saveImage writes the device's contents to a raw file.
func saveImage(ctx context.Context, dev blockdev.Device, path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	buf := make([]byte, 4<<20)
	for off := int64(0); off < dev.Size(); off += int64(len(buf)) {
		p := buf[:min(int64(len(buf)), dev.Size()-off)]
		if err := dev.ReadAt(ctx, p, off); err != nil {
			return err
		}
		if _, err := f.WriteAt(p, off); err != nil {
			return err
		}
	}
	return f.Close()
}
