package target

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/shareless/shareless/iscsi/pdu"
	"github.com/shareless/shareless/iscsi/scsi"
)

// task is one SCSI command from its SCSI Command PDU to its response.
//
// The reader goroutine owns every field but aborted, cancel and done: it
// collects Data-Out (§11.7), issues R2Ts (§11.8), and dispatches the task
// to a worker once it is both delivered in CmdSN order and complete.
type task struct {
	itt       uint32
	cmdSN     uint32
	immediate bool
	lun       pdu.LUN
	cdb       []byte
	edtl      uint32 // Expected Data Transfer Length
	read      bool
	write     bool

	buf      []byte // Data-Out, edtl bytes for writes
	reserved uint32 // bytes of the session's Data-Out budget buf holds
	received uint32 // Data-Out bytes received

	// Unsolicited data (§13.10, §13.14): immediate data plus Data-Out with the
	// reserved TTT, up to unsolEnd, until a PDU with the F bit.
	unsolDone   bool
	unsolEnd    uint32
	unsolDataSN uint32

	// Solicited data: outstanding R2Ts by Target Transfer Tag.
	r2ts    map[uint32]*r2tState
	nextR2T uint32 // buffer offset of the next R2T to issue
	r2tSN   uint32

	delivered  bool
	dataDone   bool
	dispatched bool
	// failed, when set, is sent instead of executing (a transfer error).
	failed *scsi.Response

	aborted    atomic.Bool
	ctx        context.Context
	cancel     context.CancelFunc
	done       chan struct{} // closed once the task is finished
	finishOnce sync.Once
}

// r2tState is one outstanding R2T's data sequence.
type r2tState struct {
	offset, length uint32
	got            uint32
	dataSN         uint32
}

func (t *task) isSync() bool {
	return len(t.cdb) > 0 && (t.cdb[0] == scsi.OpSynchronizeCache10 || t.cdb[0] == scsi.OpSynchronizeCache16)
}

// abort marks the task aborted (§4.2.3.3: no response is sent for
// it) and cancels its execution.
func (t *task) abort() {
	t.aborted.Store(true)
	t.cancel()
}

// unsolicited accepts a Data-Out with the reserved TTT.
func (t *task) unsolicited(m *pdu.DataOut) error {
	n := uint32(len(m.Data))
	switch {
	case t.unsolDone:
		return fmt.Errorf("unsolicited Data-Out after the unsolicited sequence ended")
	case m.DataSN != t.unsolDataSN:
		return fmt.Errorf("unsolicited Data-Out DataSN %d, want %d", m.DataSN, t.unsolDataSN)
	case m.BufferOffset != t.received:
		return fmt.Errorf("unsolicited Data-Out at offset %d, want %d (DataPDUInOrder)", m.BufferOffset, t.received)
	case uint64(m.BufferOffset)+uint64(n) > uint64(t.unsolEnd):
		return fmt.Errorf("unsolicited data beyond FirstBurstLength or the expected length (%d)", t.unsolEnd)
	}
	copy(t.buf[m.BufferOffset:], m.Data)
	t.received += n
	t.unsolDataSN++
	if m.Final {
		t.endUnsolicited()
	}
	return nil
}

func (t *task) endUnsolicited() {
	t.unsolDone = true
	t.nextR2T = t.received
}

// solicited accepts a Data-Out answering one of our R2Ts; it reports
// whether that R2T's sequence is complete.
func (t *task) solicited(m *pdu.DataOut) (bool, error) {
	r := t.r2ts[m.TTT]
	n := uint32(len(m.Data))
	switch {
	case r == nil:
		return false, fmt.Errorf("Data-Out for unknown TTT 0x%x", m.TTT)
	case m.DataSN != r.dataSN:
		return false, fmt.Errorf("Data-Out DataSN %d, want %d", m.DataSN, r.dataSN)
	case m.BufferOffset != r.offset+r.got:
		return false, fmt.Errorf("Data-Out at offset %d, want %d (DataPDUInOrder)", m.BufferOffset, r.offset+r.got)
	case r.got+n > r.length:
		return false, fmt.Errorf("Data-Out beyond the R2T's desired length")
	case m.Final != (r.got+n == r.length):
		return false, fmt.Errorf("F bit on Data-Out does not match the end of the R2T sequence")
	}
	copy(t.buf[m.BufferOffset:], m.Data)
	r.got += n
	r.dataSN++
	t.received += n
	if r.got == r.length {
		delete(t.r2ts, m.TTT)
		return true, nil
	}
	return false, nil
}

// dataComplete reports whether all Data-Out has arrived.
func (t *task) dataComplete() bool { return t.received == t.edtl || !t.write }

// command is the SCSI command handed to the logical unit.
func (t *task) command(port scsi.TargetPort, initiator string) *scsi.Command {
	return &scsi.Command{CDB: t.cdb, Data: t.buf, ExpectedDataLength: t.edtl, Port: port, Initiator: initiator}
}
