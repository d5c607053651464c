package novahook

import (
	"fmt"
	"sort"
	"time"
)

// Event is an input to the Machine: a Notification, a HookCall, a
// ReplicaUpdate, a Tick or a Restart.
type Event interface{ isEvent() }

func (Notification) isEvent() {}

// HookOp is the libvirt qemu hook operation the hook forwards to the agent.
type HookOp int

const (
	// HookMigrateBegin is "migrate begin" on the destination. libvirt waits
	// for the answer; a refusal aborts the migration cleanly.
	HookMigrateBegin HookOp = iota + 1
	// HookReleased is "release" on the source for a guest that migrated away:
	// the source VM is gone and will write no more.
	HookReleased
)

func (o HookOp) String() string {
	switch o {
	case HookMigrateBegin:
		return "migrate-begin"
	case HookReleased:
		return "released"
	}
	return fmt.Sprintf("HookOp(%d)", int(o))
}

// HookCall is a libvirt hook invocation waiting for an answer. ID is chosen
// by the caller and comes back in the HookReply. The machine answers by
// Deadline at the latest (on the first Tick after it).
type HookCall struct {
	ID       uint64
	Op       HookOp
	Instance string
	Deadline time.Time
}

func (HookCall) isEvent() {}

// ReplicaKind says what a ReplicaUpdate reports.
type ReplicaKind int

const (
	ReplicaPrepared      ReplicaKind = iota + 1 // destination: replicas exist, pass-through until sealed
	ReplicaPrepareFailed                        // destination: replicas could not be created
	ReplicaProgress                             // destination: Done of Total bytes copied
	ReplicaCopied                               // every chunk is local (on the source: reported by the destination's agent)
)

// ReplicaUpdate is news from the replicator (or, on the source, from the
// destination's agent) about one migration's replicas.
type ReplicaUpdate struct {
	Instance    string
	Role        Role
	Kind        ReplicaKind
	Done, Total int64
	Err         string
}

func (ReplicaUpdate) isEvent() {}

// Tick lets time pass: hook deadlines and expiry of finished records.
type Tick struct{}

func (Tick) isEvent() {}

// Restart is the first event after the machine is rebuilt from its journal.
// The machine answers with the actions that resume every unfinished
// migration; they are idempotent by contract, because the process may have
// died after persisting a step and before running its actions.
type Restart struct{}

func (Restart) isEvent() {}

// Action is work for the shell. Every action must be idempotent, and
// every action concerns one instance, so that the shell can run an
// instance's actions in order and different instances' apart.
type Action interface {
	// InstanceUUID is the Nova instance the action is about.
	InstanceUUID() string
}

// PrepareReplicas (destination): learn the instance's managed disks from the
// source's agent, create pass-through replicas, define the CHAP secrets, get
// volumes ready; then feed ReplicaPrepared or ReplicaPrepareFailed.
type PrepareReplicas struct{ Instance, Source string }

// DiscardReplicas (destination): the migration was rolled back; remove the replicas.
type DiscardReplicas struct{ Instance, Source string }

// StartCopy (destination): the guest runs here; copy from the source once it
// is sealed (design.md §2 rule 5), feeding ReplicaProgress and ReplicaCopied.
type StartCopy struct{ Instance, Source string }

// RecordHome (destination): Nova placed the instance here; keep the modified
// set for the trip back.
type RecordHome struct{ Instance string }

// ReportCopied (destination): tell the source's agent that copying finished.
type ReportCopied struct{ Instance, Source string }

// SealExports (source): the source VM no longer writes; make the exports
// read-only so the destination may copy. Dest may be empty when unknown.
type SealExports struct{ Instance, Dest string }

// UnsealExports (source): the migration was rolled back; the local VM keeps
// its disks read-write.
type UnsealExports struct{ Instance, Dest string }

// ReleaseSource (source): the destination has every chunk; stop serving it,
// keeping the sealed image and its generation for an incremental return.
type ReleaseSource struct{ Instance, Dest string }

// HookReply answers a HookCall.
type HookReply struct {
	ID       uint64
	Instance string
	Allow    bool
	Reason   string
}

