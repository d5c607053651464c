package target

import (
	"errors"
	"time"

	"github.com/shareless/shareless/iscsi/pdu"
)

// nopOut answers a NOP-Out (§11.18). A ping from the initiator (ITT not
// reserved) gets a NOP-In echoing its data; a non-immediate one takes a
// CmdSN like any command and returns its window slot when answered: the
// accounting whose absence hung QEMU on gotgt. A reply to the target's own
// ping (ITT reserved) needs no answer: its arrival already proves the
// connection alive.
func (c *conn) nopOut(m *pdu.NOPOut) {
	if m.ITT == pdu.ReservedTag {
		return
	}
	c.ordered(m.Immediate, m.CmdSN, func() {
		data := m.Data
		if n := int(c.sess.op.MaxXmitDataSegmentLength); len(data) > n {
			data = data[:n]
		}
		c.respond(m.Immediate, &pdu.NOPIn{LUN: m.LUN, ITT: m.ITT, TTT: pdu.ReservedTag, Data: data})
	})
}

// keepalive pings an idle connection with a NOP-In that asks for a
// NOP-Out (§11.19, TTT not reserved) and drops the connection when
// nothing at all arrives within NOPTimeout of the ping.
func (c *conn) keepalive() {
	defer c.workers.Done()
	defer c.recoverPanic("keepalive")
	cfg := &c.t.cfg
	tick := time.NewTicker(max(min(cfg.NOPInterval, cfg.NOPTimeout)/4, 10*time.Millisecond))
	defer tick.Stop()
	var pingAt time.Time
	for {
		select {
		case <-c.ctx.Done():
			return
		case now := <-tick.C:
			last := time.Unix(0, c.lastRecv.Load())
			switch {
			case !pingAt.IsZero() && last.After(pingAt):
				pingAt = time.Time{} // answered (by anything)
			case !pingAt.IsZero() && now.Sub(pingAt) >= cfg.NOPTimeout:
				c.log.Warn("no answer to NOP-In; dropping connection", "timeout", cfg.NOPTimeout)
				c.close(errors.New("NOP-In timeout"))
				return
			case pingAt.IsZero() && now.Sub(last) >= cfg.NOPInterval:
				// A full queue means the connection is busy, not idle:
				// skip the ping rather than wait behind it.
				select {
				case c.out <- outItem{msgs: []pdu.Message{&pdu.NOPIn{ITT: pdu.ReservedTag, TTT: c.newTTT()}}}:
					pingAt = now
				default:
				}
			}
		}
	}
}
