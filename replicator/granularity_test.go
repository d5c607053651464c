package replicator

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/shareless/shareless/replicator/vfs"
)

// TestGranularity measures what the way back moves for scattered 4 KiB
// guest writes over 1% and 10% of a disk, at tracking grains of 4, 16 and
// 64 KiB, through the real way back (the numbers in the comment on the
// granularity constants). For scattered writes the fraction moved depends on the writes
// per block, not on the disk size, so a 32 MiB disk stands for any.
func TestGranularity(t *testing.T) {
	const size = 32 << 20
	var table strings.Builder
	fmt.Fprintf(&table, "\n%-8s %12s %12s %12s\n", "written", "4 KiB", "16 KiB", "64 KiB")
	for _, frac := range []float64{0.01, 0.10} {
		fmt.Fprintf(&table, "%-8s", fmt.Sprintf("%.0f%%", frac*100))
		for _, grain := range []int64{4 << 10, 16 << 10, 64 << 10} {
			moved, modified := wayBackBytes(t, size, grain, frac)
			if moved != modified*grain {
				t.Fatalf("grain %d: way back moved %d bytes for %d modified blocks", grain, moved, modified)
			}
			fmt.Fprintf(&table, " %11.1f%%", 100*float64(moved)/size)
		}
		table.WriteString("\n")
	}
	fmt.Fprintf(&table, "%-8s", "meta/TiB")
	for _, grain := range []int64{4 << 10, 16 << 10, 64 << 10} {
		fmt.Fprintf(&table, " %8d MiB", 2*(1<<40/grain)/8>>20)
	}
	t.Logf("bytes moved by the way back, as a share of the disk:%s", table.String())
}

// wayBackBytes migrates a zeroed disk from A to B, writes frac of it on B
// in 4 KiB writes at distinct random offsets, migrates it back and returns
// the bytes the way back read from B and B's modified block count.
func wayBackBytes(t *testing.T, size, grain int64, frac float64) (moved, modified int64) {
	ctx := context.Background()
	fsys := vfs.NewMem()
	opts := StoreOptions{Grain: grain, Chunk: 1 << 20}
	hostA, hostB := testStore(t, fsys, "/a", opts), testStore(t, fsys, "/b", opts)
	a, err := hostA.Create(ctx, "d", size)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := migrate(t, a, hostB)
	a.Close()
	rng := rand.New(rand.NewPCG(uint64(grain), uint64(frac*100)))
	page := make([]byte, 4096)
	pages := int(size / 4096)
	for _, i := range rng.Perm(pages)[:int(frac*float64(pages))] {
		page[0] = byte(i) | 1
		if err := b.WriteAt(ctx, page, int64(i)*4096, false); err != nil {
			t.Fatal(err)
		}
	}
	back, plan := migrate(t, b, hostA)
	if plan != PlanIncremental {
		t.Fatalf("way back plan %v", plan)
	}
	defer back.Close()
	defer b.Close()
	return back.Stats().SourceBytes, b.meta.Modified.Count()
}
