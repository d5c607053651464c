package main

import (
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/shareless/shareless/replicator"
)

// TestSparseCopyWire: the copier asks its source for allocation (GET LBA
// STATUS, answered by our target from the managed disk's holes) and does
// not read what is deallocated. A 32 MiB disk on A with an 8 MiB hole that
// starts and ends inside tracking blocks is copied to B, counted on the
// wire: the Data-In payload is at most the allocated bytes plus one block
// per boundary of the hole, and the GET LBA STATUS answers are small. Then the guest on B writes 1 MiB and discards
// 2 MiB; the way back moves the written blocks only, the discarded ones
// being holes on B now. Both copies end equal to their source.
func TestSparseCopyWire(t *testing.T) {
	ctx := t.Context()
	const (
		size               = 32 << 20
		holeFrom, holeTo   = 12<<20 + 8<<10, 20<<20 + 8<<10 // inside blocks, unaligned to chunks
		grain              = replicator.DefaultGrain
		written, discarded = 1 << 20, 2 << 20
		// lbaAnswers bounds the GET LBA STATUS answers, which are
		// Data-In too: 16 bytes per extent, and these disks have few.
		lbaAnswers = 1 << 10
	)
	d, hosts := newTestDemo(t, t.TempDir(), size, "A", "B")
	a, b := hosts[0], hosts[1]
	var err error
	if a.disk, err = a.store.Create(ctx, demoDisk, size); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for _, r := range [][2]int64{{0, holeFrom}, {holeTo, size}} {
		p := make([]byte, r[1]-r[0])
		fillRandom(rng, p)
		if err := a.disk.WriteAt(ctx, p, r[0], false); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.disk.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	serveForTest(t, d, a)
	emptyBase(t, b, size)

	// trip moves the disk to home from away (goBack) through a session
	// whose received bytes are counted, and returns the READ data and the
	// GET LBA STATUS answers.
	trip := func(home, away *host) (trip, int64, int64) {
		t.Helper()
		var wire wireCount
		tr, err := d.countedWayBack(ctx, home, away, &wire)
		if err != nil {
			t.Fatal(err)
		}
		if err := d.verify(ctx, home.disk, away.disk, nil); err != nil {
			t.Fatalf("%s after the copy from %s: %v", home.name, away.name, err)
		}
		return tr, wire.readIn, wire.dataIn.Load() - wire.readIn
	}

	first, got, alloc := trip(b, a)
	t.Cleanup(b.stop)
	allocated := int64(size - (holeTo - holeFrom))
	t.Logf("A → B: %d bytes of READ data and %d of GET LBA STATUS answers for a %d-byte disk with %d bytes allocated (plan %s)",
		got, alloc, size, allocated, first.plan)
	if limit := allocated + 2*grain; got > limit || alloc > lbaAnswers {
		t.Errorf("A → B received %d bytes of READ data and %d of allocation, want at most the %d allocated plus a block at each end of the hole, and %d",
			got, alloc, allocated, lbaAnswers)
	}

	guest, err := d.dial(ctx, b.addr)
	if err != nil {
		t.Fatal(err)
	}
	p := make([]byte, written)
	fillRandom(rng, p)
	err = errors.Join(guest.WriteAt(ctx, p, 2<<20, false), guest.Discard(ctx, 24<<20, discarded), guest.Flush(ctx))
	if err := errors.Join(err, guest.Close()); err != nil {
		t.Fatal(err)
	}
	back, got, alloc := trip(a, b)
	set := back.delta.Modified.Count() * grain
	t.Logf("B → A: %d bytes of READ data and %d of GET LBA STATUS answers; the modified set is %d bytes, %d of them discarded (plan %s)",
		got, alloc, set, discarded, back.plan)
	switch {
	case back.plan != replicator.PlanIncremental:
		t.Errorf("way back: plan %s, want incremental", back.plan)
	case set != written+discarded:
		t.Errorf("way back: modified set %d bytes, want the %d written and discarded", set, written+discarded)
	case got > written || alloc > lbaAnswers:
		t.Errorf("way back received %d bytes of READ data and %d of allocation, want at most the %d written (the discarded blocks are holes) and %d",
			got, alloc, written, lbaAnswers)
	}
}
