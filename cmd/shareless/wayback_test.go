package main

import (
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/shareless/shareless/internal/testenv"
	"github.com/shareless/shareless/replicator"
)

// TestWayBackWire is issue 4's "the way back moves only modified blocks":
// the disk goes A → B (a full copy), then back and forth; before each trip
// the guest modifies 1% or 10% of the blocks on the host it runs on, through
// that host's LUN over our initiator, scattered or clustered. The bytes the
// returning host receives are counted on the wire (the Data-In payload,
// decoded from the TCP stream, and the TCP bytes themselves): the data of
// its READs must be the modified blocks at the tracking grain, nothing
// more, and what else it receives (GET LBA STATUS answers, PDU headers)
// small.
func TestWayBackWire(t *testing.T) {
	testenv.SkipIfShort(t)
	ctx := t.Context()
	const size = 128 << 20
	d, hosts := newTestDemo(t, t.TempDir(), size, "A", "B")
	a, b := hosts[0], hosts[1]
	var err error
	if a.disk, err = a.store.Create(ctx, demoDisk, size); err != nil {
		t.Fatal(err)
	}
	written, err := fillDisk(ctx, a.disk)
	if err != nil {
		t.Fatal(err)
	}
	serveForTest(t, d, a)
	// The first trip, A → B, is a full copy: B holds nothing yet. It reads
	// what A wrote; the rest of A's disk is holes, which it skips.
	emptyBase(t, b, size)
	srcA, err := d.dial(ctx, a.addr)
	if err != nil {
		t.Fatal(err)
	}
	first, err := d.goBack(ctx, b, a, srcA)
	if err := errors.Join(err, srcA.Close()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.stop)
	if first.plan != replicator.PlanFull || first.moved != written {
		t.Fatalf("first trip: plan %s moved %d bytes, want a full copy of the %d written", first.plan, first.moved, written)
	}

	rng := rand.New(rand.NewPCG(1, 2))
	home, away := a, b // the guest runs on away
	for _, c := range []struct {
		name      string
		share     float64
		clustered bool
	}{
		{"1% scattered", 0.01, false},
		{"10% scattered", 0.10, false},
		{"1% clustered", 0.01, true},
		{"10% clustered", 0.10, true},
	} {
		guest, err := d.dial(ctx, away.addr)
		if err != nil {
			t.Fatal(err)
		}
		n, err := modify(ctx, guest, rng, replicator.DefaultGrain, c.share, c.clustered)
		if err := errors.Join(err, guest.Close()); err != nil {
			t.Fatal(err)
		}
		var wire wireCount
		back, err := d.countedWayBack(ctx, home, away, &wire)
		if err != nil {
			t.Fatal(err)
		}
		set := back.delta.Modified.Count() * back.delta.Grain
		alloc := wire.dataIn.Load() - wire.readIn // the GET LBA STATUS answers
		t.Logf("%s: %d blocks modified on %s; the way back to %s (plan %s) received %d bytes of READ data, %d of allocation, %d bytes on TCP; the modified set is %d bytes",
			c.name, n, away.name, home.name, back.plan, wire.readIn, alloc, wire.bytes.Load(), set)
		switch {
		case back.plan != replicator.PlanIncremental:
			t.Errorf("%s: plan %s, want incremental", c.name, back.plan)
		case back.delta.Modified.Count() != n:
			t.Errorf("%s: the modified set has %d blocks, the guest wrote %d", c.name, back.delta.Modified.Count(), n)
		case wire.readIn > n*back.delta.Grain:
			t.Errorf("%s: %d bytes of READ data for %d modified blocks of %d bytes", c.name, wire.readIn, n, back.delta.Grain)
		case alloc > allocationAnswers(n):
			t.Errorf("%s: %d bytes of GET LBA STATUS answers for %d modified blocks", c.name, alloc, n)
		case wire.bytes.Load() > wire.dataIn.Load()+wireOverhead(n):
			t.Errorf("%s: %d bytes on TCP for %d bytes of data", c.name, wire.bytes.Load(), wire.dataIn.Load())
		}
		if err := d.verify(ctx, home.disk, away.disk, nil); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		home, away = away, home
	}
}

// wireOverhead bounds what the way back may receive besides Data-In
// payload: at most two PDU headers (48 bytes each, Data-In and a response)
// per block read on its own, the same for a few GET LBA STATUS commands,
// and the logout.
func wireOverhead(blocks int64) int64 { return blocks*2*48 + 4096 }

// allocationAnswers bounds the GET LBA STATUS answers a copy of blocks
// tracking blocks receives (the copier asks its source which blocks are
// holes, not to read them): each block moved makes at most two extents at
// the source, 16 bytes each, and the answers run on past the last one by
// at most two answers of 128 extents.
func allocationAnswers(blocks int64) int64 { return blocks*32 + 2*(8+128*16) }