func (a PrepareReplicas) InstanceUUID() string { return a.Instance }
func (a DiscardReplicas) InstanceUUID() string { return a.Instance }
func (a StartCopy) InstanceUUID() string       { return a.Instance }
func (a RecordHome) InstanceUUID() string      { return a.Instance }
func (a ReportCopied) InstanceUUID() string    { return a.Instance }
func (a SealExports) InstanceUUID() string     { return a.Instance }
func (a UnsealExports) InstanceUUID() string   { return a.Instance }
func (a ReleaseSource) InstanceUUID() string   { return a.Instance }
func (a HookReply) InstanceUUID() string       { return a.Instance }

// Ready is the machine's answer to one event. The caller's contract:
//
//  1. write Persist durably (the journal) before anything else;
//  2. then run Actions;
//  3. then acknowledge the event (ack the AMQP message).
//
// A crash between 1 and 2 is repaired by Restart, which repeats the actions;
// a crash before 3 makes the broker redeliver, which Duplicate absorbs.
type Ready struct {
	Persist []Op
	Actions []Action
	// Duplicate is set when the notification's message_id was applied before.
	Duplicate bool
	// Notes say why an event was ignored or looked wrong, for the log.
	Notes []string
}

// MachineConfig holds the machine's fixed parameters.
type MachineConfig struct {
	// Host is this host's name as Nova knows it (publisher_id, payload.host).
	Host string
	// Retention is how long finished records and message_ids are kept: longer
	// than any redelivery or straggling notification.
	Retention time.Duration
	// OrphanTTL is how long a notification about an unknown migration from
	// another host is held in case the event that names this host is late.
	OrphanTTL time.Duration
	// MaxOrphans bounds that buffer; the oldest go first.
	MaxOrphans int
}

// DefaultMachineConfig returns the parameters the agent runs with.
func DefaultMachineConfig(host string) MachineConfig {
	return MachineConfig{Host: host, Retention: 7 * 24 * time.Hour, OrphanTTL: 10 * time.Minute, MaxOrphans: 1024}
}

// orphan is a source-published notification that names no host this agent
// knows yet. Orphans are not persisted: losing one needs a reordering and a
// crash together, and persisting them would cost an fsync per migration in
// the whole cloud.
type orphan struct {
	n        Notification
	received time.Time
}

// Machine is the migration state machine of one host. It does no I/O and
// reads no clock: the caller passes the time to Step. It is not safe for
// concurrent use; one goroutine owns it.
type Machine struct {
	cfg     MachineConfig
	state   *State
	hooks   []HookCall // waiting for replicas, in arrival order
	orphans []orphan
	now     time.Time
	rd      Ready // being built by the current Step
}

// NewMachine returns a machine over state, which it takes ownership of
// (use NewState for a fresh host, or the journal's recovered state).
func NewMachine(cfg MachineConfig, state *State) *Machine {
	return &Machine{cfg: cfg, state: state}
}

// Migrations returns copies of the current records, ordered by instance.
func (m *Machine) Migrations() []Migration {
	out := make([]Migration, 0, len(m.state.Migrations))
	for _, r := range m.state.sorted() {
		out = append(out, *r)
	}
	return out
}

// SourceOf returns the migrations for which this host is still the source
// of data the destination has not copied: while any remain, powering the
// host off fails those guests' reads.
func (m *Machine) SourceOf() []Migration {
	var out []Migration
	for _, r := range m.Migrations() {
		if r.Role == RoleSource && (r.Phase == PhasePreparing || r.Phase == PhaseCopying) {
			out = append(out, r)
		}
	}
	return out
}

// Step applies one event at time now.
func (m *Machine) Step(now time.Time, ev Event) Ready {
	m.now = now
	m.rd = Ready{}
	switch e := ev.(type) {
	case Notification:
		m.stepNotification(e)
	case HookCall:
		m.stepHook(e)
	case ReplicaUpdate:
		m.stepReplica(e)
	case Tick:
		m.stepTick()
	case Restart:
		m.stepRestart()
	default:
		panic(fmt.Sprintf("novahook: unknown event %T", ev))
	}
	rd := m.rd
	m.rd = Ready{}
	return rd
}

// put records r as changed.
func (m *Machine) put(r *Migration) {
	r.Updated = m.now
	c := *r
	m.state.Apply([]Op{{Put: &c}})
	m.rd.Persist = append(m.rd.Persist, Op{Put: &c})
}

func (m *Machine) act(a Action) { m.rd.Actions = append(m.rd.Actions, a) }

