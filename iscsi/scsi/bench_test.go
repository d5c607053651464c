package scsi

import (
	"context"
	"testing"
)

// The benchmarks measure the SCSI layer's own cost over a page-cached
// file: what matters is that it adds no allocation and little time to
// the device's.

func BenchmarkRead4K(b *testing.B) {
	u := newTestUnit(b, 64<<20, UnitConfig{})
	u.writeFile(b, 0, pattern(64<<20, 1)) // real data, not holes
	ctx := context.Background()
	c := &Command{CDB: Read16(0, 8, false)}
	b.SetBytes(4096)
	b.ReportAllocs()
	var lba uint64
	for b.Loop() {
		c.CDB[9] = byte(lba) // LBA low byte: walk the first 128 KiB
		r := u.Execute(ctx, c)
		if r.Status != StatusGood {
			b.Fatalf("status %x", r.Status)
		}
		r.Release()
		lba += 8
	}
}

func BenchmarkRead4KParallel(b *testing.B) {
	u := newTestUnit(b, 64<<20, UnitConfig{})
	u.writeFile(b, 0, pattern(64<<20, 1))
	b.SetBytes(4096)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		c := &Command{CDB: Read16(0, 8, false)}
		var lba uint64
		for pb.Next() {
			c.CDB[9] = byte(lba)
			r := u.Execute(ctx, c)
			if r.Status != StatusGood {
				b.Errorf("status %x", r.Status)
				return
			}
			r.Release()
			lba += 8
		}
	})
}

func BenchmarkWrite1M(b *testing.B) {
	u := newTestUnit(b, 64<<20, UnitConfig{})
	ctx := context.Background()
	c := &Command{CDB: Write16(0, 2048, false), Data: pattern(1<<20, 2)}
	b.SetBytes(1 << 20)
	b.ReportAllocs()
	var i uint64
	for b.Loop() {
		lba := (i % 64) * 2048
		c.CDB[7], c.CDB[8], c.CDB[9] = byte(lba>>16), byte(lba>>8), byte(lba)
		if r := u.Execute(ctx, c); r.Status != StatusGood {
			b.Fatalf("status %x", r.Status)
		}
		i++
	}
}
