package replicator

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shareless/shareless/blockdev"
	"github.com/shareless/shareless/replicator/vfs"
)

var (
	flagSeed  = flag.Uint64("seed", 0, "TestModel: seed of the first case (0: from the clock)")
	flagCases = flag.Int("cases", 0, "TestModel: number of cases (0: 4000; 1000 with -race, 400 with -short)")
)

// memSource is the other host's image, kept outside the crashing filesystem.
// dealloc lists its deallocated sectors (holes, reading as zeroes), which
// allocSource reports.
type memSource struct {
	mu      sync.Mutex
	data    []byte
	dealloc []bool
}

func (m *memSource) Size() int64 { return int64(len(m.data)) }

func (m *memSource) ReadAt(_ context.Context, p []byte, off int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := blockdev.CheckRange(int64(len(m.data)), off, int64(len(p))); err != nil {
		return err
	}
	copy(p, m.data[off:])
	return nil
}

// write stores p at off; hole: p is zeroes that deallocate the sectors
// it covers in whole (a discard).
func (m *memSource) write(p []byte, off int64, hole bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	copy(m.data[off:], p)
	for s := off / modelSector; s*modelSector < off+int64(len(p)); s++ {
		whole := s*modelSector >= off && (s+1)*modelSector <= off+int64(len(p))
		m.dealloc[s] = hole && (whole || m.dealloc[s])
	}
}

// allocSource is a memSource that reports its allocation, as our initiator
// does from GET LBA STATUS, in one of the ways a source may.
type allocSource struct {
	*memSource
	how allocHow
	rng *rand.Rand // guarded by memSource.mu
}

type allocHow int

const (
	// allocExact reports the deallocated sectors, in extents cut short at
	// random (as a target's descriptors may be).
	allocExact allocHow = iota
	// allocMapped reports everything mapped: a source that cannot tell
	// and says so conservatively.
	allocMapped
	// allocFailing answers like allocExact, or fails (a check condition).
	allocFailing
	allocHows
)

func (a *allocSource) Allocation(_ context.Context, off int64) (bool, int64, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	size := int64(len(a.data))
	if off < 0 || off >= size {
		return false, 0, blockdev.ErrOutOfRange
	}
	switch {
	case a.how == allocMapped:
		return true, size - off, nil
	case a.how == allocFailing && a.rng.IntN(2) == 0:
		return false, 0, errors.New("CHECK CONDITION: ILLEGAL REQUEST")
	}
	s := off / modelSector
	end := s + 1
	for end < int64(len(a.dealloc)) && a.dealloc[end] == a.dealloc[s] {
		end++
	}
	end = s + 1 + a.rng.Int64N(end-s) // a shorter extent, at random
	return !a.dealloc[s], min(end*modelSector, size) - off, nil
}

// Model geometry: small blocks so that a small disk has many of them.
const (
	modelGrain  = 1 << 10
	modelChunk  = 4 << 10
	modelSector = 512
)

// model is the reference a replica is checked against. view is what reads
// must return. cands[s] lists the contents sector s may hold after a crash:
// the durable one (as of the last flush, or FUA write, covering it) and
// every one written since.
type model struct {
	view  []byte
	cands [][][]byte
}

func newModel(data []byte) *model {
	m := &model{view: bytes.Clone(data), cands: make([][][]byte, len(data)/modelSector)}
	m.settle()
	return m
}

func (m *model) sector(s int) []byte {
	return bytes.Clone(m.view[s*modelSector : (s+1)*modelSector])
}

// settle makes the current view the only possible one (flush, or state
// after recovery).
func (m *model) settle() {
	for s := range m.cands {
		m.cands[s] = [][]byte{m.sector(s)}
	}
}

func (m *model) write(p []byte, off int64, fua bool) {
	copy(m.view[off:], p)
	for s := off / modelSector; s*modelSector < off+int64(len(p)); s++ {
		if fua {
			m.cands[s] = [][]byte{m.sector(int(s))}
		} else {
			m.cands[s] = append(m.cands[s], m.sector(int(s)))
		}
	}
}

// modelCase is one random run against a replica on a crashing filesystem.
type modelCase struct {
	t     *testing.T
	rng   *rand.Rand
	fs    *vfs.Mem
	store *Store
	r     *Replica
	src   *memSource
	m     *model
	// source is what the replica reads: src, or src reporting its
	// allocation (allocSource).
	source Source
	// srcModified: blocks where the source differs from the local base of
	// an incremental return (the source's Delta); nil for a full copy.
	srcModified *Bitmap
	origin      Origin
	switched    bool // the VM runs here: no more source writes
	sealed      bool
	trace       []string
	// arm, if set, is applied to the filesystem before the first operation.
	arm func(*vfs.Mem)
}

