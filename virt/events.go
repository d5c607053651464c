package virt

import (
	"context"
	"fmt"
	"strings"
	"time"

	libvirt "github.com/digitalocean/go-libvirt"
)

// EventType is libvirt's virDomainEventType.
type EventType int32

const (
	EventDefined     = EventType(libvirt.DomainEventDefined)
	EventUndefined   = EventType(libvirt.DomainEventUndefined)
	EventStarted     = EventType(libvirt.DomainEventStarted)
	EventSuspended   = EventType(libvirt.DomainEventSuspended)
	EventResumed     = EventType(libvirt.DomainEventResumed)
	EventStopped     = EventType(libvirt.DomainEventStopped)
	EventShutdown    = EventType(libvirt.DomainEventShutdown)
	EventPMSuspended = EventType(libvirt.DomainEventPmsuspended)
	EventCrashed     = EventType(libvirt.DomainEventCrashed)
)

func (t EventType) String() string {
	return strings.ToLower(strings.TrimPrefix(libvirt.DomainEventType(t).String(), "DomainEvent"))
}

// LifecycleEvent is one domain lifecycle event, or a resync marker.
type LifecycleEvent struct {
	Domain Domain
	Type   EventType
	// Detail is libvirt's detail for Type (virDomainEvent*DetailType),
	// e.g. VIR_DOMAIN_EVENT_STOPPED_MIGRATED for a source's VM that left.
	Detail int32
	// Resync is set (and nothing else) after the connection to libvirtd
	// was lost and restored: events in between are lost, so the consumer
	// must re-read the state of the domains it follows. It is sent after
	// the subscription is renewed, so nothing is missed after a re-read.
	Resync bool
}

// Migrated reports whether the event is a step of a live migration:
// started or resumed on the destination, suspended or stopped on the
// source.
func (e LifecycleEvent) Migrated() bool {
	switch e.Type {
	case EventStarted:
		return e.Detail == int32(libvirt.DomainEventStartedMigrated)
	case EventSuspended:
		return e.Detail == int32(libvirt.DomainEventSuspendedMigrated) ||
			e.Detail == int32(libvirt.DomainEventSuspendedPostcopy)
	case EventResumed:
		return e.Detail == int32(libvirt.DomainEventResumedMigrated) ||
			e.Detail == int32(libvirt.DomainEventResumedPostcopy)
	case EventStopped:
		return e.Detail == int32(libvirt.DomainEventStoppedMigrated)
	}
	return false
}

// DetailString names Detail, e.g. "migrated" or "destroyed".
func (e LifecycleEvent) DetailString() string {
	var s, prefix string
	switch e.Type {
	case EventDefined:
		s, prefix = libvirt.DomainEventDefinedDetailType(e.Detail).String(), "DomainEventDefined"
	case EventUndefined:
		s, prefix = libvirt.DomainEventUndefinedDetailType(e.Detail).String(), "DomainEventUndefined"
	case EventStarted:
		s, prefix = libvirt.DomainEventStartedDetailType(e.Detail).String(), "DomainEventStarted"
	case EventSuspended:
		s, prefix = libvirt.DomainEventSuspendedDetailType(e.Detail).String(), "DomainEventSuspended"
	case EventResumed:
		s, prefix = libvirt.DomainEventResumedDetailType(e.Detail).String(), "DomainEventResumed"
	case EventStopped:
		s, prefix = libvirt.DomainEventStoppedDetailType(e.Detail).String(), "DomainEventStopped"
	case EventShutdown:
		s, prefix = libvirt.DomainEventShutdownDetailType(e.Detail).String(), "DomainEventShutdown"
	case EventCrashed:
		s, prefix = libvirt.DomainEventCrashedDetailType(e.Detail).String(), "DomainEventCrashed"
	default:
		return fmt.Sprint(e.Detail)
	}
	return strings.ToLower(strings.TrimPrefix(s, prefix))
}

func (e LifecycleEvent) String() string {
	if e.Resync {
		return "resync"
	}
	return fmt.Sprintf("%s %s/%s", e.Domain.Name, e.Type, e.DetailString())
}

// LifecycleEvents follows the lifecycle events of all domains until ctx
// ends or the Conn is closed; then the channel is closed. It survives
// reconnections (see LifecycleEvent.Resync). go-libvirt queues events
// without bound, so a slow reader delays events but never blocks the
// connection. While libvirtd is unreachable, the first subscription waits
// for it within ctx.
func (c *Conn) LifecycleEvents(ctx context.Context) (<-chan LifecycleEvent, error) {
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(c.life, cancel)
	l, in, err := c.subscribe(ctx)
	if err != nil {
		stop()
		cancel()
		return nil, err
	}
	out := make(chan LifecycleEvent)
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		defer close(out)
		defer cancel()
		defer stop()
		for c.forward(ctx, in, out) {
			// The session ended under the subscription: renew it on the
			// next one, then tell the consumer to resync.
			c.drop(l)
			wait := backoffMin
			for {
				if l, in, err = c.subscribe(ctx); err == nil {
					break
				}
				if ctx.Err() != nil {
					return
				}
				c.log.Warn("renewing lifecycle event subscription", "err", err)
				select {
				case <-ctx.Done():
					return
				case <-time.After(wait):
				}
				wait = min(2*wait, backoffMax)
			}
			select {
			case out <- LifecycleEvent{Resync: true}:
			case <-ctx.Done():
				go drain(in)
				return
			}
		}
	}()
	return out, nil
}

// subscribe registers for lifecycle events on the current session, for as
// long as ctx lasts or the session does.
func (c *Conn) subscribe(ctx context.Context) (*libvirt.Libvirt, <-chan libvirt.DomainEventLifecycleMsg, error) {
	type sub struct {
		l  *libvirt.Libvirt
		ch <-chan libvirt.DomainEventLifecycleMsg
	}
	r, err := call(ctx, c, "subscribe to lifecycle events", idempotent, func(l *libvirt.Libvirt) (sub, error) {
		ch, err := l.LifecycleEvents(ctx)
		return sub{l, ch}, err
	})
	return r.l, r.ch, err
}

// forward copies events until in closes (session lost: returns true) or
// ctx ends (returns false). go-libvirt's goroutine blocks on sending to
// in, so in is drained until it closes.
func (c *Conn) forward(ctx context.Context, in <-chan libvirt.DomainEventLifecycleMsg, out chan<- LifecycleEvent) bool {
	for {
		select {
		case m, ok := <-in:
			if !ok {
				return ctx.Err() == nil
			}
			e := LifecycleEvent{Domain: domainFrom(m.Dom), Type: EventType(m.Event), Detail: m.Detail}
			c.log.Debug("lifecycle event", "domain", e.Domain.Name, "event", e.Type, "detail", e.DetailString())
			select {
			case out <- e:
			case <-ctx.Done():
				go drain(in)
				return false
			}
		case <-ctx.Done():
			go drain(in)
			return false
		}
	}
}

func drain[T any](ch <-chan T) {
	for range ch {
	}
}
