package target

import (
	"context"
	"fmt"

	"github.com/shareless/shareless/iscsi/pdu"
	"github.com/shareless/shareless/iscsi/scsi"
)

// Sense for a command whose Data-Out transfer broke the protocol
// (bad DataSN, offset or digest): ABORTED COMMAND, DATA PHASE ERROR
// (SPC-4 table 28), so that the initiator may retry it.
const ascDataPhaseError scsi.AdditionalSense = 0x4b00

// ascIUCRCError is INFORMATION UNIT iuCRC ERROR DETECTED, for a command
// whose data failed its digest.
const ascIUCRCError scsi.AdditionalSense = 0x4703

// scsiCommand starts a task for a SCSI Command PDU (§11.3).
func (c *conn) scsiCommand(m *pdu.SCSICommand) {
	defer c.dropImmediateBuffer() // unless the task adopted it
	op := &c.sess.op
	if m.ITT == pdu.ReservedTag {
		c.rejectPDU(pdu.RejectInvalidPDUField, headerOf(m))
		return
	}
	n := uint32(len(m.Data))
	if n > 0 && (!m.Write || !op.ImmediateData || n > m.ExpectedDataLength || n > op.FirstBurstLength) {
		// §11.3, §13.11: immediate data only with ImmediateData=Yes, within
		// FirstBurstLength and the expected length.
		c.rejectPDU(pdu.RejectProtocolError, headerOf(m))
		return
	}
	ctx, cancel := context.WithCancel(c.ctx)
	t := &task{
		itt: m.ITT, cmdSN: m.CmdSN, immediate: m.Immediate, lun: m.LUN, cdb: m.CDB,
		edtl: m.ExpectedDataLength, read: m.Read, write: m.Write,
		ctx: ctx, cancel: cancel, done: make(chan struct{}),
	}
	if t.write {
		switch {
		case t.edtl > c.t.cfg.MaxTransferLength:
			t.fail(scsi.Sense{Key: scsi.SenseIllegalRequest, Code: scsi.ASCInvalidFieldInCDB})
		case !c.sess.reserve(t.edtl):
			// Too much Data-Out outstanding on the session: TASK SET FULL
			// asks the initiator to retry once some commands complete.
			t.failed, t.buf = &scsi.Response{Status: scsi.StatusTaskSetFull}, nil
		default:
			t.reserved = t.edtl
			if imm := c.takeImmediateBuffer(m.Data); imm != nil {
				t.buf = imm[:t.edtl] // the immediate data is already in place
			} else {
				t.buf = c.t.bufs.Get(int(t.edtl))
				copy(t.buf, m.Data)
			}
			t.received = n
			t.unsolEnd = n
			if !m.Final && !op.InitialR2T {
				t.unsolEnd = min(op.FirstBurstLength, t.edtl)
			}
			if m.Final || t.unsolEnd == n {
				t.endUnsolicited()
			}
		}
	}
	t.dataDone = t.failed != nil || t.dataComplete()
	if !c.sess.register(t) {
		cancel()
		c.sess.finish(t) // returns its buffer budget; the tag stays with its owner
		c.rejectPDU(pdu.RejectTaskInProgress, headerOf(m))
		return
	}
	if !c.ordered(m.Immediate, m.CmdSN, func() { c.deliver(t) }) {
		cancel()
		c.sess.finish(t)
		return
	}
	c.issueR2Ts(t)
}

// fail makes the task end with CHECK CONDITION and sense instead of
// executing.
func (t *task) fail(s scsi.Sense) {
	t.failed = &scsi.Response{Status: scsi.StatusCheckCondition, Sense: s.Fixed()}
	t.buf = nil
	t.r2ts = nil
}

// deliver is called when t reaches its turn in CmdSN order.
func (c *conn) deliver(t *task) {
	t.delivered = true
	deps := c.sess.delivered(t)
	c.maybeDispatch(t, deps)
}

// dataOut accepts a SCSI Data-Out PDU (§11.7).
func (c *conn) dataOut(m *pdu.DataOut) {
	t := c.sess.lookup(m.ITT)
	if t == nil || t.dataDone {
		// Data for a task that already ended (failed early or aborted).
		c.log.Debug("dropping Data-Out for no active transfer", "itt", m.ITT)
		return
	}
	var err error
	if m.TTT == pdu.ReservedTag {
		err = t.unsolicited(m)
	} else {
		_, err = t.solicited(m)
	}
	if err != nil {
		c.failTransfer(t, err)
		return
	}
	if t.dataComplete() {
		t.dataDone = true
		c.maybeDispatch(t, nil)
		return
	}
	c.issueR2Ts(t)
}

// failTransfer ends a task whose Data-Out broke the protocol rules: at
// ErrorRecoveryLevel 0 the command fails (§7) and the connection goes
// on.
func (c *conn) failTransfer(t *task, err error) {
	c.log.Warn("Data-Out error; failing the command", "itt", t.itt, "err", err)
	t.fail(scsi.Sense{Key: scsi.SenseAbortedCommand, Code: ascDataPhaseError})
	t.dataDone = true
	c.maybeDispatch(t, nil)
}

