package replicator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/shareless/shareless/blockdev"
)

// copier runs the background copy (Method C) until ctx ends: whenever the
// source is sealed, copying is not paused and blocks remain, it copies the
// next chunk; on a source error it backs off and retries.
func (r *Replica) copier(ctx context.Context) {
	defer close(r.done)
	backoff := minBackoff
	for {
		if !r.shouldCopy() {
			select {
			case <-r.wake:
				continue
			case <-ctx.Done():
				return
			}
		}
		err := r.copyRun(ctx, true)
		switch {
		case ctx.Err() != nil:
			return
		case err == nil || errors.Is(err, errPaused):
			backoff = minBackoff
		case r.State() == StateFailed || errors.Is(err, errInconsistent):
			r.log.Error("copier stopped", "err", err)
			return
		default:
			level := slog.LevelWarn
			if errors.Is(err, blockdev.ErrUnavailable) {
				level = slog.LevelDebug // the outage itself is alerted once
			}
			r.log.Log(ctx, level, "copy step failed, retrying", "err", err, "in", backoff)
			select {
			case <-r.clock.After(backoff):
			case <-r.wake:
			case <-ctx.Done():
				return
			}
			backoff = min(2*backoff, maxBackoff)
		}
	}
}

// copying reports whether the copy may run (paused or not). The caller holds
// r.mu.
func (r *Replica) copying() bool {
	return r.meta.Replica && r.meta.SourceSealed && !r.remoteOnly && r.src != nil &&
		r.validCount < r.blocks && !r.closed && r.failed == nil
}

func (r *Replica) shouldCopy() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.copying() && !r.paused
}

// copyDepth is how many chunks the background copy fetches from the source
// at once. One chunk at a time left the copy waiting a network round trip
// and the source's disk per MiB (a third of qemu-img convert's rate in
// `shareless bench replica`); a window of chunks keeps the source busy while
// their stores stay in chunk order, so that progress advances as before. It
// costs copyDepth chunks of memory per copying replica.
const copyDepth = 8

// chunkFetch is one chunk's source data on its way to the image: the runs
// of blocks that were invalid when its fetch started, and their data. A
// run the source reported deallocated (holes) is not read: its buffer
// stays nil and it is stored as a hole.
type chunkFetch struct {
	c     int64
	runs  []run
	holes []bool
	bufs  [][]byte
	err   error
	done  chan struct{} // closed when the fetch ended; then bufs or err are set
}

// planChunk lists the invalid blocks of chunk c and which of them the
// source says are holes.
func (r *Replica) planChunk(ctx context.Context, c int64) *chunkFetch {
	f := &chunkFetch{c: c}
	f.runs, f.holes = r.splitHoles(ctx, r.invalidRuns(c))
	return f
}

// splitHoles splits runs of blocks at what the source reports deallocated
// (read as zeroes, blockdev.AllocationReporter) in whole blocks, and says
// which of the runs returned are such holes; the copier does not read
// them. A block only partly deallocated is read. A source that cannot
// tell (no allocation, an error, no answer in time) has its blocks read:
// asking is an optimisation, reading is always right.
func (r *Replica) splitHoles(ctx context.Context, runs []run) ([]run, []bool) {
	var out []run
	var holes []bool
	add := func(x run, hole bool) {
		if x.count == 0 {
			return
		}
		if n := len(out); n > 0 && holes[n-1] == hole && out[n-1].start+out[n-1].count == x.start {
			out[n-1].count += x.count
			return
		}
		out, holes = append(out, x), append(holes, hole)
	}
	for _, x := range runs {
		b, last := x.start, x.start+x.count // b: first block not yet added
		pos, _ := r.span(b)
		_, end := r.span(last - 1)
		hole := int64(-1) // start of the deallocated extents that end at pos
		for pos < end {
			mapped, n, ok := r.src.allocation(ctx, pos)
			if !ok {
				break
			}
			ext := min(pos+n, end)
			if mapped {
				hole = -1
			} else {
				if hole < 0 {
					hole = pos
				}
				// The blocks that lie wholly in [hole, ext), which
				// may span several extents; the short last block of
				// the disk ends at its size.
				hs, he := max((hole+r.grain-1)/r.grain, b), ext/r.grain
				if ext == r.size {
					he = r.blocks
				}
				if he = min(he, last); hs < he {
					add(run{b, hs - b}, false)
					add(run{hs, he - hs}, true)
					b = he
				}
			}
			pos = ext
		}
		add(run{b, last - b}, false)
	}
	return out, holes
}

