package vfs

import (
	"errors"
	"io"
	"io/fs"
	"maps"
	"math/rand/v2"
	"path"
	"slices"
	"strings"
	"sync"
)

// sectorSize is the unit in which Mem tears unsynced writes at a crash, the
// atomic write unit of a disk.
const sectorSize = 512

type sector = [sectorSize]byte

// Mem is an in-memory FS that simulates crashes: Crash keeps only what was
// made durable (file data by File.Sync, names by SyncDir) and, if asked,
// a random part of what was not, as a disk with a volatile cache may.
// Handles opened before a crash fail afterwards.
type Mem struct {
	mu sync.Mutex
	// files and dirs are the live namespace; durableFiles and durableDirs what
	// a crash would leave; pending the namespace operations not yet synced,
	// in order.
	files, durableFiles map[string]*memNode
	dirs, durableDirs   map[string]bool
	pending             []nsOp

	ops       int // mutating operations so far
	crashAt   int // CrashAfter's n; 0: not armed
	crashTear *rand.Rand
	crashed   *Mem
}

// nsOp is a namespace change: name now refers to node (nil: removed); a
// rename also removes from, in the same step.
type nsOp struct {
	name, from string
	node       *memNode
	dir        bool
}

// memNode is a file's contents: the live sectors and size, and the durable
// ones. A sector not in dirty is shared with the durable map and must be
// copied before it is modified.
type memNode struct {
	dead              bool
	size, durableSize int64
	data, durableData map[int64]*sector
	dirty             map[int64]bool
}

var _ FS = (*Mem)(nil)

// NewMem returns an empty Mem with a root directory "/".
func NewMem() *Mem {
	return &Mem{
		files: map[string]*memNode{}, durableFiles: map[string]*memNode{},
		dirs: map[string]bool{"/": true}, durableDirs: map[string]bool{"/": true},
	}
}

func clean(name string) string { return path.Clean("/" + name) }

func notExist(op, name string) error {
	return &fs.PathError{Op: op, Path: name, Err: fs.ErrNotExist}
}

func (m *Mem) record(op nsOp) {
	if op.dir {
		m.dirs[op.name] = op.node != nil
		if op.node == nil {
			delete(m.dirs, op.name)
		}
	} else if op.node == nil {
		delete(m.files, op.name)
	} else {
		m.files[op.name] = op.node
	}
	if op.from != "" {
		delete(m.files, op.from)
	}
	m.pending = append(m.pending, op)
}

func (m *Mem) parentExists(op, name string) error {
	if !m.dirs[path.Dir(name)] {
		return notExist(op, name)
	}
	return nil
}

// Create implements FS.
func (m *Mem) Create(name string) (File, error) {
	name = clean(name)
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.parentExists("create", name); err != nil {
		return nil, err
	}
	if m.dirs[name] {
		return nil, &fs.PathError{Op: "create", Path: name, Err: errors.New("is a directory")}
	}
	n := &memNode{data: map[int64]*sector{}, durableData: map[int64]*sector{}, dirty: map[int64]bool{}}
	m.record(nsOp{name: name, node: n})
	m.mutated()
	return &memFile{m: m, n: n, name: name}, nil
}

// Open implements FS.
func (m *Mem) Open(name string) (File, error) {
	name = clean(name)
	m.mu.Lock()
	defer m.mu.Unlock()
	n := m.files[name]
	if n == nil {
		return nil, notExist("open", name)
	}
	return &memFile{m: m, n: n, name: name}, nil
}

// Rename implements FS (files only, which is all the store renames).
func (m *Mem) Rename(oldname, newname string) error {
	oldname, newname = clean(oldname), clean(newname)
	m.mu.Lock()
	defer m.mu.Unlock()
	n := m.files[oldname]
	if n == nil {
		return notExist("rename", oldname)
	}
	if err := m.parentExists("rename", newname); err != nil {
		return err
	}
	m.record(nsOp{name: newname, from: oldname, node: n})
	m.mutated()
	return nil
}

