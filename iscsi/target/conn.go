package target

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shareless/shareless/iscsi/pdu"
	"github.com/shareless/shareless/iscsi/scsi"
)

// firstStatSN is the StatSN of a connection's first Login Response.
const firstStatSN = 1

// outItem is a group of PDUs the writer sends back to back; after, if
// set, runs once they are written (or the connection has failed).
type outItem struct {
	msgs  []pdu.Message
	after func()
}

// conn is one TCP connection: login, then the full feature phase.
type conn struct {
	t    *Target
	nc   net.Conn
	log  *slog.Logger
	fr   *pdu.Framer
	sess *session
	port scsi.TargetPort

	ctx       context.Context
	cancel    context.CancelCauseFunc
	closeOnce sync.Once
	finished  chan struct{} // closed when serve has cleaned up

	out     chan outItem
	statSN  uint32 // next StatSN; owned by the writer
	workers sync.WaitGroup
	// tasksWG counts dispatched tasks; logout waits for them.
	tasksWG sync.WaitGroup

	seq       sequencer
	immBuf    []byte        // immediate data read by dataOutBuffer, for scsiCommand
	loggedOut chan struct{} // set by logout: closed once its response is sent
	nextTTT   atomic.Uint32
	lastRecv  atomic.Int64 // unix nanoseconds of the last PDU received
}

func newConn(ctx context.Context, t *Target, nc net.Conn) *conn {
	c := &conn{
		t: t, nc: nc, fr: pdu.NewFramer(nc, nc),
		log:      t.log.With("peer", nc.RemoteAddr().String()),
		port:     scsi.TargetPort{TargetName: t.cfg.IQN, TPGT: 1, RelativeID: 1},
		finished: make(chan struct{}),
	}
	if tc, ok := nc.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
	c.ctx, c.cancel = context.WithCancelCause(ctx)
	return c
}

// close ends the connection; every goroutine of it winds down.
func (c *conn) close(err error) {
	c.closeOnce.Do(func() {
		c.cancel(err)
		c.nc.Close()
	})
}

// recoverPanic contains a panic to this connection (it is dropped).
func (c *conn) recoverPanic(where string) {
	if r := recover(); r != nil {
		c.dropAfterPanic(where, r)
	}
}

func (c *conn) dropAfterPanic(where string, r any) {
	c.log.Error("panic serving connection; dropping it", "in", where, "panic", r, "stack", string(debug.Stack()))
	c.close(fmt.Errorf("panic in %s: %v", where, r))
}

func (c *conn) serve() {
	defer close(c.finished)
	defer c.cleanup()
	defer c.recoverPanic("reader")
	if err := c.login(); err != nil {
		c.log.Info("login failed", "err", err)
		return
	}
	c.out = make(chan outItem, int(c.t.cfg.QueueDepth)+64)
	c.lastRecv.Store(time.Now().UnixNano())
	c.workers.Add(2)
	go c.writeLoop()
	go c.keepalive()
	c.seq.w = &c.sess.window
	c.close(c.readLoop())
}

// cleanup ends the connection's session: its commands are aborted (their
// contexts are cancelled with the connection's) and waited for, so that
// nothing touches a device after the target has let go of it.
func (c *conn) cleanup() {
	c.close(errors.New("connection closed"))
	c.workers.Wait()
	c.tasksWG.Wait()
	if s := c.sess; s != nil {
		for _, t := range s.matching(func(*task) bool { return true }) {
			t.abort()
			s.finish(t)
		}
		c.t.removeSession(s)
		c.log.Info("session ended", "cause", context.Cause(c.ctx))
	}
}

// registry binds the target's session registry to this connection.
type registry struct{ c *conn }

func (r registry) sessionExists(tsih uint16) bool { return r.c.t.sessionExists(tsih) }

func (r registry) admit(res *loginResult) (uint16, error) {
	tsih, old, err := r.c.t.admit(res, r.c)
	if old != nil {
		// Reinstatement (§6.3.5): the old session's tasks end before the
		// new session starts.
		old.end(errors.New("reinstated by a new login"))
		select {
		case <-old.conn.finished:
		case <-time.After(5 * time.Second):
		}
	}
	return tsih, err
}

