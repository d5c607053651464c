package replicator

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
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
	r, plan, err := b.Replicate(ctx, "d", a.Origin(), a, ReplicaOptions{})
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
			b.Close()

			// And to B again: B's sealed image is the base A's replica
			// copied, so only the block written on A moves.
			copy(data[7*grain:], "written on host A")
			if err := back.WriteAt(ctx, data[7*grain:8*grain], 7*grain, false); err != nil {
				t.Fatal(err)
			}
			again, plan := migrate(t, back, hostB)
			if moved := again.Stats().SourceBytes; plan != PlanIncremental || moved != grain {
				t.Fatalf("third trip: plan %v moved %d bytes, want incremental and one block", plan, moved)
			}
			mustEqual(t, "disk on B again", mustRead(t, again), data)
			again.Close()
			back.Close()
		})
	}
}

// sealedReplica returns a base on host /a and its replica on host /b with
// the source already sealed, reading through a faultSource.
func sealedReplica(t *testing.T, size int64, opts StoreOptions, ro ReplicaOptions) (*Replica, *faultSource, []byte) {
	t.Helper()
	ctx := context.Background()
	fsys := vfs.NewMem()
	a, data := randomBase(t, testStore(t, fsys, "/a", StoreOptions{}), "d", size, 3)
	if err := a.Seal(ctx); err != nil {
		t.Fatal(err)
	}
	fault := &faultSource{Source: a}
	r, _, err := testStore(t, fsys, "/b", opts).Replicate(ctx, "d", Origin{Image: a.ID()}, fault, ro)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.SourceSealed(ctx, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); a.Close() })
	return r, fault, data
}

// TestCopierKeepsGuestWrite checks rule 3: a guest write to a block whose
// chunk the copier is fetching proceeds (the fetch holds no lock) and is not
// overwritten when the fetched chunk is stored.
func TestCopierKeepsGuestWrite(t *testing.T) {
	ctx := context.Background()
	r, fault, data := sealedReplica(t, 64<<10, StoreOptions{}, ReplicaOptions{Paused: true})
	hang := make(chan struct{})
	fault.started = make(chan struct{}, 1)
	fault.set(hang, nil)
	done := make(chan error, 1)
	go func() {
		_, err := r.copyStep(ctx)
		done <- err
	}()
	<-fault.started // the copier is fetching chunk 0
	fault.started = nil
	mine := bytes.Repeat([]byte("guest"), 4096/5+1)[:4096]
	copy(data[4096:], mine)
	if err := r.WriteAt(ctx, mine, 4096, false); err != nil {
		t.Fatal(err)
	}
	fault.set(nil, nil)
	close(hang)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if st := r.Stats(); st.BytesLocal != 16<<10 {
		t.Fatalf("after one copy step %d bytes local, want the first 16 KiB chunk", st.BytesLocal)
	}
	got := make([]byte, 16<<10)
	if err := r.ReadAt(ctx, got, 0); err != nil {
		t.Fatal(err)
	}
	mustEqual(t, "chunk 0 after the copier stored it", got, data[:16<<10])
}

// TestCopierKeepsGuestWriteOnHole checks rule 3 for the holes the source
// reports: the copier planned chunk 0 as two holes around a block of data,
// the guest then wrote into both holes, and storing the chunk punches
// neither write away. Only the block of data crossed from the source.
func TestCopierKeepsGuestWriteOnHole(t *testing.T) {
	ctx := context.Background()
	const size = 64 << 10
	src := &memSource{data: make([]byte, size), dealloc: make([]bool, size/modelSector)}
	for i := range src.dealloc {
		src.dealloc[i] = true
	}
	data := randomBytes(rand.New(rand.NewPCG(7, 7)), 4096)
	src.write(data, 8192, false) // chunk 0: holes, block 2 data, holes
	r, _, err := testStore(t, vfs.NewMem(), "/b", StoreOptions{}).Replicate(ctx, "d", Origin{Image: ID{Lineage: [16]byte{1}, Generation: 1}},
		&allocSource{memSource: src, how: allocExact, rng: rand.New(rand.NewPCG(1, 1))}, ReplicaOptions{Paused: true})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.SourceSealed(ctx, nil); err != nil {
		t.Fatal(err)
	}
	f := r.planChunk(ctx, 0)
	if want := []run{{0, 2}, {2, 1}, {3, 1}}; !slices.Equal(f.runs, want) || !slices.Equal(f.holes, []bool{true, false, true}) {
		t.Fatalf("chunk 0 planned as runs %v holes %v, want %v with blocks 0-1 and 3 holes", f.runs, f.holes, want)
	}
	want := make([]byte, 16<<10)
	copy(want[8192:], data)
	for _, off := range []int64{4096 + 512, 12288} {
		mine := bytes.Repeat([]byte{0x5a}, 1024)
		copy(want[off:], mine)
		if err := r.WriteAt(ctx, mine, off, false); err != nil {
			t.Fatal(err)
		}
	}
	before := r.Stats().SourceBytes // the writes completed their blocks from the source (rule 2)
	if f.bufs, err = r.fetch(ctx, f); err != nil {
		t.Fatal(err)
	}
	if _, _, err := r.storeChunk(ctx, f); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 16<<10)
	if err := r.ReadAt(ctx, got, 0); err != nil {
		t.Fatal(err)
	}
	mustEqual(t, "chunk 0 after the copier stored it", got, want)
	if st := r.Stats(); st.BytesLocal != 16<<10 || st.SourceBytes-before != 4096 {
		t.Fatalf("after storing chunk 0: %d bytes local, the copier read %d from the source; want 16 KiB local, 4 KiB read", st.BytesLocal, st.SourceBytes-before)
	}
}

