// Package replicator keeps managed disks (design.md §2): each a raw sparse
// image with checksummed metadata in its own directory of a Store, served to
// QEMU as a blockdev.Device. A disk that moved here with its VM is a
// post-copy Replica of the image it came from: it reads what it does not hold
// from a Source, copies the rest in the background once the source is sealed,
// and remembers what the guest wrote so that the way back moves only that.
//
// All file I/O goes through replicator/vfs, so that tests crash the store
// after any write and check the rules of design.md §2.
package replicator

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/shareless/shareless/replicator/vfs"
)

// Granularity. The way back moves whole tracking blocks and the metadata
// holds two bits per block (valid, modified), so the grain trades bytes moved
// against metadata held in memory and rewritten at each checkpoint.
// TestGranularity measures the real way back after scattered 4 KiB guest
// writes at distinct offsets (the worst case: for scattered writes the share
// moved depends on writes per block, not on the disk size):
//
//	written here   grain 4 KiB   16 KiB   64 KiB   (share of the disk moved back)
//	1%             1.0%          3.9%     14.6%
//	10%            10.0%         34.8%    83.8%
//	metadata/TiB   64 MiB        16 MiB   4 MiB
//
// At 64 KiB a guest that rewrote 10% of its disk in scattered pages (a
// database) would move most of the disk back, little better than a full
// copy; at 4 KiB every TiB of managed disk costs 64 MiB of agent memory and
// a 64 MiB checkpoint. DefaultGrain is therefore 16 KiB, which also bounds
// the source read a partial write to an uncopied block waits for. Clustered
// writes (filesystem journals, extents) move little at any grain. The copy
// chunk is 1 MiB (64 blocks): large enough that one source round trip
// carries many blocks, small enough that a guest write waiting on the chunk
// lock waits for at most 1 MiB of local writes.
const (
	DefaultGrain = 16 << 10
	DefaultChunk = 1 << 20
	// DefaultSourceTimeout bounds how long a read that needs the source
	// waits for it (rule 8), below the guest's own SCSI timeout (30 s in
	// Linux) so that the guest sees an error, not an aborted command.
	DefaultSourceTimeout = 20 * time.Second
	// DefaultJournalLimit is the journal size past which the checkpoint is
	// rewritten.
	DefaultJournalLimit = 4 << 20
)

// StoreOptions configures a Store. Zero fields take the defaults.
type StoreOptions struct {
	Grain, Chunk  int64
	SourceTimeout time.Duration
	JournalLimit  int64
	Clock         Clock
	Log           *slog.Logger
	// Rand supplies lineage ids (crypto/rand by default).
	Rand io.Reader
}

// Store is a directory of managed disks, one subdirectory each.
type Store struct {
	fs   vfs.FS
	root string
	opts StoreOptions

	mu   sync.Mutex
	open map[string]bool // disks with a live Replica
}