func (m *Machine) notef(format string, a ...any) {
	m.rd.Notes = append(m.rd.Notes, fmt.Sprintf(format, a...))
}

// see records a notification as applied, so a redelivery is a duplicate.
func (m *Machine) see(n Notification) {
	op := Op{See: n.MessageID, SeenAt: m.now}
	m.state.Apply([]Op{op})
	m.rd.Persist = append(m.rd.Persist, op)
}

// stage is a step of Nova's live migration, without .start/.end.
type stage int

const (
	stagePre stage = iota + 1
	stagePost
	stagePostDest
	stageRollback
	stageRollbackDest
	stageAbort
	stageForceComplete
)

// lmEvent says who sends an event: the destination (publisher_id is the
// destination, payload.host the source) or the source (both are the source).
// post_dest.end is the exception: Nova has just set instance.host to the
// destination, so payload.host is the destination too.
type lmEvent struct {
	stage    stage
	fromDest bool
	end      bool
}

var lmEvents = map[string]lmEvent{
	EventPreStart:           {stagePre, true, false},
	EventPreEnd:             {stagePre, true, true},
	EventPostStart:          {stagePost, false, false},
	EventPostEnd:            {stagePost, false, true},
	EventPostDestStart:      {stagePostDest, true, false},
	EventPostDestEnd:        {stagePostDest, true, true},
	EventRollbackStart:      {stageRollback, false, false},
	EventRollbackEnd:        {stageRollback, false, true},
	EventRollbackDestStart:  {stageRollbackDest, true, false},
	EventRollbackDestEnd:    {stageRollbackDest, true, true},
	EventAbortStart:         {stageAbort, false, false},
	EventAbortEnd:           {stageAbort, false, true},
	EventForceCompleteStart: {stageForceComplete, false, false},
	EventForceCompleteEnd:   {stageForceComplete, false, true},
}

// hosts returns the source and destination an event names; either is empty
// when the event does not say.
func (e lmEvent) hosts(n Notification) (source, dest string) {
	switch {
	case e.stage == stagePostDest && e.end:
		return "", n.Publisher.Host
	case e.fromDest:
		return n.Payload.Host, n.Publisher.Host
	default:
		return n.Publisher.Host, ""
	}
}

func (m *Machine) stepNotification(n Notification) {
	e, ok := lmEvents[n.EventType]
	if !ok {
		return // not a live migration event: nothing to record
	}
	if _, dup := m.state.Seen[n.MessageID]; dup {
		m.rd.Duplicate = true
		return
	}
	source, dest := e.hosts(n)
	self := m.cfg.Host
	switch {
	case source != "" && source == dest:
		// Nova refuses to live-migrate to the same host; not a migration.
		m.notef("%s: %s names %s as both source and destination, ignored", n.Payload.InstanceUUID, n.EventType, source)
	case dest == self:
		m.applyDest(n, e, source)
	case source == self:
		m.applySource(n, e, dest)
	case dest == "" && m.record(n.Payload.InstanceUUID, RoleDestination, source) != nil:
		// The source's own events (post, rollback, abort) for our replicas.
		m.applyDest(n, e, source)
	case source == "" && m.record(n.Payload.InstanceUUID, RoleSource, "") != nil:
		// post_dest.end from the destination of a migration we are the source of.
		m.applySource(n, e, dest)
	case dest == "":
		m.keepOrphan(n)
	}
}

// record returns the record for instance and role, or nil. For the
// destination, source (when not empty) must match: a record from another
// source belongs to another migration.
func (m *Machine) record(instance string, role Role, source string) *Migration {
	r := m.state.Migrations[Key{instance, role}]
	if r == nil || (source != "" && r.Source != source) {
		return nil
	}
	return r
}

