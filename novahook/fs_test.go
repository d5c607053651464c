package novahook

import (
	"errors"
	"io"
	"os"
	"sync"
)

// crashFS is an in-memory FS that knows what a power cut would keep: file
// contents as of their last Sync, directory entries as of the last
// SyncDir. After crashAt mutating operations it refuses everything, as a
// dead machine would. The journal uses one directory, so one namespace
// stands for it.
type crashFS struct {
	mu           sync.Mutex
	names        map[string]*inode // as the running process sees them
	durableNames map[string]*inode // as of the last SyncDir
	ops          int
	crashAt      int // 0: never
}

type inode struct {
	data, synced []byte
}

var errCrashed = errors.New("crashed")

func newCrashFS() *crashFS {
	return &crashFS{names: map[string]*inode{}, durableNames: map[string]*inode{}}
}

// mutate counts one mutating operation and reports whether it may happen.
func (fs *crashFS) mutate() error {
	if fs.crashAt > 0 && fs.ops >= fs.crashAt {
		return errCrashed
	}
	fs.ops++
	return nil
}

// after returns the file system a reboot would find. durableNames picks
// the synced directory entries or the ones last seen; syncedData the synced
// contents or everything written. Real file systems land anywhere between.
func (fs *crashFS) after(durableNames, syncedData bool) *crashFS {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	src := fs.names
	if durableNames {
		src = fs.durableNames
	}
	out := newCrashFS()
	copies := map[*inode]*inode{}
	for name, in := range src {
		c, ok := copies[in]
		if !ok {
			d := in.data
			if syncedData {
				d = in.synced
			}
			c = &inode{data: append([]byte(nil), d...), synced: append([]byte(nil), d...)}
			copies[in] = c
		}
		out.names[name] = c
		out.durableNames[name] = c
	}
	return out
}

func (fs *crashFS) OpenFile(name string, flag int, _ os.FileMode) (File, error) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	in, ok := fs.names[name]
	if !ok && flag&os.O_CREATE == 0 {
		return nil, &os.PathError{Op: "open", Path: name, Err: os.ErrNotExist}
	}
	if !ok || flag&os.O_TRUNC != 0 {
		if err := fs.mutate(); err != nil {
			return nil, err
		}
	}
	if !ok {
		in = &inode{}
		fs.names[name] = in
	}
	if flag&os.O_TRUNC != 0 {
		in.data = nil
	}
	return &memFile{fs: fs, in: in}, nil
}

func (fs *crashFS) Rename(oldpath, newpath string) error {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	in, ok := fs.names[oldpath]
	if !ok {
		return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: os.ErrNotExist}
	}
	if err := fs.mutate(); err != nil {
		return err
	}
	fs.names[newpath] = in
	delete(fs.names, oldpath)
	return nil
}

func (fs *crashFS) Remove(name string) error {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if _, ok := fs.names[name]; !ok {
		return &os.PathError{Op: "remove", Path: name, Err: os.ErrNotExist}
	}
	if err := fs.mutate(); err != nil {
		return err
	}
	delete(fs.names, name)
	return nil
}

func (fs *crashFS) MkdirAll(string, os.FileMode) error { return nil }

func (fs *crashFS) SyncDir(string) error {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if err := fs.mutate(); err != nil {
		return err
	}
	fs.durableNames = map[string]*inode{}
	for n, in := range fs.names {
		fs.durableNames[n] = in
	}
	return nil
}

type memFile struct {
	fs  *crashFS
	in  *inode
	off int64
}

func (f *memFile) Read(p []byte) (int, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if f.off >= int64(len(f.in.data)) {
		return 0, io.EOF
	}
	n := copy(p, f.in.data[f.off:])
	f.off += int64(n)
	return n, nil
}

func (f *memFile) Write(p []byte) (int, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.fs.mutate(); err != nil {
		return 0, err
	}
	if end := f.off + int64(len(p)); end > int64(len(f.in.data)) {
		f.in.data = append(f.in.data, make([]byte, end-int64(len(f.in.data)))...)
	}
	copy(f.in.data[f.off:], p)
	f.off += int64(len(p))
	return len(p), nil
}

func (f *memFile) Seek(offset int64, whence int) (int64, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	switch whence {
	case io.SeekStart:
		f.off = offset
	case io.SeekCurrent:
		f.off += offset
	case io.SeekEnd:
		f.off = int64(len(f.in.data)) + offset
	}
	return f.off, nil
}

func (f *memFile) Sync() error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.fs.mutate(); err != nil {
		return err
	}
	f.in.synced = append([]byte(nil), f.in.data...)
	return nil
}

func (f *memFile) Truncate(size int64) error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if size == int64(len(f.in.data)) {
		return nil
	}
	if err := f.fs.mutate(); err != nil {
		return err
	}
	if size < int64(len(f.in.data)) {
		f.in.data = f.in.data[:size]
	} else {
		f.in.data = append(f.in.data, make([]byte, size-int64(len(f.in.data)))...)
	}
	return nil
}

func (f *memFile) Close() error { return nil }
