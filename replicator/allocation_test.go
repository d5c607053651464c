package replicator

import (
	"bytes"
	"context"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/shareless/shareless/replicator/vfs"
)

// TestAllocation checks what GET LBA STATUS will report for a managed disk:
// the image's holes where the disk holds its blocks, and "mapped" wherever
// a block is still only at the source.
func TestAllocation(t *testing.T) {
	ctx := context.Background()
	const size = 256 << 10
	root := t.TempDir()
	a, err := testStore(t, vfs.OS{}, root+"/a", StoreOptions{}).Create(ctx, "d", size)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	// Data in [64 KiB, 96 KiB); the rest is a hole.
	if err := a.WriteAt(ctx, bytes.Repeat([]byte{7}, 32<<10), 64<<10, false); err != nil {
		t.Fatal(err)
	}
	if err := a.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		off, len int64
		mapped   bool
	}{
		{0, 64 << 10, false},
		{4096, 60 << 10, false},
		{64 << 10, 32 << 10, true},
		{96 << 10, 160 << 10, false},
	} {
		mapped, n, err := a.Allocation(ctx, c.off)
		if err != nil || mapped != c.mapped || n != c.len {
			t.Errorf("base disk, offset %d: mapped %v for %d bytes (%v), want %v for %d", c.off, mapped, n, err, c.mapped, c.len)
		}
	}
	if _, _, err := a.Allocation(ctx, size); err == nil {
		t.Error("an offset past the end was accepted")
	}

	// A replica that holds only its first chunk (16 KiB): the rest is at
	// the source and reported mapped, though the source has holes there.
	if err := a.Seal(ctx); err != nil {
		t.Fatal(err)
	}
	r, _, err := testStore(t, vfs.OS{}, root+"/b", StoreOptions{}).Replicate(ctx, "d", Origin{Image: a.ID()}, a, ReplicaOptions{Paused: true})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.SourceSealed(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := r.copyStep(ctx); err != nil {
		t.Fatal(err)
	}
	// The copier stores the source's holes as holes.
	if mapped, n, err := r.Allocation(ctx, 0); err != nil || mapped || n != 16<<10 {
		t.Errorf("replica, copied chunk of zeroes: mapped %v for %d bytes (%v), want a hole for the chunk", mapped, n, err)
	}
	if mapped, n, err := r.Allocation(ctx, 16<<10); err != nil || !mapped || n != size-16<<10 {
		t.Errorf("replica, not copied: mapped %v for %d bytes (%v), want mapped to the end", mapped, n, err)
	}

	// Once complete, the replica's image is as sparse as the source: the
	// file system holds the 32 KiB of data and nothing else.
	for {
		copied, err := r.copyStep(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !copied {
			break
		}
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if st := r.Stats(); st.State != StateComplete || st.BytesCopied != size {
		t.Fatalf("replica %v after copying %d bytes, want complete after %d", st.State, st.BytesCopied, size)
	}
	// The source reported its holes: the copier read only its data.
	if st := r.Stats(); st.SourceBytes != 32<<10 {
		t.Errorf("the copy read %d bytes from the source, want its 32768 bytes of data", st.SourceBytes)
	}
	for _, c := range []struct {
		off, len int64
		mapped   bool
	}{
		{0, 64 << 10, false},
		{64 << 10, 32 << 10, true},
		{96 << 10, 160 << 10, false},
	} {
		if mapped, n, err := r.Allocation(ctx, c.off); err != nil || mapped != c.mapped || n != c.len {
			t.Errorf("complete replica, offset %d: mapped %v for %d bytes (%v), want %v for %d", c.off, mapped, n, err, c.mapped, c.len)
		}
	}
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(root, "b", "d", imageName), &st); err != nil {
		t.Fatal(err)
	}
	if got := st.Blocks * 512; got != 32<<10 {
		t.Errorf("complete replica's image: %d bytes allocated, want 32768 (the source's data)", got)
	}
	if got, want := mustRead(t, r), mustRead(t, a); !bytes.Equal(got, want) {
		t.Error("complete replica differs from its source")
	}
}
