package initiator

import (
	"bytes"
	"log/slog"
	"testing"

	"github.com/shareless/shareless/iscsi/params"
	"github.com/shareless/shareless/iscsi/pdu"
)

// targetStream renders PDUs as a target would send them in full feature
// phase.
func targetStream(tb testing.TB, msgs ...pdu.Message) []byte {
	var b bytes.Buffer
	fr := pdu.NewFramer(nil, &b)
	for _, m := range msgs {
		if err := fr.WriteMessage(m); err != nil {
			tb.Fatal(err)
		}
	}
	return b.Bytes()
}

// FuzzReader feeds arbitrary target PDU streams to the connection's reader
// while a read (ITT 1) and a write (ITT 2) are outstanding: whatever the
// target sends, the reader must not panic, write outside the read
// buffer, or complete a task twice.
func FuzzReader(f *testing.F) {
	f.Add(targetStream(f,
		&pdu.DataIn{ITT: 1, BufferOffset: 0, Data: make([]byte, 512)},
		&pdu.DataIn{ITT: 1, BufferOffset: 512, Data: make([]byte, 512), Final: true, HasStatus: true, TargetSN: pdu.TargetSN{StatSN: 1, ExpCmdSN: 3, MaxCmdSN: 10}}))
	f.Add(targetStream(f,
		&pdu.R2T{ITT: 2, TTT: 7, BufferOffset: 0, DesiredLength: 1024, TargetSN: pdu.TargetSN{ExpCmdSN: 3, MaxCmdSN: 10}},
		&pdu.SCSIResponse{ITT: 2, TargetSN: pdu.TargetSN{StatSN: 1, ExpCmdSN: 3, MaxCmdSN: 10}},
		&pdu.SCSIResponse{ITT: 1, Status: 2, TargetSN: pdu.TargetSN{StatSN: 2, ExpCmdSN: 3, MaxCmdSN: 10}, Data: []byte{0, 18, 0x70, 0, 5, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x24, 0, 0, 0, 0, 0}}))
	f.Add(targetStream(f,
		&pdu.NOPIn{ITT: pdu.ReservedTag, TTT: 9, Data: []byte("ping")},
		&pdu.Reject{Reason: pdu.RejectProtocolError, Data: make([]byte, pdu.BHSLen)},
		&pdu.AsyncMessage{Event: pdu.AsyncSCSIEvent}))
	f.Add(targetStream(f, &pdu.DataIn{ITT: 1, BufferOffset: 4000, Data: make([]byte, 512)}))
	f.Fuzz(func(t *testing.T, stream []byte) {
		nc := &scriptConn{r: bytes.NewReader(stream)}
		s := &Session{cfg: Config{LUN: 0}, log: slog.New(slog.DiscardHandler),
			tasks: map[uint32]*task{}, wake: make(chan struct{}), maxCmd: 10, cmdSN: 3}
		c := &conn{s: s, nc: nc, fr: pdu.NewFramer(nc, nc), op: params.Defaults(),
			dead: make(chan struct{}), logout: make(chan struct{})}
		c.fr.SetDataBuffer(c.placeDataIn)
		read := make([]byte, 1024+16)
		rt := &task{cdb: make([]byte, 16), read: read[:1024], itt: 1, conn: c, done: make(chan struct{})}
		wt := &task{cdb: make([]byte, 16), write: make([]byte, 1024), itt: 2, conn: c, done: make(chan struct{})}
		s.tasks[1], s.tasks[2] = rt, wt
		c.readLoop()
		<-c.dead
		for _, tk := range []*task{rt, wt} {
			tk.pending.Wait()
		}
		if !bytes.Equal(read[1024:], make([]byte, 16)) {
			t.Fatal("the reader wrote past the read buffer")
		}
	})
}
