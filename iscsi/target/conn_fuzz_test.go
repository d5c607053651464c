package target

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/shareless/shareless/iscsi/pdu"
)

// panicCatcher is a slog handler that records whether a panic was logged.
type panicCatcher struct{ panicked chan string }

func (p panicCatcher) Handle(ctx context.Context, r slog.Record) error {
	if strings.Contains(r.Message, "panic") {
		select {
		case p.panicked <- r.Message:
		default:
		}
	}
	return nil
}

func (p panicCatcher) Enabled(context.Context, slog.Level) bool { return true }
func (p panicCatcher) WithAttrs([]slog.Attr) slog.Handler       { return p }
func (p panicCatcher) WithGroup(string) slog.Handler            { return p }

// FuzzFullFeaturePhase logs in (NoAuth) over an in-memory pipe and then
// feeds arbitrary bytes to the connection's reader: whatever the PDUs,
// the connection must not panic, must answer or drop, and must wind down
// completely once the peer goes away.
func FuzzFullFeaturePhase(f *testing.F) {
	add := func(msgs ...pdu.Message) {
		var b bytes.Buffer
		fr := pdu.NewFramer(nil, &b)
		for _, m := range msgs {
			fr.WriteMessage(m)
		}
		f.Add(b.Bytes())
	}
	add(&pdu.NOPOut{ITT: 1, TTT: pdu.ReservedTag, CmdSN: 1, Data: []byte("ping")})
	add(&pdu.SCSICommand{Final: true, Read: true, ITT: 2, CmdSN: 1, ExpectedDataLength: 4096, CDB: read10(0, 8)})
	add(&pdu.SCSICommand{Write: true, ITT: 3, CmdSN: 1, ExpectedDataLength: 8192, CDB: write10(0, 16), Data: make([]byte, 1024)},
		&pdu.DataOut{ITT: 3, TTT: pdu.ReservedTag, BufferOffset: 1024, Data: make([]byte, 1024), Final: true},
		&pdu.DataOut{ITT: 3, TTT: 1, BufferOffset: 2048, Data: make([]byte, 6144), Final: true})
	add(&pdu.TaskMgmtRequest{Immediate: true, Function: pdu.TMFAbortTask, ITT: 4, ReferencedTag: 3},
		&pdu.TaskMgmtRequest{Immediate: true, Function: pdu.TMFLogicalUnitReset, ITT: 5})
	add(&pdu.TextRequest{Final: true, ITT: 6, TTT: pdu.ReservedTag, CmdSN: 1, Data: []byte("SendTargets=All\x00")},
		&pdu.LogoutRequest{ITT: 7, CmdSN: 2})
	add(&pdu.SCSICommand{Final: true, ITT: 8, CmdSN: 1, CDB: []byte{0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0}},
		&pdu.SNACKRequest{ITT: 9}, &pdu.LoginRequest{ITT: 10})

	cfg := testConfig(f)
	cfg.CHAP, cfg.MutualCHAP, cfg.NoAuth = nil, nil, true
	catcher := panicCatcher{panicked: make(chan string, 1)}
	cfg.Logger = slog.New(catcher)
	tg, err := New(cfg)
	if err != nil {
		f.Fatal(err)
	}
	defer tg.Close()
	login := rawPDU(&pdu.LoginRequest{Transit: true, CSG: pdu.StageOperational, NSG: pdu.StageFullFeature, ISID: pdu.ISID{0x80},
		CmdSN: 1, Data: text("InitiatorName", testInitiator, "TargetName", testIQN)}, false, false, nil)

	f.Fuzz(func(t *testing.T, stream []byte) {
		client, server := net.Pipe()
		c := newConn(context.Background(), tg, server)
		go c.serve()
		go io.Copy(io.Discard, client) // the target's answers
		client.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := client.Write(login); err != nil {
			t.Fatalf("login: %v", err)
		}
		client.Write(stream)
		client.Close()
		select {
		case <-c.finished:
		case <-time.After(5 * time.Second):
			t.Fatal("connection did not wind down after the peer left")
		}
		select {
		case msg := <-catcher.panicked:
			t.Fatalf("connection panicked: %s", msg)
		default:
		}
	})
}
