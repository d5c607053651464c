package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/shareless/shareless/iscsi/params"
	"github.com/shareless/shareless/iscsi/pdu"
	"github.com/shareless/shareless/iscsi/target"
)

// portal is the agent's one iSCSI listening port, in front of one
// listener-less target.Target per managed disk. It reads the first Login
// Request of each connection, finds the target it names and hands the
// connection over, bytes read so far included. Disks are added and removed
// while it runs.
type portal struct {
	log *slog.Logger
	lns []net.Listener

	mu      sync.Mutex
	targets map[string]*target.Target // by lower-case IQN
}

// loginReadTimeout bounds how long a new connection may take to send its
// first Login Request.
const loginReadTimeout = 15 * time.Second

func newPortal(listen []string, port int, log *slog.Logger) (*portal, error) {
	p := &portal{log: log, targets: make(map[string]*target.Target)}
	for _, h := range listen {
		addr := net.JoinHostPort(h, fmt.Sprint(port))
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			p.close()
			return nil, fmt.Errorf("iSCSI portal: %w", err)
		}
		p.lns = append(p.lns, ln)
	}
	return p, nil
}

// addr is the first bound address (useful with port 0).
func (p *portal) addr() net.Addr { return p.lns[0].Addr() }

// add serves t under iqn, replacing nothing: a name is served once.
func (p *portal) add(iqn string, t *target.Target) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	k := strings.ToLower(iqn)
	if _, dup := p.targets[k]; dup {
		return fmt.Errorf("target %s is already served", iqn)
	}
	p.targets[k] = t
	return nil
}

// remove stops serving iqn and ends its sessions.
func (p *portal) remove(iqn string) {
	p.mu.Lock()
	t := p.targets[strings.ToLower(iqn)]
	delete(p.targets, strings.ToLower(iqn))
	p.mu.Unlock()
	if t != nil {
		t.Close()
	}
}

func (p *portal) lookup(iqn string) *target.Target {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.targets[strings.ToLower(iqn)]
}

// serve accepts on every listener until ctx ends.
func (p *portal) serve(ctx context.Context) error {
	errc := make(chan error, len(p.lns))
	var wg sync.WaitGroup
	for _, ln := range p.lns {
		go func() { errc <- p.accept(ctx, ln, &wg) }()
	}
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	p.close()
	p.mu.Lock()
	ts := p.targets
	p.targets = map[string]*target.Target{}
	p.mu.Unlock()
	for _, t := range ts {
		t.Close()
	}
	wg.Wait()
	return err
}

func (p *portal) close() {
	for _, ln := range p.lns {
		ln.Close()
	}
}

func (p *portal) accept(ctx context.Context, ln net.Listener, wg *sync.WaitGroup) error {
	for {
		nc, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("iSCSI portal accept on %s: %w", ln.Addr(), err)
		}
		if tc, ok := nc.(*net.TCPConn); ok {
			tc.SetNoDelay(true)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.route(ctx, nc)
		}()
	}
}

// route reads the first Login Request and hands the connection to the
// target it names, or answers "target not found" (RFC 7143 §11.13.5).
func (p *portal) route(ctx context.Context, nc net.Conn) {
	log := p.log.With("peer", nc.RemoteAddr().String())
	var seen bytes.Buffer
	nc.SetReadDeadline(time.Now().Add(loginReadTimeout))
	fr := pdu.NewFramer(io.TeeReader(nc, &seen), nc)
	msg, err := fr.ReadMessage()
	nc.SetReadDeadline(time.Time{})
	if err != nil {
		log.Info("iSCSI connection dropped before login", "err", err)
		nc.Close()
		return
	}
	req, ok := msg.(*pdu.LoginRequest)
	if !ok {
		log.Info("iSCSI connection did not start with a login", "opcode", msg.Opcode())
		nc.Close()
		return
	}
	name, discovery := loginTarget(req)
	var t *target.Target
	if !discovery {
		t = p.lookup(name)
	}
	if t == nil {
		// Discovery is not offered: QEMU and the agents log in by name, and
		// SendTargets of one disk's target would list that disk only.
		log.Info("iSCSI login refused: target not served here", "target", name, "discovery", discovery)
		fr.WriteMessage(&pdu.LoginResponse{CSG: req.CSG, ISID: req.ISID, ITT: req.ITT, TargetSN: pdu.TargetSN{ExpCmdSN: req.CmdSN, MaxCmdSN: req.CmdSN},
			StatusClass: pdu.LoginInitiatorError, StatusDetail: pdu.DetailNotFound})
		nc.Close()
		return
	}
	t.ServeConn(ctx, &replayConn{Conn: nc, r: io.MultiReader(&seen, nc)})
}

// loginTarget returns the TargetName of a first Login Request and whether
// it opens a discovery session.
func loginTarget(req *pdu.LoginRequest) (name string, discovery bool) {
	kvs, err := pdu.ParseText(req.Data)
	if err != nil {
		return "", false
	}
	for _, kv := range kvs {
		switch kv.Key {
		case params.TargetName:
			name = kv.Value
		case params.SessionType:
			discovery = kv.Value == "Discovery"
		}
	}
	return name, discovery
}

// replayConn is a connection whose first bytes were already read: Read
// returns them again before the rest of the stream.
type replayConn struct {
	net.Conn
	r io.Reader
}

func (c *replayConn) Read(b []byte) (int, error) { return c.r.Read(b) }
