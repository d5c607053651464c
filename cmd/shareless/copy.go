package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/shareless/shareless/blockdev"
	"github.com/shareless/shareless/iscsi/chap"
	"github.com/shareless/shareless/iscsi/initiator"
)

const copySummary = "copy a disk image between files and iSCSI LUNs, skipping holes and zeroes"

// copyChunk is the unit of work of a copy: one read (split into commands
// of the session's maximum transfer) and at most a few writes. 2 MiB, as
// qemu-img convert uses, measured best of 1, 2 and 4 MiB here; memory is
// depth × 2 MiB.
const copyChunk = 2 << 20

// zeroGrain is the granularity at which read data is checked for zeroes:
// a zero run of at least this size becomes a hole (or WRITE SAME) in the
// destination instead of a write.
const zeroGrain = 64 << 10

// copyAlign keeps holes aligned for every block size in use.
const copyAlign = 4096

func runCopy(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("copy", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	depth := fs.Int("depth", 16, "commands in flight")
	chapUser := fs.String("chap-user", "", "CHAP user name for iSCSI URLs without one")
	chapSecretFile := fs.String("chap-secret-file", "", "file holding the CHAP secret")
	mutualUser := fs.String("mutual-user", "", "user name the target must authenticate as (mutual CHAP)")
	mutualSecretFile := fs.String("mutual-secret-file", "", "file holding the target's CHAP secret (mutual CHAP)")
	interval := fs.Duration("progress-interval", 10*time.Second, "how often to print a progress line when stderr is not a terminal")
	fs.Usage = func() {
		fmt.Fprintf(e.stderr, "usage: shareless copy [flags] SRC DST\n\n"+
			"SRC and DST are file paths or iscsi://[user@]host[:port]/target-iqn/lun URLs.\n"+
			"A missing DST file is created sparse; an existing DST must have SRC's size.\n\nflags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return usagef("%v", err)
	}
	if fs.NArg() != 2 {
		fs.Usage()
		return usagef("copy takes SRC and DST, got %d arguments", fs.NArg())
	}
	if *depth < 1 || *depth > 1024 {
		return usagef("--depth must be 1..1024")
	}
	if *interval <= 0 {
		return usagef("--progress-interval must be positive")
	}
	creds, err := loadCredentials(*chapUser, *chapSecretFile, *mutualUser, *mutualSecretFile)
	if err != nil {
		return err
	}
	o := &opener{ctx: ctx, e: e, creds: creds, depth: *depth}
	src, err := o.open(fs.Arg(0), 0)
	if err != nil {
		return usagef("source %s: %v", initiator.Redact(fs.Arg(0)), err)
	}
	defer src.close()
	dst, err := o.open(fs.Arg(1), src.dev.Size())
	if err != nil {
		return usagef("destination %s: %v", initiator.Redact(fs.Arg(1)), err)
	}
	defer dst.close()
	if src.dev.Size() != dst.dev.Size() {
		return usagef("size mismatch: source %s is %d bytes, destination %s is %d bytes",
			src.name, src.dev.Size(), dst.name, dst.dev.Size())
	}
	c := &copier{src: src, dst: dst, depth: *depth, size: src.dev.Size()}
	p := newProgress(e.stderr, c.size, *interval)
	c.progress = p
	start := time.Now()
	p.start(start)
	err = c.run(ctx)
	if ferr := c.flush(ctx); err == nil {
		err = ferr
	}
	p.stop()
	elapsed := time.Since(start)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("interrupted after %v: %s; the destination is complete only below offset %d (%s)",
				elapsed.Round(time.Millisecond), c.stats(), c.watermark(), human(c.watermark()))
		}
		return fmt.Errorf("failed after %v: %w; %s; the destination is complete only below offset %d",
			elapsed.Round(time.Millisecond), err, c.stats(), c.watermark())
	}
	fmt.Fprintf(e.stdout, "copied %s to %s: %d bytes in %.3fs (%s/s)\n  bytes read:          %d\n  bytes written:       %d\n  zero bytes skipped:  %d\n",
		src.name, dst.name, c.size, elapsed.Seconds(), human(int64(float64(c.size)/max(elapsed.Seconds(), 1e-9))),
		c.read.Load(), c.written.Load(), c.skipped.Load())
	return nil
}