func (c *modelCase) logf(format string, a ...any) {
	c.trace = append(c.trace, fmt.Sprintf(format, a...))
}

func (c *modelCase) fatalf(format string, a ...any) {
	c.t.Helper()
	start := max(0, len(c.trace)-40)
	c.t.Fatalf("%s\nlast operations:\n  %s", fmt.Sprintf(format, a...), strings.Join(c.trace[start:], "\n  "))
}

func (c *modelCase) storeOpts() StoreOptions {
	return StoreOptions{Grain: modelGrain, Chunk: modelChunk, JournalLimit: 2 << 10,
		Log: slog.New(slog.NewTextHandler(c.t.Output(), &slog.HandlerOptions{Level: slog.LevelError}))}
}

// setup builds the case's replica: a full copy, or (one case in three) the
// incremental way back onto a sealed local base that the source changed in
// a few blocks.
func (c *modelCase) setup() {
	ctx := context.Background()
	size := (8+c.rng.Int64N(56))*modelGrain - c.rng.Int64N(2)*modelSector
	c.src = &memSource{data: randomBytes(c.rng, size), dealloc: make([]bool, (size+modelSector-1)/modelSector)}
	for range c.rng.IntN(3) {
		// Zeroes, written or deallocated, which a replica stores as holes.
		off, n := c.extent(size)
		c.src.write(make([]byte, n), off, c.rng.IntN(2) == 0)
	}
	data := bytes.Clone(c.src.data)
	c.source = c.src
	if how := c.rng.IntN(int(allocHows) + 1); how < int(allocHows) {
		c.source = &allocSource{memSource: c.src, how: allocHow(how), rng: rand.New(rand.NewPCG(c.rng.Uint64(), 0))}
	}
	c.fs = vfs.NewMem()
	if c.arm != nil {
		c.arm(c.fs)
	}
	var err error
	if c.store, err = NewStore(c.fs, "/store", c.storeOpts()); err != nil {
		c.fatalf("%v", err)
	}
	c.origin = Origin{Image: ID{Lineage: [16]byte{8}, Generation: 3}}
	if c.rng.IntN(3) == 0 {
		base, err := c.store.Create(ctx, "d", size)
		if err == nil {
			err = base.WriteAt(ctx, data, 0, false)
		}
		if err == nil {
			err = base.Seal(ctx)
		}
		if err != nil {
			c.fatalf("base: %v", err)
		}
		c.origin.Base = base.ID()
		c.srcModified = NewBitmap(base.blocks)
		base.Close()
		for range c.rng.IntN(6) {
			c.sourceWrite()
		}
	}
	c.m = newModel(c.src.data)
	r, plan, err := c.store.Replicate(ctx, "d", c.origin, c.source, ReplicaOptions{Paused: true})
	if err != nil {
		c.fatalf("Replicate: %v", err)
	}
	if want := map[bool]Plan{true: PlanIncremental, false: PlanFull}[c.srcModified != nil]; plan != want {
		c.fatalf("plan %v, want %v", plan, want)
	}
	c.r = r
	c.logf("setup: %d bytes, plan %v", size, plan)
}

// sourceWrite changes the source before the switch-over (its VM still
// runs; nothing was written here yet, so the view is the source) and, for an
// incremental case, records the blocks as modified there.
func (c *modelCase) sourceWrite() {
	off, n := c.extent(c.src.Size())
	p := randomBytes(c.rng, n)
	hole := false
	if c.rng.IntN(3) == 0 {
		// Zeroes, written or deallocated: over the local base of a way
		// back, a replica must punch its stale copy, not skip it.
		clear(p)
		hole = c.rng.IntN(2) == 0
	}
	c.src.write(p, off, hole)
	if c.m != nil {
		copy(c.m.view, c.src.data)
		c.m.settle()
	}
	if c.srcModified != nil {
		c.srcModified.SetRange(off/modelGrain, (off+n-1)/modelGrain+1)
	}
	c.logf("source write %d+%d hole=%v", off, n, hole)
}

