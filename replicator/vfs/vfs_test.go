package vfs

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"math/rand/v2"
	"path/filepath"
	"testing"
)

// TestConformance runs the same operations on OS and Mem, so that Mem stays a
// faithful stand-in.
func TestConformance(t *testing.T) {
	for _, tc := range []struct {
		name string
		fs   FS
		root string
	}{
		{"os", OS{}, t.TempDir()},
		{"mem", NewMem(), "/root"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fsys, dir := tc.fs, filepath.Join(tc.root, "a", "b")
			if err := fsys.MkdirAll(dir); err != nil {
				t.Fatal(err)
			}
			f, err := fsys.Create(filepath.Join(dir, "x"))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteAt(bytes.Repeat([]byte{7}, 3000), 100); err != nil {
				t.Fatal(err)
			}
			if err := f.PunchHole(0, 2048); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, 3200)
			n, err := f.ReadAt(got, 0)
			if n != 3100 || err != io.EOF {
				t.Fatalf("ReadAt past the end = %d, %v; want 3100, EOF", n, err)
			}
			want := make([]byte, 3100)
			for i := 2048; i < 3100; i++ {
				want[i] = 7
			}
			if !bytes.Equal(got[:n], want) {
				t.Fatal("contents differ after punching a hole")
			}
			if err := f.Truncate(10000); err != nil {
				t.Fatal(err)
			}
			if size, err := f.Size(); size != 10000 || err != nil {
				t.Fatalf("Size = %d, %v", size, err)
			}
			if err := f.Sync(); err != nil {
				t.Fatal(err)
			}
			f.Close()
			if err := fsys.Rename(filepath.Join(dir, "x"), filepath.Join(dir, "y")); err != nil {
				t.Fatal(err)
			}
			if err := fsys.SyncDir(dir); err != nil {
				t.Fatal(err)
			}
			if names, err := fsys.ReadDir(dir); err != nil || len(names) != 1 || names[0] != "y" {
				t.Fatalf("ReadDir = %v, %v", names, err)
			}
			if _, err := fsys.Open(filepath.Join(dir, "x")); !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("Open of a renamed file: %v, want ErrNotExist", err)
			}
			// A link is the same data under two names: a write through
			// one reads through the other, and removing one keeps it.
			if err := fsys.Link(filepath.Join(dir, "y"), filepath.Join(dir, "z")); err != nil {
				t.Fatal(err)
			}
			if err := fsys.Link(filepath.Join(dir, "y"), filepath.Join(dir, "z")); !errors.Is(err, fs.ErrExist) {
				t.Fatalf("Link onto an existing name: %v, want ErrExist", err)
			}
			y, err := fsys.Open(filepath.Join(dir, "y"))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := y.WriteAt([]byte{9}, 5000); err != nil {
				t.Fatal(err)
			}
			y.Close()
			if err := fsys.RemoveAll(filepath.Join(dir, "y")); err != nil {
				t.Fatal(err)
			}
			z, err := fsys.Open(filepath.Join(dir, "z"))
			if err != nil {
				t.Fatal(err)
			}
			b := make([]byte, 1)
			if _, err := z.ReadAt(b, 5000); err != nil || b[0] != 9 {
				t.Fatalf("read through the link = %v, %v; want 9", b, err)
			}
			z.Close()
			if err := fsys.RemoveAll(filepath.Join(tc.root, "a")); err != nil {
				t.Fatal(err)
			}
			if _, err := fsys.ReadDir(dir); !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("ReadDir after RemoveAll: %v", err)
			}
		})
	}
}

func TestMemCrashKeepsOnlySynced(t *testing.T) {
	m := NewMem()
	f, _ := m.Create("/synced")
	f.WriteAt([]byte("durable"), 0)
	f.Sync()
	m.SyncDir("/")
	f.WriteAt([]byte("LOST"), 0)
	g, _ := m.Create("/unsynced-name")
	g.WriteAt([]byte("data"), 0)
	g.Sync() // data durable, but its name is not
	m.Crash(nil)

	if _, err := f.WriteAt([]byte("x"), 0); !errors.Is(err, errStale) {
		t.Fatalf("write through a pre-crash handle: %v", err)
	}
	f, err := m.Open("/synced")
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 7)
	f.ReadAt(buf, 0)
	if string(buf) != "durable" {
		t.Fatalf("after crash read %q, want the synced %q", buf, "durable")
	}
	if _, err := m.Open("/unsynced-name"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a file created without SyncDir survived the crash: %v", err)
	}
}

// TestMemCrashTears checks that an unsynced multi-sector write can survive in
// part, which is what the store's checksums must catch.
func TestMemCrashTears(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	torn := false
	for i := 0; i < 50 && !torn; i++ {
		m := NewMem()
		f, _ := m.Create("/f")
		f.WriteAt(make([]byte, 4*sectorSize), 0)
		f.Sync()
		m.SyncDir("/")
		f.WriteAt(bytes.Repeat([]byte{1}, 4*sectorSize), 0)
		m.Crash(rng)
		f, _ = m.Open("/f")
		buf := make([]byte, 4*sectorSize)
		f.ReadAt(buf, 0)
		ones := bytes.Count(buf, []byte{1})
		torn = ones > 0 && ones < len(buf)
	}
	if !torn {
		t.Fatal("50 crashes never tore a 4-sector unsynced write")
	}
}

// TestMemCrashCloneIsolated: a clone taken by CrashAfter does not change as
// the observed run goes on writing.
func TestMemCrashCloneIsolated(t *testing.T) {
	m := NewMem()
	f, _ := m.Create("/f")
	m.SyncDir("/")
	m.CrashAfter(3, rand.New(rand.NewPCG(0, 0))) // after the first write
	for i := range 8 {
		f.WriteAt(bytes.Repeat([]byte{byte(i + 1)}, sectorSize), 0)
	}
	g, err := m.Crashed().Open("/f")
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, sectorSize)
	g.ReadAt(buf, 0)
	if buf[0] > 1 {
		t.Fatalf("the clone taken after the first write holds the write of %d", buf[0])
	}
}
