package replicator

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/shareless/shareless/replicator/vfs"
)

// TestImport: an imported file is the disk's data without a copy (a hard
// link on a real file system): the disk reads the file, a write through
// the disk reads back through the file, and removing the disk leaves the
// file with that data. A file on another mount is refused with EXDEV, and
// a size off the 4 KiB grid before anything is linked.
func TestImport(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	fsys := vfs.OS{}
	s := testStore(t, fsys, filepath.Join(dir, "store"), StoreOptions{})
	const size = 256 << 10
	file := filepath.Join(dir, "disk")
	data := randomBytes(rand.New(rand.NewPCG(1, 2)), size)
	writeFile(t, fsys, file, data)

	d, err := s.Import(ctx, "inst.disk", file)
	if err != nil {
		t.Fatal(err)
	}
	if st := d.Stats(); st.State != StateComplete || st.Size != size {
		t.Fatalf("imported disk: %+v, want complete and %d bytes", st, size)
	}
	mustEqual(t, "imported disk", mustRead(t, d), data)
	w := randomBytes(rand.New(rand.NewPCG(3, 4)), 8192)
	if err := d.WriteAt(ctx, w, 40960, true); err != nil {
		t.Fatal(err)
	}
	copy(data[40960:], w)
	mustEqual(t, "the file after a write through the disk", readFile(t, fsys, file), data)
	img, err := s.ImagePath("inst.disk")
	if err != nil {
		t.Fatal(err)
	}
	if a, b := stat(t, img), stat(t, file); !os.SameFile(a, b) {
		t.Fatal("the disk's image is not the imported file")
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove("inst.disk"); err != nil {
		t.Fatal(err)
	}
	mustEqual(t, "the file after the disk was removed", readFile(t, fsys, file), data)

	writeFile(t, fsys, filepath.Join(dir, "odd"), make([]byte, 5000))
	if _, err := s.Import(ctx, "odd.disk", filepath.Join(dir, "odd")); err == nil {
		t.Fatal("a 5000-byte file was imported")
	}
	if names, _ := s.List(); len(names) != 0 {
		t.Fatalf("store after the refused imports: %v", names)
	}
	// /dev/shm is another mount than the test's temporary directory.
	shm, err := os.MkdirTemp("/dev/shm", "shl-import-")
	if err != nil {
		t.Skipf("no /dev/shm: %v", err)
	}
	t.Cleanup(func() { fsys.RemoveAll(shm) })
	other := filepath.Join(shm, "disk")
	writeFile(t, fsys, other, data)
	if _, err := s.Import(ctx, "other.disk", other); !errors.Is(err, syscall.EXDEV) {
		t.Fatalf("import across mounts: %v, want EXDEV", err)
	}
}

func writeFile(t *testing.T, fsys vfs.FS, name string, b []byte) {
	t.Helper()
	f, err := fsys.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, 0); err != nil {
		t.Fatal(err)
	}
}

func readFile(t *testing.T, fsys vfs.FS, name string) []byte {
	t.Helper()
	f, err := fsys.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n, err := f.Size()
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, n)
	if _, err := f.ReadAt(b, 0); err != nil {
		t.Fatal(err)
	}
	return b
}

func stat(t *testing.T, name string) os.FileInfo {
	t.Helper()
	fi, err := os.Stat(name)
	if err != nil {
		t.Fatal(err)
	}
	return fi
}
