package novahook

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// Executor runs the machine's actions. Run is called with the node's lock
// held, in the order the machine returned them, and must not block: it
// hands the action to whoever performs it (replicator, peer client, the
// waiting hook connection) and returns. Results come back as events
// through Node.Step.
type Executor interface {
	Run(ctx context.Context, a Action)
}

// Outcome is what a notification did.
type Outcome int

const (
	// Ignored: not a live-migration event this host takes part in.
	Ignored Outcome = iota + 1
	// Applied: recorded durably; any actions were started.
	Applied
	// Duplicate: the message_id was applied before (a redelivery).
	Duplicate
)

func (o Outcome) String() string {
	switch o {
	case Ignored:
		return "ignored"
	case Applied:
		return "applied"
	case Duplicate:
		return "duplicate"
	}
	return fmt.Sprintf("Outcome(%d)", int(o))
}

// ErrNodeFailed is wrapped by every call after the journal failed to
// persist a step. The machine's memory is then ahead of its journal, so
// the node refuses to go on; the agent must exit and restart from the
// journal.
var ErrNodeFailed = errors.New("migration node failed")

// Node owns a Machine and its Journal and keeps the caller's contract:
// persist, then act. It is safe for concurrent use: the AMQP consumer, the
// hook socket and the replicator all feed it.
type Node struct {
	mu   sync.Mutex
	m    *Machine
	j    *Journal
	exec Executor
	now  func() time.Time
	log  *slog.Logger
	err  error // sticky, see ErrNodeFailed
}

// NewNode returns a node over the state recovered by OpenJournal. Call
// Restart before feeding it anything else.
func NewNode(cfg MachineConfig, j *Journal, state *State, exec Executor, now func() time.Time, log *slog.Logger) *Node {
	return &Node{m: NewMachine(cfg, state), j: j, exec: exec, now: now, log: log}
}

// Restart repeats the actions of unfinished migrations after a start.
func (n *Node) Restart(ctx context.Context) error {
	_, err := n.Step(ctx, Restart{})
	return err
}

// HandleNotification applies one notification and returns only once its
// effect is durable, so that the caller may acknowledge the message.
func (n *Node) HandleNotification(ctx context.Context, msg Notification) (Outcome, error) {
	return n.Step(ctx, msg)
}

// Step applies any event: persist, then run the actions.
func (n *Node) Step(ctx context.Context, ev Event) (Outcome, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.err != nil {
		return 0, n.err
	}
	rd := n.m.Step(n.now(), ev)
	if err := n.j.Append(rd.Persist); err != nil {
		n.err = fmt.Errorf("%w: %w", ErrNodeFailed, err)
		return 0, n.err
	}
	log := n.log
	if msg, ok := ev.(Notification); ok {
		log = log.With("message_id", msg.MessageID, "event_type", msg.EventType, "instance", msg.Payload.InstanceUUID)
	}
	for _, note := range rd.Notes {
		log.Info(note)
	}
	for _, a := range rd.Actions {
		log.Debug("action", "action", fmt.Sprintf("%T", a), "detail", a)
		n.exec.Run(ctx, a)
	}
	switch {
	case rd.Duplicate:
		return Duplicate, nil
	case len(rd.Persist) > 0:
		return Applied, nil
	}
	return Ignored, nil
}

// RunTicks feeds a Tick every interval until ctx ends: hook deadlines and
// expiry depend on it.
func (n *Node) RunTicks(ctx context.Context, interval time.Duration) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if _, err := n.Step(ctx, Tick{}); err != nil {
				return err
			}
		}
	}
}

// Migrations returns the current records (for status).
func (n *Node) Migrations() []Migration {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.m.Migrations()
}

// SourceOf returns the migrations this host is still the source of: the
// host is safe to power off when it is empty.
func (n *Node) SourceOf() []Migration {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.m.SourceOf()
}