// extent draws an I/O range: sector-aligned or not, mostly within two
// blocks (so that the copier and partial blocks keep work to do), sometimes
// up to three chunks.
func (c *modelCase) extent(size int64) (off, n int64) {
	off = c.rng.Int64N(size)
	limit := int64(2 * modelGrain)
	if c.rng.IntN(4) == 0 {
		limit = 3 * modelChunk
	}
	n = 1 + c.rng.Int64N(min(size-off, limit))
	if c.rng.IntN(2) == 0 {
		off -= off % modelSector
		n = max(modelSector, n-n%modelSector)
		n = min(n, size-off)
	}
	return off, n
}

func (c *modelCase) delta() *Delta {
	if c.srcModified == nil {
		return nil
	}
	return &Delta{Image: c.origin.Image, Base: c.origin.Base, Size: c.src.Size(), Grain: modelGrain, Modified: c.srcModified}
}

func (c *modelCase) step() {
	ctx := context.Background()
	size := c.src.Size()
	switch x := c.rng.IntN(100); {
	case x < 5 && !c.switched:
		c.sourceWrite()
	case x < 25:
		off, n := c.extent(size)
		got := make([]byte, n)
		if err := c.r.ReadAt(ctx, got, off); err != nil {
			c.fatalf("read %d+%d: %v", off, n, err)
		}
		if i := firstDiff(got, c.m.view[off:off+n]); i >= 0 {
			c.fatalf("read %d+%d differs from the model at byte %d", off, n, off+int64(i))
		}
		c.logf("read %d+%d", off, n)
	case x < 47:
		c.switched = true
		off, n := c.extent(size)
		p, fua := randomBytes(c.rng, n), c.rng.IntN(5) == 0
		if err := c.r.WriteAt(ctx, p, off, fua); err != nil {
			c.fatalf("write %d+%d: %v", off, n, err)
		}
		c.m.write(p, off, fua)
		c.logf("write %d+%d fua=%v", off, n, fua)
	case x < 53:
		c.switched = true
		off, n := c.extent(size)
		var err error
		if unmap := c.rng.IntN(2) == 0; unmap {
			err = c.r.Discard(ctx, off, n)
		} else {
			err = c.r.WriteZeroes(ctx, off, n, false)
		}
		if err != nil {
			c.fatalf("zero %d+%d: %v", off, n, err)
		}
		c.m.write(make([]byte, n), off, false)
		c.logf("zero %d+%d", off, n)
	case x < 62:
		if err := c.r.Flush(ctx); err != nil {
			c.fatalf("flush: %v", err)
		}
		c.m.settle()
		c.logf("flush")
	case x < 86:
		if c.sealed {
			if _, err := c.r.copyStep(ctx); err != nil {
				c.fatalf("copy step: %v", err)
			}
			c.logf("copy step (progress %d)", c.r.meta.Progress)
		}
	case x < 91:
		if !c.sealed {
			c.seal()
		}
	default:
		c.crash()
	}
}

func (c *modelCase) seal() {
	c.switched, c.sealed = true, true
	plan, err := c.r.SourceSealed(context.Background(), c.delta())
	if err != nil {
		c.fatalf("SourceSealed: %v", err)
	}
	if want := map[bool]Plan{true: PlanIncremental, false: PlanFull}[c.srcModified != nil]; plan != want {
		c.fatalf("SourceSealed plan %v, want %v", plan, want)
	}
	c.logf("source sealed")
}

// crash cuts the power, reboots (a new Store on what survived), checks the
// recovered disk and continues with it.
func (c *modelCase) crash() {
	c.r.cancel()
	<-c.r.done
	tear := c.rng.IntN(2) == 0
	if tear {
		c.fs.Crash(c.rng)
	} else {
		c.fs.Crash(nil)
	}
	c.logf("crash (tear=%v)", tear)
	var err error
	if c.store, err = NewStore(c.fs, "/store", c.storeOpts()); err != nil {
		c.fatalf("%v", err)
	}
	if c.r, err = c.store.Open(context.Background(), "d", c.source, ReplicaOptions{Paused: true}); err != nil {
		c.fatalf("reopen after crash: %v", err)
	}
	if c.r.meta.SourceSealed != c.sealed {
		c.fatalf("recovered SourceSealed %v after SourceSealed returned: %v", c.r.meta.SourceSealed, c.sealed)
	}
	got, err := verifyRecovered(c.r, c.src.data, c.m.cands)
	if err != nil {
		c.fatalf("after crash: %v", err)
	}
	copy(c.m.view, got)
	c.m.settle()
}

