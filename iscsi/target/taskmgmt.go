package target

import "github.com/shareless/shareless/iscsi/pdu"

// taskMgmt performs a task management function (§11.5). Aborted tasks
// send no response; the TMF response goes out only after every aborted
// task that was executing has finished (§4.2.3.3 of RFC 7143's task
// management rules), so no stale response can follow it.
func (c *conn) taskMgmt(m *pdu.TaskMgmtRequest) {
	c.ordered(m.Immediate, m.CmdSN, func() {
		resp, aborted := c.performTMF(m)
		var wait []*task
		for _, t := range aborted {
			t.abort()
			if t.dispatched {
				wait = append(wait, t)
			}
		}
		answer := func() {
			c.respond(m.Immediate, &pdu.TaskMgmtResponse{ITT: m.ITT, Response: resp})
		}
		if len(wait) == 0 {
			answer()
			return
		}
		c.workers.Add(1)
		go func() {
			defer c.workers.Done()
			for _, t := range wait {
				select {
				case <-t.done:
				case <-c.ctx.Done():
					return
				}
			}
			answer()
		}()
	})
}

// performTMF picks the tasks a function aborts and its response code.
func (c *conn) performTMF(m *pdu.TaskMgmtRequest) (uint8, []*task) {
	mine := c.sess
	switch m.Function {
	case pdu.TMFAbortTask:
		t := mine.lookup(m.ReferencedTag)
		if t == nil && mine.window.contains(m.RefCmdSN) && serialLess(m.RefCmdSN, m.CmdSN) {
			// §11.5.1: the command has not arrived yet. Its CmdSN counts
			// as received now, so the command is ignored if it comes.
			c.ordered(false, m.RefCmdSN, mine.window.release)
			return pdu.TMFComplete, nil
		}
		if t == nil {
			return pdu.TMFTaskDoesNotExist, nil
		}
		return pdu.TMFComplete, []*task{t}
	case pdu.TMFAbortTaskSet, pdu.TMFClearTaskSet:
		return pdu.TMFComplete, mine.matching(func(t *task) bool { return t.lun == m.LUN })
	case pdu.TMFLogicalUnitReset:
		if c.unit(m.LUN) == nil {
			return pdu.TMFLUNDoesNotExist, nil
		}
		// A LUN reset aborts the unit's tasks from every initiator; only
		// this session's are waited for (the others own their readers).
		var ts []*task
		for _, s := range c.t.allSessions() {
			s.raiseUnitAttention(m.LUN)
			for _, t := range s.matching(func(t *task) bool { return t.lun == m.LUN }) {
				if s == mine {
					ts = append(ts, t)
				} else {
					t.abort()
				}
			}
		}
		return pdu.TMFComplete, ts
	case pdu.TMFTargetWarmReset:
		var ts []*task
		for _, s := range c.t.allSessions() {
			for n := range c.t.units {
				s.raiseUnitAttention(pdu.LUNFromNumber(uint16(n)))
			}
			for _, t := range s.matching(func(*task) bool { return true }) {
				if s == mine {
					ts = append(ts, t)
				} else {
					t.abort()
				}
			}
		}
		return pdu.TMFComplete, ts
	case pdu.TMFTaskReassign:
		return pdu.TMFReassignUnsupported, nil
	}
	return pdu.TMFNotSupported, nil
}
