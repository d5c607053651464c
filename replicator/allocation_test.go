package replicator

import (
	"bytes"
	"context"
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
	// The copier writes what it fetched, zeroes included.
	if mapped, n, err := r.Allocation(ctx, 0); err != nil || !mapped || n != 16<<10 {
		t.Errorf("replica, copied chunk: mapped %v for %d bytes (%v), want mapped for the chunk", mapped, n, err)
	}
	if mapped, n, err := r.Allocation(ctx, 16<<10); err != nil || !mapped || n != size-16<<10 {
		t.Errorf("replica, not copied: mapped %v for %d bytes (%v), want mapped to the end", mapped, n, err)
	}
}
