package virt

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	libvirt "github.com/digitalocean/go-libvirt"
)

// JobType is libvirt's virDomainJobType.
type JobType int32

const (
	JobNone      = JobType(libvirt.DomainJobNone)
	JobBounded   = JobType(libvirt.DomainJobBounded)
	JobUnbounded = JobType(libvirt.DomainJobUnbounded)
	JobCompleted = JobType(libvirt.DomainJobCompleted)
	JobFailed    = JobType(libvirt.DomainJobFailed)
	JobCancelled = JobType(libvirt.DomainJobCancelled)
)

func (t JobType) String() string {
	return strings.ToLower(strings.TrimPrefix(libvirt.DomainJobType(t).String(), "DomainJob"))
}

// JobOperation is libvirt's virDomainJobOperation: what a job does.
type JobOperation int32

const (
	JobMigrationIn  = JobOperation(libvirt.DomainJobOperationStrMigrationIn)
	JobMigrationOut = JobOperation(libvirt.DomainJobOperationStrMigrationOut)
)

func (o JobOperation) String() string {
	return strings.ToLower(strings.TrimPrefix(libvirt.DomainJobOperation(o).String(), "DomainJobOperationStr"))
}

// JobStats are a domain job's statistics (virDomainGetJobStats), the
// fields shareless reports: how long the guest was paused, how long the
// job took, how many bytes of memory and disk it moved. Sizes are bytes.
type JobStats struct {
	Type      JobType
	Operation JobOperation
	Elapsed   time.Duration // time_elapsed: since the job started
	// Downtime is how long the guest was paused at switch-over
	// (downtime; a completed migration's figure).
	Downtime  time.Duration
	SetupTime time.Duration // setup_time: before the first byte moved

	MemoryTotal, MemoryProcessed, MemoryRemaining uint64
	MemoryIteration                               uint64 // pre-copy passes over memory
	DiskTotal, DiskProcessed, DiskRemaining       uint64 // NBD block migration; zero for RAM-only
	DataTotal, DataProcessed, DataRemaining       uint64 // memory plus disk

	Error string // errmsg: why a failed job failed, when libvirt knows
}

// JobStats returns the statistics of the domain's running job (Type
// JobNone when there is none).
func (c *Conn) JobStats(ctx context.Context, d Domain) (JobStats, error) {
	return c.jobStats(ctx, d, 0)
}

// CompletedJobStats returns the statistics of the domain's last completed
// job, e.g. on the destination after an incoming migration. They are kept
// in libvirt (VIR_DOMAIN_JOB_STATS_KEEP_COMPLETED), so reading them twice
// or retrying after a reconnection returns the same figures. This is how
// shareless learns a migration's downtime: go-libvirt drops libvirt's
// job-completed events.
func (c *Conn) CompletedJobStats(ctx context.Context, d Domain) (JobStats, error) {
	return c.jobStats(ctx, d, libvirt.DomainJobStatsCompleted|libvirt.DomainJobStatsKeepCompleted)
}

func (c *Conn) jobStats(ctx context.Context, d Domain, flags libvirt.DomainGetJobStatsFlags) (JobStats, error) {
	type raw struct {
		typ    int32
		params []libvirt.TypedParam
	}
	r, err := call(ctx, c, fmt.Sprintf("job stats of %q", d.Name), idempotent, func(l *libvirt.Libvirt) (raw, error) {
		typ, ps, err := l.DomainGetJobStats(d.raw(), flags)
		return raw{typ, ps}, err
	})
	if err != nil {
		return JobStats{}, err
	}
	s := JobStats{Type: JobType(r.typ)}
	ms := func(v uint64) time.Duration { return time.Duration(v) * time.Millisecond }
	for _, p := range r.params {
		switch v := p.Value.I.(type) {
		case uint64:
			switch p.Field {
			case "time_elapsed":
				s.Elapsed = ms(v)
			case "downtime":
				s.Downtime = ms(v)
			case "setup_time":
				s.SetupTime = ms(v)
			case "memory_total":
				s.MemoryTotal = v
			case "memory_processed":
				s.MemoryProcessed = v
			case "memory_remaining":
				s.MemoryRemaining = v
			case "memory_iteration":
				s.MemoryIteration = v
			case "disk_total":
				s.DiskTotal = v
			case "disk_processed":
				s.DiskProcessed = v
			case "disk_remaining":
				s.DiskRemaining = v
			case "data_total":
				s.DataTotal = v
			case "data_processed":
				s.DataProcessed = v
			case "data_remaining":
				s.DataRemaining = v
			}
		case int32:
			if p.Field == "operation" {
				s.Operation = JobOperation(v)
			}
		case string:
			if p.Field == "errmsg" {
				s.Error = v
			}
		}
	}
	return s, nil
}

