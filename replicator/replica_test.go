package replicator

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/shareless/shareless/blockdev"
	"github.com/shareless/shareless/replicator/vfs"
)

// TestSealRule checks rule 5: before the source is sealed, reads pass
// through and nothing is copied or kept, so a change at the source shows;
// after it, the copier brings every block.
func TestSealRule(t *testing.T) {
	ctx := context.Background()
	fsys := vfs.NewMem()
	src, data := randomBase(t, testStore(t, fsys, "/a", StoreOptions{}), "d", 256<<10, 1)
	dst := testStore(t, fsys, "/b", StoreOptions{})
	r, plan, err := dst.Replicate(ctx, "d", Origin{Image: src.ID()}, src, ReplicaOptions{})
	if err != nil || plan != PlanFull {
		t.Fatalf("Replicate = %v, %v", plan, err)
	}
	mustEqual(t, "pass-through read", mustRead(t, r), data)
	// The source VM still runs and writes: the replica must show it.
	data[5000] ^= 0xff
	if err := src.WriteAt(ctx, data[5000:5001], 5000, false); err != nil {
		t.Fatal(err)
	}
	mustEqual(t, "pass-through read after a source write", mustRead(t, r), data)
	time.Sleep(10 * time.Millisecond)
	if st := r.Stats(); st.State != StatePassThrough || st.BytesCopied != 0 || st.BytesLocal != 0 {
		t.Fatalf("before the seal: %+v, want nothing copied or kept", st)
	}

	if err := src.Seal(ctx); err != nil {
		t.Fatal(err)
	}
	if err := src.WriteAt(ctx, data[:1], 0, false); !errors.Is(err, blockdev.ErrReadOnly) {
		t.Fatalf("write to a sealed source: %v, want ErrReadOnly", err)
	}
	if _, err := r.SourceSealed(ctx, nil); err != nil {
		t.Fatal(err)
	}
	waitState(t, r, StateComplete)
	if st := r.Stats(); st.BytesCopied != int64(len(data)) || st.BytesRemaining != 0 {
		t.Fatalf("after the copy: %+v", st)
	}
	mustEqual(t, "completed replica", mustRead(t, r), data)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
}

// migrate moves disk "d" from host a to host b: b replicates, a seals, b is
// told with a's delta (nil on a first trip), and the copy completes. It
// returns b's replica and the plan chosen.
func migrate(t *testing.T, a *Replica, b *Store) (*Replica, Plan) {
	t.Helper()
	ctx := context.Background()
	origin := Origin{Image: a.ID(), Base: a.Stats().Source}
	r, plan, err := b.Replicate(ctx, "d", origin, a, ReplicaOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Seal(ctx); err != nil {
		t.Fatal(err)
	}
	delta, err := a.Delta()
	if err != nil {
		t.Fatal(err)
	}
	sealedPlan, err := r.SourceSealed(ctx, delta)
	if err != nil {
		t.Fatal(err)
	}
	if sealedPlan != plan {
		t.Fatalf("Replicate chose %v, SourceSealed %v", plan, sealedPlan)
	}
	waitState(t, r, StateComplete)
	return r, plan
}

// TestWayBack checks rules 6 and 7: the VM goes from A to B, is written on
// B, and comes back. A keeps its sealed image as the base and fetches only
// the blocks B modified, rounded to the tracking grain; had A's image changed
// since (unsealed after a rollback), the way back is a full copy.
func TestWayBack(t *testing.T) {
	const size, grain = 1 << 20, 4 << 10
	for _, tc := range []struct {
		name     string
		unsealA  bool
		wantPlan Plan
	}{
		{"unchanged base", false, PlanIncremental},
		{"base changed since", true, PlanFull},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			fsys := vfs.NewMem()
			hostA, hostB := testStore(t, fsys, "/a", StoreOptions{}), testStore(t, fsys, "/b", StoreOptions{})
			a, data := randomBase(t, hostA, "d", size, 2)
			b, plan := migrate(t, a, hostB)
			if plan != PlanFull {
				t.Fatalf("first trip plan %v", plan)
			}
			// Guest writes on B: an unaligned write across two blocks and
			// a discard of one whole block.
			w := []byte("written on host B, straddling a block boundary")
			off := int64(3*grain - 10)
			copy(data[off:], w)
			if err := b.WriteAt(ctx, w, off, false); err != nil {
				t.Fatal(err)
			}
			clear(data[40*grain : 41*grain])
			if err := b.Discard(ctx, 40*grain, grain); err != nil {
				t.Fatal(err)
			}
			if tc.unsealA {
				if err := a.Unseal(ctx); err != nil {
					t.Fatal(err)
				}
				if err := a.Seal(ctx); err != nil {
					t.Fatal(err)
				}
			}
			if err := a.Close(); err != nil {
				t.Fatal(err)
			}

			back, plan := migrate(t, b, hostA)
			if plan != tc.wantPlan {
				t.Fatalf("way back plan %v, want %v", plan, tc.wantPlan)
			}
			moved := back.Stats().SourceBytes
			want := int64(3 * grain) // blocks 2, 3 and 40
			if plan == PlanFull {
				want = size
			}
			if moved != want {
				t.Fatalf("way back moved %d bytes, want %d", moved, want)
			}
			mustEqual(t, "disk back on A", mustRead(t, back), data)
			back.Close()
			b.Close()
		})
	}
}