// Link implements FS.
func (m *Mem) Link(oldname, newname string) error {
	oldname, newname = clean(oldname), clean(newname)
	m.mu.Lock()
	defer m.mu.Unlock()
	n := m.files[oldname]
	if n == nil {
		return notExist("link", oldname)
	}
	if err := m.parentExists("link", newname); err != nil {
		return err
	}
	if m.files[newname] != nil || m.dirs[newname] {
		return &fs.PathError{Op: "link", Path: newname, Err: fs.ErrExist}
	}
	m.record(nsOp{name: newname, node: n})
	m.mutated()
	return nil
}

// RemoveAll implements FS.
func (m *Mem) RemoveAll(name string) error {
	name = clean(name)
	m.mu.Lock()
	defer m.mu.Unlock()
	prefix := strings.TrimSuffix(name, "/") + "/"
	for f := range m.files {
		if f == name || strings.HasPrefix(f, prefix) {
			m.record(nsOp{name: f})
		}
	}
	var dirs []string
	for d := range m.dirs {
		if d == name || strings.HasPrefix(d, prefix) {
			dirs = append(dirs, d)
		}
	}
	// Deepest first, as a real removal goes.
	slices.SortFunc(dirs, func(a, b string) int { return strings.Count(b, "/") - strings.Count(a, "/") })
	for _, d := range dirs {
		m.record(nsOp{name: d, dir: true})
	}
	m.mutated()
	return nil
}

// MkdirAll implements FS.
func (m *Mem) MkdirAll(dir string) error {
	dir = clean(dir)
	m.mu.Lock()
	defer m.mu.Unlock()
	var missing []string
	for d := dir; !m.dirs[d]; d = path.Dir(d) {
		if m.files[d] != nil {
			return &fs.PathError{Op: "mkdir", Path: d, Err: errors.New("not a directory")}
		}
		missing = append(missing, d)
	}
	for _, d := range slices.Backward(missing) {
		m.record(nsOp{name: d, node: &memNode{}, dir: true})
	}
	m.mutated()
	return nil
}

// SyncDir implements FS: the pending operations on names in dir become
// durable.
func (m *Mem) SyncDir(dir string) error {
	dir = clean(dir)
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.dirs[dir] {
		return notExist("syncdir", dir)
	}
	kept := m.pending[:0]
	for _, op := range m.pending {
		if path.Dir(op.name) == dir || (op.from != "" && path.Dir(op.from) == dir) {
			m.applyDurable(op)
		} else {
			kept = append(kept, op)
		}
	}
	clear(m.pending[len(kept):])
	m.pending = kept
	m.mutated()
	return nil
}

func (m *Mem) applyDurable(op nsOp) { applyOp(m.durableFiles, m.durableDirs, op) }

// applyOp applies a namespace operation to a namespace.
func applyOp(files map[string]*memNode, dirs map[string]bool, op nsOp) {
	switch {
	case op.dir && op.node != nil:
		dirs[op.name] = true
	case op.dir:
		delete(dirs, op.name)
	case op.node != nil:
		files[op.name] = op.node
	default:
		delete(files, op.name)
	}
	if op.from != "" {
		delete(files, op.from)
	}
}

func (m *Mem) children(dir string) []string {
	var names []string
	for f := range m.files {
		if path.Dir(f) == dir {
			names = append(names, path.Base(f))
		}
	}
	for d := range m.dirs {
		if d != dir && path.Dir(d) == dir {
			names = append(names, path.Base(d))
		}
	}
	slices.Sort(names)
	return names
}

// ReadDir implements FS.
func (m *Mem) ReadDir(dir string) ([]string, error) {
	dir = clean(dir)
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.dirs[dir] {
		return nil, notExist("readdir", dir)
	}
	return m.children(dir), nil
}

