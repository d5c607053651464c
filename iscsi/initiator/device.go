package initiator

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/shareless/shareless/blockdev"
	"github.com/shareless/shareless/iscsi/scsi"
)

// Session serves its logical unit as a block device.
var (
	_ blockdev.Device             = (*Session)(nil)
	_ blockdev.AllocationReporter = (*Session)(nil)
)

// geometry is what probe learns about the logical unit.
type geometry struct {
	blockSize int64
	blocks    int64
	// thin is LBPME (READ CAPACITY 16): GET LBA STATUS and UNMAP work.
	thin bool
	// lbprz: unmapped blocks read as zeroes.
	lbprz bool
	// Block Limits VPD (SBC-3 §6.6.4), in blocks; 0 means no limit stated.
	maxTransfer      uint32
	maxUnmap         uint32
	maxWriteSame     uint64
	unmap            bool // LBPU: UNMAP supported
	writeSameUnmap   bool // LBPWS: WRITE SAME 16 with UNMAP supported
	inquiry          scsi.InquiryData
	writeSameMissing bool // guarded by Session.mu
}

// VPD pages the initiator reads (SPC-4 §7.8, SBC-3 §6.6).
const (
	vpdSupportedPages = 0x00
	vpdBlockLimits    = 0xb0
	vpdProvisioning   = 0xb2
)

// probe clears unit attentions and reads the geometry: standard INQUIRY,
// READ CAPACITY 16, and the Block Limits and Logical Block Provisioning
// VPD pages when the unit has them.
func (s *Session) probe(ctx context.Context) error {
	if _, err := s.command(ctx, make([]byte, 6), nil, nil); err != nil { // TEST UNIT READY
		return fmt.Errorf("TEST UNIT READY: %w", err)
	}
	buf := make([]byte, 96)
	n, err := s.command(ctx, scsi.Inquiry(uint16(len(buf))), buf, nil)
	if err != nil {
		return fmt.Errorf("INQUIRY: %w", err)
	}
	g := &s.geom
	if g.inquiry, err = scsi.ParseInquiry(buf[:n]); err != nil {
		return fmt.Errorf("INQUIRY: %w", err)
	}
	if g.inquiry.Qualifier != 0 {
		return fmt.Errorf("LUN %d is not connected (peripheral qualifier %d)", s.cfg.LUN, g.inquiry.Qualifier)
	}
	if g.inquiry.DeviceType != 0 {
		return fmt.Errorf("LUN %d is a device of type 0x%02x, not a block device", s.cfg.LUN, g.inquiry.DeviceType)
	}
	buf = make([]byte, 32)
	if n, err = s.command(ctx, scsi.ReadCapacity16(uint32(len(buf))), buf, nil); err != nil {
		return fmt.Errorf("READ CAPACITY 16: %w", err)
	}
	capa, err := scsi.ParseReadCapacity16(buf[:n])
	if err != nil {
		return fmt.Errorf("READ CAPACITY 16: %w", err)
	}
	g.blocks, g.blockSize = int64(capa.Blocks), int64(capa.BlockSize)
	if g.blockSize < 512 || g.blockSize > 1<<20 || g.blockSize&(g.blockSize-1) != 0 {
		return fmt.Errorf("unsupported logical block size %d", g.blockSize)
	}
	g.thin, g.lbprz = capa.LBPME, capa.LBPRZ
	pages, err := s.VPD(ctx, vpdSupportedPages)
	if err != nil {
		return fmt.Errorf("INQUIRY supported VPD pages: %w", err)
	}
	for _, p := range pages[4:] {
		switch p {
		case vpdBlockLimits:
			page, err := s.VPD(ctx, vpdBlockLimits)
			if err != nil {
				return fmt.Errorf("INQUIRY Block Limits VPD: %w", err)
			}
			bl, err := scsi.ParseBlockLimits(page)
			if err != nil {
				return fmt.Errorf("INQUIRY Block Limits VPD: %w", err)
			}
			g.maxTransfer, g.maxUnmap, g.maxWriteSame = bl.MaxTransfer, bl.MaxUnmapLBACount, bl.MaxWriteSame
		case vpdProvisioning:
			// Logical Block Provisioning VPD (SBC-3 §6.6.4): byte 5
			// holds LBPU, LBPWS and LBPRZ.
			page, err := s.VPD(ctx, vpdProvisioning)
			if err != nil {
				return fmt.Errorf("INQUIRY Logical Block Provisioning VPD: %w", err)
			}
			if len(page) >= 6 {
				g.unmap = page[5]&0x80 != 0
				g.writeSameUnmap = page[5]&0x40 != 0
				g.lbprz = g.lbprz || page[5]&0x04 != 0
			}
		}
	}
	s.log.Debug("iSCSI logical unit", "lun", s.cfg.LUN, "vendor", g.inquiry.Vendor, "product", g.inquiry.Product,
		"size", g.blocks*g.blockSize, "block_size", g.blockSize, "thin", g.thin, "unmap", g.unmap,
		"max_transfer_blocks", g.maxTransfer)
	return nil
}

