package replicator

import (
	"context"
	"errors"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/shareless/shareless/blockdev"
	"github.com/shareless/shareless/replicator/vfs"
)

// flipByte corrupts one byte of a file.
func flipByte(t *testing.T, fsys vfs.FS, name string, off int64) {
	t.Helper()
	f, err := fsys.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x40
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// diskWithJournal creates a base disk on the OS filesystem whose journal
// holds two records: block 0 then block 5 marked modified.
func diskWithJournal(t *testing.T) (*Store, string) {
	t.Helper()
	ctx := context.Background()
	s := testStore(t, vfs.OS{}, t.TempDir(), StoreOptions{})
	d, err := s.Create(ctx, "d", 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range []int64{0, 5} {
		if err := d.WriteAt(ctx, []byte{1}, b*4096, false); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	return s, filepath.Join(s.root, "d")
}

func TestCheckpointCorruption(t *testing.T) {
	for _, off := range []int64{0, 9, 30, 48, 56, checkpointHeader, checkpointHeader + 8 + 1, checkpointHeader + 16 + 3} {
		s, dir := diskWithJournal(t)
		flipByte(t, s.fs, filepath.Join(dir, metaName), off)
		_, err := s.Open(context.Background(), "d", nil, ReplicaOptions{})
		var ce *CorruptError
		if !errors.Is(err, ErrCorruptMetadata) || !errors.As(err, &ce) {
			t.Errorf("checkpoint byte %d flipped: Open error %v, want a CorruptError", off, err)
		}
	}
	s, dir := diskWithJournal(t)
	f, _ := s.fs.Open(filepath.Join(dir, metaName))
	f.Truncate(100)
	f.Close()
	if _, err := s.Open(context.Background(), "d", nil, ReplicaOptions{}); !errors.Is(err, ErrCorruptMetadata) {
		t.Errorf("truncated checkpoint: Open error %v, want ErrCorruptMetadata", err)
	}
}

// TestJournalTornTail: a bad last record is a write that never completed
// (its commit never returned) and is dropped; a bad record followed by a
// good one is corruption of acknowledged metadata and an error.
func TestJournalTornTail(t *testing.T) {
	ctx := context.Background()
	s, dir := diskWithJournal(t)
	flipByte(t, s.fs, filepath.Join(dir, journalName), recordAlign+recordHeader+2)
	d, err := s.Open(ctx, "d", nil, ReplicaOptions{})
	if err != nil {
		t.Fatalf("torn last record: %v", err)
	}
	if !d.meta.Modified.Get(0) || d.meta.Modified.Get(5) {
		t.Fatalf("torn last record: modified 0=%v 5=%v, want only the first record applied", d.meta.Modified.Get(0), d.meta.Modified.Get(5))
	}
	d.Close()

	s, dir = diskWithJournal(t)
	flipByte(t, s.fs, filepath.Join(dir, journalName), recordHeader+2)
	_, err = s.Open(ctx, "d", nil, ReplicaOptions{})
	var ce *CorruptError
	if !errors.As(err, &ce) || ce.Off != 0 {
		t.Fatalf("first of two records corrupt: Open error %v, want a CorruptError at offset 0", err)
	}
}

// TestCheckpointAfterJournalLimit: when the journal passes its limit the
// checkpoint is rewritten, and what the journal said survives it.
func TestCheckpointAfterJournalLimit(t *testing.T) {
	ctx := context.Background()
	s := testStore(t, vfs.OS{}, t.TempDir(), StoreOptions{Grain: 4096, Chunk: 16384, JournalLimit: 1024})
	d, err := s.Create(ctx, "d", 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	for b := range int64(16) {
		if err := d.WriteAt(ctx, []byte{1}, b*4096, false); err != nil {
			t.Fatal(err)
		}
		if err := d.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if d.mlog.epoch < 3 {
		t.Fatalf("epoch %d after 16 commits with a 2-record journal limit", d.mlog.epoch)
	}
	d.Close()
	d, err = s.Open(ctx, "d", nil, ReplicaOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if n := d.meta.Modified.Count(); n != 16 {
		t.Fatalf("%d blocks modified after reopening, want 16", n)
	}
}

func TestDeltaEncoding(t *testing.T) {
	m := NewBitmap(300)
	m.SetRange(3, 9)
	m.Set(299)
	d := &Delta{Image: ID{Lineage: [16]byte{1, 2}, Generation: 4}, Base: ID{Lineage: [16]byte{3}, Generation: 9},
		Size: 300 * 4096, Grain: 4096, Modified: m}
	enc, err := d.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	var got Delta
	if err := got.UnmarshalBinary(enc); err != nil {
		t.Fatal(err)
	}
	if got.Image != d.Image || got.Base != d.Base || got.Size != d.Size || got.Grain != d.Grain || got.Modified.Count() != 7 || !got.Modified.Get(299) {
		t.Fatalf("round trip: %+v", got)
	}
	t.Logf("a delta of 7 modified blocks of 300 encodes in %d bytes", len(enc))
	for i := range enc {
		bad := append([]byte(nil), enc...)
		bad[i] ^= 1
		if err := new(Delta).UnmarshalBinary(bad); err == nil {
			t.Fatalf("flipped byte %d accepted", i)
		}
	}
}

// TestStoreNames: a disk opens once at a time, and List shows it.
func TestStoreNames(t *testing.T) {
	ctx := context.Background()
	s := testStore(t, vfs.NewMem(), "/s", StoreOptions{})
	d, err := s.Create(ctx, "d", 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Open(ctx, "d", nil, ReplicaOptions{}); !errors.Is(err, ErrBusy) {
		t.Fatalf("second open: %v, want ErrBusy", err)
	}
	if _, err := s.Create(ctx, "../x", 4096); err == nil {
		t.Fatal("a name with a path separator was accepted")
	}
	d.Close()
	if names, err := s.List(); err != nil || len(names) != 1 || names[0] != "d" {
		t.Fatalf("List = %v, %v", names, err)
	}
	if err := s.Remove("d"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Open(ctx, "d", nil, ReplicaOptions{}); err == nil {
		t.Fatal("a removed disk opened")
	}
}

// TestReplicateRefusesLocalCopy: Replicate never discards a local copy that
// is unsealed (it may be in use) or unreadable.
func TestReplicateRefusesLocalCopy(t *testing.T) {
	ctx := context.Background()
	fsys := vfs.NewMem()
	src, _ := randomBase(t, testStore(t, fsys, "/a", StoreOptions{}), "d", 64<<10, 5)
	defer src.Close()
	s := testStore(t, fsys, "/b", StoreOptions{})
	local, err := s.Create(ctx, "d", 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	local.Close()
	if _, _, err := s.Replicate(ctx, "d", src.Origin(), src, ReplicaOptions{}); !errors.Is(err, ErrLocalWritable) {
		t.Fatalf("Replicate over an unsealed local disk: %v, want ErrLocalWritable", err)
	}
	flipByte(t, fsys, "/b/d/"+metaName, 20)
	if _, _, err := s.Replicate(ctx, "d", src.Origin(), src, ReplicaOptions{}); !errors.Is(err, ErrCorruptMetadata) {
		t.Fatalf("Replicate over a corrupt local disk: %v, want ErrCorruptMetadata", err)
	}
	if _, err := fsys.Open("/b/d/" + imageName); err != nil {
		t.Fatalf("the refused local copy was touched: %v", err)
	}
}

// failingFS fails every File.Sync once armed, as a disk returning EIO.
type failingFS struct {
	vfs.FS
	fail atomic.Bool
}

var errEIO = errors.New("input/output error")

func (f *failingFS) Create(name string) (vfs.File, error) { return f.wrap(f.FS.Create(name)) }
func (f *failingFS) Open(name string) (vfs.File, error)   { return f.wrap(f.FS.Open(name)) }

func (f *failingFS) wrap(file vfs.File, err error) (vfs.File, error) {
	if err != nil {
		return nil, err
	}
	return failingFile{file, f}, nil
}

type failingFile struct {
	vfs.File
	fs *failingFS
}

func (f failingFile) Sync() error {
	if f.fs.fail.Load() {
		return errEIO
	}
	return f.File.Sync()
}

// TestFailedSync: after local storage fails to make data durable, the
// disk fails every I/O (StateFailed) rather than trust the page cache, and
// the error is a MediumError for the SCSI layer.
func TestFailedSync(t *testing.T) {
	ctx := context.Background()
	fsys := &failingFS{FS: vfs.NewMem()}
	d, _ := randomBase(t, testStore(t, fsys, "/s", StoreOptions{}), "d", 64<<10, 6)
	defer d.Close()
	if err := d.WriteAt(ctx, []byte{1}, 0, false); err != nil {
		t.Fatal(err)
	}
	fsys.fail.Store(true)
	err := d.Flush(ctx)
	var me *blockdev.MediumError
	if !errors.As(err, &me) || !errors.Is(err, errEIO) {
		t.Fatalf("flush on a failing disk: %v, want a MediumError wrapping EIO", err)
	}
	fsys.fail.Store(false)
	if d.State() != StateFailed {
		t.Fatalf("state %v after a failed sync", d.State())
	}
	if err := d.ReadAt(ctx, make([]byte, 512), 0); err == nil {
		t.Fatal("read succeeded on a failed disk")
	}
	if err := d.WriteAt(ctx, []byte{1}, 4096, false); err == nil {
		t.Fatal("write succeeded on a failed disk")
	}
}

// TestJournalAheadOfCheckpoint: records of a later epoch than the checkpoint
// mean the checkpoint went back in time, and are an error, not a torn tail.
func TestJournalAheadOfCheckpoint(t *testing.T) {
	s, dir := diskWithJournal(t)
	m, epoch, err := readCheckpoint(s.fs, dir)
	if err != nil {
		t.Fatal(err)
	}
	// Rewrite the checkpoint one epoch earlier, as if its last
	// replacement had been lost.
	if err := writeCheckpoint(s.fs, dir, m, epoch-1); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Open(context.Background(), "d", nil, ReplicaOptions{}); !errors.Is(err, ErrCorruptMetadata) {
		t.Fatalf("journal ahead of the checkpoint: Open error %v, want ErrCorruptMetadata", err)
	}
}

// TestSourceSealedPersistsBase: after the seal of an incremental replica's
// source, the durable metadata no longer names a pending base.
func TestSourceSealedPersistsBase(t *testing.T) {
	fsys := vfs.NewMem()
	hostA, hostB := testStore(t, fsys, "/a", StoreOptions{}), testStore(t, fsys, "/b", StoreOptions{})
	a, _ := randomBase(t, hostA, "d", 64<<10, 7)
	b, _ := migrate(t, a, hostB)
	defer b.Close()
	a.Close()
	back, plan := migrate(t, b, hostA)
	if plan != PlanIncremental {
		t.Fatalf("plan %v", plan)
	}
	back.Close()
	m, _, err := readCheckpoint(fsys, "/a/d")
	if err != nil {
		t.Fatal(err)
	}
	if !m.Base.IsZero() || !m.SourceSealed {
		t.Fatalf("checkpoint after the seal: base %v, source sealed %v", m.Base, m.SourceSealed)
	}
}