// Crash simulates a power failure followed by a reboot, in place: m becomes
// CrashClone(tear) and handles opened before fail afterwards.
func (m *Mem) Crash(tear *rand.Rand) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := m.crashClone(tear)
	for _, n := range m.files {
		n.dead = true
	}
	for _, n := range m.durableFiles {
		n.dead = true
	}
	for _, op := range m.pending {
		if op.node != nil {
			op.node.dead = true
		}
	}
	m.files, m.durableFiles, m.dirs, m.durableDirs, m.pending = c.files, c.durableFiles, c.dirs, c.durableDirs, nil
}

// CrashClone returns, as a new Mem, what a power failure now would leave,
// and leaves m as it is. Everything synced survives. With tear nil nothing
// else does; otherwise tear decides, for each unsynced sector of each file
// and for each file's size, whether the new or the old contents survive (a
// torn write), and keeps a random prefix of the unsynced namespace
// operations (a journaling filesystem keeps their order).
func (m *Mem) CrashClone(tear *rand.Rand) *Mem {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.crashClone(tear)
}

// CrashAfter arms m to take CrashClone(tear) right after its nth mutating
// operation (the first is 1); Crashed returns it. A test runs the same
// script once per n to crash it after each of its writes in turn.
func (m *Mem) CrashAfter(n int, tear *rand.Rand) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.crashAt, m.crashTear, m.crashed = n, tear, nil
}

// Crashed returns the clone CrashAfter took, or nil if the run did not get
// that far.
func (m *Mem) Crashed() *Mem {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.crashed
}

// Ops is the number of mutating operations (writes, syncs, truncations,
// hole punches, namespace changes) so far.
func (m *Mem) Ops() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.ops
}

// mutated counts a mutating operation. The caller holds m.mu.
func (m *Mem) mutated() {
	m.ops++
	if m.ops == m.crashAt {
		m.crashed = m.crashClone(m.crashTear)
	}
}

func (m *Mem) crashClone(tear *rand.Rand) *Mem {
	files, dirs := maps.Clone(m.durableFiles), maps.Clone(m.durableDirs)
	if tear != nil {
		for _, op := range m.pending[:tear.IntN(len(m.pending)+1)] {
			applyOp(files, dirs, op)
		}
	}
	// Sorted, so that a seeded tear draws in the same order every run.
	fresh := map[*memNode]*memNode{}
	for _, name := range slices.Sorted(maps.Keys(files)) {
		n := files[name]
		c := fresh[n]
		if c == nil {
			c = n.crashCopy(tear)
			fresh[n] = c
		}
		files[name] = c
	}
	return &Mem{files: files, durableFiles: maps.Clone(files), dirs: dirs, durableDirs: maps.Clone(dirs)}
}

// crashCopy returns what survives of n: its durable state plus, with tear,
// a random choice of its unsynced sectors and size.
func (n *memNode) crashCopy(tear *rand.Rand) *memNode {
	c := &memNode{size: n.durableSize, data: maps.Clone(n.durableData), dirty: map[int64]bool{}}
	if tear != nil {
		if tear.IntN(2) == 0 {
			c.size = n.size
		}
		for _, s := range slices.Sorted(maps.Keys(n.dirty)) {
			if tear.IntN(2) == 0 {
				if p := n.data[s]; p != nil {
					// Copied: n's unsynced sectors change in place while
					// the run that CrashClone observed goes on.
					cp := *p
					c.data[s] = &cp
				} else {
					delete(c.data, s)
				}
			}
		}
		c.dropBeyond(c.size)
	}
	clear(c.dirty)
	c.durableSize = c.size
	c.durableData = maps.Clone(c.data)
	return c
}

// dropBeyond zeroes everything at or after size.
func (n *memNode) dropBeyond(size int64) {
	for s := range n.data {
		if (s+1)*sectorSize > size {
			n.zero(s, max(size-s*sectorSize, 0), sectorSize)
		}
	}
}

// writable returns sector s ready to modify, copying it if it is shared with
// the durable state.
func (n *memNode) writable(s int64) *sector {
	p := n.data[s]
	if !n.dirty[s] {
		n.dirty[s] = true
		c := new(sector)
		if p != nil {
			*c = *p
		}
		p = c
		n.data[s] = p
	} else if p == nil {
		p = new(sector)
		n.data[s] = p
	}
	return p
}