// issueR2Ts asks for the data the initiator may not send unsolicited
// (§11.8): up to MaxOutstandingR2T sequences of at most MaxBurstLength.
func (c *conn) issueR2Ts(t *task) {
	if !t.write || t.dataDone || !t.unsolDone {
		return
	}
	op := &c.sess.op
	var msgs []pdu.Message
	for uint32(len(t.r2ts)) < op.MaxOutstandingR2T && t.nextR2T < t.edtl {
		length := min(op.MaxBurstLength, t.edtl-t.nextR2T)
		ttt := c.newTTT()
		if t.r2ts == nil {
			t.r2ts = make(map[uint32]*r2tState)
		}
		t.r2ts[ttt] = &r2tState{offset: t.nextR2T, length: length}
		msgs = append(msgs, &pdu.R2T{LUN: t.lun, ITT: t.itt, TTT: ttt, R2TSN: t.r2tSN,
			BufferOffset: t.nextR2T, DesiredLength: length})
		t.r2tSN++
		t.nextR2T += length
	}
	if len(msgs) > 0 {
		c.send(outItem{msgs: msgs})
	}
}

// maybeDispatch starts t on a worker once it is delivered and has all its
// data.
func (c *conn) maybeDispatch(t *task, deps []<-chan struct{}) {
	if !t.delivered || !t.dataDone || t.dispatched {
		return
	}
	t.dispatched = true
	c.tasksWG.Add(1)
	go c.execute(t, deps)
}

// unit returns the logical unit a LUN field addresses, or nil.
func (c *conn) unit(l pdu.LUN) *scsi.LogicalUnit {
	n, ok := l.Number()
	if !ok || int(n) >= len(c.t.units) {
		return nil
	}
	return c.t.units[n]
}

// execute runs t on its logical unit and sends the response.
func (c *conn) execute(t *task, deps []<-chan struct{}) {
	defer c.tasksWG.Done()
	defer func() {
		if r := recover(); r != nil {
			c.dropAfterPanic(fmt.Sprintf("command 0x%02x", t.cdb[0]), r)
		}
	}()
	for _, d := range deps {
		select {
		case <-d:
		case <-t.ctx.Done():
		}
	}
	var resp scsi.Response
	cmd := t.command(c.port, c.sess.initiatorPort)
	u := c.unit(t.lun)
	ua, pending := c.sess.takeUnitAttention(t.lun, t.cdb)
	switch {
	case t.aborted.Load():
	case t.failed != nil:
		resp = *t.failed
	case pending && u != nil:
		resp = ua
	case t.cdb[0] == scsi.OpReportLUNs:
		resp = scsi.ReportLUNs(cmd, c.t.lunNo)
	case u == nil:
		resp = scsi.UnsupportedLUN(cmd)
	default:
		resp = u.Execute(t.ctx, cmd)
	}
	c.complete(t, &resp)
}

// complete ends t: its tag is free again and its window slot returns
// before the response goes out, so the response carries the new MaxCmdSN.
func (c *conn) complete(t *task, resp *scsi.Response) {
	if t.reserved > 0 {
		// The unit is done with the Data-Out; the reader no longer writes
		// into it either (the task is dispatched).
		c.t.bufs.Put(t.buf)
	}
	c.sess.finish(t)
	t.cancel()
	if !t.immediate {
		c.sess.window.release()
	}
	if t.aborted.Load() {
		resp.Release()
		return
	}
	c.send(outItem{msgs: c.responsePDUs(t, resp), after: resp.Release})
}

// responsePDUs renders a SCSI response as Data-In PDUs, with the status in
// the last one when it is GOOD (phase collapse, §11.7), else followed by
// a SCSI Response with the sense data (§11.4). Residuals follow §11.4.5.
func (c *conn) responsePDUs(t *task, resp *scsi.Response) []pdu.Message {
	var over, under bool
	var residual uint32
	data := resp.Data
	switch {
	case uint64(len(data)) > uint64(t.edtl):
		over, residual = true, uint32(len(data))-t.edtl
		data = data[:t.edtl]
	case len(data) > 0 || t.read && !t.write:
		if n := uint32(len(data)); n < t.edtl {
			under, residual = true, t.edtl-n
		}
	case t.write && resp.DataOutLength != t.edtl:
		if resp.DataOutLength > t.edtl {
			over, residual = true, resp.DataOutLength-t.edtl
		} else {
			under, residual = true, t.edtl-resp.DataOutLength
		}
	}
	op := &c.sess.op
	seg := max(op.MaxXmitDataSegmentLength, 512)
	burst := max(op.MaxBurstLength, seg)
	collapse := resp.Status == scsi.StatusGood && len(resp.Sense) == 0
	var msgs []pdu.Message
	var dataSN uint32
	for off := uint32(0); off < uint32(len(data)); {
		n := min(seg, uint32(len(data))-off)
		// A Data-In sequence ends at MaxBurstLength (§13.13).
		if end := (off/burst + 1) * burst; off+n > end {
			n = end - off
		}
		last := off+n == uint32(len(data))
		d := &pdu.DataIn{LUN: t.lun, ITT: t.itt, TTT: pdu.ReservedTag, DataSN: dataSN,
			BufferOffset: off, Data: data[off : off+n], Final: last || (off+n)%burst == 0}
		if last && collapse {
			d.HasStatus, d.Status = true, resp.Status
			d.Overflow, d.Underflow, d.ResidualCount = over, under, residual
		}
		msgs = append(msgs, d)
		dataSN++
		off += n
	}
	if len(msgs) > 0 && collapse {
		return msgs
	}
	r := &pdu.SCSIResponse{ITT: t.itt, Response: pdu.ResponseCompleted, Status: resp.Status,
		Overflow: over, Underflow: under, ResidualCount: residual, ExpDataSN: dataSN + t.r2tSN}
	if len(resp.Sense) > 0 {
		r.SetSense(resp.Sense)
	}
	return append(msgs, r)
}