// copyRun copies chunks from the progress counter on, copyDepth fetches in
// flight, storing them in order, until no chunk is left, the copy stops
// (close, failure; a pause too if honourPause) or a step fails.
func (r *Replica) copyRun(ctx context.Context, honourPause bool) error {
	r.mu.Lock()
	from := r.meta.Progress
	r.mu.Unlock()
	first, ok, err := r.nextChunk(from)
	if !ok {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	inflight := make(chan *chunkFetch, copyDepth-1)
	var perr error // the producer's, read once inflight is closed
	go func() {
		defer close(inflight)
		var prev *chunkFetch
		for c := first; ; {
			if prev != nil && r.guestFetches.Load() > 0 {
				// The guest waits on the source too, behind whatever the
				// copier has in flight on the same session: one fetch at
				// a time until it stops.
				select {
				case <-prev.done:
				case <-ctx.Done():
					return
				}
			}
			f := r.planChunk(ctx, c)
			f.done = make(chan struct{})
			prev = f
			if perr = r.throttle(ctx, f.size(r)); perr != nil {
				return
			}
			select {
			case inflight <- f:
			case <-ctx.Done():
				return
			}
			go func() {
				defer close(f.done)
				f.bufs, f.err = r.fetch(ctx, f)
			}()
			if honourPause && !r.shouldCopy() {
				return // paused after the chunks in flight
			}
			if c, ok, perr = r.nextChunk(c + 1); !ok {
				if errors.Is(perr, errInconsistent) {
					perr = nil // the chunks in flight hold the rest
				}
				return
			}
		}
	}()
	// The copier's commits run beside its next stores, one at a time: an
	// fsync waited for in line halved the copy rate where the local disk is
	// the bottleneck. A commit covers what was stored before it started
	// (rule 4); one that falls due while the last still runs is left to the
	// next copyCommitBytes, so a crash re-copies at most that plus what was
	// stored during one commit. The last commit, of the complete replica,
	// is waited for.
	var committing chan error
	waitCommit := func() error {
		if committing == nil {
			return nil
		}
		err := <-committing
		committing = nil
		return err
	}
	defer waitCommit()
	for f := range inflight {
		<-f.done
		err := f.err
		var commit, complete bool
		if err == nil {
			commit, complete, err = r.storeChunk(ctx, f)
		}
		if err == nil && committing != nil {
			select {
			case err = <-committing:
				committing = nil
			default:
				commit = false
			}
		}
		if err == nil && complete {
			err = waitCommit()
		}
		switch {
		case err != nil:
		case complete:
			if err = r.commit(commitData); err == nil {
				r.log.Info("replica complete", "id", r.ID())
			}
		case commit:
			committing = make(chan error, 1)
			go func(done chan<- error) { done <- r.commit(commitData) }(committing)
		}
		if err != nil {
			cancel()
			for g := range inflight {
				<-g.done
			}
			return err
		}
	}
	return perr
}

// copyStep copies the next chunk that has invalid blocks and commits it.
// It returns whether a chunk was copied. Tests step the copy with it.
func (r *Replica) copyStep(ctx context.Context) (bool, error) {
	r.mu.Lock()
	from := r.meta.Progress
	r.mu.Unlock()
	c, ok, err := r.nextChunk(from)
	if !ok {
		return false, err
	}
	f := r.planChunk(ctx, c)
	if err := r.throttle(ctx, f.size(r)); err != nil {
		return false, err
	}
	if f.bufs, err = r.fetch(ctx, f); err != nil {
		return false, err
	}
	commit, complete, err := r.storeChunk(ctx, f)
	if err == nil && commit {
		err = r.commit(commitData)
	}
	if err == nil && complete {
		r.log.Info("replica complete", "id", r.ID())
	}
	return true, err
}

// nextChunk finds the first chunk from c on that has invalid blocks, if the
// copy may run. A copy that may run and finds none while blocks are
// missing is errInconsistent.
func (r *Replica) nextChunk(c int64) (int64, bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.copying() {
		return 0, false, nil
	}
	for c < r.chunks && !r.invalidIn(c) {
		c++
	}
	if c == r.chunks {
		// Every chunk before c is valid, yet blocks are missing.
		return 0, false, fmt.Errorf("disk %s: progress %d is past invalid blocks: %w", r.name, c, errInconsistent)
	}
	return c, true, nil
}

// invalidRuns are the runs of invalid blocks of chunk c.
func (r *Replica) invalidRuns(c int64) []run {
	first, end := c*r.chunk/r.grain, (min((c+1)*r.chunk, r.size)+r.grain-1)/r.grain
	runs, valid := r.runs(first, end-1)
	var out []run
	for i, x := range runs {
		if !valid[i] {
			out = append(out, x)
		}
	}
	return out
}

// size is the number of bytes f reads from the source.
func (f *chunkFetch) size(r *Replica) int64 {
	var n int64
	for i, x := range f.runs {
		if f.holes[i] {
			continue
		}
		bs, _ := r.span(x.start)
		_, be := r.span(x.start + x.count - 1)
		n += be - bs
	}
	return n
}

// fetch reads f's runs but its holes from the source, without any lock: a
// guest write to the chunk meanwhile proceeds, and storeChunk keeps it
// (rule 3).
func (r *Replica) fetch(ctx context.Context, f *chunkFetch) ([][]byte, error) {
	bufs := make([][]byte, len(f.runs))
	for i, x := range f.runs {
		if f.holes[i] {
			continue
		}
		bs, _ := r.span(x.start)
		_, be := r.span(x.start + x.count - 1)
		bufs[i] = r.bufs.get(be - bs)
		if err := r.src.readOwned(ctx, bufs[i], bs); err != nil {
			return nil, err // the buffers are dropped: an abandoned read may still fill one
		}
	}
	return bufs, nil
}

// storeChunk writes a fetched chunk and advances the progress counter past
// it. The caller commits when it says so: every copyCommitBytes, and once the
// replica is complete.
func (r *Replica) storeChunk(ctx context.Context, f *chunkFetch) (commit, complete bool, err error) {
	c := f.c
	// Rule 3: under the chunk lock, keep stores only the blocks still
	// invalid; a guest write made meanwhile wins.
	if err := r.locks.lock(ctx, c); err != nil {
		return false, false, err
	}
	for i, x := range f.runs {
		bs, _ := r.span(x.start)
		if err := r.keep(x, f.bufs[i], bs); err != nil {
			r.locks.unlock(c)
			return false, false, err // the buffers are dropped with the failed replica
		}
	}
	r.locks.unlock(c)
	for _, b := range f.bufs {
		r.bufs.put(b)
	}
	r.mu.Lock()
	if r.meta.Progress < c+1 {
		r.meta.Progress, r.scalarsDirty = c+1, true
	}
	complete = r.validCount == r.blocks
	if complete {
		r.meta.Progress = r.chunks
	}
	for _, x := range f.runs {
		r.uncommitted += x.count * r.grain
	}
	commit = complete || r.uncommitted >= copyCommitBytes
	if commit {
		r.uncommitted = 0
	}
	r.mu.Unlock()
	return commit, complete, nil
}

// copyCommitBytes is how much the copier stores between its own commits
// (guest flushes commit it too). One commit per 1 MiB chunk (two fsyncs)
// halved the copy rate in a local measurement; a crash costs at most this
// much copying again.
const copyCommitBytes = 16 << 20

// invalidIn reports whether chunk c has an invalid block. The caller holds
// r.mu.
func (r *Replica) invalidIn(c int64) bool {
	per := r.chunk / r.grain
	return !r.meta.Valid.AllSet(c*per, min((c+1)*per, r.blocks))
}

// errInconsistent: the in-memory state broke an invariant; the copier stops
// rather than spin.
var errInconsistent = errors.New("replica state inconsistent")

// errPaused ends a copy step that was waiting for its rate slot when the
// copy was paused.
var errPaused = errors.New("copy paused")

// throttle waits until n more bytes may be copied under the rate limit. The
// limit is a schedule: each copy pushes the earliest next start by n/rate,
// so the average holds whatever the chunk sizes, and a rate change applies
// from the next chunk.
func (r *Replica) throttle(ctx context.Context, n int64) error {
	for {
		r.mu.Lock()
		now := r.clock.Now()
		if r.rate <= 0 {
			r.mu.Unlock()
			return nil
		}
		if r.nextCopy.Before(now) {
			r.nextCopy = now
		}
		wait := r.nextCopy.Sub(now)
		if wait <= 0 {
			r.nextCopy = r.nextCopy.Add(time.Duration(n) * time.Second / time.Duration(r.rate))
			r.mu.Unlock()
			return nil
		}
		paused := r.paused
		r.mu.Unlock()
		if paused {
			// A chunk waiting for its slot is not in flight yet.
			return errPaused
		}
		select {
		case <-r.clock.After(wait):
		case <-r.wake:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// SetRate changes the copy's bandwidth limit, in bytes per second (0:
// unlimited), while it runs.
func (r *Replica) SetRate(bytesPerSecond int64) {
	r.mu.Lock()
	r.rate = max(bytesPerSecond, 0)
	r.nextCopy = time.Time{}
	r.rateSince, r.rateBase = r.clock.Now(), r.copied
	r.mu.Unlock()
	r.nudge()
}

// Pause stops the background copy after the chunk in flight. Reads still
// fetch (and keep) what they need.
func (r *Replica) Pause() {
	r.mu.Lock()
	r.paused = true
	r.mu.Unlock()
	r.nudge()
}

// Resume restarts a paused copy.
func (r *Replica) Resume() {
	r.mu.Lock()
	r.paused = false
	r.rateSince, r.rateBase = r.clock.Now(), r.copied
	r.mu.Unlock()
	r.nudge()
}

// StartCopying switches a remote-only replica (Method B) to copying
// (Method C): from now on reads keep what they fetch and, once the source
// is sealed, the background copy runs until the disk is complete. A
// remote-only replica holds only the blocks the guest wrote here (valid and
// modified), so the copy takes the rest from the source under the usual
// rules; before the seal nothing changes (rule 5). It reports whether the
// replica was remote-only; on a copying replica it does nothing.
//
// The switch is durable when it returns: it is recorded in the disk's
// metadata, so that the disk opened again (an agent restart) copies even
// if its ReplicaOptions say RemoteOnly. An operator who asked for the copy
// would not expect a restart to undo it.
func (r *Replica) StartCopying() (bool, error) {
	if err := r.enter(false, 0, 0); err != nil {
		return false, err
	}
	defer r.gate.RUnlock()
	r.mu.Lock()
	was := r.remoteOnly
	if was {
		r.remoteOnly = false
		r.meta.CopyRequested, r.scalarsDirty = true, true
		r.rateSince, r.rateBase = r.clock.Now(), r.copied
	}
	r.mu.Unlock()
	if !was {
		return false, nil
	}
	r.log.Info("remote-only disk switched to copying")
	r.nudge()
	return true, r.commit(commitData)
}

// RemoteOnly reports whether the replica reads remotely without copying
// (Method B), until StartCopying.
func (r *Replica) RemoteOnly() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.remoteOnly
}

// Stats is a snapshot of a replica's progress, for `shareless status`.
type Stats struct {
	State  State
	Sealed bool
	ID     ID
	Source ID // zero for a disk that never copied anything
	Size   int64
	// BytesLocal are held here, BytesRemaining still only at the source.
	BytesLocal, BytesRemaining int64
	// BytesCopied were stored from the source (by the copier or by reads)
	// since the disk was opened, holes it reported included; SourceBytes
	// were read from it for any reason, pass-through reads and partial
	// writes included.
	BytesCopied, SourceBytes int64
	// ReadLocalBytes and ReadRemoteBytes are what reads through the disk
	// were served from since it was opened: the local image (valid
	// blocks) or the source (rule 1), whether or not the read then kept
	// what it fetched.
	ReadLocalBytes, ReadRemoteBytes int64
	// Rate is the copy rate since copying last (re)started or its limit
	// changed, in bytes per second; ETA is BytesRemaining at that rate
	// (0 when unknown).
	Rate float64
	ETA  time.Duration
	// SourceDownSince is when the source stopped answering (zero: it
	// answers). An operator alert while set.
	SourceDownSince time.Time
}

// State is the replica's current state.
func (r *Replica) State() State {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stateLocked()
}

func (r *Replica) stateLocked() State {
	switch {
	case r.closed:
		return StateClosed
	case r.failed != nil:
		return StateFailed
	case r.validCount == r.blocks:
		return StateComplete
	case !r.meta.SourceSealed:
		return StatePassThrough
	case r.remoteOnly:
		return StateRemote
	case r.paused:
		return StatePaused
	}
	return StateCopying
}

// Stats returns the replica's progress.
func (r *Replica) Stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	local := r.validCount * r.grain
	if last := r.blocks - 1; r.meta.Valid.Get(last) {
		_, end := r.span(last)
		local -= (last+1)*r.grain - end // the short last block
	}
	st := Stats{
		State: r.stateLocked(), Sealed: r.meta.Sealed, ID: r.meta.ID, Source: r.meta.Source,
		Size: r.size, BytesLocal: local, BytesRemaining: r.size - local, BytesCopied: r.copied,
		ReadLocalBytes: r.readLocal.Load(), ReadRemoteBytes: r.readRemote.Load(),
	}
	if r.src != nil {
		st.SourceBytes = r.src.bytes.Load()
		st.SourceDownSince = r.src.since()
	}
	if el := r.clock.Now().Sub(r.rateSince); el > 0 && r.copied > r.rateBase {
		st.Rate = float64(r.copied-r.rateBase) / el.Seconds()
		st.ETA = time.Duration(float64(st.BytesRemaining) / st.Rate * float64(time.Second))
	}
	return st
}
