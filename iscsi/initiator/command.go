package initiator

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/shareless/shareless/iscsi/pdu"
)

// task is one SCSI command, possibly issued several times (once per
// connection) until a connection answers it.
type task struct {
	cdb   []byte
	read  []byte // Data-In buffer
	write []byte // Data-Out buffer

	// mu guards the current attempt; the reader holds it while it copies
	// Data-In, so that an abandoned buffer is never written.
	mu       sync.Mutex
	itt      uint32
	cmdSN    uint32
	conn     *conn
	finished bool
	done     chan struct{}
	res      result
	// pending counts Data-Out senders still reading write.
	pending sync.WaitGroup
}

// result is the outcome of one attempt.
type result struct {
	err                 error // protocol-level failure
	response            uint8 // iSCSI service response (§11.4.3)
	status              uint8
	sense               []byte
	underflow, overflow bool
	resid               uint32
	received            int // highest Data-In byte received
}

// StatusError is a SCSI status other than GOOD without sense data, or an
// iSCSI service response other than Command Completed (§11.4.3).
type StatusError struct {
	Response, Status uint8
}

func (e *StatusError) Error() string {
	if e.Response != pdu.ResponseCompleted {
		return fmt.Sprintf("iSCSI target failure (response 0x%02x)", e.Response)
	}
	return fmt.Sprintf("SCSI status 0x%02x", e.Status)
}

// exec runs one command: it waits for a free slot, then issues the
// command on the current connection within the CmdSN window, and waits for
// its answer. If the connection drops first, it issues the command again
// on the next one. Each attempt is bounded by Config.CommandTimeout.
func (s *Session) exec(ctx context.Context, t *task) (result, error) {
	select {
	case s.slots <- struct{}{}:
	case <-ctx.Done():
		return result{}, ctx.Err()
	}
	defer func() { <-s.slots }()
	defer t.pending.Wait()
	for {
		c, err := s.send(ctx, t)
		if err != nil {
			return result{}, err
		}
		if c == nil {
			s.forget(t)
			continue // the connection failed while sending
		}
		timer := time.NewTimer(s.cfg.CommandTimeout)
		select {
		case <-t.done:
			timer.Stop()
			s.forget(t)
			return t.res, nil
		case <-c.dead:
			timer.Stop()
			select {
			case <-t.done: // answered just before the connection died
				s.forget(t)
				return t.res, nil
			default:
			}
			s.forget(t)
		case <-timer.C:
			itt, sn := s.forget(t)
			go c.abort(itt, sn)
			return result{}, fmt.Errorf("%w after %v (CDB opcode 0x%02x)", ErrTimeout, s.cfg.CommandTimeout, t.cdb[0])
		case <-ctx.Done():
			timer.Stop()
			itt, sn := s.forget(t)
			go c.abort(itt, sn)
			return result{}, ctx.Err()
		}
	}
}

// forget ends the current attempt of t so that the reader ignores late
// answers; it returns the attempt's ITT and CmdSN.
func (s *Session) forget(t *task) (itt, cmdSN uint32) {
	t.mu.Lock()
	itt, cmdSN = t.itt, t.cmdSN
	t.finished = true
	t.conn = nil
	t.mu.Unlock()
	s.mu.Lock()
	if s.tasks[itt] == t {
		delete(s.tasks, itt)
	}
	s.mu.Unlock()
	return itt, cmdSN
}

// send issues one attempt of t. It returns the connection it was sent on,
// nil if that connection failed while sending, or an error if the session
// is gone or ctx ended while waiting for a connection or the window.
func (s *Session) send(ctx context.Context, t *task) (*conn, error) {
	c, err := s.waitWindow(ctx)
	if err != nil {
		return nil, err
	}
	c.wmu.Lock()
	s.mu.Lock()
	if s.conn != c || int32(s.maxCmd-s.cmdSN) < 0 {
		s.mu.Unlock()
		c.wmu.Unlock()
		return nil, nil // state changed while we took the write lock: retry
	}
	itt := s.newITT()
	cmdSN := s.cmdSN
	s.cmdSN++
	s.tasks[itt] = t
	s.mu.Unlock()

	t.mu.Lock()
	t.itt, t.cmdSN, t.conn, t.finished, t.done, t.res = itt, cmdSN, c, false, make(chan struct{}), result{}
	t.mu.Unlock()

	op := &c.op
	// Immediate data and the unsolicited Data-Out that may follow it
	// (§13.10, §13.11, §13.14).
	var immediate, unsolicited uint32
	n := uint32(len(t.write))
	if n > 0 {
		if op.ImmediateData {
			immediate = min(n, op.FirstBurstLength, op.MaxXmitDataSegmentLength)
		}
		unsolicited = immediate
		if !op.InitialR2T {
			unsolicited = min(n, op.FirstBurstLength)
		}
	}
	lun := pdu.LUNFromNumber(s.cfg.LUN)
	cmd := &pdu.SCSICommand{
		Final: unsolicited == immediate, Read: len(t.read) > 0, Write: n > 0,
		Attr: pdu.AttrSimple, LUN: lun, ITT: itt, CmdSN: cmdSN,
		ExpStatSN: c.expStatSN.Load(), CDB: t.cdb, Data: t.write[:immediate],
		ExpectedDataLength: uint32(len(t.read)) + n,
	}
	err = c.write(cmd)
	if err == nil && unsolicited > immediate {
		err = c.sendData(t.write, immediate, unsolicited-immediate, itt, pdu.ReservedTag)
	}
	// A command with data waits until the data is on the wire, since its
	// owner may reuse t.write as soon as exec returns (on an early CHECK
	// CONDITION, a timeout); one without data need not wait.
	c.release(n > 0)
	if err != nil {
		return nil, nil
	}
	return c, nil
}

// waitWindow waits for a live connection whose CmdSN window is open
// (§4.2.2.1).
func (s *Session) waitWindow(ctx context.Context) (*conn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		if s.err != nil {
			return nil, s.err
		}
		if c := s.conn; c != nil && int32(s.maxCmd-s.cmdSN) >= 0 && !c.isDead() {
			return c, nil
		}
		wake := s.wake
		s.mu.Unlock()
		select {
		case <-wake:
		case <-ctx.Done():
			s.mu.Lock()
			return nil, ctx.Err()
		}
		s.mu.Lock()
	}
}

// abort asks the target to abort an abandoned task (§11.5.1 ABORT TASK).
// The answer is not awaited: a target that does not answer is caught by
// the keepalive.
func (c *conn) abort(itt, refCmdSN uint32) {
	c.wmu.Lock()
	defer c.release(false)
	s := c.s
	s.mu.Lock()
	tmfITT := s.newITT()
	cmdSN := s.cmdSN
	s.mu.Unlock()
	c.write(&pdu.TaskMgmtRequest{Immediate: true, Function: pdu.TMFAbortTask,
		LUN: pdu.LUNFromNumber(s.cfg.LUN), ITT: tmfITT, ReferencedTag: itt,
		CmdSN: cmdSN, ExpStatSN: c.expStatSN.Load(), RefCmdSN: refCmdSN})
}
