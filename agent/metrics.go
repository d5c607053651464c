package agent

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync/atomic"

	"github.com/shareless/shareless/novahook"
)

// metrics are the agent's own counters; replica figures are read from the
// replicas when scraped.
type metrics struct {
	notifications [novahook.Duplicate + 1]atomic.Int64 // by Outcome
	actionErrors  atomic.Int64
	authFailures  atomic.Int64
}

// countingHandler is the node as the consumer's Handler, counting outcomes.
type countingHandler struct{ a *Agent }

func (h countingHandler) HandleNotification(ctx context.Context, n novahook.Notification) (novahook.Outcome, error) {
	switch n.EventType {
	case EventDeleteEnd, EventResizeConfirmEnd, EventShelveOffloadEnd:
		if err := h.a.instanceGone(n.EventType, n.Payload.InstanceUUID, n.Payload.Host); err != nil {
			h.a.log.Warn("freeing the disks of an instance that left", "event", n.EventType, "instance", n.Payload.InstanceUUID, "err", err)
		}
	case EventSnapshotStart:
		h.a.snapshotStarts(n.Payload.InstanceUUID, n.Payload.State)
	}
	o, err := h.a.node.HandleNotification(ctx, n)
	if err == nil && o >= novahook.Ignored && o <= novahook.Duplicate {
		h.a.metrics.notifications[o].Add(1)
	}
	return o, err
}

// metricsHandler serves /metrics in the Prometheus text format (0.0.4).
func (a *Agent) metricsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		a.writeMetrics(w)
	})
	return mux
}

func (a *Agent) writeMetrics(w io.Writer) {
	family := func(name, typ, help string) {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ)
	}
	ds := a.disks.all()
	perDisk := func(name, typ, help string, v func(*disk) int64) {
		family(name, typ, help)
		for _, dk := range ds {
			fmt.Fprintf(w, "%s{instance=%q,disk=%q} %d\n", name, dk.ref.Instance, dk.ref.Disk, v(dk))
		}
	}
	perDisk("shareless_replica_bytes_copied", "gauge",
		"Bytes stored from the source since the disk was opened (copier and reads).",
		func(d *disk) int64 { return d.rep.Stats().BytesCopied })
	perDisk("shareless_replica_bytes_remaining", "gauge",
		"Bytes still held only by the source.",
		func(d *disk) int64 { return d.rep.Stats().BytesRemaining })
	perDisk("shareless_disk_read_bytes_total", "counter",
		"Bytes initiators read through the export since it was opened (routed local or remote).",
		func(d *disk) int64 { return d.dev.read.Load() })
	perDisk("shareless_replica_source_read_bytes_total", "counter",
		"Bytes read from the source since the disk was opened: reads routed remote, partial writes and the copier.",
		func(d *disk) int64 { return d.rep.Stats().SourceBytes })
	perDisk("shareless_disk_read_local_bytes_total", "counter",
		"Bytes of reads served from the local image since the disk was opened.",
		func(d *disk) int64 { return d.rep.Stats().ReadLocalBytes })
	perDisk("shareless_disk_read_remote_bytes_total", "counter",
		"Bytes of reads served from the source since the disk was opened.",
		func(d *disk) int64 { return d.rep.Stats().ReadRemoteBytes })
	family("shareless_notifications_total", "counter", "Nova notifications handled, by outcome.")
	for o := novahook.Ignored; o <= novahook.Duplicate; o++ {
		fmt.Fprintf(w, "shareless_notifications_total{outcome=%q} %d\n", o.String(), a.metrics.notifications[o].Load())
	}
	family("shareless_errors_total", "counter", "Errors, by kind: failed or retried actions, refused control API requests.")
	fmt.Fprintf(w, "shareless_errors_total{kind=\"action\"} %d\n", a.metrics.actionErrors.Load())
	fmt.Fprintf(w, "shareless_errors_total{kind=\"auth\"} %d\n", a.metrics.authFailures.Load())
	family("shareless_safe_to_power_off", "gauge", "1 when no other host still copies from this one.")
	safe := 0
	if len(a.node.SourceOf()) == 0 {
		safe = 1
	}
	fmt.Fprintf(w, "shareless_safe_to_power_off %d\n", safe)
}