// login runs the login phase (RFC 7143 §6) under LoginTimeout.
func (c *conn) login() error {
	c.nc.SetDeadline(time.Now().Add(c.t.cfg.LoginTimeout))
	l := newLogin(&c.t.cfg, registry{c}, firstStatSN)
	for {
		m, err := c.fr.ReadMessage()
		if err != nil {
			return err
		}
		req, ok := m.(*pdu.LoginRequest)
		if !ok {
			return fmt.Errorf("%v during login", m.Opcode())
		}
		resp, outcome, stepErr := l.step(req)
		if err := c.fr.WriteMessage(resp); err != nil {
			return err
		}
		switch outcome {
		case loginFailed:
			return stepErr
		case loginDone:
			r := l.result()
			c.statSN = r.statSN + 1
			c.fr.SetDigests(r.op.HeaderDigest, r.op.DataDigest)
			c.fr.SetMaxRecvDataSegmentLength(int(r.op.MaxRecvDataSegmentLength))
			c.fr.SetDataBuffer(c.dataOutBuffer)
			c.nc.SetDeadline(time.Time{})
			c.log = c.log.With("initiator", r.initiator, "tsih", resp.TSIH)
			c.log.Info("login", "discovery", r.discovery, "header_digest", r.op.HeaderDigest,
				"data_digest", r.op.DataDigest, "max_xmit", r.op.MaxXmitDataSegmentLength)
			return nil
		}
	}
}

// dataOutBuffer lets the framer read write data straight into the
// command's buffer: a Data-Out segment at its offset in its task's buffer
// (the checks of task.unsolicited and task.solicited follow once the PDU
// is decoded), and the immediate data of a write command into a pooled
// buffer of the command's whole length, which scsiCommand then adopts.
func (c *conn) dataOutBuffer(h *pdu.BHS, n int) []byte {
	switch h.Opcode() {
	case pdu.OpDataOut:
		t := c.sess.lookup(h.ITT())
		if t == nil || t.dataDone || t.buf == nil {
			return nil
		}
		off := uint64(binary.BigEndian.Uint32(h[40:]))
		if off+uint64(n) > uint64(len(t.buf)) {
			return nil
		}
		return t.buf[off : off+uint64(n)]
	case pdu.OpSCSICommand:
		edtl := binary.BigEndian.Uint32(h[20:])
		if h[1]&0x20 == 0 || uint64(n) > uint64(edtl) || edtl > c.t.cfg.MaxTransferLength {
			return nil // not a write, or one scsiCommand refuses
		}
		c.dropImmediateBuffer()
		c.immBuf = c.t.bufs.Get(int(edtl))
		return c.immBuf[:n]
	}
	return nil
}

// takeImmediateBuffer returns the pooled buffer dataOutBuffer filled with
// data, if data is its start, and hands its ownership to the caller.
func (c *conn) takeImmediateBuffer(data []byte) []byte {
	b := c.immBuf
	if b == nil || len(data) == 0 || &b[0] != &data[0] {
		return nil
	}
	c.immBuf = nil
	return b
}

// dropImmediateBuffer recycles an immediate-data buffer nobody adopted
// (its PDU was rejected).
func (c *conn) dropImmediateBuffer() {
	if c.immBuf != nil {
		c.t.bufs.Put(c.immBuf)
		c.immBuf = nil
	}
}

// errLogout ends the read loop after a logout response was sent.
var errLogout = errors.New("logged out")

func (c *conn) readLoop() error {
	for {
		m, err := c.fr.ReadMessage()
		c.lastRecv.Store(time.Now().UnixNano())
		if err != nil {
			var pe *pdu.PDUError
			if !errors.As(err, &pe) {
				return err
			}
			c.log.Warn("rejecting PDU", "err", pe)
			c.badPDU(pe)
			continue
		}
		c.handle(m)
		if c.loggedOut != nil {
			select {
			case <-c.loggedOut:
			case <-c.ctx.Done():
			}
			return errLogout
		}
	}
}

