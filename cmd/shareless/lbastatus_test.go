package main

import (
	"bytes"
	"errors"
	"testing"
)

// TestManagedDiskLBAStatus checks GET LBA STATUS on a complete managed disk
// served by our target and asked by our initiator: its holes are reported
// deallocated, its data mapped, so that a copy of it can stay sparse.
func TestManagedDiskLBAStatus(t *testing.T) {
	ctx := t.Context()
	const size = 16 << 20
	d, hosts := newTestDemo(t, t.TempDir(), size, "A")
	a := hosts[0]
	var err error
	if a.disk, err = a.store.Create(ctx, demoDisk, size); err != nil {
		t.Fatal(err)
	}
	if err := errors.Join(a.disk.WriteAt(ctx, bytes.Repeat([]byte{1}, 1<<20), 4<<20, false), a.disk.Flush(ctx)); err != nil {
		t.Fatal(err)
	}
	serveForTest(t, d, a)
	s, err := d.dial(ctx, a.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, c := range []struct {
		off, len int64
		mapped   bool
	}{
		{0, 4 << 20, false},
		{4 << 20, 1 << 20, true},
		{5 << 20, 11 << 20, false},
	} {
		mapped, n, err := s.Allocation(ctx, c.off)
		if err != nil || mapped != c.mapped || n != c.len {
			t.Errorf("offset %d: mapped %v for %d bytes (%v), want %v for %d", c.off, mapped, n, err, c.mapped, c.len)
		}
	}
}