// VPD reads a vital product data page (INQUIRY with EVPD, SPC-4 §7.8),
// header included: the Device Identification page 0x83, for example, tells
// which disk a LUN really is.
func (s *Session) VPD(ctx context.Context, page byte) ([]byte, error) {
	buf := make([]byte, 4096)
	n, err := s.command(ctx, scsi.InquiryVPD(page, uint16(len(buf))), buf, nil)
	if err != nil {
		return nil, err
	}
	if n < 4 || buf[1] != page {
		return nil, fmt.Errorf("VPD page 0x%02x: short or mismatched answer", page)
	}
	return buf[:min(4+int(binary.BigEndian.Uint16(buf[2:])), n)], nil
}

// Size implements blockdev.Device.
func (s *Session) Size() int64 { return s.geom.blocks * s.geom.blockSize }

// BlockSize is the logical block size in bytes.
func (s *Session) BlockSize() int { return int(s.geom.blockSize) }

// Thin reports whether the logical unit is thin provisioned (LBPME), so
// that Allocation reports real holes.
func (s *Session) Thin() bool { return s.geom.thin }

// Inquiry returns the standard INQUIRY data read at login.
func (s *Session) Inquiry() scsi.InquiryData { return s.geom.inquiry }

// maxIO is the largest READ or WRITE in bytes.
func (s *Session) maxIO() int64 {
	n := int64(s.cfg.MaxTransfer)
	if mt := int64(s.geom.maxTransfer); mt > 0 {
		n = min(n, mt*s.geom.blockSize)
	}
	return max(n/s.geom.blockSize, 1) * s.geom.blockSize
}

// check validates a byte range against the device and its block size.
func (s *Session) check(off, length int64) error {
	if err := blockdev.CheckRange(s.Size(), off, length); err != nil {
		return err
	}
	if off%s.geom.blockSize != 0 || length%s.geom.blockSize != 0 {
		return fmt.Errorf("offset %d length %d not aligned to the %d-byte block size", off, length, s.geom.blockSize)
	}
	return nil
}

// ReadAt implements blockdev.Device with READ 16 (SBC-3 §5.11), issuing
// large reads as several commands in parallel.
func (s *Session) ReadAt(ctx context.Context, p []byte, off int64) error {
	if err := s.check(off, int64(len(p))); err != nil {
		return err
	}
	return s.split(ctx, off, int64(len(p)), s.maxIO(), func(ctx context.Context, o, n int64) error {
		buf := p[o-off : o-off+n]
		got, err := s.command(ctx, scsi.Read16(uint64(o/s.geom.blockSize), uint32(n/s.geom.blockSize), false), buf, nil)
		if err != nil {
			return deviceError("read", o, err)
		}
		if int64(got) != n {
			return &blockdev.MediumError{Off: o, Err: fmt.Errorf("target returned %d of %d bytes", got, n)}
		}
		return nil
	})
}

// WriteAt implements blockdev.Device with WRITE 16 (SBC-3 §5.40).
func (s *Session) WriteAt(ctx context.Context, p []byte, off int64, fua bool) error {
	if err := s.check(off, int64(len(p))); err != nil {
		return err
	}
	s.wrote()
	defer s.wrote()
	return s.split(ctx, off, int64(len(p)), s.maxIO(), func(ctx context.Context, o, n int64) error {
		buf := p[o-off : o-off+n]
		_, err := s.command(ctx, scsi.Write16(uint64(o/s.geom.blockSize), uint32(n/s.geom.blockSize), fua), nil, buf)
		return deviceError("write", o, err)
	})
}

// Flush implements blockdev.Device with SYNCHRONIZE CACHE 16 (SBC-3
// §5.25) over the whole logical unit.
func (s *Session) Flush(ctx context.Context) error {
	_, err := s.command(ctx, scsi.SynchronizeCache16(0, 0), nil, nil)
	return deviceError("flush", 0, err)
}