// loadCredentials reads the CHAP secrets named by the flags. The user may
// also come from an iSCSI URL, so a secret file alone is fine here.
func loadCredentials(user, secretFile, mutualUser, mutualFile string) (initiator.Credentials, error) {
	c := initiator.Credentials{CHAP: chap.Credentials{User: user}}
	if secretFile != "" {
		s, err := readSecret("chap", secretFile)
		if err != nil {
			return c, err
		}
		c.CHAP.Secret = s
	}
	m, err := credentials("mutual", mutualUser, mutualFile)
	if err != nil {
		return c, err
	}
	if m != nil {
		c.Mutual = *m
	}
	return c, nil
}

// endpoint is one side of a copy.
type endpoint struct {
	name  string
	dev   blockdev.Device
	alloc blockdev.AllocationReporter
	// zeroed: the destination reads as zeroes everywhere (a file we just
	// created), so zero ranges need no command at all.
	zeroed bool
	close  func() error
}

type opener struct {
	ctx   context.Context
	e     *env
	creds initiator.Credentials
	depth int
}

// open opens a file or an iSCSI URL. createSize > 0 marks a destination:
// a missing file is created with that size.
func (o *opener) open(arg string, createSize int64) (*endpoint, error) {
	if strings.HasPrefix(arg, "iscsi://") {
		return o.openISCSI(arg)
	}
	if strings.Contains(arg, "://") {
		return nil, fmt.Errorf("unsupported URL scheme (want a file path or iscsi://)")
	}
	ep := &endpoint{name: arg}
	readOnly := createSize == 0
	if !readOnly {
		f, err := os.OpenFile(arg, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
		switch {
		case err == nil:
			err = f.Truncate(createSize)
			f.Close()
			if err != nil {
				os.Remove(arg)
				return nil, err
			}
			ep.zeroed = true
		case !errors.Is(err, os.ErrExist):
			return nil, err
		}
	}
	f, err := blockdev.OpenFile(arg, readOnly)
	if err != nil {
		return nil, err
	}
	ep.dev, ep.alloc, ep.close = f, f, f.Close
	return ep, nil
}

func (o *opener) openISCSI(arg string) (*endpoint, error) {
	u, err := initiator.ParseURL(arg)
	if err != nil {
		return nil, err
	}
	creds := o.creds
	if u.User != "" {
		creds.CHAP.User = u.User
		if u.Password != "" {
			if creds.CHAP.Secret, err = chap.NewSecret([]byte(u.Password)); err != nil {
				return nil, err
			}
		}
	}
	if creds.CHAP.User != "" && creds.CHAP.Secret.IsZero() {
		return nil, fmt.Errorf("CHAP user %q needs a secret (--chap-secret-file)", creds.CHAP.User)
	}
	if creds.CHAP.User == "" && !creds.CHAP.Secret.IsZero() {
		return nil, fmt.Errorf("a CHAP secret needs a user (--chap-user or user@ in the URL)")
	}
	s, err := initiator.Dial(o.ctx, initiator.Config{
		Addr: u.Addr(), Target: u.Target, LUN: u.LUN, Credentials: creds,
		Depth: o.depth, Logger: o.e.log.With("url", u.String()),
	})
	if err != nil {
		return nil, err
	}
	return &endpoint{name: u.String(), dev: s, alloc: s, close: s.Close}, nil
}

// copier copies src to dst with depth workers.
type copier struct {
	src, dst *endpoint
	depth    int
	size     int64
	progress *progress

	read, written, skipped atomic.Int64

	mu   sync.Mutex
	done map[int64]int64 // completed ranges beyond the watermark: start → end
	mark int64           // everything below is complete
}

// job is a range of the device: data to read, or known zeroes.
type job struct {
	off, n int64
	zero   bool
}

func (c *copier) run(ctx context.Context) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	c.done = map[int64]int64{}
	jobs := make(chan job, c.depth)
	var wg sync.WaitGroup
	for range c.depth {
		wg.Go(func() {
			buf := make([]byte, copyChunk)
			for j := range jobs {
				if err := c.do(ctx, j, buf); err != nil {
					cancel(err)
					return
				}
				c.complete(j)
			}
		})
	}
	err := c.plan(ctx, jobs)
	close(jobs)
	if err != nil {
		cancel(err)
	}
	wg.Wait()
	return context.Cause(ctx)
}