// current returns the record an event applies to, creating it when the
// event begins a new attempt, or nil when the event is to be ignored.
// A finished record is replaced only by a newer event that can begin an
// attempt; an older one is late and is only recorded as seen.
func (m *Machine) current(n Notification, e lmEvent, role Role, source, dest string) *Migration {
	r := m.state.Migrations[Key{n.Payload.InstanceUUID, role}]
	begins := e.stage == stagePre
	other := r != nil && ((source != "" && r.Source != source) || (dest != "" && r.Dest != "" && r.Dest != dest))
	if r != nil && !r.Finished() {
		switch {
		case other && begins && n.Timestamp.After(r.LastEvent):
			// Nova runs one migration of an instance at a time, so the old
			// attempt ended without this host hearing of it.
			m.notef("%s: new migration %s>%s replaces unfinished %s>%s in phase %s", n.Payload.InstanceUUID, source, dest, r.Source, r.Dest, r.Phase)
			if role == RoleDestination && !r.Phase.switchedOver() {
				m.act(DiscardReplicas{r.Instance, r.Source})
			}
			return m.begin(n, e, role, source, dest)
		case other:
			m.notef("%s: %s names %s>%s, not this host's migration %s>%s, ignored", n.Payload.InstanceUUID, n.EventType, source, dest, r.Source, r.Dest)
			return nil
		}
		return r
	}
	if r != nil && !(begins && n.Timestamp.After(r.LastEvent)) {
		// The rest of a finished attempt (rollback.end after rollback.start,
		// the unordered rollback_dest cast, post.end) changes nothing; only a
		// stale beginning is worth a note.
		if begins {
			m.notef("%s: late %s for a finished migration (%s), ignored", n.Payload.InstanceUUID, n.EventType, r.Phase)
		}
		m.see(n)
		if r.Dest == "" && dest != "" && r.Source == source {
			r.Dest = dest // learnt only now, from the destination's events
			m.put(r)
		}
		return nil
	}
	// This host's own events may begin a record even when they are not the
	// first of the migration: the other host's events may come later (the
	// broker orders one publisher's messages only) or not at all.
	if begins || e.fromDest == (role == RoleDestination) && !(e.stage == stagePostDest && e.end) {
		return m.begin(n, e, role, source, dest)
	}
	m.notef("%s: %s for a migration this host has no record of, ignored", n.Payload.InstanceUUID, n.EventType)
	return nil
}

func (m *Machine) begin(n Notification, e lmEvent, role Role, source, dest string) *Migration {
	r := &Migration{Instance: n.Payload.InstanceUUID, Role: role, Source: source, Dest: dest, Phase: PhasePreparing, Started: n.Timestamp, LastEvent: n.Timestamp}
	m.state.Migrations[r.Key()] = r
	if role == RoleDestination && (e.stage == stagePre || e.stage == stagePostDest) {
		m.act(PrepareReplicas{r.Instance, r.Source})
	}
	return r
}

func (m *Machine) applyDest(n Notification, e lmEvent, source string) {
	r := m.current(n, e, RoleDestination, source, m.cfg.Host)
	if r == nil {
		return
	}
	m.see(n)
	if n.Timestamp.After(r.LastEvent) {
		r.LastEvent = n.Timestamp
	}
	switch e.stage {
	case stagePre, stageForceComplete:
	case stagePost, stagePostDest:
		if !r.Phase.switchedOver() {
			if r.Phase != PhaseReady {
				m.notef("%s: switch-over while replicas were %s", r.Instance, r.Phase)
			}
			r.Phase = PhaseCopying
			m.act(StartCopy{r.Instance, r.Source})
			m.answerHooks(r.Instance, true, "")
		}
		if e.stage == stagePostDest && e.end && !r.Home {
			r.Home = true
			m.act(RecordHome{r.Instance})
		}
	case stageRollback, stageRollbackDest:
		if r.Phase.switchedOver() {
			m.notef("%s: %s after the switch-over ignored: the guest runs here", r.Instance, n.EventType)
			break
		}
		if r.Phase != PhaseRolledBack {
			r.Phase = PhaseRolledBack
			m.act(DiscardReplicas{r.Instance, r.Source})
			m.answerHooks(r.Instance, false, "migration rolled back")
		}
	case stageAbort:
		if !r.Phase.switchedOver() && !r.AbortRequested {
			r.AbortRequested = true
			m.answerHooks(r.Instance, false, "migration abort requested")
		}
	}
	m.put(r)
	m.adoptOrphans(r)
}

