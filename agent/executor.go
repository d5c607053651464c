package agent

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/shareless/shareless/config"
	"github.com/shareless/shareless/iscsi/initiator"
	"github.com/shareless/shareless/novahook"
	"github.com/shareless/shareless/replicator"
)

// executor performs the node's actions. Run must not block, so each
// instance gets a queue and a goroutine that drains it: actions of one
// instance run one at a time, in the machine's order (prepare before
// discard, seal before release), and instances do not wait on each other.
// Hook replies go straight to the waiting hook connection.
type executor struct {
	a  *Agent
	wg sync.WaitGroup

	mu     sync.Mutex
	queues map[string][]novahook.Action
}

func (x *executor) Run(_ context.Context, act novahook.Action) {
	if r, ok := act.(novahook.HookReply); ok {
		x.a.hooks.deliver(r)
		return
	}
	inst := act.InstanceUUID()
	x.mu.Lock()
	defer x.mu.Unlock()
	q, busy := x.queues[inst]
	x.queues[inst] = append(q, act)
	if busy {
		return
	}
	x.wg.Add(1)
	go x.drain(inst)
}

// drain runs the instance's queued actions until none is left. The actions
// get the agent's context, not the caller's: a hook or HTTP request that
// triggered a step must not cancel the work it started.
func (x *executor) drain(inst string) {
	defer x.wg.Done()
	for {
		x.mu.Lock()
		q := x.queues[inst]
		if len(q) == 0 || x.a.ctx.Err() != nil {
			delete(x.queues, inst)
			x.mu.Unlock()
			return
		}
		act := q[0]
		x.queues[inst] = q[1:]
		x.mu.Unlock()
		if err := x.a.perform(x.a.ctx, act); err != nil && x.a.ctx.Err() == nil {
			x.a.metrics.actionErrors.Add(1)
			x.a.log.Error("action failed", "instance", inst, "action", fmt.Sprintf("%T", act), "err", err)
		}
	}
}

// wait waits for the running actions after the agent's context ended.
func (x *executor) wait() { x.wg.Wait() }

// perform runs one action. Every action is idempotent: the node repeats
// unfinished ones after a restart.
func (a *Agent) perform(ctx context.Context, act novahook.Action) error {
	switch x := act.(type) {
	case novahook.PrepareReplicas:
		return a.prepare(ctx, x.Instance, x.Source)
	case novahook.StartCopy:
		return a.startCopy(ctx, x.Instance, x.Source)
	case novahook.DiscardReplicas:
		return a.discard(x.Instance)
	case novahook.RecordHome:
		// The replicas keep their modified sets durably from the start;
		// nothing more is needed for the trip back (design.md §2 rule 7).
		a.log.Info("instance now lives here; modified set kept for the way back", "instance", x.Instance)
		return nil
	case novahook.ReportCopied:
		return a.retry(ctx, "report copied to "+x.Source, func(ctx context.Context) error {
			p, err := a.peer(ctx, x.Source)
			if err != nil {
				return err
			}
			return p.copied(ctx, x.Instance)
		})
	case novahook.SealExports:
		return a.sealInstance(ctx, x.Instance)
	case novahook.UnsealExports:
		return a.unsealInstance(ctx, x.Instance)
	case novahook.ReleaseSource:
		return a.release(x.Instance)
	}
	return fmt.Errorf("unknown action %T", act)
}

// step feeds an event to the node; a node failure ends the agent, which
// must restart from its journal.
func (a *Agent) step(ev novahook.Event) {
	if _, err := a.node.Step(a.ctx, ev); err != nil {
		a.fail(err)
	}
}

// prepare (destination) creates pass-through replicas of the instance's
// disks on the source and exports them here, then reports to the node.
func (a *Agent) prepare(ctx context.Context, inst, source string) error {
	err := a.notCopyingFromHere(inst)
	if err == nil {
		err = a.ensureReplicas(ctx, inst, source)
	}
	if err != nil {
		a.step(novahook.ReplicaUpdate{Instance: inst, Role: novahook.RoleDestination, Kind: novahook.ReplicaPrepareFailed, Err: err.Error()})
		return err
	}
	a.step(novahook.ReplicaUpdate{Instance: inst, Role: novahook.RoleDestination, Kind: novahook.ReplicaPrepared})
	return nil
}

// notCopyingFromHere refuses to bring an instance back while another host
// still copies its disks from this one: the new replicas here would read
// from replicas that read from here (a loop, see Store.Replicate), and
// closing the sealed exports would fail that host's reads.
func (a *Agent) notCopyingFromHere(inst string) error {
	for _, m := range a.node.SourceOf() {
		if m.Instance == inst {
			return fmt.Errorf("%s still copies this instance's disks from this host; migrate it back once that copy is complete (shareless status)", m.Dest)
		}
	}
	return nil
}

