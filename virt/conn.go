// Package virt is shareless's adapter over libvirt's RPC protocol
// (github.com/digitalocean/go-libvirt). It adds what go-libvirt leaves to
// its callers and the agent cannot do without: a context on every call,
// errors typed by libvirt's error code, and a connection that comes back by
// itself when libvirtd restarts (which operators do during upgrades, while
// VMs keep running). It offers only the operations the agent and its tests
// need: domains and their XML, iSCSI secrets, lifecycle events, job
// statistics, block copy with pivot (adoption) and peer-to-peer live
// migration the way Nova starts it.
package virt

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"

	libvirt "github.com/digitalocean/go-libvirt"
)

// Timings of the connection's supervision. Package constants, not
// options: no caller has needed to tune them.
const (
	dialTimeout   = 5 * time.Second        // one connection attempt, handshake included
	probeInterval = 5 * time.Second        // how often an idle connection is checked
	probeTimeout  = 10 * time.Second       // a daemon silent this long is treated as gone
	backoffMin    = 100 * time.Millisecond // first pause between reconnection attempts
	backoffMax    = 5 * time.Second
)

// Config says which libvirtd to talk to.
type Config struct {
	// URI names the daemon the way libvirt clients do: "qemu:///system"
	// (the default), "qemu:///system?socket=/path/to/libvirt-sock",
	// "qemu+unix:///system?socket=...", or "qemu+tcp://host[:port]/system";
	// or it is the path of libvirtd's socket, for qemu:///system there.
	URI string
	// Logger receives connection events and operations; nil discards.
	Logger *slog.Logger
}

// Conn is a connection to one libvirtd that survives daemon restarts.
// Every method takes a context: its deadline bounds the call, including
// waiting for a reconnection. libvirtd cannot cancel most calls; when the
// context ends first, the method returns and the call completes in the
// daemon unobserved. Long jobs (migration, block copy) are aborted in
// libvirt on cancellation instead. A Conn is safe for concurrent use.
type Conn struct {
	log       *slog.Logger
	network   string // "unix" or "tcp"
	address   string
	driverURI libvirt.ConnectURI

	mu  sync.Mutex
	cur *session      // nil while disconnected
	up  chan struct{} // closed when cur becomes non-nil

	// life ends at Close; it stops reconnection and event forwarding.
	life context.Context
	end  context.CancelFunc
	wg   sync.WaitGroup
}

// session is one socket connection to libvirtd.
type session struct {
	l   *libvirt.Libvirt
	raw net.Conn // closed directly to drop a daemon that stopped answering
}

// Connect connects to libvirtd. The first connection must succeed within
// ctx; later losses are repaired in the background until Close.
func Connect(ctx context.Context, cfg Config) (*Conn, error) {
	network, address, driverURI, err := parseURI(cfg.URI)
	if err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Conn{
		log:       log.With("libvirt", address),
		network:   network,
		address:   address,
		driverURI: driverURI,
		up:        make(chan struct{}),
	}
	s, err := c.dial(ctx)
	if err != nil {
		return nil, err
	}
	c.life, c.end = context.WithCancel(context.Background())
	c.setUp(s)
	c.log.Info("connected to libvirtd")
	c.wg.Add(1)
	go c.supervise(s)
	return c, nil
}

// parseURI splits a libvirt client URI into where to dial and the driver
// URI to open there (the socket location is the client's business, not
// the daemon's).
func parseURI(uri string) (network, address string, driverURI libvirt.ConnectURI, err error) {
	if uri == "" {
		uri = string(libvirt.QEMUSystem)
	}
	if strings.HasPrefix(uri, "/") {
		return "unix", uri, libvirt.QEMUSystem, nil
	}
	u, err := url.Parse(uri)
	if err != nil {
		return "", "", "", fmt.Errorf("virt: libvirt URI %q: %w", uri, err)
	}
	path := u.Path
	if path == "" {
		path = "/system"
	}
	driverURI = libvirt.ConnectURI("qemu://" + path)
	switch u.Scheme {
	case "qemu", "qemu+unix":
		if u.Host != "" {
			return "", "", "", fmt.Errorf("virt: libvirt URI %q: a unix connection has no host", uri)
		}
		address = u.Query().Get("socket")
		if address == "" {
			address = "/run/libvirt/libvirt-sock"
		}
		return "unix", address, driverURI, nil
	case "qemu+tcp":
		port := u.Port()
		if port == "" {
			port = "16509"
		}
		return "tcp", net.JoinHostPort(u.Hostname(), port), driverURI, nil
	}
	return "", "", "", fmt.Errorf("virt: libvirt URI %q: unsupported scheme %q (qemu, qemu+unix, qemu+tcp)", uri, u.Scheme)
}

// dial opens one session. go-libvirt's handshake cannot be given a
// deadline (its reader treats a timeout as temporary and spins), so a
// daemon that accepts but does not answer is dropped by closing the socket.
func (c *Conn) dial(ctx context.Context) (*session, error) {
	ctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	raw, err := (&net.Dialer{}).DialContext(ctx, c.network, c.address)
	if err != nil {
		return nil, fmt.Errorf("virt: connect %s: %w", c.address, err)
	}
	l := libvirt.NewWithDialer(connDialer{raw})
	done := make(chan error, 1)
	go func() { done <- l.ConnectToURI(c.driverURI) }()
	select {
	case err = <-done:
	case <-ctx.Done():
		raw.Close()
		<-done
		return nil, fmt.Errorf("virt: connect %s: libvirtd did not answer: %w", c.address, ctx.Err())
	}
	if err != nil {
		raw.Close()
		return nil, mapError("connect "+c.address, err)
	}
	return &session{l: l, raw: raw}, nil
}

