package target

import (
	"sync"

	"github.com/shareless/shareless/iscsi/params"
	"github.com/shareless/shareless/iscsi/pdu"
	"github.com/shareless/shareless/iscsi/scsi"
)

// session is an iSCSI session (RFC 7143 §3.4): one I_T nexus, carried by
// exactly one connection here (MaxConnections=1).
type session struct {
	t         *Target
	tsih      uint16
	isid      pdu.ISID
	initiator string
	// initiatorPort names the I_T nexus for the logical units
	// (persistent reservations).
	initiatorPort string
	discovery     bool
	op            params.Operational
	conn          *conn
	window        cmdWindow

	mu    sync.Mutex
	tasks map[uint32]*task // by Initiator Task Tag
	// writes are the delivered, unfinished commands that carry Data-Out:
	// a SYNCHRONIZE CACHE waits for those delivered before it.
	writes map[*task]struct{}
	// ua holds the LUNs with a pending unit attention (see ua.go).
	ua map[pdu.LUN]bool
	// bufBytes is the Data-Out buffer memory the session's commands hold.
	bufBytes uint64
}

// maxSessionBuffers bounds the Data-Out buffers of one session's
// outstanding commands, so that a full window of maximum-length writes
// cannot exhaust memory.
const maxSessionBuffers = 256 << 20

// reserve takes n bytes of the session's Data-Out budget.
func (s *session) reserve(n uint32) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.bufBytes+uint64(n) > maxSessionBuffers {
		return false
	}
	s.bufBytes += uint64(n)
	return true
}

func newSession(t *Target, tsih uint16, r *loginResult, c *conn) *session {
	s := &session{
		t: t, tsih: tsih, isid: r.isid, initiator: r.initiator, discovery: r.discovery,
		initiatorPort: scsi.InitiatorPortName(r.initiator, r.isid),
		op:            r.op, conn: c, tasks: make(map[uint32]*task), writes: make(map[*task]struct{}),
	}
	s.window.reset(r.cmdSN, t.cfg.QueueDepth)
	return s
}

// end drops the session's connection; its goroutines clean up.
func (s *session) end(err error) { s.conn.close(err) }

// lookup returns the task with the given tag, or nil.
func (s *session) lookup(itt uint32) *task {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tasks[itt]
}

// register adds t unless its tag is in use.
func (s *session) register(t *task) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, busy := s.tasks[t.itt]; busy {
		return false
	}
	s.tasks[t.itt] = t
	return true
}

// delivered records that t reached its turn in CmdSN order and, for a
// SYNCHRONIZE CACHE, returns what it must wait for: every write delivered
// before it that has not finished.
func (s *session) delivered(t *task) []<-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	var deps []<-chan struct{}
	if t.isSync() {
		for w := range s.writes {
			deps = append(deps, w.done)
		}
	}
	if t.write {
		s.writes[t] = struct{}{}
	}
	return deps
}

// finish forgets t; its tag may be reused from now on.
func (s *session) finish(t *task) {
	s.mu.Lock()
	if s.tasks[t.itt] == t {
		delete(s.tasks, t.itt)
	}
	delete(s.writes, t)
	s.bufBytes -= uint64(t.reserved)
	t.reserved = 0
	s.mu.Unlock()
	t.finishOnce.Do(func() { close(t.done) })
}

// matching returns the session's tasks for which keep is true.
func (s *session) matching(keep func(*task) bool) []*task {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ts []*task
	for _, t := range s.tasks {
		if keep(t) {
			ts = append(ts, t)
		}
	}
	return ts
}
