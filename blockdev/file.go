package blockdev

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
)

// Linux fallocate modes and lseek whences not exported by package syscall.
const (
	fallocKeepSize  = 0x01
	fallocPunchHole = 0x02
	fallocZeroRange = 0x10
	seekData        = 3
	seekHole        = 4
)

// File is a Device backed by a regular (usually sparse) file.
type File struct {
	f        *os.File
	size     int64
	readOnly bool
}

// OpenFile opens path as a device. The device size is the file size.
func OpenFile(path string, readOnly bool) (*File, error) {
	flag := os.O_RDWR
	if readOnly {
		flag = os.O_RDONLY
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%s: not a regular file", path)
	}
	return &File{f: f, size: st.Size(), readOnly: readOnly}, nil
}

// Close closes the underlying file.
func (d *File) Close() error { return d.f.Close() }

// Size implements Device.
func (d *File) Size() int64 { return d.size }

// ReadAt implements Device.
func (d *File) ReadAt(_ context.Context, p []byte, off int64) error {
	if err := CheckRange(d.size, off, int64(len(p))); err != nil {
		return err
	}
	n, err := d.f.ReadAt(p, off)
	if err == io.EOF && n == len(p) {
		err = nil
	}
	if err != nil {
		return &MediumError{Off: off, Err: err}
	}
	return nil
}

// WriteAt implements Device.
func (d *File) WriteAt(_ context.Context, p []byte, off int64, fua bool) error {
	if err := d.writable(off, int64(len(p))); err != nil {
		return err
	}
	if _, err := d.f.WriteAt(p, off); err != nil {
		return &MediumError{Write: true, Off: off, Err: err}
	}
	if fua {
		return d.sync(off)
	}
	return nil
}

// Flush implements Device.
func (d *File) Flush(context.Context) error {
	if d.readOnly {
		return nil
	}
	return d.sync(0)
}

func (d *File) sync(off int64) error {
	if err := syscall.Fdatasync(int(d.f.Fd())); err != nil {
		return &MediumError{Write: true, Off: off, Err: fmt.Errorf("fdatasync: %w", err)}
	}
	return nil
}

// StartWriteback begins writing [off, off+length) back to storage without
// waiting for it (sync_file_range with SYNC_FILE_RANGE_WRITE), so that a
// later Flush finds little left to do. A bulk writer calls it behind its
// writes; durability still comes only from Flush.
func (d *File) StartWriteback(off, length int64) error {
	const syncFileRangeWrite = 0x2
	if err := syscall.SyncFileRange(int(d.f.Fd()), off, length, syncFileRangeWrite); err != nil {
		return &MediumError{Write: true, Off: off, Err: fmt.Errorf("sync_file_range: %w", err)}
	}
	return nil
}

// Discard implements Device by punching a hole.
func (d *File) Discard(_ context.Context, off, length int64) error {
	if err := d.writable(off, length); err != nil {
		return err
	}
	return d.fallocate(fallocPunchHole|fallocKeepSize, off, length)
}

// WriteZeroes implements Device: a hole when unmapping is allowed, else an
// allocated zeroed range (falling back to writing zeroes where the file
// system lacks FALLOC_FL_ZERO_RANGE).
func (d *File) WriteZeroes(ctx context.Context, off, length int64, mayUnmap bool) error {
	if err := d.writable(off, length); err != nil {
		return err
	}
	if mayUnmap {
		return d.fallocate(fallocPunchHole|fallocKeepSize, off, length)
	}
	err := d.fallocate(fallocZeroRange|fallocKeepSize, off, length)
	if err == nil || !errors.Is(err, syscall.EOPNOTSUPP) {
		return err
	}
	zero := make([]byte, min(length, 1<<20))
	for done := int64(0); done < length; {
		n := min(int64(len(zero)), length-done)
		if err := d.WriteAt(ctx, zero[:n], off+done, false); err != nil {
			return err
		}
		done += n
	}
	return nil
}

func (d *File) fallocate(mode uint32, off, length int64) error {
	if length == 0 {
		return nil
	}
	if err := syscall.Fallocate(int(d.f.Fd()), mode, off, length); err != nil {
		return &MediumError{Write: true, Off: off, Err: fmt.Errorf("fallocate: %w", err)}
	}
	return nil
}

func (d *File) writable(off, length int64) error {
	if d.readOnly {
		return ErrReadOnly
	}
	return CheckRange(d.size, off, length)
}

// Allocation implements AllocationReporter with SEEK_DATA/SEEK_HOLE.
func (d *File) Allocation(_ context.Context, off int64) (bool, int64, error) {
	if off < 0 || off >= d.size {
		return false, 0, fmt.Errorf("offset %d on a %d-byte device: %w", off, d.size, ErrOutOfRange)
	}
	return SeekAllocation(d.f, off, d.size)
}

// SeekAllocation reports whether the byte at off of the sparse file f is
// allocated, and how many bytes from off (up to size) share that state, with
// SEEK_DATA/SEEK_HOLE. For AllocationReporter implementations over files.
func SeekAllocation(f *os.File, off, size int64) (bool, int64, error) {
	fd := int(f.Fd())
	data, err := syscall.Seek(fd, off, seekData)
	if errors.Is(err, syscall.ENXIO) {
		return false, size - off, nil // only a hole remains
	}
	if err != nil {
		return false, 0, fmt.Errorf("seek data: %w", err)
	}
	if data > off {
		return false, min(data, size) - off, nil
	}
	hole, err := syscall.Seek(fd, off, seekHole)
	if err != nil {
		return false, 0, fmt.Errorf("seek hole: %w", err)
	}
	return true, min(hole, size) - off, nil
}
