// Package vfs is the small filesystem interface through which the replicator
// does all its file I/O (after pebble's vfs.FS). Production code uses OS; tests
// use Mem, which keeps only what was synced, so that they can crash the store at
// any point and check what survives.
package vfs

import (
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"

	"github.com/shareless/shareless/blockdev"
)

// File is an open regular file.
type File interface {
	io.ReaderAt
	io.WriterAt
	io.Closer
	// Sync makes the file's data and size durable (fdatasync). It says nothing
	// about the file's name: see FS.SyncDir.
	Sync() error
	// Truncate sets the file size; growth reads as zeroes.
	Truncate(size int64) error
	// PunchHole deallocates [off, off+length) without changing the size; the
	// range reads as zeroes afterwards. Like a write, it is durable only after
	// Sync.
	PunchHole(off, length int64) error
	// Size is the current file size.
	Size() (int64, error)
}

// FS is a filesystem. Names are slash-separated paths. Creating, renaming or
// removing a name is durable only after SyncDir of the directory holding it.
// Missing files are reported with errors for which
// errors.Is(err, fs.ErrNotExist) holds.
type FS interface {
	// Create creates or truncates name and opens it read-write.
	Create(name string) (File, error)
	// Open opens an existing file read-write.
	Open(name string) (File, error)
	// Rename atomically replaces newname with oldname.
	Rename(oldname, newname string) error
	// Link makes newname, which must not exist, a second name of the
	// existing file oldname (a hard link): both name the same data.
	Link(oldname, newname string) error
	// RemoveAll removes a directory tree; a missing one is not an error.
	RemoveAll(name string) error
	// MkdirAll creates a directory and its missing parents.
	MkdirAll(dir string) error
	// SyncDir makes the creations, renames and removals of names in dir durable.
	SyncDir(dir string) error
	// ReadDir lists the names in dir, sorted.
	ReadDir(dir string) ([]string, error)
}

// OS is the operating system's filesystem.
type OS struct{}

var _ FS = OS{}

// Create implements FS.
func (OS) Create(name string) (File, error) {
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	return osFile{f}, nil
}

// Open implements FS.
func (OS) Open(name string) (File, error) {
	f, err := os.OpenFile(name, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	return osFile{f}, nil
}

// Rename implements FS.
func (OS) Rename(oldname, newname string) error { return os.Rename(oldname, newname) }

// Link implements FS.
func (OS) Link(oldname, newname string) error { return os.Link(oldname, newname) }

// RemoveAll implements FS.
func (OS) RemoveAll(name string) error { return os.RemoveAll(name) }

// MkdirAll implements FS.
func (OS) MkdirAll(dir string) error { return os.MkdirAll(dir, 0o700) }

// SyncDir implements FS.
func (OS) SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}

// ReadDir implements FS.
func (OS) ReadDir(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	names := make([]string, len(ents))
	for i, e := range ents {
		names[i] = e.Name()
	}
	return names, nil
}

// Allocator is implemented by files that can tell their holes from their
// data (a sparse file on a file system with SEEK_DATA). Files that cannot
// are taken to be allocated everywhere.
type Allocator interface {
	// Allocation reports whether the byte at off is allocated and how many
	// bytes from off, up to size, share that state.
	Allocation(off, size int64) (allocated bool, length int64, err error)
}

type osFile struct{ f *os.File }

// Allocation implements Allocator.
func (o osFile) Allocation(off, size int64) (bool, int64, error) {
	return blockdev.SeekAllocation(o.f, off, size)
}

func (o osFile) ReadAt(p []byte, off int64) (int, error)  { return o.f.ReadAt(p, off) }
func (o osFile) WriteAt(p []byte, off int64) (int, error) { return o.f.WriteAt(p, off) }
func (o osFile) Close() error                             { return o.f.Close() }
func (o osFile) Truncate(size int64) error                { return o.f.Truncate(size) }

func (o osFile) Sync() error {
	if err := syscall.Fdatasync(int(o.f.Fd())); err != nil {
		return &os.PathError{Op: "fdatasync", Path: o.f.Name(), Err: err}
	}
	return nil
}

// Linux fallocate modes not exported by package syscall.
const (
	fallocKeepSize  = 0x01
	fallocPunchHole = 0x02
)

func (o osFile) PunchHole(off, length int64) error {
	if length == 0 {
		return nil
	}
	err := syscall.Fallocate(int(o.f.Fd()), fallocPunchHole|fallocKeepSize, off, length)
	if errors.Is(err, syscall.EOPNOTSUPP) {
		// No hole punching here (e.g. some tmpfs or overlay setups): zeroes
		// read the same, they just stay allocated.
		return WriteZeroes(o.f, off, length)
	}
	if err != nil {
		return &os.PathError{Op: "fallocate", Path: o.f.Name(), Err: err}
	}
	return nil
}

// WriteZeroes writes length zero bytes at off, a MiB at a time.
func WriteZeroes(w io.WriterAt, off, length int64) error {
	zero := make([]byte, min(length, 1<<20))
	for done := int64(0); done < length; {
		n := min(int64(len(zero)), length-done)
		if _, err := w.WriteAt(zero[:n], off+done); err != nil {
			return err
		}
		done += n
	}
	return nil
}

func (o osFile) Size() (int64, error) {
	st, err := o.f.Stat()
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}