// ensureReplicas makes every managed disk the source holds for inst open
// here as a replica of it, exported, and returns the source's listing.
func (a *Agent) ensureReplicas(ctx context.Context, inst, source string) error {
	p, err := a.peer(ctx, source)
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, peerTimeout)
	defer cancel()
	list, err := p.disks(cctx, inst)
	if err != nil {
		return fmt.Errorf("listing disks on %s: %w", source, err)
	}
	for _, d := range list.Disks {
		ref, err := NewDiskRef(inst, d.Disk)
		if err != nil {
			return fmt.Errorf("source %s: %w", source, err)
		}
		if err := a.ensureReplica(ctx, ref, d, p.iscsiAddr(list.ISCSIPort)); err != nil {
			return err
		}
	}
	return nil
}

// ensureReplica opens ref as a replica of the source's image d, reached
// at portal. A replica of that image that is already open, or on disk
// from before a restart, is kept with what it holds (guest writes made
// after the switch-over included); anything else local is replaced.
func (a *Agent) ensureReplica(ctx context.Context, ref DiskRef, d diskInfo, portal string) error {
	image, err := d.Image.id()
	if err != nil {
		return fmt.Errorf("disk %s: %w", ref, err)
	}
	base, err := d.Base.id()
	if err != nil {
		return fmt.Errorf("disk %s: %w", ref, err)
	}
	if dk := a.disks.get(ref); dk != nil {
		st := dk.rep.Stats()
		switch {
		case st.Source == image:
			return nil
		case !st.Sealed:
			return fmt.Errorf("disk %s is live here (%s), not a replica of %s", ref, st.State, image)
		}
		// A sealed image left from an earlier stay: Replicate decides
		// whether it can serve as the base of an incremental copy.
		if err := a.disks.close(ref); err != nil {
			return err
		}
	}
	sess, err := initiator.Dial(ctx, initiator.Config{
		Addr: portal, Target: ref.IQN(), InitiatorName: initiatorName(a.cfg.Default.Host),
		Credentials: a.initiatorCredentials(), Logger: a.log.With("disk", ref.String()),
	})
	if err != nil {
		return fmt.Errorf("disk %s: login to %s: %w", ref, portal, err)
	}
	opts := replicator.ReplicaOptions{Rate: int64(a.cfg.Replicator.BandwidthLimit),
		RemoteOnly: a.cfg.Replicator.Method == config.MethodRemote}
	rep, err := a.store.Open(ctx, ref.storeName(), sess, opts)
	if err == nil && rep.Stats().Source != image {
		rep.Close()
		rep, err = nil, errors.New("not a replica of this image")
	}
	if err != nil {
		var plan replicator.Plan
		rep, plan, err = a.store.Replicate(ctx, ref.storeName(), replicator.Origin{Image: image, Base: base}, sess, opts)
		if err != nil {
			sess.Close()
			return fmt.Errorf("disk %s: %w", ref, err)
		}
		a.log.Info("replica created", "disk", ref, "plan", plan, "source", portal)
	}
	if err := a.disks.export(ref, rep, sess); err != nil {
		rep.Close()
		sess.Close()
		return err
	}
	return nil
}

func (a *Agent) initiatorCredentials() initiator.Credentials {
	if a.chap == nil {
		return initiator.Credentials{}
	}
	return initiator.Credentials{CHAP: *a.chap}
}

// startCopy (destination): the guest runs here. Once the source is sealed
// (asked here, idempotent, so that the order in which the two agents hear
// of the switch-over does not matter), every replica copies; progress and
// completion go to the node.
func (a *Agent) startCopy(ctx context.Context, inst, source string) error {
	local := a.disks.ofInstance(inst)
	if !allComplete(local) {
		err := a.retry(ctx, "seal on "+source, func(ctx context.Context) error {
			if err := a.ensureReplicas(ctx, inst, source); err != nil {
				return err
			}
			p, err := a.peer(ctx, source)
			if err != nil {
				return err
			}
			deltas, err := p.seal(ctx, inst)
			if err != nil {
				return err
			}
			return a.sourceSealed(ctx, inst, deltas)
		})
		if err != nil {
			return err
		}
		local = a.disks.ofInstance(inst)
	}
	return a.follow(ctx, inst, local)
}

func allComplete(ds []*disk) bool {
	for _, dk := range ds {
		if dk.rep.State() != replicator.StateComplete {
			return false
		}
	}
	return len(ds) > 0
}

// sourceSealed tells each replica of inst that its source is sealed.
func (a *Agent) sourceSealed(ctx context.Context, inst string, deltas deltasReply) error {
	byDisk := make(map[string][]byte, len(deltas.Disks))
	for _, d := range deltas.Disks {
		byDisk[d.Disk] = d.Delta
	}
	for _, dk := range a.disks.ofInstance(inst) {
		var delta *replicator.Delta
		if b, ok := byDisk[dk.ref.Disk]; ok {
			delta = new(replicator.Delta)
			if err := delta.UnmarshalBinary(b); err != nil {
				return fmt.Errorf("disk %s: delta: %w", dk.ref, err)
			}
		}
		plan, err := dk.rep.SourceSealed(ctx, delta)
		if err != nil {
			return fmt.Errorf("disk %s: %w", dk.ref, err)
		}
		a.log.Info("copying", "disk", dk.ref, "plan", plan)
	}
	return nil
}