// handle dispatches one PDU of the full feature phase.
func (c *conn) handle(m pdu.Message) {
	if c.sess.discovery {
		switch m.(type) {
		case *pdu.TextRequest, *pdu.NOPOut, *pdu.LogoutRequest:
		default:
			// §4.3: a discovery session carries only Text, NOP and Logout.
			c.rejectPDU(pdu.RejectProtocolError, headerOf(m))
			return
		}
	}
	switch m := m.(type) {
	case *pdu.SCSICommand:
		c.scsiCommand(m)
	case *pdu.DataOut:
		c.dataOut(m)
	case *pdu.NOPOut:
		c.nopOut(m)
	case *pdu.TaskMgmtRequest:
		c.taskMgmt(m)
	case *pdu.TextRequest:
		c.text(m)
	case *pdu.LogoutRequest:
		c.logout(m)
	case *pdu.SNACKRequest:
		// ErrorRecoveryLevel 0 has no SNACK (§11.16).
		c.rejectPDU(pdu.RejectSNACK, headerOf(m))
	default:
		c.rejectPDU(pdu.RejectProtocolError, headerOf(m))
	}
}

// badPDU answers an invalid PDU the codec consumed whole with a Reject
// (§11.17); a SCSI command or Data-Out that failed its data digest also
// ends its task with CHECK CONDITION (§7.8, ErrorRecoveryLevel 0).
func (c *conn) badPDU(pe *pdu.PDUError) {
	h := &pe.Header
	switch {
	case h.Opcode() == pdu.OpSCSICommand && pe.Reason == pdu.RejectDataDigest:
		c.reject(pe.Reason, h[:])
		ctx, cancel := context.WithCancel(c.ctx)
		t := &task{itt: h.ITT(), cmdSN: cmdSNOf(h), immediate: h.Immediate(), cdb: []byte{0},
			ctx: ctx, cancel: cancel, done: make(chan struct{}), dataDone: true}
		t.fail(scsi.Sense{Key: scsi.SenseAbortedCommand, Code: ascIUCRCError})
		if !c.sess.register(t) {
			cancel()
			c.consumeCmdSN(h)
			return
		}
		if !c.ordered(t.immediate, t.cmdSN, func() { c.deliver(t) }) {
			cancel()
			c.sess.finish(t)
		}
	case h.Opcode() == pdu.OpDataOut:
		c.reject(pe.Reason, h[:])
		if t := c.sess.lookup(h.ITT()); t != nil && !t.dataDone {
			c.failTransfer(t, pe.Err)
		}
	default:
		c.rejectPDU(pe.Reason, h)
	}
}

// reject sends a Reject carrying the offending header.
func (c *conn) reject(reason uint8, header []byte) {
	c.send(outItem{msgs: []pdu.Message{&pdu.Reject{Reason: reason, Data: header}}})
}

// rejectPDU rejects a PDU and, if it is a non-immediate command, consumes
// its CmdSN in order: the initiator counted it, and the commands after it
// must not wait for it for ever.
func (c *conn) rejectPDU(reason uint8, h *pdu.BHS) {
	c.reject(reason, h[:])
	c.consumeCmdSN(h)
}

func (c *conn) consumeCmdSN(h *pdu.BHS) {
	switch h.Opcode() {
	case pdu.OpSCSICommand, pdu.OpTaskMgmtRequest, pdu.OpTextRequest, pdu.OpLogoutRequest:
	case pdu.OpNOPOut:
		if h.ITT() == pdu.ReservedTag {
			return // a ping reply takes no CmdSN
		}
	default:
		return
	}
	if !h.Immediate() {
		c.ordered(false, cmdSNOf(h), c.sess.window.release)
	}
}

func cmdSNOf(h *pdu.BHS) uint32 { return binary.BigEndian.Uint32(h[24:]) }

// headerOf re-encodes a decoded PDU's Basic Header Segment for a Reject.
func headerOf(m pdu.Message) *pdu.BHS {
	var b bytes.Buffer
	pdu.NewFramer(nil, &b).WriteMessage(m)
	var h pdu.BHS
	copy(h[:], b.Bytes())
	return &h
}

// send queues PDUs for the writer; it gives up when the connection ends.
func (c *conn) send(it outItem) {
	select {
	case c.out <- it:
	case <-c.ctx.Done():
		if it.after != nil {
			it.after()
		}
	}
}

func (c *conn) newTTT() uint32 {
	for {
		if v := c.nextTTT.Add(1); v != pdu.ReservedTag {
			return v
		}
	}
}

