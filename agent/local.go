package agent

import (
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/shareless/shareless/config"
	"github.com/shareless/shareless/localapi"
	"github.com/shareless/shareless/novahook"
)

// hookWaiters pairs the node's HookReply actions with the hook calls
// waiting for them.
type hookWaiters struct {
	mu      sync.Mutex
	next    uint64
	waiting map[uint64]chan novahook.HookReply
}

func (h *hookWaiters) add() (uint64, chan novahook.HookReply) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.next++
	ch := make(chan novahook.HookReply, 1)
	h.waiting[h.next] = ch
	return h.next, ch
}

func (h *hookWaiters) remove(id uint64) {
	h.mu.Lock()
	delete(h.waiting, id)
	h.mu.Unlock()
}

// deliver hands r to its caller, if it still waits.
func (h *hookWaiters) deliver(r novahook.HookReply) {
	h.mu.Lock()
	ch := h.waiting[r.ID]
	delete(h.waiting, r.ID)
	h.mu.Unlock()
	if ch != nil {
		ch <- r
	}
}

// localBackend is the agent behind the unix socket (localapi.Backend).
type localBackend struct{ a *Agent }

// Hook decides a libvirt qemu hook call (see cmd/shareless/hook.go).
func (b localBackend) Hook(ctx context.Context, req localapi.HookRequest) (localapi.HookResponse, error) {
	a := b.a
	var dom struct {
		UUID  string `xml:"uuid"`
		Disks []struct {
			Type   string `xml:"type,attr"`
			Source struct {
				File string `xml:"file,attr"`
			} `xml:"source"`
		} `xml:"devices>disk"`
	}
	if err := xml.Unmarshal([]byte(req.XML), &dom); err != nil {
		return localapi.HookResponse{}, fmt.Errorf("domain XML: %w", err)
	}
	log := a.log.With("domain", req.Domain, "instance", dom.UUID, "op", req.Op, "sub_op", req.SubOp)
	served, _ := localapi.ServedLocally(req.XML) // the XML parsed above
	var resp localapi.HookResponse
	if req.Op == "migrate" && req.SubOp == "begin" {
		// Volume disks presented as an iSCSI LUN no initiator attached
		// here become QEMU-native iSCSI disks (Method A, volumes.go).
		// Managed disks need no rewrite (their IQN is the same on every
		// host); libvirt keeps its own XML when we print nothing.
		var err error
		if resp.XML, err = a.rewriteVolumes(req.XML); err != nil {
			log.Warn("refusing the migration: a volume disk cannot be reached here", "err", err)
			return localapi.HookResponse{}, err
		}
	}
	switch {
	case (req.Op == "migrate" && req.SubOp == "begin" || req.Op == "release") && !served:
		// No managed disk: nothing to prepare or seal, and a VM that owes
		// nothing to shareless must not wait for notifications about it
		// (after an agent restart or a broker outage there may be none).
		log.Debug("no managed disk: nothing to do")
		return resp, nil
	case req.Op == "migrate" && req.SubOp == "begin":
		return resp, a.hookCall(ctx, log, novahook.HookMigrateBegin, dom.UUID, a.cfg.Replicator.HookWait)
	case req.Op == "release":
		return localapi.HookResponse{}, a.hookCall(ctx, log, novahook.HookReleased, dom.UUID, a.cfg.Replicator.HookWait)
	case req.Op == "prepare" || req.Op == "start":
		var files []string
		for _, d := range dom.Disks {
			if d.Type == "file" {
				files = append(files, d.Source.File)
			}
		}
		if len(files) > 0 {
			return localapi.HookResponse{}, a.startOnFiles(log, req.Domain, dom.UUID, files)
		}
	}
	return localapi.HookResponse{}, nil
}

// hookCall feeds a hook call to the node and waits for its answer, never
// longer than wait (the node answers by then) or ctx.
func (a *Agent) hookCall(ctx context.Context, log *slog.Logger, op novahook.HookOp, inst string, wait time.Duration) error {
	if err := checkInstance(inst); err != nil {
		return fmt.Errorf("domain XML: %w", err)
	}
	id, ch := a.hooks.add()
	defer a.hooks.remove(id)
	if _, err := a.node.Step(ctx, novahook.HookCall{ID: id, Op: op, Instance: inst, Deadline: a.clock.Now().Add(wait)}); err != nil {
		a.fail(err)
		return err
	}
	select {
	case r := <-ch:
		if !r.Allow {
			log.Info("hook refused", "reason", r.Reason)
			return errors.New(r.Reason)
		}
		log.Info("hook allowed")
		return nil
	case <-ctx.Done():
		return fmt.Errorf("no answer for %s: %w", inst, ctx.Err())
	}
}

// statusPeerTimeout bounds asking a destination for progress: status must
// answer even when a peer does not.
const statusPeerTimeout = 2 * time.Second

// Status reports migrations, disks and whether the host may be powered off.
func (b localBackend) Status(ctx context.Context) (json.RawMessage, error) {
	a := b.a
	st := localapi.Status{Host: a.cfg.Default.Host, CopyingFromHere: []localapi.Outgoing{},
		Migrations: []localapi.Migration{}, Disks: []localapi.Disk{}}
	for _, m := range a.node.Migrations() {
		st.Migrations = append(st.Migrations, localapi.Migration{Instance: m.Instance, Role: m.Role.String(),
			Phase: m.Phase.String(), Source: m.Source, Dest: m.Dest, Home: m.Home, Error: m.Error,
			Started: m.Started, Done: m.Done, Total: m.Total})
	}
	for _, dk := range a.disks.all() {
		s := dk.rep.Stats()
		d := localapi.Disk{Instance: dk.ref.Instance, Disk: dk.ref.Disk, IQN: dk.ref.IQN(), State: s.State.String(),
			Sealed: s.Sealed, Size: s.Size, BytesLocal: s.BytesLocal, BytesRemaining: s.BytesRemaining, BytesCopied: s.BytesCopied,
			Rate: s.Rate, ETASeconds: s.ETA.Seconds()}
		d.Mode = config.MethodCopy
		if dk.rep.RemoteOnly() {
			d.Mode = config.MethodRemote
		}
		if !s.SourceDownSince.IsZero() {
			d.SourceDownSince = &s.SourceDownSince
		}
		st.Disks = append(st.Disks, d)
	}
	for _, m := range a.node.SourceOf() {
		st.CopyingFromHere = append(st.CopyingFromHere, a.outgoing(ctx, m))
	}
	st.SafeToPowerOff = len(st.CopyingFromHere) == 0
	return json.Marshal(st)
}

// outgoing asks the destination of m how far its copy is.
func (a *Agent) outgoing(ctx context.Context, m novahook.Migration) localapi.Outgoing {
	o := localapi.Outgoing{Instance: m.Instance, Dest: m.Dest, Phase: m.Phase.String()}
	if m.Dest == "" {
		o.Error = "destination not known yet"
		return o
	}
	ctx, cancel := context.WithTimeout(ctx, statusPeerTimeout)
	defer cancel()
	p, err := a.peer(ctx, m.Dest)
	if err != nil {
		o.Error = err.Error()
		return o
	}
	r, err := p.progress(ctx, m.Instance)
	if err != nil {
		o.Error = err.Error()
		return o
	}
	o.Known = true
	for _, d := range r.Disks {
		if d.BytesRemaining > 0 {
			o.Replicas++
		}
		o.Size += d.Size
		o.BytesRemaining += d.BytesRemaining
		o.Rate += d.Rate
		o.ETASeconds = max(o.ETASeconds, d.ETASeconds)
	}
	return o
}
