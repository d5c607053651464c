package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shareless/shareless/internal/testenv"
	"github.com/shareless/shareless/replicator"
	"github.com/shareless/shareless/replicator/vfs"
)

var (
	crashRounds = flag.Int("crash-rounds", 20, "TestReplicaCrash: SIGKILLs of the replica process")
	crashSeed   = flag.Uint64("crash-seed", 0, "TestReplicaCrash: seed of the kill moments and the guest's writes (0: from the clock)")
)

// The replica child: TestReplicaCrash runs this test binary again with
// replicaChildEnv set, and the child serves host B's replica over our target
// until it is killed.
const (
	replicaChildEnv = "SHARELESS_TEST_REPLICA_CHILD" // host B's store directory
	childSourceEnv  = "SHARELESS_TEST_REPLICA_SOURCE"
	childSecretEnv  = "SHARELESS_TEST_REPLICA_SECRET" // CHAP secret file
	childRateEnv    = "SHARELESS_TEST_REPLICA_RATE"
)

// replicaChild opens host B's replica as the agent would after a restart
// (Store.Open resumes from the persisted progress), reads host A's export
// through our initiator, serves the replica through our target, prints
// "ready ADDR LOCALBYTES" and runs until it is killed.
func replicaChild() error {
	ctx := context.Background()
	secret, err := os.ReadFile(os.Getenv(childSecretEnv))
	if err != nil {
		return err
	}
	rate, err := strconv.ParseInt(os.Getenv(childRateEnv), 10, 64)
	if err != nil {
		return fmt.Errorf("%s: %w", childRateEnv, err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	d := &demo{log: log, user: demoUser, secret: string(secret)}
	src, err := d.dial(ctx, os.Getenv(childSourceEnv))
	if err != nil {
		return fmt.Errorf("source: %w", err)
	}
	store, err := replicator.NewStore(vfs.OS{}, os.Getenv(replicaChildEnv), replicator.StoreOptions{Log: log})
	if err != nil {
		return err
	}
	b := &host{name: "B", store: store}
	if b.disk, err = store.Open(ctx, demoDisk, src, replicator.ReplicaOptions{Rate: rate}); err != nil {
		return err
	}
	if err := b.serve(ctx, d); err != nil {
		return err
	}
	fmt.Printf("ready %s %d\n", b.addr, b.disk.Stats().BytesLocal)
	return <-b.stopped
}

// crashBatch is one batch of guest writes followed by a flush. A batch
// counts once qemu-io has returned from its flush; one that a kill
// interrupted is issued again, whole, after the restart.
type crashBatch struct {
	writes []crashWrite
}

type crashWrite struct {
	off, len int64
	pattern  byte
}

// TestReplicaCrash is issue 4's real crash test: host B's replica, in a
// process of its own, copies host A's sealed disk over our initiator and
// serves it through our target while QEMU (qemu-io, a real initiator) writes
// and flushes through its LUN; the process is killed with SIGKILL at random
// moments and restarted. At the end, after the copy completes, qemu-img
// compares the replica's image with the expected one: A's disk plus every
// batch acknowledged by a completed flush. A block wrongly committed as
// valid before its data was durable would read as a hole there and fail the
// compare; so would a lost acknowledged write.
func TestReplicaCrash(t *testing.T) {
	testenv.SkipIfShort(t)
	testenv.NeedCommands(t, "qemu-io", "qemu-img")
	seed := *crashSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	rounds := *crashRounds
	dir := t.TempDir()
	t.Cleanup(func() {
		if log, err := os.ReadFile(filepath.Join(dir, "replica.log")); t.Failed() && err == nil {
			t.Logf("replica processes' log:\n%s", log)
		}
	})
	t.Logf("seed %d, %d rounds (rerun with -crash-seed=%d -crash-rounds=%d)", seed, rounds, seed, rounds)
	rng := rand.New(rand.NewPCG(seed, 0))
	ctx := t.Context()

	const size = 64 << 20
	d, hosts := newTestDemo(t, dir, size, "A")

	// Host A: a sealed base disk with data, served by our target in this
	// process; the expected image starts as its copy.
	a := hosts[0]
	var err error
	if a.disk, err = a.store.Create(ctx, demoDisk, size); err != nil {
		t.Fatal(err)
	}
	written, err := fillDisk(ctx, a.disk)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.disk.Seal(ctx); err != nil {
		t.Fatal(err)
	}
	serveForTest(t, d, a)
	expected := filepath.Join(dir, "expected.raw")
	if err := saveImage(ctx, a.disk, expected); err != nil {
		t.Fatal(err)
	}

	// Host B: the replica is created here (the switch-over is over: A is
	// sealed), then only ever opened by the child.
	b, err := d.newHost("B")
	if err != nil {
		t.Fatal(err)
	}
	srcA, err := d.dial(ctx, a.addr)
	if err != nil {
		t.Fatal(err)
	}
	if b.disk, _, err = b.store.Replicate(ctx, demoDisk, a.disk.Origin(), srcA, replicator.ReplicaOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.disk.SourceSealed(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if err := errors.Join(b.disk.Close(), srcA.Close()); err != nil {
		t.Fatal(err)
	}

	// The copy is slow enough to span the rounds (a round lives ~0.4 s), so
	// that kills hit it. The rate limits what it reads, the data A wrote:
	// A's holes are not read.
	rate := written / int64(rounds+1) * 2
	var (
		next      int // the batch to issue next; all before it are acknowledged
		acked     []crashBatch
		lastLocal int64 // bytes the replica held at the last restart
		copying   int
	)
	newBatch := func() crashBatch {
		var bt crashBatch
		for range 1 + rng.IntN(8) {
			n := int64(1+rng.IntN(8)) * 4096
			off := rng.Int64N((size-n)/4096+1) * 4096
			bt.writes = append(bt.writes, crashWrite{off: off, len: n, pattern: byte(1 + rng.IntN(255))})
		}
		return bt
	}
	batches := []crashBatch{newBatch()}
	for round := range rounds {
		child, addr, local, err := startReplicaChild(ctx, dir, filepath.Join(dir, "hostB"), a.addr, rate)
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		if local < lastLocal {
			t.Fatalf("round %d: the replica holds %d bytes after the restart, %d before: committed progress was lost", round, local, lastLocal)
		}
		lastLocal = local
		if local < size {
			copying++
		}
		// The guest writes batch after batch until the kill. The goroutine
		// owns rng, batches, next and acked until done.
		kill := time.Duration(50+rng.IntN(600)) * time.Millisecond
		gctx, stop := context.WithCancel(ctx)
		var killed atomic.Bool // set before the kill: qemu-io fails from then on
		done := make(chan error, 1)
		go func() {
			for {
				if next == len(batches) {
					batches = append(batches, newBatch())
				}
				script := filepath.Join(dir, "batch.qemu-io")
				if err := os.WriteFile(script, []byte(batches[next].script()), 0o644); err != nil {
					done <- err
					return
				}
				if err := d.qemuIO(gctx, addr, script); err != nil {
					if killed.Load() {
						done <- nil // interrupted by the kill: issued again
					} else {
						done <- err
					}
					return
				}
				acked = append(acked, batches[next])
				next++
			}
		}()
		select {
		case <-time.After(kill):
		case err := <-done:
			t.Fatalf("round %d: guest: %v", round, err)
		}
		killed.Store(true)
		if err := child.Process.Kill(); err != nil { // SIGKILL
			t.Fatal(err)
		}
		child.Wait()
		stop()
		if err := <-done; err != nil {
			t.Fatalf("round %d: guest: %v", round, err)
		}
		t.Logf("round %d: replica held %d MiB at start; killed with %d batches acknowledged", round, local>>20, next)
	}
	// With many rounds the guest's writes alone end up covering the disk;
	// what matters is that many kills hit the copy.
	if copying < min(rounds/2, 10) {
		t.Errorf("the copy was running in only %d of %d rounds: kills must hit the copy", copying, rounds)
	}
	if next == 0 {
		t.Error("no batch was acknowledged")
	}

	// Restart once more and let the copy finish.
	srcA, err = d.dial(ctx, a.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer srcA.Close()
	if b.disk, err = b.store.Open(ctx, demoDisk, srcA, replicator.ReplicaOptions{}); err != nil {
		t.Fatal(err)
	}
	// The guest issues the batch the last kill interrupted again; its
	// writes may or may not have reached the image before the kill.
	if next < len(batches) {
		for _, w := range batches[next].writes {
			if err := b.disk.WriteAt(ctx, bytes.Repeat([]byte{w.pattern}, int(w.len)), w.off, false); err != nil {
				t.Fatal(err)
			}
		}
		if err := b.disk.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		acked = append(acked, batches[next])
	}
	for b.disk.State() != replicator.StateComplete {
		select {
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
	if err := b.disk.Close(); err != nil {
		t.Fatal(err)
	}
	if err := applyBatches(expected, acked); err != nil {
		t.Fatal(err)
	}
	// The store keeps a disk as DIR/NAME/image.
	out, err := exec.CommandContext(ctx, "qemu-img", "compare", "-f", "raw", "-F", "raw", expected, filepath.Join(dir, "hostB", demoDisk, "image")).CombinedOutput()
	if err != nil {
		t.Fatalf("seed %d: qemu-img compare: %v: %s", seed, err, out)
	}
	t.Logf("seed %d: %d kills (%d while the replica was copying), %d batches acknowledged, images identical", seed, rounds, copying, next)
}

// script is the batch as qemu-io commands: its writes, then a flush.
func (bt crashBatch) script() string {
	var s strings.Builder
	for _, w := range bt.writes {
		fmt.Fprintf(&s, "write -q -P %d %d %d\n", w.pattern, w.off, w.len)
	}
	s.WriteString("flush\n")
	return s.String()
}

// startReplicaChild starts the replica process and waits until it serves.
// Its stderr goes to a log file, shown if the test fails.
func startReplicaChild(ctx context.Context, dir, store, source string, rate int64) (*exec.Cmd, string, int64, error) {
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(),
		replicaChildEnv+"="+store, childSourceEnv+"="+source,
		childSecretEnv+"="+filepath.Join(dir, "chap-secret"),
		childRateEnv+"="+strconv.FormatInt(rate, 10))
	logPath := filepath.Join(dir, "replica.log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, "", 0, err
	}
	defer logf.Close()
	cmd.Stderr = logf
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, "", 0, err
	}
	if err := cmd.Start(); err != nil {
		return nil, "", 0, err
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	var addr string
	var local int64
	if _, serr := fmt.Sscanf(line, "ready %s %d", &addr, &local); err != nil || serr != nil {
		cmd.Process.Kill()
		cmd.Wait()
		log, _ := os.ReadFile(logPath)
		return nil, "", 0, fmt.Errorf("replica process did not start (%q, %v): %s", line, err, log)
	}
	return cmd, addr, local, nil
}

// applyBatches writes the batches' patterns into the raw file at path, in
// order.
func applyBatches(path string, batches []crashBatch) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	for _, bt := range batches {
		for _, w := range bt.writes {
			if _, err := f.WriteAt(bytes.Repeat([]byte{w.pattern}, int(w.len)), w.off); err != nil {
				return err
			}
		}
	}
	return f.Close()
}