// NewStore opens (creating if needed) the store rooted at root.
func NewStore(fsys vfs.FS, root string, opts StoreOptions) (*Store, error) {
	if opts.Grain == 0 {
		opts.Grain = DefaultGrain
	}
	if opts.Chunk == 0 {
		opts.Chunk = DefaultChunk
	}
	if err := checkGeometry(opts.Chunk, opts.Grain, opts.Chunk); err != nil {
		return nil, err
	}
	if opts.SourceTimeout == 0 {
		opts.SourceTimeout = DefaultSourceTimeout
	}
	if opts.JournalLimit == 0 {
		opts.JournalLimit = DefaultJournalLimit
	}
	if opts.Clock == nil {
		opts.Clock = SystemClock{}
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.Rand == nil {
		opts.Rand = rand.Reader
	}
	if err := fsys.MkdirAll(root); err != nil {
		return nil, fmt.Errorf("create store %s: %w", root, err)
	}
	return &Store{fs: fsys, root: root, opts: opts, open: map[string]bool{}}, nil
}

// ReplicaOptions configures one opened disk.
type ReplicaOptions struct {
	// RemoteOnly selects Method B: blocks not held locally are always read
	// from the source; nothing is copied, in the background or on read.
	// A replica that Replica.StartCopying switched to copying copies
	// regardless.
	RemoteOnly bool
	// Rate limits the background copy, in bytes per second (0: unlimited).
	Rate int64
	// Paused opens the disk with the background copy paused (the agent
	// restores an operator's pause after a restart).
	Paused bool
}

// Origin describes the image a new replica will copy, as its host reports
// it before the switch-over.
type Origin struct {
	// Image is the source image's own identity.
	Image ID
	// Base is what the source image itself copied (zero if it is not a
	// replica): if it equals a local sealed image, the way back can be
	// incremental.
	Base ID
}

// Plan is how Replicate rebuilds a disk.
type Plan int

const (
	// PlanFull copies every block from the source.
	PlanFull Plan = iota + 1
	// PlanIncremental keeps the local sealed image as the base and fetches
	// only the blocks the source reports modified (rule 7).
	PlanIncremental
)

func (p Plan) String() string {
	switch p {
	case PlanFull:
		return "full"
	case PlanIncremental:
		return "incremental"
	}
	return fmt.Sprintf("Plan(%d)", int(p))
}

// ErrBusy: the disk already has a live Replica in this store.
var ErrBusy = errors.New("disk is open")

func (s *Store) dir(name string) (string, error) {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, `/\`) {
		return "", fmt.Errorf("invalid disk name %q", name)
	}
	return filepath.Join(s.root, name), nil
}

// acquire marks name open; release undoes it.
func (s *Store) acquire(name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.open[name] {
		return fmt.Errorf("disk %s: %w", name, ErrBusy)
	}
	s.open[name] = true
	return nil
}

func (s *Store) release(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.open, name)
}

func (s *Store) newLineage() ([16]byte, error) {
	var l [16]byte
	if _, err := io.ReadFull(s.opts.Rand, l[:]); err != nil {
		return l, fmt.Errorf("lineage id: %w", err)
	}
	return l, nil
}

// Create makes a new base disk of size bytes, all zeroes, and opens it.
func (s *Store) Create(ctx context.Context, name string, size int64) (*Replica, error) {
	lineage, err := s.newLineage()
	if err != nil {
		return nil, err
	}
	m := &diskMeta{ID: ID{Lineage: lineage, Generation: 1}, Size: size, Grain: s.opts.Grain, Chunk: s.opts.Chunk}
	return s.create(ctx, name, m, nil, ReplicaOptions{})
}

// create lays out a new disk directory for m (bitmaps are filled here: all
// valid for a base, none for a replica) and opens it.
func (s *Store) create(ctx context.Context, name string, m *diskMeta, src Source, ro ReplicaOptions) (*Replica, error) {
	dir, err := s.dir(name)
	if err != nil {
		return nil, err
	}
	if err := checkGeometry(m.Size, m.Grain, m.Chunk); err != nil {
		return nil, fmt.Errorf("create disk %s: %w", name, err)
	}
	if err := s.acquire(name); err != nil {
		return nil, err
	}
	r, err := s.createLocked(ctx, name, dir, m, src, ro)
	if err != nil {
		s.release(name)
	}
	return r, err
}

func (s *Store) createLocked(ctx context.Context, name, dir string, m *diskMeta, src Source, ro ReplicaOptions) (*Replica, error) {
	return s.layOut(ctx, name, dir, m, src, ro, func(path string) (vfs.File, error) {
		image, err := s.fs.Create(path)
		if err != nil {
			return nil, err
		}
		if err := image.Truncate(m.Size); err != nil {
			image.Close()
			return nil, fmt.Errorf("size image: %w", err)
		}
		if err := image.Sync(); err != nil {
			image.Close()
			return nil, fmt.Errorf("sync image: %w", err)
		}
		return image, nil
	})
}

// layOut creates the directory of a new disk with the image that makeImage
// puts at the path it is given, then the metadata, and opens the disk.
func (s *Store) layOut(ctx context.Context, name, dir string, m *diskMeta, src Source, ro ReplicaOptions, makeImage func(path string) (vfs.File, error)) (*Replica, error) {
	if _, err := s.fs.ReadDir(dir); err == nil {
		return nil, fmt.Errorf("create disk %s: %w", name, fs.ErrExist)
	}
	m.Valid, m.Modified = NewBitmap(m.blocks()), NewBitmap(m.blocks())
	if !m.Replica {
		m.Valid.SetRange(0, m.blocks())
	}
	if err := s.fs.MkdirAll(dir); err != nil {
		return nil, fmt.Errorf("create disk %s: %w", name, err)
	}
	image, err := makeImage(filepath.Join(dir, imageName))
	if err != nil {
		// The directory is new (checked above, under acquire): leave no
		// disk without an image behind.
		return nil, errors.Join(fmt.Errorf("create disk %s: %w", name, err), s.fs.RemoveAll(dir))
	}
	mlog, err := createMeta(s.fs, dir, m)
	if err == nil {
		err = s.fs.SyncDir(s.root)
	}
	if err != nil {
		image.Close()
		return nil, fmt.Errorf("create disk %s: %w", name, err)
	}
	s.opts.Log.Info("disk created", "disk", name, "id", m.ID, "size", m.Size, "replica", m.Replica, "source", m.Source)
	return newReplica(ctx, s, name, image, mlog, m, src, ro), nil
}

// Import makes the raw image file a new base disk without copying it: the
// disk's image becomes a second name (hard link) of file, so that from then
// on both names are the same data, and what the disk is written through its
// Replica is what a reader of file reads. file must be on the store's file
// system and mount (the link fails with EXDEV otherwise) and not change
// size. The agent's adoption keeps Nova's instance file this way
// (agent/adopt.go).
func (s *Store) Import(ctx context.Context, name, file string) (*Replica, error) {
	dir, err := s.dir(name)
	if err != nil {
		return nil, err
	}
	f, err := s.fs.Open(file)
	if err != nil {
		return nil, fmt.Errorf("import %s: %w", file, err)
	}
	size, err := f.Size()
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("import %s: %w", file, err)
	}
	if err := checkGeometry(size, s.opts.Grain, s.opts.Chunk); err != nil {
		return nil, fmt.Errorf("import %s: %w", file, err)
	}
	lineage, err := s.newLineage()
	if err != nil {
		return nil, err
	}
	if err := s.acquire(name); err != nil {
		return nil, err
	}
	m := &diskMeta{ID: ID{Lineage: lineage, Generation: 1}, Size: size, Grain: s.opts.Grain, Chunk: s.opts.Chunk}
	r, err := s.layOut(ctx, name, dir, m, nil, ReplicaOptions{}, func(path string) (vfs.File, error) {
		if err := s.fs.Link(file, path); err != nil {
			return nil, err
		}
		return s.fs.Open(path)
	})
	if err != nil {
		s.release(name)
	}
	return r, err
}

// ImagePath is the file that holds disk name's data (raw): what Import
// linked, or what the agent links into Nova's instance directory once the
// disk is complete.
func (s *Store) ImagePath(name string) (string, error) {
	dir, err := s.dir(name)
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, imageName), nil
}

// Open opens an existing disk. src is required while the disk is a replica
// that does not hold every block yet, and must have the disk's size.
func (s *Store) Open(ctx context.Context, name string, src Source, ro ReplicaOptions) (*Replica, error) {
	dir, err := s.dir(name)
	if err != nil {
		return nil, err
	}
	if err := s.acquire(name); err != nil {
		return nil, err
	}
	r, err := s.openLocked(ctx, name, dir, src, ro)
	if err != nil {
		s.release(name)
	}
	return r, err
}

func (s *Store) openLocked(ctx context.Context, name, dir string, src Source, ro ReplicaOptions) (*Replica, error) {
	mlog, m, err := openMeta(s.fs, dir)
	if err != nil {
		return nil, fmt.Errorf("open disk %s: %w", name, err)
	}
	image, err := s.openImage(dir, m.Size)
	if err == nil && m.Valid.Count() < m.blocks() {
		err = checkSource(src, m.Size)
	}
	if err != nil {
		mlog.close()
		return nil, fmt.Errorf("open disk %s: %w", name, err)
	}
	return newReplica(ctx, s, name, image, mlog, m, src, ro), nil
}

func checkSource(src Source, size int64) error {
	if src == nil {
		return errors.New("a replica that is not complete needs its source")
	}
	if src.Size() != size {
		return fmt.Errorf("source is %d bytes, the disk %d", src.Size(), size)
	}
	return nil
}

func (s *Store) openImage(dir string, size int64) (vfs.File, error) {
	image, err := s.fs.Open(filepath.Join(dir, imageName))
	if err != nil {
		return nil, fmt.Errorf("open image: %w", err)
	}
	if got, err := image.Size(); err != nil || got != size {
		image.Close()
		return nil, fmt.Errorf("image is %d bytes (%v), metadata says %d", got, err, size)
	}
	return image, nil
}

// Replicate builds the local replica of a disk that is moving here from
// another host, whose image is from and which src reads. If this store holds
// the disk sealed, complete, of the same size and grain, and with exactly
// the identity from.Base (unchanged since the other side copied it, rule 6),
// the local image is kept as the base and the plan is PlanIncremental: once
// the source is sealed, SourceSealed marks every block valid except those in
// the source's final modified set. Otherwise a sealed local copy is
// discarded and the plan is PlanFull; the choice is logged with its reason.
// An unsealed local copy (ErrLocalWritable: it may be in use) or one whose
// metadata is unreadable is an error, never discarded.
//
// The other side must not itself still be copying from this host: a replica
// whose source reads back from it would loop. The agent lets that copy
// finish before migrating the VM back.
func (s *Store) Replicate(ctx context.Context, name string, from Origin, src Source, ro ReplicaOptions) (*Replica, Plan, error) {
	dir, err := s.dir(name)
	if err != nil {
		return nil, 0, err
	}
	if src == nil {
		return nil, 0, fmt.Errorf("replicate disk %s: no source", name)
	}
	if err := checkGeometry(src.Size(), s.opts.Grain, s.opts.Chunk); err != nil {
		return nil, 0, fmt.Errorf("replicate disk %s: %w", name, err)
	}
	if err := s.acquire(name); err != nil {
		return nil, 0, err
	}
	r, plan, err := s.replicateLocked(ctx, name, dir, from, src, ro)
	if err != nil {
		s.release(name)
	}
	return r, plan, err
}

func (s *Store) replicateLocked(ctx context.Context, name, dir string, from Origin, src Source, ro ReplicaOptions) (*Replica, Plan, error) {
	log := s.opts.Log.With("disk", name, "source", from.Image)
	mlog, m, err := openMeta(s.fs, dir)
	reason, err := s.choosePlan(name, m, err, from, src.Size())
	if err != nil {
		if mlog != nil {
			mlog.close()
		}
		return nil, 0, err
	}
	if reason == "" {
		r, err := s.reuse(ctx, name, dir, mlog, m, from, src, ro)
		if err != nil {
			return nil, 0, err
		}
		log.Info("replica plan chosen", "plan", PlanIncremental, "base", m.Base)
		return r, PlanIncremental, nil
	}
	if mlog != nil {
		mlog.close()
	}
	log.Info("replica plan chosen", "plan", PlanFull, "reason", reason)
	if err := s.fs.RemoveAll(dir); err != nil {
		return nil, 0, fmt.Errorf("replicate disk %s: discard local copy: %w", name, err)
	}
	lineage, err := s.newLineage()
	if err != nil {
		return nil, 0, err
	}
	nm := &diskMeta{ID: ID{Lineage: lineage, Generation: 1}, Size: src.Size(), Grain: s.opts.Grain, Chunk: s.opts.Chunk,
		Replica: true, Source: from.Image}
	r, err := s.createLocked(ctx, name, dir, nm, src, ro)
	if err != nil {
		return nil, 0, err
	}
	return r, PlanFull, nil
}

// ErrLocalWritable: Replicate found the disk here unsealed. It may be the
// disk a VM on this host uses, so it is never discarded to make room for a
// copy: the agent unseals nothing by mistake and removes it explicitly.
var ErrLocalWritable = errors.New("local copy of the disk is not sealed")

// choosePlan decides from the local copy (m, or the error opening it) how
// to rebuild the disk: "" for the incremental plan, else the reason for a
// full copy. A local copy that is unsealed or unreadable is refused, never
// discarded: the first may be live data, the second needs an operator.
func (s *Store) choosePlan(name string, m *diskMeta, openErr error, from Origin, size int64) (string, error) {
	switch {
	case errors.Is(openErr, fs.ErrNotExist):
		return "no local copy", nil
	case openErr != nil:
		return "", fmt.Errorf("replicate disk %s: local copy unreadable, remove it to copy anew: %w", name, openErr)
	case !m.Sealed:
		return "", fmt.Errorf("replicate disk %s: %w", name, ErrLocalWritable)
	case from.Base.IsZero():
		return "the source is not a replica", nil
	case m.ID != from.Base:
		return fmt.Sprintf("local image is %s, the source copied %s", m.ID, from.Base), nil
	case m.Valid.Count() < m.blocks():
		return "local image is not complete", nil
	case m.Size != size || m.Grain != s.opts.Grain:
		return fmt.Sprintf("local geometry %d/%d differs from %d/%d", m.Size, m.Grain, size, s.opts.Grain), nil
	}
	return "", nil
}

// reuse turns the sealed local image into an incremental replica of from.
// Until the source is sealed nothing is valid: the source may still change
// any block. The new generation is durable before any write can reach the
// image.
func (s *Store) reuse(ctx context.Context, name, dir string, mlog *metaLog, m *diskMeta, from Origin, src Source, ro ReplicaOptions) (*Replica, error) {
	image, err := s.openImage(dir, m.Size)
	if err != nil {
		mlog.close()
		return nil, fmt.Errorf("replicate disk %s: %w", name, err)
	}
	m.Base = m.ID
	m.ID.Generation++
	m.Sealed, m.Replica, m.SourceSealed, m.CopyRequested = false, true, false, false
	m.Source, m.Progress = from.Image, 0
	m.Valid, m.Modified = NewBitmap(m.blocks()), NewBitmap(m.blocks())
	if err := mlog.checkpoint(m); err != nil {
		image.Close()
		mlog.close()
		return nil, fmt.Errorf("replicate disk %s: %w", name, err)
	}
	return newReplica(ctx, s, name, image, mlog, m, src, ro), nil
}

// Remove deletes a disk that is not open.
func (s *Store) Remove(name string) error {
	dir, err := s.dir(name)
	if err != nil {
		return err
	}
	if err := s.acquire(name); err != nil {
		return err
	}
	defer s.release(name)
	return s.removeDir(dir)
}

func (s *Store) removeDir(dir string) error {
	if err := s.fs.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove %s: %w", dir, err)
	}
	return s.fs.SyncDir(s.root)
}

// List returns the names of the disks in the store.
func (s *Store) List() ([]string, error) { return s.fs.ReadDir(s.root) }
