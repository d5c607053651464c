package replicator

import (
	"bytes"
	"context"
	"log/slog"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/shareless/shareless/replicator/vfs"
)

// testStore returns a store on fsys at root with small geometry (4 KiB
// grain, 16 KiB chunks) unless opts says otherwise, logging to the test.
func testStore(t testing.TB, fsys vfs.FS, root string, opts StoreOptions) *Store {
	t.Helper()
	if opts.Grain == 0 {
		opts.Grain, opts.Chunk = 4<<10, 16<<10
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	s, err := NewStore(fsys, root, opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// randomBase creates a base disk filled with random data and returns it with
// its contents.
func randomBase(t testing.TB, s *Store, name string, size int64, seed uint64) (*Replica, []byte) {
	t.Helper()
	ctx := context.Background()
	d, err := s.Create(ctx, name, size)
	if err != nil {
		t.Fatal(err)
	}
	data := randomBytes(rand.New(rand.NewPCG(seed, seed)), size)
	if err := d.WriteAt(ctx, data, 0, false); err != nil {
		t.Fatal(err)
	}
	if err := d.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	return d, data
}

func randomBytes(rng *rand.Rand, n int64) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// mustRead reads the whole device.
func mustRead(t testing.TB, d *Replica) []byte {
	t.Helper()
	buf := make([]byte, d.Size())
	if err := d.ReadAt(context.Background(), buf, 0); err != nil {
		t.Fatal(err)
	}
	return buf
}

func mustEqual(t testing.TB, what string, got, want []byte) {
	t.Helper()
	if i := firstDiff(got, want); i >= 0 {
		t.Fatalf("%s differs at byte %d (block %d at 4 KiB)", what, i, i/4096)
	}
}

func firstDiff(a, b []byte) int {
	if bytes.Equal(a, b) {
		return -1
	}
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// faultSource wraps a Source and can make it hang (ignoring its context,
// as a dead TCP peer does) or fail.
type faultSource struct {
	Source
	started chan struct{} // if set, receives a value as each read starts
	mu      sync.Mutex
	hang    chan struct{} // non-nil: reads block until it is closed
	err     error
}

func (f *faultSource) set(hang chan struct{}, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hang, f.err = hang, err
}

func (f *faultSource) ReadAt(ctx context.Context, p []byte, off int64) error {
	f.mu.Lock()
	hang, err := f.hang, f.err
	f.mu.Unlock()
	if f.started != nil {
		f.started <- struct{}{}
	}
	if hang != nil {
		<-hang
	}
	if err != nil {
		return err
	}
	return f.Source.ReadAt(ctx, p, off)
}

// waitState polls until d reaches want (the copier runs on its own).
func waitState(t testing.TB, d *Replica, want State) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for d.State() != want {
		if time.Now().After(deadline) {
			t.Fatalf("state %v, want %v; stats %+v", d.State(), want, d.Stats())
		}
		time.Sleep(time.Millisecond)
	}
}
