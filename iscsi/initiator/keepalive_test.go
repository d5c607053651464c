package initiator

import (
	"log/slog"
	"net"
	"testing"
	"testing/synctest"
	"time"

	"github.com/shareless/shareless/iscsi/params"
	"github.com/shareless/shareless/iscsi/pdu"
)

// TestKeepAlive (RFC 7143 §11.18): an idle connection is pinged with an
// immediate NOP-Out after Config.KeepAlive; answers keep it, and one that
// stays silent is dropped after 2×KeepAlive + CommandTimeout/2, on a fake
// clock.
func TestKeepAlive(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const keepAlive, cmdTimeout = 5 * time.Second, 30 * time.Second
		a, b := net.Pipe()
		s := &Session{cfg: Config{KeepAlive: keepAlive, CommandTimeout: cmdTimeout},
			log: slog.New(slog.DiscardHandler), tasks: map[uint32]*task{}, wake: make(chan struct{})}
		c := &conn{s: s, nc: a, fr: pdu.NewFramer(a, a), op: params.Defaults(),
			dead: make(chan struct{}), logout: make(chan struct{})}
		c.lastRecv.Store(time.Now().UnixNano())
		go c.readLoop()
		go c.keepAlive()
		tgt := pdu.NewFramer(b, b)

		start := time.Now()
		m, err := tgt.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		ping, ok := m.(*pdu.NOPOut)
		if !ok || !ping.Immediate || ping.ITT == pdu.ReservedTag || ping.TTT != pdu.ReservedTag {
			t.Fatalf("expected an immediate NOP-Out ping, got %#v", m)
		}
		if d := time.Since(start); d < keepAlive || d > keepAlive*3/2 {
			t.Errorf("first ping after %v of silence, want about %v", d, keepAlive)
		}
		if err := tgt.WriteMessage(&pdu.NOPIn{ITT: ping.ITT, TTT: pdu.ReservedTag, TargetSN: pdu.TargetSN{StatSN: 1, ExpCmdSN: 1, MaxCmdSN: 1}}); err != nil {
			t.Fatal(err)
		}
		answered := time.Now()
		// From now on the target reads but never answers.
		pings := 0
		go func() {
			for {
				if _, err := tgt.ReadMessage(); err != nil {
					return
				}
				pings++
			}
		}()
		<-c.dead
		limit := 2*keepAlive + cmdTimeout/2
		if d := time.Since(answered); d < limit || d > limit+keepAlive {
			t.Errorf("silent connection dropped %v after the last answer, want about %v", d, limit)
		}
		synctest.Wait()
		if pings < 2 {
			t.Errorf("%d more pings while silent, want a few", pings)
		}
	})
}