// maxBatch bounds how many queued items the writer gathers into one
// writev.
const maxBatch = 64

// writeLoop is the connection's only writer: it stamps StatSN, ExpCmdSN
// and MaxCmdSN in wire order (§4.2.2.2) and writes everything queued at
// that moment with one writev, data segments straight from the buffers
// the logical unit filled.
func (c *conn) writeLoop() {
	defer c.workers.Done()
	defer c.recoverPanic("writer")
	batch := make([]outItem, 0, maxBatch)
	var bufs net.Buffers
	for {
		select {
		case it := <-c.out:
			batch = append(batch[:0], it)
		case <-c.ctx.Done():
			return
		}
	gather:
		for len(batch) < maxBatch {
			select {
			case it := <-c.out:
				batch = append(batch, it)
			default:
				break gather
			}
		}
		bufs = bufs[:0]
		var err error
		for _, it := range batch {
			for _, m := range it.msgs {
				c.stamp(m)
				if bufs, err = c.fr.AppendMessage(bufs, m); err != nil {
					break
				}
			}
		}
		if err == nil {
			// An initiator that stops reading for NOPTimeout is as dead as
			// one that stops answering pings.
			c.nc.SetWriteDeadline(time.Now().Add(c.t.cfg.NOPTimeout))
			w := bufs // WriteTo consumes its receiver; bufs keeps the capacity
			_, err = w.WriteTo(c.nc)
		}
		clear(bufs)
		for _, it := range batch {
			if it.after != nil {
				it.after()
			}
		}
		clear(batch)
		if err != nil {
			c.close(fmt.Errorf("writing: %w", err))
			return
		}
	}
}

// stamp fills the sequence numbers of an outgoing PDU. PDUs that carry
// status take the next StatSN; R2T and NOP-In pings carry it without
// taking it (§11.8, §11.19).
func (c *conn) stamp(m pdu.Message) {
	sm, ok := m.(interface{ Seq() *pdu.TargetSN })
	if !ok {
		return
	}
	sn := sm.Seq()
	sn.ExpCmdSN, sn.MaxCmdSN = c.sess.window.load()
	// StatSN advances only on PDUs that carry status. An R2T and an
	// unsolicited NOP-In (a ping) report the next one without taking it; a
	// Data-In without status carries none (§4.2.2.2, §11.7.4, §11.19.1).
	switch m := m.(type) {
	case *pdu.DataIn:
		if !m.HasStatus {
			return
		}
	case *pdu.R2T:
		sn.StatSN = c.statSN
		return
	case *pdu.NOPIn:
		if m.ITT == pdu.ReservedTag {
			sn.StatSN = c.statSN
			return
		}
	}
	sn.StatSN = c.statSN
	c.statSN++
}

// ordered runs deliver for a command in CmdSN order, or at once for an
// immediate one (§4.2.2.1). Out-of-window commands are silently ignored.
func (c *conn) ordered(immediate bool, cmdSN uint32, deliver func()) bool {
	if immediate {
		deliver()
		return true
	}
	if !c.seq.submit(cmdSN, deliver) {
		exp, max := c.sess.window.load()
		c.log.Debug("ignoring command outside the CmdSN window", "cmdsn", cmdSN, "exp", exp, "max", max)
		return false
	}
	return true
}

// respond sends a non-SCSI response and returns the command's window slot.
func (c *conn) respond(immediate bool, m pdu.Message) {
	if !immediate {
		c.sess.window.release()
	}
	c.send(outItem{msgs: []pdu.Message{m}})
}

// logout answers a Logout Request (§11.14) once the dispatched commands
// are done; the read loop then waits for the response to be on the wire
// and ends the connection.
func (c *conn) logout(m *pdu.LogoutRequest) {
	c.ordered(m.Immediate, m.CmdSN, func() {
		resp := &pdu.LogoutResponse{ITT: m.ITT, Response: pdu.LogoutClosed}
		if m.Reason == pdu.LogoutRecovery {
			resp.Response = pdu.LogoutNoRecovery
		}
		c.tasksWG.Wait()
		if !m.Immediate {
			c.sess.window.release()
		}
		sent := make(chan struct{})
		c.loggedOut = sent
		c.send(outItem{msgs: []pdu.Message{resp}, after: func() { close(sent) }})
	})
}
