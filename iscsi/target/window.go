package target

import "sync/atomic"

// serialLess reports a < b in 32-bit serial number arithmetic (RFC 1982),
// which CmdSN and StatSN use (RFC 7143 §4.2.2.1).
func serialLess(a, b uint32) bool { return a != b && int32(b-a) > 0 }

// cmdWindow is a session's command window (RFC 7143 §4.2.2.1): the target
// accepts non-immediate commands with ExpCmdSN <= CmdSN <= MaxCmdSN.
//
// ExpCmdSN advances as commands are delivered in order; MaxCmdSN advances
// only as commands complete, so that at most depth non-immediate commands
// are outstanding at once (the queue depth the initiator sees) and MaxCmdSN
// never moves backwards. The reader goroutine advances ExpCmdSN; workers
// release slots; the writer reads both to stamp outgoing PDUs.
type cmdWindow struct {
	exp atomic.Uint32
	max atomic.Uint32
}

// reset opens a window of depth commands starting at cmdSN.
func (w *cmdWindow) reset(cmdSN, depth uint32) {
	w.exp.Store(cmdSN)
	w.max.Store(cmdSN + depth - 1)
}

// contains reports whether a non-immediate command numbered cmdSN may be
// accepted now.
func (w *cmdWindow) contains(cmdSN uint32) bool {
	exp, max := w.exp.Load(), w.max.Load()
	return !serialLess(cmdSN, exp) && !serialLess(max, cmdSN)
}

// advance moves ExpCmdSN past one delivered command.
func (w *cmdWindow) advance() { w.exp.Add(1) }

// release returns the slot of one completed non-immediate command.
func (w *cmdWindow) release() { w.max.Add(1) }

// load returns ExpCmdSN and MaxCmdSN for an outgoing PDU.
func (w *cmdWindow) load() (exp, max uint32) { return w.exp.Load(), w.max.Load() }

// sequencer delivers non-immediate commands in CmdSN order (RFC 7143
// §4.2.2.1): commands that arrive early wait until the gap before them is
// filled; commands outside the window and duplicates are silently ignored.
// It is owned by the connection's reader goroutine.
type sequencer struct {
	w       *cmdWindow
	pending map[uint32]func()
}

// submit delivers deliver now if cmdSN is the next expected number (and
// then every waiting command that follows it), queues it if it lies later
// in the window, and reports false if it was ignored.
func (s *sequencer) submit(cmdSN uint32, deliver func()) bool {
	if !s.w.contains(cmdSN) {
		return false
	}
	exp := s.w.exp.Load()
	if cmdSN != exp {
		if _, dup := s.pending[cmdSN]; dup {
			return false
		}
		if s.pending == nil {
			s.pending = make(map[uint32]func())
		}
		s.pending[cmdSN] = deliver
		return true
	}
	for {
		s.w.advance()
		deliver()
		next, ok := s.pending[s.w.exp.Load()]
		if !ok {
			return true
		}
		delete(s.pending, s.w.exp.Load())
		deliver = next
	}
}
