package novahook

import (
	"fmt"
	"sort"
	"time"
)

// Role is this host's part in a migration.
type Role int

const (
	// RoleDestination receives the VM and builds replicas of its managed disks.
	RoleDestination Role = iota + 1
	// RoleSource exports the managed disks until the destination has copied them.
	RoleSource
)

func (r Role) String() string {
	switch r {
	case RoleDestination:
		return "dest"
	case RoleSource:
		return "source"
	}
	return fmt.Sprintf("Role(%d)", int(r))
}

// Phase is where a migration stands, from one host's point of view.
type Phase int

const (
	// PhasePreparing: Nova has begun (pre.start). The destination is creating
	// pass-through replicas; the source serves its exports read-write.
	PhasePreparing Phase = iota + 1
	// PhaseReady: the destination's replicas exist; the migrate hook may let
	// libvirt proceed. Destination only.
	PhaseReady
	// PhaseFailed: the destination could not prepare replicas; the migrate
	// hook refuses, Nova rolls back. Destination only.
	PhaseFailed
	// PhaseCopying: the guest runs on the destination (post.start or later).
	// The source is sealed; the destination copies.
	PhaseCopying
	// PhaseCopied: every chunk is local on the destination; the source may
	// stop serving. Terminal for the source.
	PhaseCopied
	// PhaseRolledBack: Nova rolled the migration back before the switch-over;
	// replicas are discarded and the source unsealed. Terminal.
	PhaseRolledBack
)

var phaseNames = map[Phase]string{
	PhasePreparing: "preparing", PhaseReady: "ready", PhaseFailed: "failed",
	PhaseCopying: "copying", PhaseCopied: "copied", PhaseRolledBack: "rolled-back",
}

func (p Phase) String() string {
	if s, ok := phaseNames[p]; ok {
		return s
	}
	return fmt.Sprintf("Phase(%d)", int(p))
}

// switchedOver reports whether the guest already runs on the destination.
func (p Phase) switchedOver() bool { return p == PhaseCopying || p == PhaseCopied }

// Key identifies a migration record on one host. A host holds at most one
// record per instance and role: it can be the destination of one migration
// (still copying) and the source of the next.
type Key struct {
	Instance string
	Role     Role
}

func (k Key) String() string { return k.Instance + "/" + k.Role.String() }

// Migration is one live migration as this host sees it.
type Migration struct {
	Instance string
	Role     Role
	Source   string // Nova host name
	Dest     string // empty while only the source's own events are known
	Phase    Phase
	// Home is set on the destination by post_dest.end: Nova now places the
	// instance here, and the modified set must be kept for the trip back.
	Home bool
	// AbortRequested records instance.live_migration_abort: the migrate
	// hook stops waiting. Discarding waits for Nova's rollback, because an
	// abort that comes too late does not stop the migration.
	AbortRequested bool
	Error          string // why preparing failed
	// Started is the Nova timestamp of the event that began the record.
	Started     time.Time
	Done, Total int64 // bytes copied, of Total (destination, not persisted on every update)
	// LastEvent is the newest Nova timestamp applied. Older notifications
	// for a finished record are late and change nothing.
	LastEvent time.Time
	Updated   time.Time // machine clock of the last change, for expiry
}

// Key returns the record's key.
func (m *Migration) Key() Key { return Key{m.Instance, m.Role} }

// Finished reports whether nothing more will happen to the record.
func (m *Migration) Finished() bool {
	switch m.Phase {
	case PhaseRolledBack:
		return true
	case PhaseCopied:
		return m.Role == RoleSource || m.Home
	}
	return false
}

// Op is one change to the durable state. The machine returns ops in
// [Ready.Persist]; the journal stores them and replays them with [State.Apply].
// Exactly one field is set.
type Op struct {
	Put    *Migration `json:"put,omitempty"`
	Remove *Key       `json:"remove,omitempty"`
	// See records a message_id as applied, at the machine time in SeenAt.
	See    string    `json:"see,omitempty"`
	SeenAt time.Time `json:"seen_at,omitzero"`
	// Forget drops a message_id from the dedup set once it has expired.
	Forget string `json:"forget,omitempty"`
}

// State is what the machine persists: its migration records and the
// message_ids of the notifications that changed them (the dedup set, kept
// across restarts so that a redelivered message is not applied twice).
type State struct {
	Migrations map[Key]*Migration
	Seen       map[string]time.Time
}

// NewState returns an empty state.
func NewState() *State {
	return &State{Migrations: map[Key]*Migration{}, Seen: map[string]time.Time{}}
}

// Apply applies ops in order.
func (s *State) Apply(ops []Op) {
	for _, op := range ops {
		switch {
		case op.Put != nil:
			m := *op.Put
			s.Migrations[m.Key()] = &m
		case op.Remove != nil:
			delete(s.Migrations, *op.Remove)
		case op.See != "":
			s.Seen[op.See] = op.SeenAt
		case op.Forget != "":
			delete(s.Seen, op.Forget)
		}
	}
}

// Snapshot returns the ops that rebuild s from empty, in a stable order.
func (s *State) Snapshot() []Op {
	ops := make([]Op, 0, len(s.Migrations)+len(s.Seen))
	for _, m := range s.sorted() {
		c := *m
		ops = append(ops, Op{Put: &c})
	}
	ids := make([]string, 0, len(s.Seen))
	for id := range s.Seen {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		ops = append(ops, Op{See: id, SeenAt: s.Seen[id]})
	}
	return ops
}

// sorted returns the records ordered by instance, then role.
func (s *State) sorted() []*Migration {
	ms := make([]*Migration, 0, len(s.Migrations))
	for _, m := range s.Migrations {
		ms = append(ms, m)
	}
	sort.Slice(ms, func(i, j int) bool {
		if ms[i].Instance != ms[j].Instance {
			return ms[i].Instance < ms[j].Instance
		}
		return ms[i].Role < ms[j].Role
	})
	return ms
}