// flush makes what was written durable, also after an interruption, so
// that the reported watermark holds.
func (c *copier) flush(ctx context.Context) error {
	ctx, stop := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer stop()
	if err := c.dst.dev.Flush(ctx); err != nil {
		return fmt.Errorf("flushing %s: %w", c.dst.name, err)
	}
	return nil
}

// plan walks the source's allocation map and queues jobs in offset order:
// unmapped ranges as zero jobs, mapped ones as data chunks.
func (c *copier) plan(ctx context.Context, jobs chan<- job) error {
	send := func(j job) error {
		select {
		case jobs <- j:
			return nil
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
	for pos := int64(0); pos < c.size; {
		mapped, n, err := c.src.alloc.Allocation(ctx, pos)
		if err != nil {
			return fmt.Errorf("allocation of %s at %d: %w", c.src.name, pos, err)
		}
		end := pos + n
		if !mapped {
			if end < c.size {
				end -= end % copyAlign
			}
			if end > pos {
				// Large zero jobs keep the command count low; 1 GiB
				// keeps progress moving.
				for ; pos < end; pos += min(end-pos, 1<<30) {
					if err := send(job{off: pos, n: min(end-pos, 1<<30), zero: true}); err != nil {
						return err
					}
				}
				continue
			}
			end = pos + copyAlign // a hole too small to keep: copy it
		}
		end = min((end+copyAlign-1)/copyAlign*copyAlign, c.size)
		for ; pos < end; pos += min(end-pos, copyChunk) {
			if err := send(job{off: pos, n: min(end-pos, copyChunk)}); err != nil {
				return err
			}
		}
	}
	return nil
}

// do runs one job: read, find zero runs, write the rest.
func (c *copier) do(ctx context.Context, j job, buf []byte) error {
	if j.zero {
		return c.zero(ctx, j.off, j.n)
	}
	b := buf[:j.n]
	if err := c.src.dev.ReadAt(ctx, b, j.off); err != nil {
		return fmt.Errorf("reading %s at %d: %w", c.src.name, j.off, err)
	}
	c.read.Add(j.n)
	for i := int64(0); i < j.n; {
		n := min(zeroGrain, j.n-i)
		isZero := allZero(b[i : i+n])
		k := i + n
		for k < j.n && allZero(b[k:min(k+zeroGrain, j.n)]) == isZero {
			k = min(k+zeroGrain, j.n)
		}
		if isZero {
			if err := c.zero(ctx, j.off+i, k-i); err != nil {
				return err
			}
		} else {
			if err := c.dst.dev.WriteAt(ctx, b[i:k], j.off+i, false); err != nil {
				return fmt.Errorf("writing %s at %d: %w", c.dst.name, j.off+i, err)
			}
			if wb, ok := c.dst.dev.(writebackStarter); ok {
				if err := wb.StartWriteback(j.off+i, k-i); err != nil {
					return fmt.Errorf("writing %s at %d: %w", c.dst.name, j.off+i, err)
				}
			}
			c.written.Add(k - i)
		}
		i = k
	}
	return nil
}

// writebackStarter is a destination that can write data back behind the
// copy (blockdev.File), so that the final flush does not wait for all of
// it at once.
type writebackStarter interface {
	StartWriteback(off, length int64) error
}

// zero makes a destination range read as zeroes, unless it already does.
func (c *copier) zero(ctx context.Context, off, n int64) error {
	if !c.dst.zeroed {
		if err := c.dst.dev.WriteZeroes(ctx, off, n, true); err != nil {
			return fmt.Errorf("zeroing %s at %d: %w", c.dst.name, off, err)
		}
	}
	c.skipped.Add(n)
	return nil
}

// complete records a finished job and advances the watermark below which
// the destination is complete.
func (c *copier) complete(j job) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.done[j.off] = j.off + j.n
	for {
		end, ok := c.done[c.mark]
		if !ok {
			break
		}
		delete(c.done, c.mark)
		c.mark = end
	}
	c.progress.add(j.n)
}

func (c *copier) watermark() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mark
}

