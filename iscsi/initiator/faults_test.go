package initiator

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shareless/shareless/blockdev"
	"github.com/shareless/shareless/internal/testenv"
)

// proxy forwards TCP connections to a target and can cut them or swallow
// what the target sends, to fake a network that fails.
type proxy struct {
	t        *testing.T
	ln       net.Listener
	target   string
	accepted atomic.Int32
	mu       sync.Mutex
	conns    []net.Conn
	// swallowed connections still take what the initiator sends but
	// never deliver what the target answers.
	swallowed map[net.Conn]bool
}

func startProxy(t *testing.T, target string) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{t: t, ln: ln, target: target, swallowed: map[net.Conn]bool{}}
	t.Cleanup(p.Close)
	go p.serve()
	return p
}

func (p *proxy) Addr() string { return p.ln.Addr().String() }

func (p *proxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.accepted.Add(1)
		u, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, u)
		p.mu.Unlock()
		go func() { io.Copy(u, c); u.Close() }()
		go func() {
			buf := make([]byte, 64<<10)
			for {
				n, err := u.Read(buf)
				if n > 0 && !p.isSwallowed(c) {
					if _, err := c.Write(buf[:n]); err != nil {
						break
					}
				}
				if err != nil {
					break
				}
			}
			c.Close()
		}()
	}
}

// SwallowCurrent makes the connections open now go silent; new ones work.
func (p *proxy) SwallowCurrent() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		p.swallowed[c] = true
	}
}

func (p *proxy) isSwallowed(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.swallowed[c]
}

// Cut closes every connection, as a dropped link or a reset would.
func (p *proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// Close stops accepting and cuts everything: the target is gone.
func (p *proxy) Close() {
	p.ln.Close()
	p.Cut()
}

// TestReconnectReissues cuts the TCP connection while commands are in
// flight: the session is reinstated (RFC 7143 §6.3.5) and every command
// that was not answered is issued again, so that all data ends up right.
func TestReconnectReissues(t *testing.T) {
	const size = 64 << 20
	srv, _ := startTgtd(t, size)
	px := startProxy(t, srv.Addr())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := Dial(ctx, Config{Addr: px.Addr(), Target: testIQN, LUN: 1, Credentials: creds(t, false),
		Depth: 8, MaxTransfer: 128 << 10, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	want := make([]byte, 32<<20)
	rand.Read(want)
	const piece = 1 << 20
	var wg sync.WaitGroup
	errs := make(chan error, len(want)/piece)
	for i := range len(want) / piece {
		wg.Go(func() {
			errs <- s.WriteAt(ctx, want[i*piece:(i+1)*piece], int64(i*piece), false)
		})
		if i == 8 || i == 20 {
			time.Sleep(5 * time.Millisecond)
			px.Cut()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	got := make([]byte, len(want))
	readDone := make(chan error)
	go func() { readDone <- s.ReadAt(ctx, got, 0) }()
	time.Sleep(2 * time.Millisecond)
	px.Cut()
	if err := <-readDone; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("data differs after reconnects")
	}
	if n := px.accepted.Load(); n < 3 {
		t.Errorf("%d connections, want at least 3 (two reconnects)", n)
	}
}

// TestCommandTimeout: a target that stops answering makes a command fail
// with ErrTimeout after Config.CommandTimeout instead of hanging; the
// keepalive then drops the silent connection and the session recovers.
func TestCommandTimeout(t *testing.T) {
	srv, _ := startTgtd(t, 16<<20)
	px := startProxy(t, srv.Addr())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := Dial(ctx, Config{Addr: px.Addr(), Target: testIQN, LUN: 1, Credentials: creds(t, false),
		CommandTimeout: 500 * time.Millisecond, KeepAlive: 300 * time.Millisecond, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	buf := make([]byte, 4096)
	px.SwallowCurrent()
	start := time.Now()
	err = s.ReadAt(ctx, buf, 0)
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("got %v, want ErrTimeout", err)
	}
	d := time.Since(start)
	if d > 2*time.Second {
		t.Errorf("timeout took %v", d)
	}
	testenv.Report(t, "a command the target never answers failed with ErrTimeout after %v (CommandTimeout 500ms)", d.Round(time.Millisecond))
	if err := s.ReadAt(ctx, buf, 0); err != nil {
		t.Fatalf("after the target answers again: %v", err)
	}
	if n := px.accepted.Load(); n < 2 {
		t.Errorf("%d connections: the silent one was not replaced", n)
	}
}

// TestTargetGone: when the target stays unreachable beyond
// Config.ReconnectTimeout, commands fail with blockdev.ErrUnavailable
// (design §2 rule 8) instead of waiting for ever.
func TestTargetGone(t *testing.T) {
	srv, _ := startTgtd(t, 16<<20)
	px := startProxy(t, srv.Addr())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := Dial(ctx, Config{Addr: px.Addr(), Target: testIQN, LUN: 1, Credentials: creds(t, false),
		ReconnectTimeout: time.Second, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	px.Close()
	start := time.Now()
	err = s.ReadAt(ctx, make([]byte, 4096), 0)
	if !errors.Is(err, blockdev.ErrUnavailable) {
		t.Fatalf("got %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("failing took %v", d)
	}
}