// TestReadKeepsGuestWrite checks rule 3 for copy-on-read: a read fetches
// the blocks it keeps without its chunk's lock, so a write to the block
// being fetched and a read of another block of the chunk proceed meanwhile,
// and the slow read's keep does not overwrite the write.
func TestReadKeepsGuestWrite(t *testing.T) {
	ctx := context.Background()
	r, fault, data := sealedReplica(t, 64<<10, StoreOptions{}, ReplicaOptions{Paused: true})
	hang := make(chan struct{})
	fault.started = make(chan struct{}, 1)
	fault.set(hang, nil)
	slow := make([]byte, 4096)
	slowDone := make(chan error, 1)
	go func() { slowDone <- r.ReadAt(ctx, slow, 4096) }()
	<-fault.started // the read is fetching block 1 of chunk 0
	fault.started = nil
	fault.set(nil, nil)
	within := func(what string, fn func() error) {
		t.Helper()
		done := make(chan error, 1)
		go func() { done <- fn() }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("%s: %v", what, err)
			}
		case <-time.After(5 * time.Second):
			close(hang)
			t.Fatalf("%s waited for a read's fetch from the source", what)
		}
	}
	mine := bytes.Repeat([]byte("guest"), 4096/5+1)[:4096]
	within("a write to the block being fetched", func() error { return r.WriteAt(ctx, mine, 4096, false) })
	other := make([]byte, 4096)
	within("a read of another block of the chunk", func() error { return r.ReadAt(ctx, other, 8192) })
	mustEqual(t, "block 2", other, data[8192:12288])
	close(hang)
	if err := <-slowDone; err != nil {
		t.Fatal(err)
	}
	mustEqual(t, "the read that began before the write", slow, data[4096:8192])
	copy(data[4096:], mine)
	got := make([]byte, 16<<10)
	if err := r.ReadAt(ctx, got, 0); err != nil {
		t.Fatal(err)
	}
	mustEqual(t, "chunk 0 after the slow read kept block 1", got, data[:16<<10])
}