// Discard implements blockdev.Device with UNMAP (SBC-3 §5.30) when the
// logical unit reads unmapped blocks as zeroes, else with WriteZeroes.
func (s *Session) Discard(ctx context.Context, off, length int64) error {
	if err := s.check(off, length); err != nil {
		return err
	}
	g := &s.geom
	if !g.thin || !g.unmap || !g.lbprz {
		return s.WriteZeroes(ctx, off, length, true)
	}
	s.wrote()
	defer s.wrote()
	chunk := s.unmapChunk(int64(g.maxUnmap))
	return s.split(ctx, off, length, chunk, func(ctx context.Context, o, n int64) error {
		param := scsi.UnmapParameterList([]scsi.UnmapDescriptor{{LBA: uint64(o / g.blockSize), Blocks: uint32(n / g.blockSize)}})
		_, err := s.command(ctx, scsi.Unmap(uint16(len(param))), nil, param)
		return deviceError("unmap", o, err)
	})
}

// unmapChunk is the bytes one UNMAP or WRITE SAME may cover: the target's
// limit in blocks, else 1 GiB, so that one command stays short.
func (s *Session) unmapChunk(limitBlocks int64) int64 {
	n := int64(1 << 30)
	if limitBlocks > 0 {
		n = min(n, limitBlocks*s.geom.blockSize)
	}
	return max(n/s.geom.blockSize, 1) * s.geom.blockSize
}

// WriteZeroes implements blockdev.Device with WRITE SAME 16 (SBC-3 §5.46)
// of a zero block, with the UNMAP bit when allowed and supported.
// Targets without WRITE SAME get zero-filled WRITEs.
func (s *Session) WriteZeroes(ctx context.Context, off, length int64, mayUnmap bool) error {
	if err := s.check(off, length); err != nil {
		return err
	}
	g := &s.geom
	s.wrote()
	defer s.wrote()
	unmap := mayUnmap && g.thin && g.writeSameUnmap
	zero := make([]byte, g.blockSize)
	if !s.noWriteSame() {
		err := s.split(ctx, off, length, s.unmapChunk(int64(min(g.maxWriteSame, 1<<32-1))), func(ctx context.Context, o, n int64) error {
			_, err := s.command(ctx, scsi.WriteSame16(uint64(o/g.blockSize), uint32(n/g.blockSize), unmap, false), nil, zero)
			return deviceError("write same", o, err)
		})
		if !errors.Is(err, scsi.ASCInvalidCommandOperationCode) {
			return err
		}
		s.setNoWriteSame()
	}
	zero = make([]byte, min(length, s.maxIO()))
	return s.split(ctx, off, length, int64(len(zero)), func(ctx context.Context, o, n int64) error {
		return s.WriteAt(ctx, zero[:n], o, false)
	})
}

func (s *Session) noWriteSame() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.geom.writeSameMissing
}

func (s *Session) setNoWriteSame() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.geom.writeSameMissing = true
}

// Allocation implements blockdev.AllocationReporter with GET LBA STATUS
// (SBC-3 §5.5). One command asks for many descriptors; later calls are
// answered from them as long as this session wrote nothing meanwhile.
// Only deallocated blocks that read as zeroes (LBPRZ) are reported
// unmapped, since a copy skips them: a logical unit that is not thin
// provisioned, does not promise zeroes, or refuses GET LBA STATUS as
// unsupported (remembered for the session) is mapped everywhere.
func (s *Session) Allocation(ctx context.Context, off int64) (bool, int64, error) {
	size := s.Size()
	if off < 0 || off >= size {
		return false, 0, fmt.Errorf("offset %d on a %d-byte device: %w", off, size, blockdev.ErrOutOfRange)
	}
	bs := s.geom.blockSize
	if !s.geom.thin || !s.geom.lbprz {
		return true, size - off, nil
	}
	lba := uint64(off / bs)
	s.lbaMu.Lock()
	defer s.lbaMu.Unlock()
	if s.noLBAStatus {
		return true, size - off, nil
	}
	d, ok := s.cachedLBA(lba)
	if !ok || s.lbaGen != s.writes.Load() {
		gen := s.writes.Load()
		buf := make([]byte, 8+16*lbaStatusDescriptors)
		n, err := s.command(ctx, scsi.GetLBAStatus(lba, uint32(len(buf))), buf, nil)
		if errors.Is(err, scsi.ASCInvalidCommandOperationCode) || errors.Is(err, scsi.ASCInvalidFieldInCDB) {
			// GET LBA STATUS is a service action of SERVICE ACTION IN
			// (16), which READ CAPACITY 16 shares: a unit without it
			// refuses the field, or the whole opcode.
			s.log.Info("the logical unit does not support GET LBA STATUS; reporting it mapped", "err", err)
			s.noLBAStatus = true
			return true, size - off, nil
		}
		if err != nil {
			return false, 0, deviceError("get lba status", off, err)
		}
		ds, err := scsi.ParseLBAStatus(buf[:n])
		if err != nil {
			return false, 0, fmt.Errorf("GET LBA STATUS: %w", err)
		}
		if len(ds) == 0 || ds[0].LBA != lba || ds[0].Blocks == 0 {
			return false, 0, fmt.Errorf("GET LBA STATUS for LBA %d answered %+v", lba, ds)
		}
		s.lba, s.lbaGen, d = ds, gen, ds[0]
	}
	end := min(int64(d.LBA+uint64(d.Blocks))*bs, size)
	return d.Status == scsi.Mapped, end - off, nil
}

