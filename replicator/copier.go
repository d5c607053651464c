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
		_, err := r.copyStep(ctx)
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

// copyStep copies the next chunk that has invalid blocks and commits it.
// It returns whether a chunk was copied.
func (r *Replica) copyStep(ctx context.Context) (bool, error) {
	r.mu.Lock()
	if !r.copying() {
		r.mu.Unlock()
		return false, nil
	}
	c := r.meta.Progress
	for c < r.chunks && !r.invalidIn(c) {
		c++
	}
	r.mu.Unlock()
	if c == r.chunks {
		// Every chunk before Progress is valid, yet blocks are missing.
		return false, fmt.Errorf("disk %s: progress %d is past invalid blocks: %w", r.name, c, errInconsistent)
	}

	first, end := c*r.chunk/r.grain, (min((c+1)*r.chunk, r.size)+r.grain-1)/r.grain
	runs, valid := r.runs(first, end-1)
	var fetched []run
	var bufs [][]byte
	for i, x := range runs {
		if valid[i] {
			continue
		}
		bs, _ := r.span(x.start)
		_, be := r.span(x.start + x.count - 1)
		if err := r.throttle(ctx, be-bs); err != nil {
			return false, err
		}
		buf := make([]byte, be-bs)
		if err := r.src.ReadAt(ctx, buf, bs); err != nil {
			return false, err
		}
		fetched, bufs = append(fetched, x), append(bufs, buf)
	}
	// Rule 3: under the chunk lock, keep stores only the blocks still
	// invalid; a guest write made meanwhile wins.
	if err := r.locks.lock(ctx, c); err != nil {
		return false, err
	}
	for i, x := range fetched {
		bs, _ := r.span(x.start)
		if err := r.keep(x, bufs[i], bs); err != nil {
			r.locks.unlock(c)
			return false, err
		}
	}
	r.locks.unlock(c)
	r.mu.Lock()
	if r.meta.Progress < c+1 {
		r.meta.Progress, r.scalarsDirty = c+1, true
	}
	complete := r.validCount == r.blocks
	if complete {
		r.meta.Progress = r.chunks
	}
	for _, x := range fetched {
		r.uncommitted += x.count * r.grain
	}
	commit := complete || r.uncommitted >= copyCommitBytes
	if commit {
		r.uncommitted = 0
	}
	r.mu.Unlock()
	if commit {
		if err := r.commit(commitData); err != nil {
			return false, err
		}
	}
	if complete {
		r.log.Info("replica complete", "id", r.ID())
	}
	return true, nil
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
	// since the disk was opened; SourceBytes were read from it for any
	// reason, pass-through reads and partial writes included.
	BytesCopied, SourceBytes int64
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