// TestSourceTimeout checks rule 8: a source that hangs (ignoring its
// context) or keeps failing fails the reads and partial writes that need it
// with ErrUnavailable after the configured bound, not later, and within a
// second once the outage outlasts the bound; reads of local blocks go on;
// the outage shows in Stats until the source answers.
func TestSourceTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		const bound = 5 * time.Second
		r, fault, data := sealedReplica(t, 64<<10, StoreOptions{SourceTimeout: bound}, ReplicaOptions{Paused: true})
		if err := r.WriteAt(ctx, data[:4096], 0, false); err != nil { // block 0 local
			t.Fatal(err)
		}
		hang := make(chan struct{})
		defer close(hang)
		for _, fault2 := range []struct {
			name string
			hang chan struct{}
			err  error
		}{{"hanging", hang, nil}, {"failing", nil, errors.New("connection refused")}} {
			fault.set(fault2.hang, fault2.err)
			start := time.Now()
			err := r.ReadAt(ctx, make([]byte, 4096), 8192)
			if !errors.Is(err, blockdev.ErrUnavailable) {
				t.Fatalf("%s source: read error %v, want ErrUnavailable", fault2.name, err)
			}
			if el := time.Since(start); el > bound {
				t.Fatalf("%s source: read failed after %v, bound %v", fault2.name, el, bound)
			}
			start = time.Now()
			err = r.WriteAt(ctx, []byte{1}, 9000, false)
			if !errors.Is(err, blockdev.ErrUnavailable) || time.Since(start) > bound {
				t.Fatalf("%s source: partial write %v after %v", fault2.name, err, time.Since(start))
			}
			if err := r.ReadAt(ctx, make([]byte, 4096), 0); err != nil {
				t.Fatalf("%s source: local read: %v", fault2.name, err)
			}
			if r.Stats().SourceDownSince.IsZero() {
				t.Fatalf("%s source: outage not reported", fault2.name)
			}
			// The outage now outlasts the bound: reads fail fast.
			start = time.Now()
			err = r.ReadAt(ctx, make([]byte, 4096), 12288)
			if !errors.Is(err, blockdev.ErrUnavailable) || time.Since(start) > maxBackoff {
				t.Fatalf("%s source: read during a long outage: %v after %v", fault2.name, err, time.Since(start))
			}
		}
		fault.set(nil, nil)
		got := make([]byte, 4096)
		if err := r.ReadAt(ctx, got, 8192); err != nil {
			t.Fatal(err)
		}
		mustEqual(t, "read after the source came back", got, data[8192:8192+4096])
		if !r.Stats().SourceDownSince.IsZero() {
			t.Fatal("outage still reported after the source answered")
		}
	})
}

// TestRateLimit checks the copy's bandwidth limit and that changing it
// applies while the copy runs, and the rate and ETA that Stats reports.
func TestRateLimit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const size, rate = 4 << 20, 1 << 20
		r, _, data := sealedReplica(t, size, StoreOptions{}, ReplicaOptions{Rate: rate})
		start := time.Now()
		time.Sleep(2 * time.Second)
		st := r.Stats()
		if want := int64(2 * rate); st.BytesCopied < want-32<<10 || st.BytesCopied > want+32<<10 {
			t.Fatalf("after 2 s at 1 MiB/s copied %d bytes", st.BytesCopied)
		}
		if st.Rate < 0.95*rate || st.Rate > 1.05*rate || st.ETA < 1900*time.Millisecond || st.ETA > 2100*time.Millisecond {
			t.Fatalf("stats: rate %.0f B/s, ETA %v; want about 1 MiB/s and 2 s", st.Rate, st.ETA)
		}
		r.SetRate(2 * rate)
		waitState(t, r, StateComplete)
		// 2 MiB at 1 MiB/s, then 2 MiB at 2 MiB/s.
		if el := time.Since(start); el < 2900*time.Millisecond || el > 3100*time.Millisecond {
			t.Fatalf("copy took %v, want about 3 s", el)
		}
		mustEqual(t, "copied disk", mustRead(t, r), data)
	})
}

// TestPauseResume checks that a paused copy copies nothing (reads still
// work) and that it completes once resumed.
func TestPauseResume(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r, _, data := sealedReplica(t, 1<<20, StoreOptions{}, ReplicaOptions{Rate: 256 << 10})
		time.Sleep(time.Second)
		r.Pause()
		synctest.Wait()
		copied := r.Stats().BytesCopied
		if copied == 0 || r.State() != StatePaused {
			t.Fatalf("before the pause copied %d, state %v", copied, r.State())
		}
		time.Sleep(10 * time.Second)
		if st := r.Stats(); st.BytesCopied != copied {
			t.Fatalf("paused copy went from %d to %d bytes", copied, st.BytesCopied)
		}
		r.Resume()
		waitState(t, r, StateComplete)
		mustEqual(t, "copied disk", mustRead(t, r), data)
	})
}

// TestRemoteOnly checks Method B: after the seal nothing is copied, in the
// background or on read; writes stay local.
func TestRemoteOnly(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		r, _, data := sealedReplica(t, 256<<10, StoreOptions{}, ReplicaOptions{RemoteOnly: true})
		time.Sleep(time.Minute)
		mustEqual(t, "remote read", mustRead(t, r), data)
		mustEqual(t, "second remote read", mustRead(t, r), data)
		copy(data[4096:], "local")
		if err := r.WriteAt(ctx, data[4096:8192], 4096, true); err != nil {
			t.Fatal(err)
		}
		mustEqual(t, "read after a local write", mustRead(t, r), data)
		st := r.Stats()
		if st.State != StateRemote || st.BytesCopied != 0 || st.BytesLocal != 4096 || st.SourceBytes != 3*int64(len(data))-4096 {
			t.Fatalf("Method B stats %+v", st)
		}
	})
}

