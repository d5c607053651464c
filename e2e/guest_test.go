package e2e

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/shareless/shareless/internal/lab"
)

// counterWatch follows the guest's counter (sector 0 of its disk) in the
// store images of both hosts while the guest moves between them, every
// 50 ms: the guest writes it once a second, so every value is seen. A
// value is read where the guest wrote it, so the watch needs no notion of
// where the guest runs.
type counterWatch struct {
	images []string
	stop   chan struct{}
	done   chan struct{}

	mu   sync.Mutex
	seen map[uint64]bool
	last []uint64 // per image, the latest value read
	errs []string
}

func watchCounter(images ...string) *counterWatch {
	w := &counterWatch{images: images, stop: make(chan struct{}), done: make(chan struct{}),
		seen: map[uint64]bool{}, last: make([]uint64, len(images))}
	go w.run()
	return w
}

func (w *counterWatch) run() {
	defer close(w.done)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		w.sample()
		select {
		case <-w.stop:
			return
		case <-tick.C:
		}
	}
}

func (w *counterWatch) sample() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for i, img := range w.images {
		n, err := lab.ReadCounter(img)
		if err != nil {
			continue // not written here yet: a hole, or the data before the guest's first write
		}
		if n < w.last[i] {
			w.errs = append(w.errs, fmt.Sprintf("%s: counter went back from %d to %d", img, w.last[i], n))
		}
		w.last[i] = n
		w.seen[n] = true
	}
}

// max is the highest value seen so far.
func (w *counterWatch) max() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Max(append(slices.Clone(w.last), 0))
}

// waitPast waits until the guest has counted past n.
func (w *counterWatch) waitPast(t *testing.T, n uint64, timeout time.Duration) uint64 {
	t.Helper()
	eventually(t, timeout, fmt.Sprintf("guest counts past %d", n), func() (bool, string) {
		return w.max() > n, fmt.Sprintf("at %d", w.max())
	})
	return w.max()
}

// finish stops the watch and fails the test if the counter ever went
// back or skipped a value; it returns the range seen.
func (w *counterWatch) finish(t *testing.T) (first, last uint64) {
	t.Helper()
	close(w.stop)
	<-w.done
	w.sample()
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, e := range w.errs {
		t.Error(e)
	}
	vals := make([]uint64, 0, len(w.seen))
	for n := range w.seen {
		vals = append(vals, n)
	}
	slices.Sort(vals)
	if len(vals) == 0 {
		t.Fatal("the guest never counted")
	}
	for i := 1; i < len(vals); i++ {
		if vals[i] != vals[i-1]+1 {
			t.Errorf("counter skipped from %d to %d", vals[i-1], vals[i])
		}
	}
	return vals[0], vals[len(vals)-1]
}

// counterSector is sector 0 as the guest writes it (dd conv=sync pads
// with zeroes).
func counterSector(n uint64) []byte {
	s := make([]byte, 512)
	copy(s, fmt.Sprintf("SHARELESS-COUNTER %012d\n", n))
	return s
}

// checkImage checks a whole store image against the instance's data with
// the guest's last counter in sector 0, by checksum, and returns that
// counter.
func checkImage(t *testing.T, inst *instance, image string) uint64 {
	t.Helper()
	got, err := os.ReadFile(image)
	if err != nil {
		t.Fatal(err)
	}
	n, err := lab.ReadCounter(image)
	if err != nil {
		t.Fatal(err)
	}
	want := inst.data()
	copy(want, counterSector(n))
	if len(got) < len(want) {
		got = append(got, make([]byte, len(want)-len(got))...) // a sparse image may end in a hole
	}
	if g, w := sha256.Sum256(got), sha256.Sum256(want); g != w {
		i := 0
		for i < len(want) && got[i] == want[i] {
			i++
		}
		t.Fatalf("%s: sha256 %x, want %x (first difference at offset %d)", image, g[:8], w[:8], i)
	}
	return n
}

// sameData checks, while the guest runs, that an image holds the
// instance's data beyond sector 0 (the guest writes nothing else).
func sameData(t *testing.T, inst *instance, image string) {
	t.Helper()
	got, err := os.ReadFile(image)
	if err != nil {
		t.Fatal(err)
	}
	want := inst.data()
	if len(got) < len(want) {
		got = append(got, make([]byte, len(want)-len(got))...)
	}
	if !bytes.Equal(got[512:], want[512:]) {
		t.Fatalf("%s differs from the instance's data beyond sector 0", image)
	}
}