func (m *Machine) applySource(n Notification, e lmEvent, dest string) {
	r := m.current(n, e, RoleSource, m.cfg.Host, dest)
	if r == nil {
		return
	}
	m.see(n)
	if n.Timestamp.After(r.LastEvent) {
		r.LastEvent = n.Timestamp
	}
	if r.Dest == "" && dest != "" {
		r.Dest = dest
	}
	switch e.stage {
	case stagePre, stageForceComplete, stageAbort:
	case stagePost, stagePostDest:
		if !r.Phase.switchedOver() {
			r.Phase = PhaseCopying
			m.act(SealExports{r.Instance, r.Dest})
		}
	case stageRollback, stageRollbackDest:
		if r.Phase.switchedOver() {
			m.notef("%s: %s after the switch-over ignored: the guest runs on %s", r.Instance, n.EventType, r.Dest)
			break
		}
		if r.Phase != PhaseRolledBack {
			r.Phase = PhaseRolledBack
			m.act(UnsealExports{r.Instance, r.Dest})
		}
	}
	m.put(r)
}

// keepOrphan holds a source's event about an instance this host has no
// destination record for, in case the destination's pre.start is late.
func (m *Machine) keepOrphan(n Notification) {
	if len(m.orphans) >= m.cfg.MaxOrphans && len(m.orphans) > 0 {
		m.orphans = m.orphans[1:]
	}
	m.orphans = append(m.orphans, orphan{n, m.now})
}

// adoptOrphans applies the held events of r's source about r's instance
// that are newer than r's start.
func (m *Machine) adoptOrphans(r *Migration) {
	var mine []Notification
	kept := m.orphans[:0]
	for _, o := range m.orphans {
		if o.n.Payload.InstanceUUID == r.Instance && o.n.Publisher.Host == r.Source {
			if !o.n.Timestamp.Before(r.Started) {
				mine = append(mine, o.n)
			}
			continue
		}
		kept = append(kept, o)
	}
	m.orphans = kept
	sort.SliceStable(mine, func(i, j int) bool { return mine[i].Timestamp.Before(mine[j].Timestamp) })
	for _, n := range mine {
		m.notef("%s: applying %s that came before this host's own events", r.Instance, n.EventType)
		m.stepNotification(n)
	}
}

func (m *Machine) stepHook(h HookCall) {
	switch h.Op {
	case HookReleased:
		if r := m.state.Migrations[Key{h.Instance, RoleSource}]; r != nil && r.Phase == PhasePreparing {
			r.Phase = PhaseCopying
			m.act(SealExports{r.Instance, r.Dest})
			m.put(r)
		}
		m.act(HookReply{ID: h.ID, Instance: h.Instance, Allow: true})
	case HookMigrateBegin:
		r := m.state.Migrations[Key{h.Instance, RoleDestination}]
		switch {
		case r == nil || r.Finished() || r.Phase.switchedOver() || r.Phase == PhasePreparing && !r.AbortRequested:
			// Notifications may trail the hook: wait for this attempt's pre.start and replicas.
			m.hooks = append(m.hooks, h)
		case r.Phase == PhaseReady && !r.AbortRequested:
			m.act(HookReply{ID: h.ID, Instance: h.Instance, Allow: true})
		case r.AbortRequested:
			m.act(HookReply{ID: h.ID, Instance: h.Instance, Reason: "migration abort requested"})
		default:
			m.act(HookReply{ID: h.ID, Instance: h.Instance, Reason: "replicas failed: " + r.Error})
		}
	default:
		panic(fmt.Sprintf("novahook: unknown hook op %d", h.Op))
	}
}

// answerHooks replies to every waiting migrate hook of instance.
func (m *Machine) answerHooks(instance string, allow bool, reason string) {
	kept := m.hooks[:0]
	for _, h := range m.hooks {
		if h.Instance == instance {
			m.act(HookReply{ID: h.ID, Instance: instance, Allow: allow, Reason: reason})
			continue
		}
		kept = append(kept, h)
	}
	m.hooks = kept
}