// connDialer hands go-libvirt a socket dialed by dial, which honours a
// context where go-libvirt's dialers do not.
type connDialer struct{ conn net.Conn }

func (d connDialer) Dial() (net.Conn, error) { return d.conn, nil }

func (c *Conn) setUp(s *session) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cur = s
	close(c.up)
}

// drop marks the session of l as lost (if it is still current) and closes
// its socket, so that go-libvirt fails its pending calls and the
// supervisor reconnects.
func (c *Conn) drop(l *libvirt.Libvirt) {
	c.mu.Lock()
	s := c.cur
	if s == nil || s.l != l {
		c.mu.Unlock()
		return
	}
	c.cur = nil
	c.up = make(chan struct{})
	c.mu.Unlock()
	s.raw.Close()
}

// supervise watches the current session and replaces it when lost, until
// Close.
func (c *Conn) supervise(s *session) {
	defer c.wg.Done()
	for {
		c.watch(s)
		c.drop(s.l)
		if c.life.Err() != nil {
			return
		}
		c.log.Warn("lost connection to libvirtd; reconnecting")
		start := time.Now()
		if s = c.redial(); s == nil {
			return
		}
		c.setUp(s)
		c.log.Info("reconnected to libvirtd", "after", time.Since(start).Round(time.Millisecond))
	}
}

// watch returns when s is gone: its socket closed, or the daemon stopped
// answering a periodic probe, or the Conn was closed.
func (c *Conn) watch(s *session) {
	t := time.NewTicker(probeInterval)
	defer t.Stop()
	for {
		select {
		case <-c.life.Done():
			return
		case <-s.l.Disconnected():
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
			err := probe(ctx, s)
			cancel()
			if err != nil {
				c.log.Warn("libvirtd probe failed", "err", err)
				return
			}
		}
	}
}

func probe(ctx context.Context, s *session) error {
	done := make(chan error, 1)
	go func() {
		_, err := s.l.ConnectGetLibVersion()
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// redial tries to connect with exponential backoff until it succeeds or
// the Conn is closed (then it returns nil).
func (c *Conn) redial() *session {
	wait := backoffMin
	for {
		s, err := c.dial(c.life)
		if err == nil {
			return s
		}
		c.log.Debug("reconnect failed", "err", err, "retry_in", wait)
		select {
		case <-c.life.Done():
			return nil
		case <-time.After(wait):
		}
		wait = min(2*wait, backoffMax)
	}
}

// Close disconnects and stops reconnecting; event channels are closed.
// It closes the socket rather than saying goodbye to libvirtd, which
// cleans up a client on EOF alike and cannot hang Close.
func (c *Conn) Close() error {
	c.end()
	c.mu.Lock()
	s := c.cur
	c.mu.Unlock()
	if s != nil {
		c.drop(s.l)
	}
	c.wg.Wait()
	return nil
}

// session returns the current session, waiting for a reconnection if
// there is none.
func (c *Conn) session(ctx context.Context) (*session, error) {
	for {
		if c.life.Err() != nil {
			return nil, ErrClosed
		}
		c.mu.Lock()
		s, up := c.cur, c.up
		c.mu.Unlock()
		if s != nil {
			return s, nil
		}
		select {
		case <-up:
		case <-c.life.Done():
			return nil, ErrClosed
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: %w", ErrDisconnected, ctx.Err())
		}
	}
}

// Whether an operation may be sent again after the connection dropped
// under it: reads may, changes may not (their effect is unknown).
const (
	idempotent    = true
	notIdempotent = false
)

// call runs fn against the current session within ctx and maps its error.
// An idempotent call that loses its connection is retried on the next
// one while ctx allows.
func call[T any](ctx context.Context, c *Conn, op string, retry bool, fn func(*libvirt.Libvirt) (T, error)) (T, error) {
	var zero T
	for {
		s, err := c.session(ctx)
		if err != nil {
			return zero, fmt.Errorf("virt: %s: %w", op, err)
		}
		type result struct {
			v   T
			err error
		}
		done := make(chan result, 1)
		go func() {
			v, err := fn(s.l)
			done <- result{v, err}
		}()
		var r result
		select {
		case r = <-done:
		case <-ctx.Done():
			return zero, fmt.Errorf("virt: %s: %w", op, ctx.Err())
		}
		err = mapError(op, r.err)
		if err == nil {
			return r.v, nil
		}
		if !errors.Is(err, ErrDisconnected) {
			return zero, err
		}
		c.drop(s.l)
		if !retry {
			return zero, err
		}
		c.log.Debug("retrying after disconnection", "op", op)
	}
}

// detached returns a context for a step that must not be abandoned
// halfway, such as starting, committing or aborting a job: the caller's
// cancellation does not reach it, so its outcome is known, and it is
// bounded by probeTimeout instead.
func detached(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), probeTimeout)
}

// do is call for operations without a result.
func do(ctx context.Context, c *Conn, op string, retry bool, fn func(*libvirt.Libvirt) error) error {
	_, err := call(ctx, c, op, retry, func(l *libvirt.Libvirt) (struct{}, error) { return struct{}{}, fn(l) })
	return err
}

// LibVersion returns libvirtd's version as major*1e6 + minor*1e3 + micro.
func (c *Conn) LibVersion(ctx context.Context) (uint64, error) {
	return call(ctx, c, "get version", idempotent, func(l *libvirt.Libvirt) (uint64, error) {
		return l.ConnectGetLibVersion()
	})
}
