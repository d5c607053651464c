// Package blockdev defines the block device that the iSCSI target serves and
// that the replicator implements, plus a device backed by a sparse file.
//
// Offsets and lengths are in bytes. Callers (the SCSI layer) keep them
// aligned to the logical block size they advertise; implementations may
// assume so but must not trust it for memory safety.
package blockdev

import (
	"context"
	"errors"
	"fmt"
)

// Device is a random-access block device with volatile write-cache
// semantics: a write that returned may still be lost by a crash until a
// later Flush returns, unless it was written with fua set.
type Device interface {
	// Size is the device capacity in bytes. It does not change while open.
	Size() int64
	// ReadAt fills p from off.
	ReadAt(ctx context.Context, p []byte, off int64) error
	// WriteAt writes p at off. With fua set it returns only once the data is
	// durable (SCSI Force Unit Access).
	WriteAt(ctx context.Context, p []byte, off int64, fua bool) error
	// Flush makes every write that returned before the call durable.
	Flush(ctx context.Context) error
	// Discard deallocates [off, off+length). The range reads as zeroes
	// afterwards (the target advertises LBPRZ).
	Discard(ctx context.Context, off, length int64) error
	// WriteZeroes makes [off, off+length) read as zeroes, deallocating it
	// when mayUnmap is set and the device can.
	WriteZeroes(ctx context.Context, off, length int64, mayUnmap bool) error
}

// AllocationReporter is implemented by devices that know which ranges are
// backed by storage (GET LBA STATUS, sparse copies). A range reported
// unmapped reads as zeroes, so that a copy may skip it; a device that
// cannot promise that reports the range mapped.
type AllocationReporter interface {
	// Allocation reports whether the byte at off is mapped and how many
	// bytes from off share that state (at least 1, at most Size()-off).
	Allocation(ctx context.Context, off int64) (mapped bool, length int64, err error)
}

// Errors that the SCSI layer maps to specific sense data. Implementations
// wrap them (fmt.Errorf("...: %w", ErrX)) so that errors.Is finds them.
var (
	// ErrOutOfRange: the access is outside the device (ILLEGAL REQUEST,
	// LOGICAL BLOCK ADDRESS OUT OF RANGE).
	ErrOutOfRange = errors.New("access beyond the end of the device")
	// ErrReadOnly: the device refuses writes, e.g. a sealed source export
	// (DATA PROTECT, WRITE PROTECTED).
	ErrReadOnly = errors.New("device is read-only")
	// ErrUnavailable: data the device needs lives elsewhere and cannot be
	// reached within the configured bound (HARDWARE ERROR, LOGICAL UNIT
	// COMMUNICATION FAILURE). Never reported as BUSY: the initiator would
	// retry for ever.
	ErrUnavailable = errors.New("backing data unavailable")
)

// MediumError is an I/O failure of the underlying storage (MEDIUM ERROR,
// UNRECOVERED READ ERROR or WRITE ERROR).
type MediumError struct {
	Write bool
	Off   int64
	Err   error
}

func (e *MediumError) Error() string {
	op := "read"
	if e.Write {
		op = "write"
	}
	return fmt.Sprintf("medium error: %s at offset %d: %v", op, e.Off, e.Err)
}

func (e *MediumError) Unwrap() error { return e.Err }

// CheckRange returns ErrOutOfRange unless [off, off+length) lies within a
// device of the given size.
func CheckRange(size, off, length int64) error {
	if off < 0 || length < 0 || off > size || length > size-off {
		return fmt.Errorf("offset %d length %d on a %d-byte device: %w", off, length, size, ErrOutOfRange)
	}
	return nil
}