// verifyRecovered checks a replica just opened after a crash, against the
// source's data src and the contents allowed[s] each sector s may hold, and
// returns the disk's contents. The durable metadata must say: a block
// valid and not modified holds the source's data (else the way back, which
// moves only modified blocks, would lose the difference) and exists only
// once the source is sealed; progress covers only valid chunks. Every
// sector must hold one of its allowed contents: what the last flush made
// durable, or something written since; never data that was not durably
// written for a block recorded valid.
func verifyRecovered(r *Replica, src []byte, allowed [][][]byte) ([]byte, error) {
	m := r.meta
	img := make([]byte, len(src))
	if _, err := r.image.ReadAt(img, 0); err != nil {
		return nil, fmt.Errorf("read image: %w", err)
	}
	for b := range m.blocks() {
		if !m.Valid.Get(b) || m.Modified.Get(b) {
			continue
		}
		if !m.SourceSealed {
			return nil, fmt.Errorf("block %d valid but not modified before the seal", b)
		}
		bs, be := b*m.Grain, min((b+1)*m.Grain, m.Size)
		if !bytes.Equal(img[bs:be], src[bs:be]) {
			return nil, fmt.Errorf("block %d is valid and not modified but differs from the source", b)
		}
	}
	for b := range min(m.Progress*m.Chunk/m.Grain, m.blocks()) {
		if !m.Valid.Get(b) {
			return nil, fmt.Errorf("progress %d chunks but block %d is not valid", m.Progress, b)
		}
	}
	got := make([]byte, len(src))
	if err := r.ReadAt(context.Background(), got, 0); err != nil {
		return nil, fmt.Errorf("read: %w", err)
	}
	for s := range allowed {
		sec := got[s*modelSector : (s+1)*modelSector]
		if !slices.ContainsFunc(allowed[s], func(cand []byte) bool { return bytes.Equal(sec, cand) }) {
			return nil, fmt.Errorf("sector %d (block %d) holds data never written there since the last flush (%d candidates)",
				s, int64(s)*modelSector/m.Grain, len(allowed[s]))
		}
	}
	return got, nil
}

// finish seals if needed, copies everything and checks the result.
func (c *modelCase) finish() {
	ctx := context.Background()
	if !c.sealed {
		c.seal()
	}
	// The rest goes as the background copy does it (this replica is
	// paused so that only the script copies): chunks fetched copyDepth at a
	// time, stored in order.
	if err := c.r.copyRun(ctx, false); err != nil {
		c.fatalf("copy run: %v", err)
	}
	if c.r.State() != StateComplete {
		c.fatalf("copy does not complete: %+v", c.r.Stats())
	}
	if err := c.r.Flush(ctx); err != nil {
		c.fatalf("flush: %v", err)
	}
	c.m.settle()
	c.crash() // what is durable at the end must be the whole disk
	img := make([]byte, c.src.Size())
	if _, err := c.r.image.ReadAt(img, 0); err != nil {
		c.fatalf("read image: %v", err)
	}
	if i := firstDiff(img, c.m.view); i >= 0 {
		c.fatalf("final image differs from the model at byte %d", i)
	}
	if st := c.r.State(); st != StateComplete {
		c.fatalf("state %v after recovery of a complete replica", st)
	}
	c.r.Close()
}

// TestModel runs random interleavings of guest I/O, flushes, FUA writes,
// copier steps, the seal and crashes (losing unsynced data, sometimes
// tearing it) against the reference model. After each recovery every write
// acknowledged before a completed flush or with FUA reads back, nothing
// reads that was never written since, valid-and-unmodified blocks equal the
// source, and at the end the image equals the model.
func TestModel(t *testing.T) {
	seed, cases := *flagSeed, *flagCases
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	if cases == 0 {
		switch {
		case testing.Short():
			cases = 400
		case raceBuild:
			cases = 1000
		default:
			cases = 4000
		}
	}
	t.Logf("seed %d, %d cases", seed, cases)
	for i := range cases {
		caseSeed := seed + uint64(i)
		c := &modelCase{t: t, rng: rand.New(rand.NewPCG(caseSeed, caseSeed))}
		t.Run("", func(t *testing.T) {
			c.t = t
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("reproduce with: go test ./replicator -run 'TestModel$' -seed %d -cases 1", caseSeed)
				}
			})
			c.setup()
			for range 20 + c.rng.IntN(60) {
				c.step()
			}
			c.finish()
		})
		if t.Failed() {
			return
		}
	}
}