// MigrateOptions describe a peer-to-peer live migration.
type MigrateOptions struct {
	// DestURI is the destination libvirtd as the source libvirtd reaches
	// it (peer-to-peer: the source daemon drives the whole migration),
	// e.g. "qemu+tcp://10.0.0.2/system" as Nova's live_migration_uri.
	DestURI string
	// DestXML, when set, is the domain XML for the destination: sent as
	// both destination_xml and persistent_xml, as Nova does. The
	// destination's `migrate begin` hook may still rewrite it.
	DestXML string
	// MigrateURI, when set, is where QEMU sends the migration stream
	// (migrate_uri, e.g. "tcp://10.0.0.2"); by default the destination's
	// migration_address decides.
	MigrateURI string
	// BandwidthMiB limits the stream in MiB/s; 0 means unlimited (Nova's
	// live_migration_bandwidth default).
	BandwidthMiB uint64
	// CopyDisks are the target devices (e.g. "vda") that QEMU copies with
	// NBD: Nova's block migration (VIR_MIGRATE_NON_SHARED_INC with
	// migrate_disks). Empty means RAM only, which is what a VM whose
	// disks are all managed disks and volumes gets.
	CopyDisks []string
}

// migrateFlags are Nova's default live-migration flags
// (nova.conf [libvirt] live_migration_* defaults; driver
// _parse_migration_flags): persist on the destination, undefine the
// source, peer-to-peer, live. Block migration adds NON_SHARED_INC.
const migrateFlags = libvirt.MigrateLive | libvirt.MigratePeer2peer |
	libvirt.MigratePersistDest | libvirt.MigrateUndefineSource

// Migrate live-migrates d peer-to-peer and returns when libvirt reports
// the migration finished (the VM runs on the destination and is gone
// here) or failed (it keeps running here). If ctx ends first, the
// migration is aborted (virDomainAbortJob) and Migrate waits for libvirt
// to confirm, so that the VM's location is known when it returns.
func (c *Conn) Migrate(ctx context.Context, d Domain, o MigrateOptions) error {
	if o.DestURI == "" {
		return errors.New("virt: migrate: no destination URI")
	}
	params := []libvirt.TypedParam{
		{Field: libvirt.MigrateParamBandwidth, Value: *libvirt.NewTypedParamValueUllong(o.BandwidthMiB)},
	}
	str := func(field, v string) {
		params = append(params, libvirt.TypedParam{Field: field, Value: *libvirt.NewTypedParamValueString(v)})
	}
	if o.DestXML != "" {
		str(libvirt.MigrateParamDestXML, o.DestXML)
		str(libvirt.MigrateParamPersistXML, o.DestXML)
	}
	if o.MigrateURI != "" {
		str(libvirt.MigrateParamURI, o.MigrateURI)
	}
	flags := migrateFlags
	for _, disk := range o.CopyDisks {
		str(libvirt.MigrateParamMigrateDisks, disk)
	}
	if len(o.CopyDisks) > 0 {
		flags |= libvirt.MigrateNonSharedInc
	}
	op := fmt.Sprintf("migrate %q to %s", d.Name, o.DestURI)
	log := c.log.With("domain", d.Name, "dest", o.DestURI)
	log.Info("live migration starting", "copy_disks", o.CopyDisks)
	start := time.Now()

	// Perform3Params blocks for the whole migration. Once sent, it is
	// not abandoned: a cancelled ctx aborts the job in libvirt, and
	// Migrate waits for libvirt's answer.
	s, err := c.session(ctx)
	if err != nil {
		return fmt.Errorf("virt: %s: %w", op, err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := s.l.DomainMigratePerform3Params(d.raw(), libvirt.OptString{o.DestURI}, params, nil, flags)
		if err = mapError(op, err); errors.Is(err, ErrDisconnected) {
			c.drop(s.l)
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			log.Warn("live migration failed", "err", err, "after", time.Since(start).Round(time.Millisecond))
			return err
		}
		log.Info("live migration done", "took", time.Since(start).Round(time.Millisecond))
		return nil
	case <-ctx.Done():
	}
	log.Warn("aborting live migration", "reason", context.Cause(ctx))
	actx, cancel := detached(ctx)
	defer cancel()
	abortErr := c.AbortJob(actx, d)
	select {
	case err = <-done:
	case <-actx.Done():
		err = fmt.Errorf("virt: %s: no answer from libvirtd after the abort: %w", op, actx.Err())
	}
	if err == nil {
		log.Info("live migration done despite the abort", "took", time.Since(start).Round(time.Millisecond))
		return nil
	}
	return errors.Join(fmt.Errorf("virt: %s: %w", op, ctx.Err()), abortErr, err)
}

// AbortJob aborts the domain's running job (a migration); ErrOperationInvalid
// if there is none.
func (c *Conn) AbortJob(ctx context.Context, d Domain) error {
	return do(ctx, c, fmt.Sprintf("abort job of %q", d.Name), notIdempotent, func(l *libvirt.Libvirt) error {
		return l.DomainAbortJob(d.raw())
	})
}