// TestRemoteOnlyStartCopying: a remote-only replica serves reads remotely
// and copies nothing; StartCopying switches it to Method C, which completes
// and equals the model (the source's data with the guest's writes).
func TestRemoteOnlyStartCopying(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		r, _, data := sealedReplica(t, 256<<10, StoreOptions{}, ReplicaOptions{RemoteOnly: true})
		copy(data[8192:], "written on B")
		if err := r.WriteAt(ctx, data[8192:12288], 8192, false); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Minute)
		mustEqual(t, "remote read", mustRead(t, r), data)
		if st := r.Stats(); st.State != StateRemote || st.BytesCopied != 0 || st.BytesLocal != 4096 || st.ReadRemoteBytes != int64(len(data))-4096 {
			t.Fatalf("Method B stats %+v", st)
		}
		if !r.RemoteOnly() {
			t.Fatal("opened RemoteOnly, the replica copies")
		}
		for i, want := range []bool{true, false} {
			if switched, err := r.StartCopying(); err != nil || switched != want || r.RemoteOnly() {
				t.Fatalf("StartCopying #%d: switched %v (%v), remote-only after it %v; want %v", i+1, switched, err, r.RemoteOnly(), want)
			}
		}
		waitState(t, r, StateComplete)
		if st := r.Stats(); st.BytesLocal != int64(len(data)) || st.BytesCopied != int64(len(data))-4096 {
			t.Fatalf("after the copy: %+v", st)
		}
		before := r.Stats().SourceBytes
		mustEqual(t, "after the copy", mustRead(t, r), data)
		if st := r.Stats(); st.SourceBytes != before {
			t.Fatalf("a complete disk read %d bytes from the source", st.SourceBytes-before)
		}
		if err := r.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	})
}

