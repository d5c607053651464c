package replicator

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shareless/shareless/blockdev"
	"github.com/shareless/shareless/replicator/vfs"
)

// State is what a Replica is doing, as an operator sees it.
type State int

const (
	// StatePassThrough: the source has not released the disk yet (rule 5).
	// Blocks not held locally are read from the source and never kept,
	// because the source VM may still write them; nothing is copied.
	StatePassThrough State = iota + 1
	// StateCopying: the source is sealed; the copier fetches the blocks not
	// held locally, and reads keep what they fetch (Method C).
	StateCopying
	// StatePaused: like StateCopying with the background copy paused.
	StatePaused
	// StateRemote: the source is sealed and copying is off (Method B):
	// blocks not held locally are read from the source every time.
	StateRemote
	// StateComplete: every block is local; the source is no longer needed.
	StateComplete
	// StateFailed: local storage failed to make data durable. Every I/O
	// fails: after a failed fsync the page cache cannot be trusted.
	StateFailed
	// StateClosed: Close or Rollback was called.
	StateClosed
)

func (s State) String() string {
	switch s {
	case StatePassThrough:
		return "pass-through"
	case StateCopying:
		return "copying"
	case StatePaused:
		return "paused"
	case StateRemote:
		return "remote"
	case StateComplete:
		return "complete"
	case StateFailed:
		return "failed"
	case StateClosed:
		return "closed"
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// Errors of the replica's own life cycle.
var (
	ErrClosed    = errors.New("disk is closed")
	ErrNotSealed = errors.New("disk is not sealed")
)

// Replica is a managed disk as a blockdev.Device. A base disk (created here)
// is a Replica that holds every block; a disk that moved here is a post-copy
// replica of its Source, following design.md §2:
//
//   - Rule 1: a read of a valid block is served locally, any other from the
//     source.
//   - Rule 2: a write goes to the image and makes its blocks valid and
//     modified; an invalid block that the write covers only in part is
//     first completed from the source, so no block is ever half valid.
//   - Rule 3: the copier fetches a chunk, and a read the blocks it keeps,
//     without the chunk's lock, then under it (which every write holds for
//     its chunk) writes only the blocks still invalid: a block a guest
//     wrote meanwhile is never overwritten. Blocks of zeroes are stored as
//     holes, and so are blocks the source reports deallocated
//     (blockdev.AllocationReporter), which the copier does not read.
//   - Rule 4: valid bits and progress are committed only after an fsync of
//     the image that covers their data. Modified bits are the exception,
//     made durable before the guest's data can reach the image (a
//     write-ahead record): a block whose new data is on disk after a crash
//     but not known as modified would hold data the way back never moves.
//     Saying modified early only makes the way back move a block more.
//     Flush and FUA writes return after the image fsync and the metadata
//     commit.
//   - Rule 5: nothing fetched is kept until SourceSealed.
//   - Rule 7: see Store.Replicate and Delta.
//   - Rule 8: source reads fail after StoreOptions.SourceTimeout with an
//     error wrapping blockdev.ErrUnavailable; Rollback discards the replica.
//
// Replica is safe for concurrent use.
type Replica struct {
	name  string
	store *Store
	log   *slog.Logger
	clock Clock
	image vfs.File
	src   *boundedSource // nil if the disk has no source attached

	remoteOnly         bool
	size, grain, chunk int64
	blocks, chunks     int64
	journalLimit       int64

	// gate is held shared by every I/O for its duration and exclusively by
	// the life-cycle changes (seal, unseal, source sealed, close), which
	// must not race with a write in flight.
	gate  sync.RWMutex
	locks chunkLocks

	// commitMu serializes commits and guards mlog and committed.
	commitMu  sync.Mutex
	mlog      *metaLog
	committed record // scalar fields of the last durable commit

	// guestFetches counts the guest's reads waiting on the source; while
	// there are any, the copier keeps one fetch in flight instead of
	// copyDepth (see copyRun).
	guestFetches atomic.Int64

	cancel context.CancelFunc
	done   chan struct{} // closed when the copier has exited
	wake   chan struct{} // nudges the copier: state, rate or pause changed

	mu sync.Mutex
	// meta is the live state; bits and scalars newer than the last commit
	// are listed in pendValid, pendModified and scalarsDirty.
	meta         *diskMeta
	validCount   int64
	pendValid    []run
	pendModified []run
	scalarsDirty bool
	failed       error
	closed       bool
	paused       bool
	rate         int64     // copier bytes per second, 0: unlimited
	nextCopy     time.Time // earliest start of the next chunk under the rate
	copied       int64     // bytes stored by the copier and by reads
	uncommitted  int64     // bytes the copier stored since its last commit
	rateSince    time.Time // start of the current rate measurement
	rateBase     int64     // copied at rateSince

	bufs   fetchBufs
	zeroes []byte // a block of zeroes, to find blocks of zeroes to store as holes

	// readLocal and readRemote count the bytes ReadAt served from the
	// local image and from the source (rule 1's routing), for /metrics.
	readLocal, readRemote atomic.Int64
}

var (
	_ blockdev.Device             = (*Replica)(nil)
	_ blockdev.AllocationReporter = (*Replica)(nil)
)

func newReplica(ctx context.Context, s *Store, name string, image vfs.File, mlog *metaLog, m *diskMeta, src Source, ro ReplicaOptions) *Replica {
	r := &Replica{
		name: name, store: s, clock: s.opts.Clock, image: image, mlog: mlog,
		log:        s.opts.Log.With("disk", name),
		remoteOnly: ro.RemoteOnly && !m.CopyRequested, rate: ro.Rate, paused: ro.Paused,
		size: m.Size, grain: m.Grain, chunk: m.Chunk, blocks: m.blocks(), chunks: m.chunks(),
		journalLimit: s.opts.JournalLimit,
		locks:        chunkLocks{held: map[int64]chan struct{}{}},
		committed:    record{generation: m.ID.Generation, flags: m.flags(), progress: m.Progress},
		done:         make(chan struct{}), wake: make(chan struct{}, 1),
		meta: m, validCount: m.Valid.Count(),
		bufs:   fetchBufs{grainLen: m.Grain, chunkLen: m.Chunk},
		zeroes: make([]byte, m.Grain),
	}
	if src != nil {
		r.src = &boundedSource{src: src, timeout: s.opts.SourceTimeout, clock: r.clock, log: r.log.With("source", m.Source)}
	}
	r.rateSince = r.clock.Now()
	ctx, r.cancel = context.WithCancel(context.WithoutCancel(ctx))
	go r.copier(ctx)
	return r
}

// Size implements blockdev.Device.
func (r *Replica) Size() int64 { return r.size }

// ID is the image's identity.
func (r *Replica) ID() ID {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.meta.ID
}

// Origin is what a host that replicates this disk needs to know before the
// switch-over (see Store.Replicate).
func (r *Replica) Origin() Origin {
	r.mu.Lock()
	defer r.mu.Unlock()
	return Origin{Image: r.meta.ID, Base: r.meta.Source}
}

func (r *Replica) span(b int64) (start, end int64) {
	return b * r.grain, min((b+1)*r.grain, r.size)
}

// enter admits an I/O: it takes the gate shared and checks the replica is
// usable. The caller releases the gate.
func (r *Replica) enter(write bool, off, length int64) error {
	r.gate.RLock()
	r.mu.Lock()
	var err error
	switch {
	case r.closed:
		err = ErrClosed
	case r.failed != nil:
		err = r.failed
	case write && r.meta.Sealed:
		err = fmt.Errorf("disk %s is sealed: %w", r.name, blockdev.ErrReadOnly)
	default:
		err = blockdev.CheckRange(r.size, off, length)
	}
	r.mu.Unlock()
	if err != nil {
		r.gate.RUnlock()
	}
	return err
}

// fail puts the replica in StateFailed for good.
func (r *Replica) fail(err error) error {
	err = &blockdev.MediumError{Write: true, Err: err}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failed == nil {
		r.failed = err
		r.log.Error("disk failed: local storage did not make data durable", "err", err)
	}
	return r.failed
}

// maxAllocationScan bounds the blocks one Allocation call looks at under
// r.mu (1 GiB at the default grain): a caller asks again from where the
// answer ends.
const maxAllocationScan = 1 << 16

// Allocation implements blockdev.AllocationReporter, so that GET LBA STATUS
// tells an initiator (qemu-img, a backup) which ranges of a managed disk are
// holes. Blocks held here report the image's own allocation where the file
// system can tell; blocks not held here are reported mapped, since their
// data is at the source and only a mapped range is never skipped.
func (r *Replica) Allocation(ctx context.Context, off int64) (bool, int64, error) {
	if err := r.enter(false, off, 1); err != nil {
		return false, 0, err
	}
	defer r.gate.RUnlock()
	b := off / r.grain
	r.mu.Lock()
	valid := r.meta.Valid.Get(b)
	e := b + 1
	for e < min(r.blocks, b+maxAllocationScan) && r.meta.Valid.Get(e) == valid {
		e++
	}
	r.mu.Unlock()
	_, end := r.span(e - 1)
	al, ok := r.image.(vfs.Allocator)
	if !valid || !ok {
		return true, end - off, nil
	}
	mapped, n, err := al.Allocation(off, end)
	if err != nil {
		return false, 0, &blockdev.MediumError{Off: off, Err: err}
	}
	return mapped, n, nil
}

// ReadAt implements blockdev.Device (rule 1).
func (r *Replica) ReadAt(ctx context.Context, p []byte, off int64) error {
	if err := r.enter(false, off, int64(len(p))); err != nil {
		return err
	}
	defer r.gate.RUnlock()
	return r.eachChunk(off, int64(len(p)), func(c, from, to int64) error {
		return r.readChunk(ctx, c, from, to, p[from-off:to-off])
	})
}

// eachChunk calls fn for the part [from, to) of [off, off+length) within
// each chunk c, in order.
func (r *Replica) eachChunk(off, length int64, fn func(c, from, to int64) error) error {
	for pos := off; pos < off+length; {
		c := pos / r.chunk
		end := min((c+1)*r.chunk, off+length)
		if err := fn(c, pos, end); err != nil {
			return err
		}
		pos = end
	}
	return nil
}

// copyOnRead reports whether reads keep what they fetch: after the seal,
// in Method C.
func (r *Replica) copyOnRead() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.meta.SourceSealed && !r.remoteOnly && r.src != nil
}

// runs splits blocks [first, last] into maximal runs of equal validity.
func (r *Replica) runs(first, last int64) (runs []run, valid []bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for b := first; b <= last; b++ {
		v := r.meta.Valid.Get(b)
		if n := len(runs); n > 0 && valid[n-1] == v {
			runs[n-1].count++
			continue
		}
		runs, valid = append(runs, run{b, 1}), append(valid, v)
	}
	return runs, valid
}

func (r *Replica) readChunk(ctx context.Context, c, from, to int64, p []byte) error {
	// No chunk lock: a valid block never becomes invalid, and a write
	// racing with a read may land before or after it, as on any disk.
	// Blocks fetched to keep are fetched without it too (see keepFetched).
	runs, valid := r.runs(from/r.grain, (to-1)/r.grain)
	cor := r.copyOnRead()
	for i, x := range runs {
		bs, _ := r.span(x.start)
		_, be := r.span(x.start + x.count - 1)
		a, b := max(from, bs), min(to, be)
		dst := p[a-from : b-from]
		switch {
		case valid[i]:
			if _, err := r.image.ReadAt(dst, a); err != nil {
				return &blockdev.MediumError{Off: a, Err: err}
			}
			r.readLocal.Add(int64(len(dst)))
		case cor:
			buf := r.bufs.get(be - bs)
			if err := r.sourceRead(ctx, buf, bs, true); err != nil {
				return err // buf is dropped: an abandoned read may still fill it
			}
			err := r.keepFetched(ctx, c, x, buf, bs)
			copy(dst, buf[a-bs:])
			r.bufs.put(buf)
			if err != nil {
				return err
			}
			r.readRemote.Add(int64(len(dst)))
		default:
			if err := r.sourceRead(ctx, dst, a, false); err != nil {
				return err
			}
			r.readRemote.Add(int64(len(dst)))
		}
	}
	return nil
}

// keepFetched keeps what a read fetched for the blocks x of chunk c, like
// the copier's stores: the fetch ran without the chunk lock, and under it
// keep stores only the blocks still invalid, so a write made meanwhile wins
// (rule 3). Holding the lock across the round trip to the source made the
// reads of one chunk wait for each other (a guest reading a MiB at queue
// depth 32 got depth 1), and writes and the copier wait for them.
func (r *Replica) keepFetched(ctx context.Context, c int64, x run, buf []byte, off int64) error {
	if err := r.locks.lock(ctx, c); err != nil {
		return err
	}
	defer r.locks.unlock(c)
	return r.keep(x, buf, off)
}

// sourceRead reads for the guest from the source. owned: p was allocated
// for this read and is dropped if it fails (see boundedSource.readOwned).
func (r *Replica) sourceRead(ctx context.Context, p []byte, off int64, owned bool) error {
	if r.src == nil {
		return fmt.Errorf("disk %s has no source attached: %w", r.name, blockdev.ErrUnavailable)
	}
	r.guestFetches.Add(1)
	defer r.guestFetches.Add(-1)
	if owned {
		return r.src.readOwned(ctx, p, off)
	}
	return r.src.ReadAt(ctx, p, off)
}

// keep writes source data for the blocks of x that are still invalid and
// marks them valid (not modified); a nil buf is a hole at the source. The
// caller holds the chunk lock.
func (r *Replica) keep(x run, buf []byte, off int64) error {
	runs, valid := r.runs(x.start, x.start+x.count-1)
	for i, y := range runs {
		if valid[i] {
			continue
		}
		ys, _ := r.span(y.start)
		_, ye := r.span(y.start + y.count - 1)
		var err error
		if buf == nil {
			err = r.punch(ys, ye)
		} else {
			err = r.keepData(buf[ys-off:ye-off], ys)
		}
		if err != nil {
			return err
		}
		r.mu.Lock()
		r.addValid(y)
		r.copied += ye - ys
		r.mu.Unlock()
	}
	return nil
}

// keepData writes source data p at off, a block boundary, for keep. Runs of
// blocks that are all zeroes become holes (punch), so that a sparse source
// stays sparse here.
func (r *Replica) keepData(p []byte, off int64) error {
	n := int64(len(p))
	zero := func(pos int64) bool {
		q := p[pos:min(pos+r.grain, n)]
		return bytes.Equal(q, r.zeroes[:len(q)])
	}
	for pos := int64(0); pos < n; {
		z := zero(pos)
		end := min(pos+r.grain, n)
		for end < n && zero(end) == z {
			end = min(end+r.grain, n)
		}
		if z {
			if err := r.punch(off+pos, off+end); err != nil {
				return err
			}
		} else if _, err := r.image.WriteAt(p[pos:end], off+pos); err != nil {
			return &blockdev.MediumError{Write: true, Off: off + pos, Err: err}
		}
		pos = end
	}
	return nil
}

// punch makes [from, to) of the image a hole, for source data that is all
// zeroes: punched rather than skipped, since an invalid block may hold
// stale data (the local base of a way back, where the source changed it).
func (r *Replica) punch(from, to int64) error {
	if err := r.image.PunchHole(from, to-from); err != nil {
		return &blockdev.MediumError{Write: true, Off: from, Err: err}
	}
	return nil
}

// fetchBufs recycles the buffers that source data is fetched into: a
// block for a guest's read, a chunk for the copier. A copying replica
// fetches hundreds of MiB a second; a fresh buffer for each fetch made
// allocation, the garbage collector and the return of freed pages to the
// kernel about a fifth of the read path's CPU.
type fetchBufs struct {
	grain, chunk sync.Pool // of *[]byte, of those lengths
	grainLen     int64
	chunkLen     int64
}

// get returns a buffer of n bytes, whose contents are undefined.
func (f *fetchBufs) get(n int64) []byte {
	pool, size := &f.chunk, f.chunkLen
	if n <= f.grainLen {
		pool, size = &f.grain, f.grainLen
	}
	if n > size {
		return make([]byte, n)
	}
	if b, ok := pool.Get().(*[]byte); ok {
		return (*b)[:n]
	}
	return make([]byte, n, size)
}

// put gives back a buffer that get returned and nothing uses any more.
func (f *fetchBufs) put(b []byte) {
	var pool *sync.Pool
	switch int64(cap(b)) {
	case f.grainLen:
		pool = &f.grain
	case f.chunkLen:
		pool = &f.chunk
	default:
		return
	}
	b = b[:cap(b)]
	pool.Put(&b)
}

// addValid marks x valid and pending commit. The caller holds r.mu.
func (r *Replica) addValid(x run) {
	if n := r.meta.Valid.SetRange(x.start, x.start+x.count); n > 0 {
		r.validCount += n
		r.pendValid = append(r.pendValid, x)
	}
}

// WriteAt implements blockdev.Device (rule 2).
func (r *Replica) WriteAt(ctx context.Context, p []byte, off int64, fua bool) error {
	return r.modify(ctx, off, int64(len(p)), p, false, fua)
}

// Discard implements blockdev.Device: a write of zeroes that deallocates.
func (r *Replica) Discard(ctx context.Context, off, length int64) error {
	return r.modify(ctx, off, length, nil, true, false)
}

// WriteZeroes implements blockdev.Device.
func (r *Replica) WriteZeroes(ctx context.Context, off, length int64, mayUnmap bool) error {
	return r.modify(ctx, off, length, nil, mayUnmap, false)
}

// modify writes data (zeroes if nil, deallocated if unmap) at off.
func (r *Replica) modify(ctx context.Context, off, length int64, data []byte, unmap, fua bool) error {
	if err := r.enter(true, off, length); err != nil {
		return err
	}
	defer r.gate.RUnlock()
	err := r.eachChunk(off, length, func(c, from, to int64) error {
		var d []byte
		if data != nil {
			d = data[from-off : to-off]
		}
		return r.modifyChunk(ctx, c, from, to, d, unmap)
	})
	if err == nil && fua {
		err = r.commit(commitData)
	}
	return err
}

func (r *Replica) modifyChunk(ctx context.Context, c, from, to int64, data []byte, unmap bool) error {
	if err := r.locks.lock(ctx, c); err != nil {
		return err
	}
	defer r.locks.unlock(c)
	first, last := from/r.grain, (to-1)/r.grain

	// Complete the partly covered invalid blocks from the source.
	type edge struct {
		b   int64
		buf []byte
	}
	var edges []edge
	for _, b := range []int64{first, last} {
		bs, be := r.span(b)
		r.mu.Lock()
		valid := r.meta.Valid.Get(b)
		r.mu.Unlock()
		if valid || (from <= bs && to >= be) || (len(edges) > 0 && edges[0].b == b) {
			continue
		}
		buf := make([]byte, be-bs)
		if err := r.sourceRead(ctx, buf, bs, true); err != nil {
			return fmt.Errorf("complete block %d for a partial write: %w", b, err)
		}
		a, e := max(from, bs), min(to, be)
		if data != nil {
			copy(buf[a-bs:e-bs], data[a-from:])
		} else {
			clear(buf[a-bs : e-bs])
		}
		edges = append(edges, edge{b, buf})
	}

	// Write-ahead: the blocks are modified before their data may be.
	// The chunk lock makes the in-memory modified bits of this chunk equal
	// the durable ones whenever it is free, so n == 0 means durable.
	r.mu.Lock()
	n := r.meta.Modified.SetRange(first, last+1)
	if n > 0 {
		r.pendModified = append(r.pendModified, run{first, last - first + 1})
	}
	r.mu.Unlock()
	if n > 0 {
		if err := r.commit(commitModified); err != nil {
			return err
		}
	}

	a, e := from, to // what the edges leave
	for _, x := range edges {
		bs, be := r.span(x.b)
		if _, err := r.image.WriteAt(x.buf, bs); err != nil {
			return &blockdev.MediumError{Write: true, Off: bs, Err: err}
		}
		if x.b == first {
			a = max(a, be)
		}
		if x.b == last {
			e = min(e, bs)
		}
	}
	if a < e {
		if err := r.put(data, from, a, e, unmap); err != nil {
			return err
		}
	}
	r.mu.Lock()
	r.addValid(run{first, last - first + 1})
	r.mu.Unlock()
	return nil
}

// put stores [a, e) of a change that starts at from.
func (r *Replica) put(data []byte, from, a, e int64, unmap bool) error {
	var err error
	switch {
	case data != nil:
		_, err = r.image.WriteAt(data[a-from:e-from], a)
	case unmap:
		err = r.image.PunchHole(a, e-a)
	default:
		err = vfs.WriteZeroes(r.image, a, e-a)
	}
	if err != nil {
		return &blockdev.MediumError{Write: true, Off: a, Err: err}
	}
	return nil
}

// Flush implements blockdev.Device: the image fsync, then the metadata
// commit of what the synced data makes true.
func (r *Replica) Flush(ctx context.Context) error {
	if err := r.enter(false, 0, 0); err != nil {
		return err
	}
	defer r.gate.RUnlock()
	return r.commit(commitData)
}

// maxRecordRuns is the most runs a commit puts in a journal record; beyond
// it (a seal after scattered writes on a large disk) the checkpoint, whose
// size does not depend on the pattern, is rewritten instead.
const maxRecordRuns = 1 << 16

type commitKind int

const (
	// commitModified makes pending modified bits durable, with no image
	// fsync: the write-ahead record of rule 4's exception.
	commitModified commitKind = iota
	// commitData syncs the image, then records every pending change.
	commitData
	// commitCheckpoint is commitData that rewrites the checkpoint, for
	// changes a journal record does not carry (the base of an incremental
	// replica).
	commitCheckpoint
)

// commit makes pending metadata durable. Callers that find their change
// already taken by a commit in progress wait for it on commitMu, so
// concurrent flushes share fsyncs.
func (r *Replica) commit(kind commitKind) error {
	r.commitMu.Lock()
	defer r.commitMu.Unlock()
	data := kind != commitModified
	r.mu.Lock()
	if r.failed != nil {
		r.mu.Unlock()
		return r.failed
	}
	rec := r.committed
	rec.modified = mergeRuns(r.pendModified)
	r.pendModified = nil
	var snapshot *diskMeta
	if data {
		rec.valid = mergeRuns(r.pendValid)
		r.pendValid = nil
		rec.generation, rec.flags, rec.progress = r.meta.ID.Generation, r.meta.flags(), r.meta.Progress
		if kind == commitCheckpoint || r.mlog.off >= r.journalLimit || len(rec.valid)+len(rec.modified) > maxRecordRuns {
			snapshot = r.meta.clone()
		}
	}
	changed := len(rec.valid) > 0 || len(rec.modified) > 0 || (data && r.scalarsDirty)
	if data {
		r.scalarsDirty = false
	}
	r.mu.Unlock()

	if data {
		// Everything snapshotted above was written before this fsync.
		if err := r.image.Sync(); err != nil {
			return r.fail(fmt.Errorf("sync image: %w", err))
		}
	}
	var err error
	switch {
	case snapshot != nil:
		err = r.mlog.checkpoint(snapshot)
	case changed:
		err = r.mlog.append(&rec)
	}
	if err != nil {
		return r.fail(err)
	}
	rec.valid, rec.modified = nil, nil
	r.committed = rec
	return nil
}

// mergeRuns sorts runs and merges overlapping and adjacent ones.
func mergeRuns(runs []run) []run {
	if len(runs) == 0 {
		return nil
	}
	slices.SortFunc(runs, func(a, b run) int { return int(a.start - b.start) })
	out := runs[:1]
	for _, x := range runs[1:] {
		last := &out[len(out)-1]
		if x.start <= last.start+last.count {
			last.count = max(last.count, x.start+x.count-last.start)
			continue
		}
		out = append(out, x)
	}
	return out
}

func (m *diskMeta) clone() *diskMeta {
	c := *m
	c.Valid, c.Modified = m.Valid.Clone(), m.Modified.Clone()
	return &c
}

// Seal makes the image read-only so that another host can copy it (the
// switch-over of a migration away from here). It waits for writes in
// flight, flushes, and returns once the seal is durable.
func (r *Replica) Seal(ctx context.Context) error {
	return r.lifecycle(func() error {
		r.mu.Lock()
		r.meta.Sealed, r.scalarsDirty = true, true
		r.mu.Unlock()
		return r.commit(commitData)
	})
}

// Unseal makes a sealed image writable again (a migration away from here was
// rolled back). The generation is bumped, durably, before any write can
// change the image, so no replica made from the sealed image can take it
// for its base any more (rule 6).
func (r *Replica) Unseal(ctx context.Context) error {
	return r.lifecycle(func() error {
		r.mu.Lock()
		if !r.meta.Sealed {
			r.mu.Unlock()
			return nil
		}
		r.meta.Sealed = false
		r.meta.ID.Generation++
		r.scalarsDirty = true
		r.mu.Unlock()
		// Writes wait on the gate until this returns.
		return r.commit(commitData)
	})
}

// lifecycle runs fn with no I/O in flight.
func (r *Replica) lifecycle(fn func() error) error {
	r.gate.Lock()
	defer r.gate.Unlock()
	r.mu.Lock()
	err := r.failed
	if r.closed {
		err = ErrClosed
	}
	r.mu.Unlock()
	if err != nil {
		return err
	}
	return fn()
}

// SourceSealed tells the replica that its source has released the disk:
// copying and copy-on-read may start (rule 5). For a replica that Replicate
// built with PlanIncremental, d is the source's final Delta (taken after its
// seal); every block outside it that the guest has not touched here becomes
// valid from the local base. If d does not describe the source this replica
// copies, the replica falls back to a full copy, logs why and returns
// PlanFull. For other replicas d is ignored and the plan is PlanFull.
func (r *Replica) SourceSealed(ctx context.Context, d *Delta) (Plan, error) {
	plan := PlanFull
	err := r.lifecycle(func() error {
		r.mu.Lock()
		m := r.meta
		if !m.Replica || m.SourceSealed {
			r.mu.Unlock()
			return nil
		}
		if !m.Base.IsZero() {
			if reason := d.mismatch(m); reason != "" {
				r.log.Warn("incremental return refused, copying everything", "reason", reason)
			} else {
				plan = PlanIncremental
				base := NewBitmap(r.blocks)
				base.SetRange(0, r.blocks)
				for i := range base.w {
					base.w[i] &^= d.Modified.w[i] | m.Modified.w[i] | m.Valid.w[i]
				}
				for start, count := range base.Runs() {
					r.addValid(run{start, count})
				}
			}
			m.Base = ID{}
		}
		m.SourceSealed, r.scalarsDirty = true, true
		r.rateSince, r.rateBase = r.clock.Now(), r.copied
		r.mu.Unlock()
		// The base's data was made durable when it was sealed; this commit
		// records the blocks it provides, the seal and the cleared base.
		return r.commit(commitCheckpoint)
	})
	if err != nil {
		return 0, err
	}
	r.nudge()
	r.log.Info("source sealed", "plan", plan, "remaining", r.Stats().BytesRemaining)
	return plan, nil
}

func (r *Replica) nudge() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Close stops the copier, flushes and closes the disk.
func (r *Replica) Close() error { return r.stop(true) }

// Rollback discards the replica (a migration here was aborted, rule 8): it
// stops without flushing and its directory is removed. Unsealing the source
// is the other host's part.
func (r *Replica) Rollback() error {
	if err := r.stop(false); err != nil && !errors.Is(err, ErrClosed) {
		return err
	}
	dir, err := r.store.dir(r.name)
	if err != nil {
		return err
	}
	r.log.Info("replica discarded")
	return r.store.removeDir(dir)
}

// stop ends the copier, waits for I/O in flight, optionally flushes, closes
// the files and releases the name.
func (r *Replica) stop(flush bool) error {
	r.cancel()
	<-r.done
	r.gate.Lock()
	defer r.gate.Unlock()
	r.mu.Lock()
	closed, failed := r.closed, r.failed
	r.mu.Unlock()
	if closed {
		return ErrClosed
	}
	var err error
	if flush && failed == nil {
		err = r.commit(commitData)
	}
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
	r.image.Close()
	r.commitMu.Lock()
	r.mlog.close()
	r.commitMu.Unlock()
	r.store.release(r.name)
	return err
}

// chunkLocks serializes changes to a chunk: guest writes, reads that keep
// what they fetch, and the copier's stores. An operation holds at most one
// chunk lock at a time, so there is no lock order to get wrong.
type chunkLocks struct {
	mu   sync.Mutex
	held map[int64]chan struct{} // closed on unlock
}

func (l *chunkLocks) lock(ctx context.Context, c int64) error {
	for {
		l.mu.Lock()
		ch, busy := l.held[c]
		if !busy {
			l.held[c] = make(chan struct{})
			l.mu.Unlock()
			return nil
		}
		l.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (l *chunkLocks) unlock(c int64) {
	l.mu.Lock()
	ch := l.held[c]
	delete(l.held, c)
	l.mu.Unlock()
	close(ch)
}