// zero zeroes [from, to) within sector s, dropping the sector when whole.
func (n *memNode) zero(s, from, to int64) {
	if from == 0 && to == sectorSize {
		delete(n.data, s)
		n.dirty[s] = true
		return
	}
	p := n.writable(s)
	clear(p[from:to])
}

type memFile struct {
	m    *Mem
	n    *memNode
	name string
}

var errStale = errors.New("file handle from before a crash")

func (f *memFile) check(op string) error {
	if f.n.dead {
		return &fs.PathError{Op: op, Path: f.name, Err: errStale}
	}
	return nil
}

func (f *memFile) ReadAt(p []byte, off int64) (int, error) {
	f.m.mu.Lock()
	defer f.m.mu.Unlock()
	if err := f.check("read"); err != nil {
		return 0, err
	}
	if off < 0 {
		return 0, &fs.PathError{Op: "read", Path: f.name, Err: fs.ErrInvalid}
	}
	n := 0
	for n < len(p) && off+int64(n) < f.n.size {
		pos := off + int64(n)
		s, in := pos/sectorSize, pos%sectorSize
		end := min(int64(len(p)-n), sectorSize-in, f.n.size-pos)
		if sec := f.n.data[s]; sec != nil {
			copy(p[n:n+int(end)], sec[in:in+end])
		} else {
			clear(p[n : n+int(end)])
		}
		n += int(end)
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (f *memFile) WriteAt(p []byte, off int64) (int, error) {
	f.m.mu.Lock()
	defer f.m.mu.Unlock()
	if err := f.check("write"); err != nil {
		return 0, err
	}
	if off < 0 {
		return 0, &fs.PathError{Op: "write", Path: f.name, Err: fs.ErrInvalid}
	}
	for n := 0; n < len(p); {
		pos := off + int64(n)
		s, in := pos/sectorSize, pos%sectorSize
		c := copy(f.n.writable(s)[in:], p[n:])
		n += c
	}
	f.n.size = max(f.n.size, off+int64(len(p)))
	f.m.mutated()
	return len(p), nil
}

func (f *memFile) Close() error { return nil }

func (f *memFile) Sync() error {
	f.m.mu.Lock()
	defer f.m.mu.Unlock()
	if err := f.check("sync"); err != nil {
		return err
	}
	for s := range f.n.dirty {
		if p := f.n.data[s]; p != nil {
			f.n.durableData[s] = p
		} else {
			delete(f.n.durableData, s)
		}
	}
	clear(f.n.dirty)
	f.n.durableSize = f.n.size
	f.m.mutated()
	return nil
}

func (f *memFile) Truncate(size int64) error {
	f.m.mu.Lock()
	defer f.m.mu.Unlock()
	if err := f.check("truncate"); err != nil {
		return err
	}
	if size < 0 {
		return &fs.PathError{Op: "truncate", Path: f.name, Err: fs.ErrInvalid}
	}
	f.n.dropBeyond(size)
	f.n.size = size
	f.m.mutated()
	return nil
}

func (f *memFile) PunchHole(off, length int64) error {
	f.m.mu.Lock()
	defer f.m.mu.Unlock()
	if err := f.check("punch"); err != nil {
		return err
	}
	if off < 0 || length < 0 {
		return &fs.PathError{Op: "punch", Path: f.name, Err: fs.ErrInvalid}
	}
	end := min(off+length, f.n.size)
	for pos := off; pos < end; {
		s, in := pos/sectorSize, pos%sectorSize
		to := min(sectorSize, in+end-pos)
		f.n.zero(s, in, to)
		pos += to - in
	}
	f.m.mutated()
	return nil
}

func (f *memFile) Size() (int64, error) {
	f.m.mu.Lock()
	defer f.m.mu.Unlock()
	if err := f.check("stat"); err != nil {
		return 0, err
	}
	return f.n.size, nil
}