// progressInterval is how often a copy's progress reaches the node.
const progressInterval = time.Second

// follow reports the copy's progress until every replica is complete,
// then closes their source sessions and reports ReplicaCopied.
func (a *Agent) follow(ctx context.Context, inst string, ds []*disk) error {
	for {
		var done, total int64
		complete := true
		for _, dk := range ds {
			st := dk.rep.Stats()
			done += st.Size - st.BytesRemaining
			total += st.Size
			switch st.State {
			case replicator.StateComplete:
			case replicator.StateFailed, replicator.StateClosed:
				return fmt.Errorf("disk %s: replica %s", dk.ref, st.State)
			default:
				complete = false
			}
		}
		if complete {
			for _, dk := range ds {
				a.disks.dropSource(dk.ref)
			}
			a.linkForNova(ds)
			a.step(novahook.ReplicaUpdate{Instance: inst, Role: novahook.RoleDestination, Kind: novahook.ReplicaCopied, Done: total, Total: total})
			return nil
		}
		a.step(novahook.ReplicaUpdate{Instance: inst, Role: novahook.RoleDestination, Kind: novahook.ReplicaProgress, Done: done, Total: total})
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-a.clock.After(progressInterval):
		}
	}
}

// discard (destination): the migration was rolled back before the
// switch-over; the replicas go. Only pass-through replicas are discarded:
// a disk past the switch-over holds the guest's writes (the machine never
// rolls those back), and this host's own images are not replicas. Disks of
// the instance that are on disk but could not be opened (a replica whose
// source was never reached again) are removed too.
func (a *Agent) discard(inst string) error {
	var errs []error
	for _, dk := range a.disks.ofInstance(inst) {
		if st := dk.rep.State(); st != replicator.StatePassThrough {
			a.log.Warn("disk kept: not a pass-through replica", "disk", dk.ref, "state", st)
			continue
		}
		a.disks.take(dk.ref)
		errs = append(errs, dk.shut(dk.rep.Rollback))
		a.log.Info("replica discarded", "disk", dk.ref)
	}
	names, err := a.store.List()
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	for _, name := range names {
		ref, err := parseStoreName(name)
		if err != nil || ref.Instance != inst || a.disks.get(ref) != nil {
			continue
		}
		errs = append(errs, a.store.Remove(name))
		a.log.Info("unopened replica removed", "disk", ref)
	}
	return errors.Join(errs...)
}

// sealInstance (source) makes the instance's exports read-only: its VM
// has moved and writes no more.
func (a *Agent) sealInstance(ctx context.Context, inst string) error {
	for _, dk := range a.disks.ofInstance(inst) {
		if err := dk.rep.Seal(ctx); err != nil {
			return fmt.Errorf("seal %s: %w", dk.ref, err)
		}
		a.log.Info("export sealed", "disk", dk.ref, "image", dk.rep.ID())
	}
	return nil
}

// unsealInstance (source): the migration was rolled back; the local VM
// keeps writing.
func (a *Agent) unsealInstance(ctx context.Context, inst string) error {
	for _, dk := range a.disks.ofInstance(inst) {
		if err := dk.rep.Unseal(ctx); err != nil {
			return fmt.Errorf("unseal %s: %w", dk.ref, err)
		}
		a.log.Info("export unsealed", "disk", dk.ref, "image", dk.rep.ID())
	}
	return nil
}

// release (source): the destination holds every chunk. The exports stop;
// the sealed images stay in the store as bases for an incremental return.
func (a *Agent) release(inst string) error {
	var errs []error
	for _, dk := range a.disks.ofInstance(inst) {
		errs = append(errs, a.disks.close(dk.ref))
		a.log.Info("export released; sealed image kept for the way back", "disk", dk.ref)
	}
	return errors.Join(errs...)
}

// retry runs f until it succeeds or ctx ends, with backoff from 500 ms to
// 30 s: peers restart and networks blip, and these actions must happen.
func (a *Agent) retry(ctx context.Context, what string, f func(context.Context) error) error {
	delay := 500 * time.Millisecond
	for {
		cctx, cancel := context.WithTimeout(ctx, peerTimeout)
		err := f(cctx)
		cancel()
		if err == nil {
			return nil
		}
		a.metrics.actionErrors.Add(1)
		a.log.Warn("will retry", "what", what, "in", delay, "err", err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w (last error: %v)", what, ctx.Err(), err)
		case <-a.clock.After(delay):
		}
		delay = min(2*delay, 30*time.Second)
	}
}