func (c *copier) stats() string {
	return fmt.Sprintf("%d bytes read, %d bytes written, %d zero bytes skipped", c.read.Load(), c.written.Load(), c.skipped.Load())
}

// allZero reports whether b holds only zero bytes, eight at a time.
func allZero(b []byte) bool {
	for len(b)%8 != 0 {
		if b[len(b)-1] != 0 {
			return false
		}
		b = b[:len(b)-1]
	}
	words := unsafe.Slice((*uint64)(unsafe.Pointer(unsafe.SliceData(b))), len(b)/8)
	for _, w := range words {
		if w != 0 {
			return false
		}
	}
	return true
}

// progress reports how far a copy got: a bar with rate and ETA on a
// terminal, a plain line every interval otherwise.
type progress struct {
	w        io.Writer
	tty      bool
	total    int64
	interval time.Duration
	done     atomic.Int64
	begin    time.Time
	quit     chan struct{}
	stopped  chan struct{}
}

func newProgress(w io.Writer, total int64, interval time.Duration) *progress {
	p := &progress{w: w, total: total, interval: interval, quit: make(chan struct{}), stopped: make(chan struct{})}
	if f, ok := w.(*os.File); ok && isTerminal(f) {
		p.tty = true
		p.interval = 200 * time.Millisecond
	}
	return p
}

func isTerminal(f *os.File) bool {
	var t syscall.Termios
	_, _, errno := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), syscall.TCGETS, uintptr(unsafe.Pointer(&t)))
	return errno == 0
}

func (p *progress) add(n int64) { p.done.Add(n) }

func (p *progress) start(now time.Time) {
	p.begin = now
	go func() {
		defer close(p.stopped)
		tick := time.NewTicker(p.interval)
		defer tick.Stop()
		for {
			select {
			case <-p.quit:
				if p.tty {
					p.print(time.Now())
					fmt.Fprintln(p.w)
				}
				return
			case now := <-tick.C:
				p.print(now)
			}
		}
	}()
}

func (p *progress) stop() {
	close(p.quit)
	<-p.stopped
}

func (p *progress) print(now time.Time) {
	done := p.done.Load()
	elapsed := now.Sub(p.begin).Seconds()
	rate := float64(done) / max(elapsed, 1e-9)
	eta := "?"
	if rate > 0 {
		eta = time.Duration(float64(p.total-done) / rate * float64(time.Second)).Round(time.Second).String()
	}
	pct := 100.0
	if p.total > 0 {
		pct = 100 * float64(done) / float64(p.total)
	}
	if !p.tty {
		fmt.Fprintf(p.w, "copy: %5.1f%% (%s of %s) at %s/s, ETA %s\n", pct, human(done), human(p.total), human(int64(rate)), eta)
		return
	}
	const width = 30
	fill := int(pct / 100 * width)
	fmt.Fprintf(p.w, "\r[%s%s] %5.1f%% %s/%s %s/s ETA %s   ", strings.Repeat("=", fill), strings.Repeat(" ", width-fill),
		pct, human(done), human(p.total), human(int64(rate)), eta)
}

// human renders a byte count with a binary unit.
func human(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.2f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