// TestStartCopyingPersists: the switch from remote-only to copying is in
// the disk's metadata once StartCopying returns. A crash right after it
// (losing everything not synced) and an open with RemoteOnly, as the agent
// does after a restart under method = remote, find a replica that copies;
// one that was never switched stays remote-only.
func TestStartCopyingPersists(t *testing.T) {
	const size = 256 << 10
	ctx := context.Background()
	fsys := vfs.NewMem() // host B's; the crash does not touch host A
	a, data := randomBase(t, testStore(t, vfs.NewMem(), "/a", StoreOptions{}), "d", size, 5)
	defer a.Close()
	if err := a.Seal(ctx); err != nil {
		t.Fatal(err)
	}
	remote := ReplicaOptions{RemoteOnly: true}
	r, _, err := testStore(t, fsys, "/b", StoreOptions{}).Replicate(ctx, "d", Origin{Image: a.ID()}, a, remote)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.SourceSealed(ctx, nil); err != nil {
		t.Fatal(err)
	}
	// crashReopen cuts the power under r and opens the disk again as the
	// agent does after a restart.
	crashReopen := func() *Replica {
		t.Helper()
		r.cancel()
		<-r.done
		fsys.Crash(nil)
		r, err := testStore(t, fsys, "/b", StoreOptions{}).Open(ctx, "d", a, remote)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	r = crashReopen()
	if st := r.State(); st != StateRemote || !r.RemoteOnly() {
		t.Fatalf("a replica never switched reopens %v, remote-only %v; want remote", st, r.RemoteOnly())
	}
	r.Pause() // nothing is copied before the crash: the switch alone must survive
	if switched, err := r.StartCopying(); err != nil || !switched {
		t.Fatalf("StartCopying: %v, %v", switched, err)
	}
	r = crashReopen()
	defer r.Close()
	if r.RemoteOnly() {
		t.Fatal("the switch to copying did not survive a crash and reopen under RemoteOnly")
	}
	waitState(t, r, StateComplete)
	mustEqual(t, "copied after the reopen", mustRead(t, r), data)
}

// TestWayBackDeltaMismatch: if the source's final delta does not describe
// the base the incremental plan counted on (here: it claims another base),
// SourceSealed falls back to a full copy rather than trust the local image.
func TestWayBackDeltaMismatch(t *testing.T) {
	const size = 256 << 10
	ctx := context.Background()
	fsys := vfs.NewMem()
	hostA, hostB := testStore(t, fsys, "/a", StoreOptions{}), testStore(t, fsys, "/b", StoreOptions{})
	a, data := randomBase(t, hostA, "d", size, 4)
	b, _ := migrate(t, a, hostB)
	defer b.Close()
	a.Close()
	copy(data[4096:], "written on B")
	if err := b.WriteAt(ctx, data[4096:8192], 4096, false); err != nil {
		t.Fatal(err)
	}
	back, plan, err := hostA.Replicate(ctx, "d", b.Origin(), b, ReplicaOptions{})
	if err != nil || plan != PlanIncremental {
		t.Fatalf("Replicate: %v, %v", plan, err)
	}
	defer back.Close()
	if err := b.Seal(ctx); err != nil {
		t.Fatal(err)
	}
	delta, err := b.Delta()
	if err != nil {
		t.Fatal(err)
	}
	delta.Base.Generation++
	if plan, err := back.SourceSealed(ctx, delta); err != nil || plan != PlanFull {
		t.Fatalf("SourceSealed with a mismatched delta: %v, %v; want a full copy", plan, err)
	}
	waitState(t, back, StateComplete)
	if moved := back.Stats().SourceBytes; moved != size {
		t.Fatalf("full copy moved %d bytes, want %d", moved, size)
	}
	mustEqual(t, "disk back on A", mustRead(t, back), data)
}

// TestConcurrentIO runs guest writers and readers on disjoint blocks while
// the copier and copy-on-read run, for the race detector and for rule 3
// under real concurrency: every writer reads back its own data throughout,
// and the final disk is the source with every guest write on top.
func TestConcurrentIO(t *testing.T) {
	ctx := context.Background()
	const size, writers = 1 << 20, 4
	r, _, data := sealedReplica(t, size, StoreOptions{}, ReplicaOptions{Paused: true})
	r.Resume()
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			for range 200 {
				// Writer w owns the blocks b with b%writers == w; writes
				// start anywhere inside one so partial writes happen.
				b := int64(rng.IntN(size/4096/writers)*writers + w)
				off := b*4096 + rng.Int64N(4096)
				n := 1 + rng.Int64N(b*4096+4096-off)
				p := randomBytes(rng, n)
				if err := r.WriteAt(ctx, p, off, rng.IntN(8) == 0); err != nil {
					errs <- err
					return
				}
				copy(data[off:], p) // disjoint per writer
				got := make([]byte, 4096)
				if err := r.ReadAt(ctx, got, b*4096); err != nil {
					errs <- err
					return
				}
				if !bytes.Equal(got, data[b*4096:b*4096+4096]) {
					errs <- fmt.Errorf("writer %d: block %d does not read back", w, b)
					return
				}
				if rng.IntN(10) == 0 {
					if err := r.Flush(ctx); err != nil {
						errs <- err
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	waitState(t, r, StateComplete)
	mustEqual(t, "disk after concurrent I/O and copy", mustRead(t, r), data)
}

// TestReadRouting counts where reads were served from (rule 1): every
// byte from the source while nothing is local, every byte locally once the
// copy is complete.
func TestReadRouting(t *testing.T) {
	ctx := context.Background()
	fsys := vfs.NewMem()
	src, data := randomBase(t, testStore(t, fsys, "/a", StoreOptions{}), "d", 256<<10, 1)
	r, _, err := testStore(t, fsys, "/b", StoreOptions{}).Replicate(ctx, "d", Origin{Image: src.ID()}, src, ReplicaOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	size := int64(len(data))
	mustRead(t, r)
	if st := r.Stats(); st.ReadRemoteBytes != size || st.ReadLocalBytes != 0 {
		t.Fatalf("pass-through: local %d, remote %d; want 0, %d", st.ReadLocalBytes, st.ReadRemoteBytes, size)
	}
	if err := src.Seal(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := r.SourceSealed(ctx, nil); err != nil {
		t.Fatal(err)
	}
	waitState(t, r, StateComplete)
	mustRead(t, r)
	if st := r.Stats(); st.ReadRemoteBytes != size || st.ReadLocalBytes != size {
		t.Fatalf("complete: local %d, remote %d; want %d, %d", st.ReadLocalBytes, st.ReadRemoteBytes, size, size)
	}
}
