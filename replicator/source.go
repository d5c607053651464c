package replicator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shareless/shareless/blockdev"
)

// Source is the image a replica copies: the other host's sealed (or, before
// the switch-over, still live) export, reached through the iSCSI initiator.
// ReadAt must fill p entirely or fail; it should honour ctx, but the replica
// does not rely on it (see boundedSource).
type Source interface {
	Size() int64
	ReadAt(ctx context.Context, p []byte, off int64) error
}

// Clock is the time source, injected so that tests control time.
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

// SystemClock is the real clock.
type SystemClock struct{}

// Now implements Clock.
func (SystemClock) Now() time.Time { return time.Now() }

// After implements Clock.
func (SystemClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// boundedSource reads a Source within a time bound (design.md §2 rule 8):
// a read is retried with backoff while the source fails, and fails with an
// error wrapping blockdev.ErrUnavailable once the bound is spent, even if the
// Source itself hangs and ignores its context. Once an outage outlasts the
// bound, further reads wait at most maxBackoff. ReadAt reads into a private
// buffer, so that a read abandoned on timeout cannot write into the caller's
// memory later; readOwned skips that copy for buffers the caller drops on
// error.
type boundedSource struct {
	src     Source
	timeout time.Duration
	clock   Clock
	log     *slog.Logger

	bytes atomic.Int64 // bytes read successfully

	mu        sync.Mutex
	downSince time.Time // first failure of the current outage; zero when up
}

const (
	minBackoff = 10 * time.Millisecond
	maxBackoff = time.Second
)

func (b *boundedSource) ReadAt(ctx context.Context, p []byte, off int64) error {
	return b.read(ctx, p, off, false)
}

// readOwned is ReadAt into a buffer that belongs to the read: the caller
// allocated it for this read and drops it if the read fails, so a read
// abandoned on timeout may go on writing into it. The copier and
// copy-on-read fetch this way, saving a copy of everything they fetch.
// Attempts never overlap: after a timeout the read fails rather than retry.
func (b *boundedSource) readOwned(ctx context.Context, p []byte, off int64) error {
	return b.read(ctx, p, off, true)
}

func (b *boundedSource) read(ctx context.Context, p []byte, off int64, owned bool) error {
	start := b.clock.Now()
	bound := b.timeout
	if down := b.since(); !down.IsZero() && start.Sub(down) >= b.timeout {
		// The outage already outlasted the bound: fail fast rather than
		// make every guest read wait the full bound again, but still try,
		// so that the source coming back is noticed.
		bound = min(bound, maxBackoff)
	}
	deadline := start.Add(bound)
	backoff := minBackoff
	for {
		err := b.attempt(ctx, p, off, deadline, owned)
		if err == nil {
			b.up()
			return nil
		}
		if ctx.Err() != nil || errors.Is(err, blockdev.ErrOutOfRange) {
			return err
		}
		b.down(err)
		wait := min(backoff, deadline.Sub(b.clock.Now()))
		if wait <= 0 || errors.Is(err, errAttemptTimeout) {
			return fmt.Errorf("source read at %d: unreachable for %v: %w: %w", off, b.clock.Now().Sub(start), blockdev.ErrUnavailable, err)
		}
		select {
		case <-b.clock.After(wait):
		case <-ctx.Done():
			return ctx.Err()
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

var errAttemptTimeout = errors.New("no answer within the source timeout")

// allocation asks the source whether the byte at off is mapped and how many
// bytes from off share that state (blockdev.AllocationReporter: unmapped
// reads as zeroes), within the bound of one read attempt and without retry.
// ok is false when the source cannot tell: it does not report allocation,
// fails, or does not answer in time. The caller then reads, under the
// bounds of reads.
func (b *boundedSource) allocation(ctx context.Context, off int64) (mapped bool, n int64, ok bool) {
	al, can := b.src.(blockdev.AllocationReporter)
	if !can {
		return true, 0, false
	}
	bound := b.timeout
	if down := b.since(); !down.IsZero() {
		bound = min(bound, maxBackoff)
	}
	type extent struct {
		mapped bool
		n      int64
	}
	e, err := within(ctx, b.clock, bound, func(ctx context.Context) (extent, error) {
		mapped, n, err := al.Allocation(ctx, off)
		return extent{mapped, n}, err
	})
	switch {
	case err == nil && e.n > 0:
		return e.mapped, e.n, true
	case errors.Is(err, errAttemptTimeout):
		b.log.Debug("source allocation unanswered, reading", "off", off, "within", bound)
	case ctx.Err() == nil:
		b.log.Debug("source allocation unknown, reading", "off", off, "err", err)
	}
	return true, 0, false
}

func (b *boundedSource) attempt(ctx context.Context, p []byte, off int64, deadline time.Time, owned bool) error {
	buf := p
	if !owned {
		buf = make([]byte, len(p))
	}
	_, err := within(ctx, b.clock, deadline.Sub(b.clock.Now()), func(ctx context.Context) (struct{}, error) {
		return struct{}{}, b.src.ReadAt(ctx, buf, off)
	})
	if err != nil {
		return err
	}
	if !owned {
		copy(p, buf)
	}
	b.bytes.Add(int64(len(p)))
	return nil
}

// within runs f and waits for it at most bound, then fails with
// errAttemptTimeout, or until ctx ends. f's context is cancelled when
// within returns, so that a call it abandons stops as soon as the source
// lets it; f must not touch memory the caller reuses (see readOwned).
func within[T any](ctx context.Context, clock Clock, bound time.Duration, f func(context.Context) (T, error)) (T, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		v   T
		err error
	}
	done := make(chan result, 1)
	go func() {
		v, err := f(ctx)
		done <- result{v, err}
	}()
	var zero T
	select {
	case r := <-done:
		return r.v, r.err
	case <-clock.After(bound):
		return zero, errAttemptTimeout
	case <-ctx.Done():
		return zero, ctx.Err()
	}
}

func (b *boundedSource) down(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.downSince.IsZero() {
		b.downSince = b.clock.Now()
		b.log.Error("replica source unreachable", "err", err)
	}
}

func (b *boundedSource) up() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.downSince.IsZero() {
		b.log.Info("replica source reachable again", "outage", b.clock.Now().Sub(b.downSince))
		b.downSince = time.Time{}
	}
}

func (b *boundedSource) since() time.Time {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.downSince
}
