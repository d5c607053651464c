package target

import (
	"bytes"
	"testing"
	"time"

	"github.com/shareless/shareless/iscsi/pdu"
	"github.com/shareless/shareless/iscsi/scsi"
)

func tmf(c *testClient, fn uint8, lun uint16, ref uint32) *pdu.TaskMgmtResponse {
	c.t.Helper()
	itt := c.nextITT()
	c.send(&pdu.TaskMgmtRequest{Immediate: true, Function: fn, LUN: pdu.LUNFromNumber(lun), ITT: itt,
		ReferencedTag: ref, CmdSN: c.cmdSN, ExpStatSN: c.expStatSN})
	for {
		switch m := c.recv().(type) {
		case *pdu.TaskMgmtResponse:
			if m.ITT != itt {
				c.t.Fatalf("TMF response for ITT %d, want %d", m.ITT, itt)
			}
			return m
		case *pdu.NOPIn:
		default:
			c.t.Fatalf("unexpected %v (%+v) while waiting for the TMF response", m.Opcode(), m)
		}
	}
}

// TestRFC7143_11_5_AbortTask: ABORT TASK of an executing command answers
// "function complete" only after the command has finished, and the
// aborted command sends no response; an unknown tag gets "task does not
// exist"; functions the target lacks get "not supported".
func TestRFC7143_11_5_AbortTask(t *testing.T) {
	cfg := testConfig(t)
	entered := make(chan struct{})
	gd := &gateDevice{Device: cfg.LUNs[0].Device, gate: make(chan struct{}), entered: entered, flushed: make(chan struct{}), panicAt: -1}
	cfg.LUNs[0].Device = gd
	_, addr := startTarget(t, cfg)
	c := dial(t, addr)
	c.mustLogin(defaultLogin())
	c.send(&pdu.SCSICommand{Final: true, Write: true, Attr: pdu.AttrSimple, ITT: 500, ExpectedDataLength: 512,
		CmdSN: c.cmdSN, ExpStatSN: c.expStatSN, CDB: write10(0, 1), Data: bytes.Repeat([]byte{0xee}, 512)})
	c.cmdSN++
	<-entered // the write is executing
	time.AfterFunc(200*time.Millisecond, func() { close(gd.gate) })
	start := time.Now()
	if r := tmf(c, pdu.TMFAbortTask, 0, 500); r.Response != pdu.TMFComplete {
		t.Fatalf("ABORT TASK: response %d", r.Response)
	}
	if time.Since(start) < 150*time.Millisecond {
		t.Fatal("ABORT TASK answered while the aborted write was still executing")
	}
	if r := tmf(c, pdu.TMFAbortTask, 0, 12345); r.Response != pdu.TMFTaskDoesNotExist {
		t.Fatalf("ABORT TASK of an unknown tag: response %d", r.Response)
	}
	// A command not yet received (RefCmdSN in the window, before the
	// TMF's CmdSN) is aborted in advance and ignored when it comes.
	c.cmdSN++ // the TMF below refers to c.cmdSN-1, which was never sent
	itt := c.nextITT()
	c.send(&pdu.TaskMgmtRequest{Immediate: true, Function: pdu.TMFAbortTask, ITT: itt, ReferencedTag: 777,
		RefCmdSN: c.cmdSN - 1, CmdSN: c.cmdSN, ExpStatSN: c.expStatSN})
	if r, ok := c.recv().(*pdu.TaskMgmtResponse); !ok || r.ITT != itt || r.Response != pdu.TMFComplete {
		t.Fatalf("ABORT TASK of a command not yet received: %+v", r)
	}
	c.send(&pdu.SCSICommand{Final: true, Read: true, ITT: 777, CmdSN: c.cmdSN - 1, ExpectedDataLength: 512, CDB: read10(0, 1)})
	if r := tmf(c, pdu.TMFTargetColdReset, 0, 0); r.Response != pdu.TMFNotSupported {
		t.Fatalf("TARGET COLD RESET: response %d", r.Response)
	}
	if r := tmf(c, pdu.TMFLogicalUnitReset, 9, 0); r.Response != pdu.TMFLUNDoesNotExist {
		t.Fatalf("LUN RESET of LUN 9: response %d", r.Response)
	}
	// The next command works and is the first SCSI response we see: the
	// aborted write sent none.
	if res := c.command(0, read10(0, 1), nil, 512); res.status != 0 {
		t.Fatalf("READ after abort: status %d", res.status)
	}
}

// TestResetUnitAttention: after LUN RESET or TARGET WARM RESET every
// session sees one UNIT ATTENTION (29/03) on its next command to the LUN
// (SAM-5 §6.3); ABORT TASK SET raises none.
func TestResetUnitAttention(t *testing.T) {
	_, addr := startTarget(t, testConfig(t))
	a, b := dial(t, addr), dial(t, addr)
	a.mustLogin(defaultLogin())
	o := defaultLogin()
	o.initiator += "-b"
	b.mustLogin(o)
	tur := make([]byte, 6)
	for _, fn := range []uint8{pdu.TMFLogicalUnitReset, pdu.TMFTargetWarmReset} {
		if r := tmf(a, fn, 0, 0); r.Response != pdu.TMFComplete {
			t.Fatalf("TMF %d: response %d", fn, r.Response)
		}
		for _, c := range []*testClient{a, b} {
			res := c.command(0, tur, nil, 0)
			if res.status != scsi.StatusCheckCondition || senseKey(res.sense) != uint8(scsi.SenseUnitAttention) || res.sense[12] != 0x29 {
				t.Fatalf("TMF %d: first command after reset: status %d sense %x", fn, res.status, res.sense)
			}
			if res := c.command(0, tur, nil, 0); res.status != 0 {
				t.Fatalf("TMF %d: second command after reset: status %d", fn, res.status)
			}
		}
	}
	if r := tmf(b, pdu.TMFAbortTaskSet, 0, 0); r.Response != pdu.TMFComplete {
		t.Fatalf("ABORT TASK SET: response %d", r.Response)
	}
	if res := b.command(0, tur, nil, 0); res.status != 0 {
		t.Fatalf("after ABORT TASK SET: status %d", res.status)
	}
}
