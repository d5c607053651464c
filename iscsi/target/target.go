package target

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"

	"github.com/shareless/shareless/internal/bufpool"
	"github.com/shareless/shareless/iscsi/scsi"
)

// Target serves one iSCSI target name on the addresses of its Config.
type Target struct {
	cfg   Config
	log   *slog.Logger
	units []*scsi.LogicalUnit
	lunNo []uint16
	lns   []net.Listener
	bufs  bufpool.Pool // Data-Out buffers

	mu       sync.Mutex
	closed   bool
	conns    map[*conn]struct{}
	sessions map[uint16]*session
	lastTSIH uint16
	wg       sync.WaitGroup
	done     chan struct{} // closed by Close
}

// New validates cfg, creates the logical units and binds the listen
// addresses (so that a bad or busy address is reported here). Serve then
// accepts connections.
func New(cfg Config) (*Target, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("target %s: %w", cfg.IQN, err)
	}
	cfg = cfg.withDefaults()
	t := &Target{
		cfg: cfg, log: cfg.Logger.With("target", cfg.IQN),
		conns: make(map[*conn]struct{}), sessions: make(map[uint16]*session),
		done: make(chan struct{}),
	}
	for i, l := range cfg.LUNs {
		u, err := scsi.NewLogicalUnit(l.Device, l.Unit)
		if err != nil {
			return nil, fmt.Errorf("target %s LUN %d: %w", cfg.IQN, i, err)
		}
		t.units = append(t.units, u)
		t.lunNo = append(t.lunNo, uint16(i))
	}
	for _, a := range cfg.Listen {
		ln, err := net.Listen("tcp", a)
		if err != nil {
			t.closeListeners()
			return nil, fmt.Errorf("target %s: %w", cfg.IQN, err)
		}
		t.lns = append(t.lns, ln)
	}
	return t, nil
}

// Addrs returns the bound listen addresses (useful with port 0).
func (t *Target) Addrs() []net.Addr {
	a := make([]net.Addr, len(t.lns))
	for i, ln := range t.lns {
		a[i] = ln.Addr()
	}
	return a
}

// Serve accepts and serves connections until ctx is done or Close is
// called, then ends every session and returns. It returns nil after an
// orderly stop. A Target serves once: after Serve returns it is closed.
func (t *Target) Serve(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, len(t.lns))
	for _, ln := range t.lns {
		go func() { errc <- t.accept(ctx, ln) }()
	}
	var err error
	select {
	case <-ctx.Done():
	case <-t.done:
	case err = <-errc:
	}
	t.shutdown()
	return err
}

// Close stops the listeners, ends every session (dropping their
// connections after outstanding commands are abandoned) and waits for
// their goroutines.
func (t *Target) Close() error {
	t.shutdown()
	return nil
}

func (t *Target) shutdown() {
	t.mu.Lock()
	if !t.closed {
		t.closed = true
		close(t.done)
	}
	conns := make([]*conn, 0, len(t.conns))
	for c := range t.conns {
		conns = append(conns, c)
	}
	t.mu.Unlock()
	t.closeListeners()
	for _, c := range conns {
		c.close(errors.New("target stopping"))
	}
	t.wg.Wait()
}

func (t *Target) closeListeners() {
	for _, ln := range t.lns {
		ln.Close()
	}
}

func (t *Target) accept(ctx context.Context, ln net.Listener) error {
	for {
		nc, err := ln.Accept()
		if err != nil {
			select {
			case <-ctx.Done():
				return nil
			case <-t.done:
				return nil
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("accept on %s: %w", ln.Addr(), err)
		}
		go t.ServeConn(ctx, nc)
	}
}

// ServeConn serves one connection that the caller accepted, until it ends.
// It lets one listener front several targets (a portal that picks the
// target by the TargetName of the first Login Request): such a Target is
// made with no Listen addresses and gets its connections only here.
// A connection handed to a closed target is closed at once.
func (t *Target) ServeConn(ctx context.Context, nc net.Conn) {
	c := newConn(ctx, t, nc)
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		nc.Close()
		return
	}
	t.conns[c] = struct{}{}
	t.wg.Add(1)
	t.mu.Unlock()
	defer t.wg.Done()
	c.serve()
	t.mu.Lock()
	delete(t.conns, c)
	t.mu.Unlock()
}

// sessionExists implements sessionRegistry.
func (t *Target) sessionExists(tsih uint16) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	_, ok := t.sessions[tsih]
	return ok
}

// admit registers the session a login on c establishes under a fresh
// TSIH, and unregisters an older session of the same initiator and ISID,
// which the caller ends (session reinstatement, RFC 7143 §6.3.5).
func (t *Target) admit(r *loginResult, c *conn) (tsih uint16, old *session, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return 0, nil, errors.New("target stopping")
	}
	for _, s := range t.sessions {
		// The session identifier is initiator, ISID and target (the I_T nexus);
		// a discovery session is not one with the target.
		if s.isid == r.isid && s.initiator == r.initiator && s.discovery == r.discovery {
			old = s
			delete(t.sessions, s.tsih)
			break
		}
	}
	tsih, ok := t.freeTSIH()
	if !ok {
		return 0, old, errors.New("no free TSIH")
	}
	c.sess = newSession(t, tsih, r, c)
	t.sessions[tsih] = c.sess
	if old != nil {
		t.log.Info("session reinstated", "initiator", r.initiator, "old_tsih", old.tsih, "tsih", tsih)
	}
	return tsih, old, nil
}

// freeTSIH picks the next unused non-zero TSIH; t.mu is held.
func (t *Target) freeTSIH() (uint16, bool) {
	for range 1 << 16 {
		t.lastTSIH++
		if t.lastTSIH == 0 {
			continue
		}
		if _, used := t.sessions[t.lastTSIH]; !used {
			return t.lastTSIH, true
		}
	}
	return 0, false
}

// removeSession forgets s once its connection has ended.
func (t *Target) removeSession(s *session) {
	t.mu.Lock()
	if t.sessions[s.tsih] == s {
		delete(t.sessions, s.tsih)
	}
	t.mu.Unlock()
}

// allSessions returns the live sessions (for TARGET WARM RESET).
func (t *Target) allSessions() []*session {
	t.mu.Lock()
	defer t.mu.Unlock()
	ss := make([]*session, 0, len(t.sessions))
	for _, s := range t.sessions {
		ss = append(ss, s)
	}
	return ss
}
