package blockdev

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func newFile(t *testing.T, size int64) (*File, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, size); err != nil {
		t.Fatal(err)
	}
	d, err := OpenFile(path, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d, path
}

// allocated lists the mapped ranges as [start, end) pairs.
func allocated(t *testing.T, d *File) [][2]int64 {
	t.Helper()
	var out [][2]int64
	for off := int64(0); off < d.Size(); {
		mapped, n, err := d.Allocation(context.Background(), off)
		if err != nil {
			t.Fatal(err)
		}
		if n <= 0 {
			t.Fatalf("Allocation(%d) returned length %d", off, n)
		}
		if mapped {
			out = append(out, [2]int64{off, off + n})
		}
		off += n
	}
	return out
}

func TestFileReadWriteAllocation(t *testing.T) {
	ctx := context.Background()
	const mib = 1 << 20
	d, path := newFile(t, 8*mib)
	if got := allocated(t, d); len(got) != 0 {
		t.Fatalf("new sparse file reports allocation %v", got)
	}
	data := bytes.Repeat([]byte{0xab}, mib)
	if err := d.WriteAt(ctx, data, 2*mib, true); err != nil {
		t.Fatal(err)
	}
	got := allocated(t, d)
	if len(got) != 1 || got[0] != [2]int64{2 * mib, 3 * mib} {
		t.Fatalf("allocation after one 1 MiB write at 2 MiB: %v", got)
	}
	back := make([]byte, mib)
	if err := d.ReadAt(ctx, back, 2*mib); err != nil || !bytes.Equal(back, data) {
		t.Fatalf("read back: %v", err)
	}
	raw, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(raw[2*mib:3*mib], data) {
		t.Fatalf("bytes on disk differ: %v", err)
	}

	// Discard punches a hole that reads as zeroes.
	if err := d.Discard(ctx, 2*mib, mib/2); err != nil {
		t.Fatal(err)
	}
	if err := d.ReadAt(ctx, back, 2*mib); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(back[:mib/2], make([]byte, mib/2)) || !bytes.Equal(back[mib/2:], data[mib/2:]) {
		t.Fatal("discarded range does not read as zeroes, or the rest changed")
	}
	if got := allocated(t, d); len(got) != 1 || got[0] != [2]int64{2*mib + mib/2, 3 * mib} {
		t.Fatalf("allocation after discard: %v", got)
	}

	// WriteZeroes zeroes written data, with or without unmapping. Without
	// unmap the file system may keep the range as unwritten extents, which
	// SEEK_DATA reports as a hole: either way it reads as zeroes.
	if err := d.WriteAt(ctx, data, 5*mib, false); err != nil {
		t.Fatal(err)
	}
	for _, unmap := range []bool{false, true} {
		if err := d.WriteZeroes(ctx, 5*mib, mib/2, unmap); err != nil {
			t.Fatal(err)
		}
		if err := d.ReadAt(ctx, back, 5*mib); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(back[:mib/2], make([]byte, mib/2)) || !bytes.Equal(back[mib/2:], data[mib/2:]) {
			t.Fatalf("WriteZeroes(unmap=%v) did not zero exactly its range", unmap)
		}
	}
	if got := allocated(t, d); len(got) != 2 || got[1] != [2]int64{5*mib + mib/2, 6 * mib} {
		t.Fatalf("allocation after WriteZeroes(unmap): %v", got)
	}
	if err := d.Flush(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestFileBoundsAndReadOnly(t *testing.T) {
	ctx := context.Background()
	d, path := newFile(t, 4096)
	buf := make([]byte, 512)
	for _, off := range []int64{-512, 4096, 3800} {
		if err := d.ReadAt(ctx, buf, off); !errors.Is(err, ErrOutOfRange) {
			t.Errorf("ReadAt(%d): %v, want ErrOutOfRange", off, err)
		}
		if err := d.WriteAt(ctx, buf, off, false); !errors.Is(err, ErrOutOfRange) {
			t.Errorf("WriteAt(%d): %v, want ErrOutOfRange", off, err)
		}
	}
	if _, _, err := d.Allocation(ctx, 4096); !errors.Is(err, ErrOutOfRange) {
		t.Errorf("Allocation at end: %v", err)
	}
	ro, err := OpenFile(path, true)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if err := ro.WriteAt(ctx, buf, 0, false); !errors.Is(err, ErrReadOnly) {
		t.Errorf("write to read-only device: %v", err)
	}
	if err := ro.Discard(ctx, 0, 512); !errors.Is(err, ErrReadOnly) {
		t.Errorf("discard on read-only device: %v", err)
	}
	if _, err := OpenFile(t.TempDir(), false); err == nil {
		t.Error("a directory opened as a device")
	}
}