// lbaStatusDescriptors is how many extents one GET LBA STATUS asks for.
const lbaStatusDescriptors = 128

// cachedLBA finds the cached descriptor that covers lba. s.lbaMu is held.
func (s *Session) cachedLBA(lba uint64) (scsi.LBAStatus, bool) {
	for _, d := range s.lba {
		if lba >= d.LBA && lba < d.LBA+uint64(d.Blocks) {
			return d, true
		}
	}
	return scsi.LBAStatus{}, false
}

// wrote invalidates cached allocation; called before and after every
// command that may change it.
func (s *Session) wrote() { s.writes.Add(1) }

// split runs fn over [off, off+length) in pieces of at most chunk bytes,
// in parallel when there is more than one (each piece takes a slot).
func (s *Session) split(ctx context.Context, off, length, chunk int64, fn func(ctx context.Context, off, n int64) error) error {
	if length <= chunk {
		if length == 0 {
			return nil
		}
		return fn(ctx, off, length)
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	for o := off; o < off+length; o += chunk {
		n := min(chunk, off+length-o)
		wg.Go(func() {
			if err := fn(ctx, o, n); err != nil {
				cancel(err)
			}
		})
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil && ctx.Err() != nil {
		return err
	}
	return nil
}

// command runs a SCSI command and returns the number of Data-In bytes.
// It retries what SAM says to retry: UNIT ATTENTION (a reset or a changed
// parameter, reported once after a reinstatement), BUSY and TASK SET
// FULL, a bounded number of times.
func (s *Session) command(ctx context.Context, cdb, read, write []byte) (int, error) {
	backoff := time.Millisecond
	for attempt := 0; ; attempt++ {
		t := &task{cdb: cdb, read: read, write: write}
		res, err := s.exec(ctx, t)
		if err != nil {
			return 0, err
		}
		err = res.check()
		retry := errors.Is(err, scsi.SenseUnitAttention) ||
			res.err == nil && (res.status == scsi.StatusBusy || res.status == scsi.StatusTaskSetFull)
		if !retry || attempt >= 10 {
			return res.transferred(len(read)), err
		}
		s.log.Debug("retrying SCSI command", "opcode", cdb[0], "err", err)
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(backoff*4, 500*time.Millisecond)
	}
}

// check turns a result into an error: a *scsi.SenseError for CHECK
// CONDITION with sense data, a *StatusError otherwise.
func (r *result) check() error {
	switch {
	case r.err != nil:
		return r.err
	case r.response != 0:
		return &StatusError{Response: r.response}
	case r.status == scsi.StatusGood:
		if r.overflow {
			return fmt.Errorf("target reported residual overflow of %d bytes", r.resid)
		}
		return nil
	case r.status == scsi.StatusCheckCondition:
		if sense, err := scsi.ParseSense(r.sense); err == nil {
			return &scsi.SenseError{Sense: sense}
		}
	}
	return &StatusError{Status: r.status}
}

// transferred is the Data-In byte count: the expected length minus an
// underflow residual (§11.4.5), and never more than the target actually
// sent, so that a short answer cannot pass stale buffer bytes off as data.
func (r *result) transferred(readLen int) int {
	n := readLen
	if r.underflow {
		n = max(readLen-int(r.resid), 0)
	}
	return min(n, r.received)
}

// deviceError maps SCSI errors onto the blockdev errors that callers
// test for.
func deviceError(op string, off int64, err error) error {
	if err == nil {
		return nil
	}
	switch {
	case errors.Is(err, scsi.ASCLBAOutOfRange):
		return fmt.Errorf("%s at %d: %w: %w", op, off, blockdev.ErrOutOfRange, err)
	case errors.Is(err, scsi.SenseDataProtect):
		return fmt.Errorf("%s at %d: %w: %w", op, off, blockdev.ErrReadOnly, err)
	case errors.Is(err, scsi.SenseMediumError):
		return &blockdev.MediumError{Write: op != "read", Off: off, Err: err}
	}
	return fmt.Errorf("%s at %d: %w", op, off, err)
}
