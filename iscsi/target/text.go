package target

import (
	"net"
	"strings"

	"github.com/shareless/shareless/iscsi/params"
	"github.com/shareless/shareless/iscsi/pdu"
)

// text answers a Text Request in the full feature phase (§11.10):
// SendTargets discovery (§13.3, Appendix C) and NotUnderstood or Reject for
// other keys; the target does not renegotiate parameters after login.
func (c *conn) text(m *pdu.TextRequest) {
	c.ordered(m.Immediate, m.CmdSN, func() {
		resp := &pdu.TextResponse{Final: true, LUN: m.LUN, ITT: m.ITT, TTT: pdu.ReservedTag}
		kvs, err := pdu.ParseText(m.Data)
		if err != nil || m.Continue {
			// Multi-PDU text requests are not needed by any key we serve.
			c.reject(pdu.RejectProtocolError, headerOf(m)[:])
			if !m.Immediate {
				c.sess.window.release()
			}
			return
		}
		var out []pdu.KeyValue
		for _, kv := range kvs {
			switch {
			case kv.Key == params.SendTargets:
				out = append(out, c.sendTargets(kv.Value)...)
			case params.Negotiable(kv.Key):
				out = append(out, pdu.KeyValue{Key: kv.Key, Value: params.Reject})
			default:
				out = append(out, pdu.KeyValue{Key: kv.Key, Value: params.NotUnderstood})
			}
		}
		resp.Data = pdu.EncodeText(out)
		c.respond(m.Immediate, resp)
	})
}

// sendTargets lists this target, with the portal the initiator connected
// to, if the initiator may log in to it: "All" in a discovery session, or
// the target's own name (or nothing: the current target) in any session.
func (c *conn) sendTargets(which string) []pdu.KeyValue {
	iqn := c.t.cfg.IQN
	switch {
	case which == "All" && c.sess.discovery:
	case which == "" && !c.sess.discovery:
	case strings.EqualFold(which, iqn):
	default:
		return nil
	}
	if !c.t.cfg.allows(c.sess.initiator) {
		return nil
	}
	host, port, _ := net.SplitHostPort(c.nc.LocalAddr().String())
	return []pdu.KeyValue{
		{Key: params.TargetName, Value: iqn},
		{Key: params.TargetAddress, Value: net.JoinHostPort(host, port) + ",1"},
	}
}