func (m *Machine) stepReplica(u ReplicaUpdate) {
	r := m.state.Migrations[Key{u.Instance, u.Role}]
	if r == nil {
		if u.Role == RoleDestination && u.Kind == ReplicaPrepared {
			m.notef("%s: replicas prepared for a migration this host has forgotten; discarding", u.Instance)
			m.act(DiscardReplicas{Instance: u.Instance})
			return
		}
		m.notef("%s: replica update for an unknown %s migration, ignored", u.Instance, u.Role)
		return
	}
	switch {
	case u.Role == RoleDestination && u.Kind == ReplicaPrepared:
		switch r.Phase {
		case PhasePreparing:
			r.Phase = PhaseReady
			m.put(r)
			m.answerHooks(r.Instance, !r.AbortRequested, abortReason(r))
		case PhaseRolledBack:
			// Prepared after Nova rolled back: the replicas must not linger.
			m.act(DiscardReplicas{r.Instance, r.Source})
		}
	case u.Role == RoleDestination && u.Kind == ReplicaPrepareFailed:
		if r.Phase == PhasePreparing {
			r.Phase, r.Error = PhaseFailed, u.Err
			m.put(r)
			m.answerHooks(r.Instance, false, "replicas failed: "+u.Err)
		}
	case u.Role == RoleDestination && u.Kind == ReplicaProgress:
		// Progress is for status only, kept in memory: the replicator
		// persists its own counter.
		if r.Phase == PhaseCopying {
			r.Done, r.Total = u.Done, u.Total
		}
	case u.Kind == ReplicaCopied:
		if r.Phase == PhaseCopied {
			return // repeated after a restart
		}
		if r.Phase != PhaseCopying {
			m.notef("%s: copy finished in phase %s, ignored", r.Instance, r.Phase)
			return
		}
		r.Phase = PhaseCopied
		if u.Role == RoleDestination {
			r.Done, r.Total = u.Total, u.Total
			m.act(ReportCopied{r.Instance, r.Source})
		} else {
			m.act(ReleaseSource{r.Instance, r.Dest})
		}
		m.put(r)
	default:
		m.notef("%s: replica update %d not meaningful for the %s, ignored", u.Instance, u.Kind, u.Role)
	}
}

func abortReason(r *Migration) string {
	if r.AbortRequested {
		return "migration abort requested"
	}
	return ""
}

func (m *Machine) stepTick() {
	kept := m.hooks[:0]
	for _, h := range m.hooks {
		if !m.now.Before(h.Deadline) {
			m.act(HookReply{ID: h.ID, Instance: h.Instance, Reason: "replicas not ready in time"})
			continue
		}
		kept = append(kept, h)
	}
	m.hooks = kept
	for _, r := range m.state.sorted() {
		if r.Finished() && m.now.Sub(r.Updated) > m.cfg.Retention {
			k := r.Key()
			m.state.Apply([]Op{{Remove: &k}})
			m.rd.Persist = append(m.rd.Persist, Op{Remove: &k})
		}
	}
	var expired []string
	for id, at := range m.state.Seen {
		if m.now.Sub(at) > m.cfg.Retention {
			expired = append(expired, id)
		}
	}
	sort.Strings(expired)
	for _, id := range expired {
		op := Op{Forget: id}
		m.state.Apply([]Op{op})
		m.rd.Persist = append(m.rd.Persist, op)
	}
	orphans := m.orphans[:0]
	for _, o := range m.orphans {
		if m.now.Sub(o.received) <= m.cfg.OrphanTTL {
			orphans = append(orphans, o)
		}
	}
	m.orphans = orphans
}

func (m *Machine) stepRestart() {
	m.hooks = nil // their connections died with the process
	for _, r := range m.state.sorted() {
		switch {
		case r.Role == RoleDestination && (r.Phase == PhasePreparing || r.Phase == PhaseReady):
			// Ready too: the replicator re-reports Prepared, which is a no-op here.
			m.act(PrepareReplicas{r.Instance, r.Source})
		case r.Role == RoleDestination && r.Phase == PhaseCopying:
			m.act(StartCopy{r.Instance, r.Source})
		case r.Role == RoleDestination && r.Phase == PhaseCopied:
			m.act(ReportCopied{r.Instance, r.Source})
		case r.Role == RoleDestination && r.Phase == PhaseRolledBack:
			m.act(DiscardReplicas{r.Instance, r.Source})
		case r.Role == RoleSource && r.Phase == PhaseCopying:
			m.act(SealExports{r.Instance, r.Dest})
		case r.Role == RoleSource && r.Phase == PhaseCopied:
			m.act(ReleaseSource{r.Instance, r.Dest})
		case r.Role == RoleSource && r.Phase == PhaseRolledBack:
			m.act(UnsealExports{r.Instance, r.Dest})
		}
		if r.Role == RoleDestination && r.Home && r.Phase != PhaseRolledBack {
			m.act(RecordHome{r.Instance})
		}
	}
}
