package replicator

import (
	"context"
	"errors"
	"io/fs"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/shareless/shareless/replicator/vfs"
)

// stepRecord is the model after one step of a scripted run.
type stepRecord struct {
	ops   int        // filesystem mutations so far
	src   []byte     // the source's contents
	cands [][][]byte // what each sector may hold after a crash
	trace int        // operations logged so far
}

// scriptRun runs the model script of seed (setup, then steps) and records
// the model after each step. arm, if set, is applied to the filesystem
// before its first operation.
func scriptRun(t *testing.T, seed uint64, steps int, arm func(*vfs.Mem)) (*modelCase, []stepRecord) {
	c := &modelCase{t: t, rng: rand.New(rand.NewPCG(seed, seed)), arm: arm}
	var recs []stepRecord
	record := func() {
		cands := make([][][]byte, len(c.m.cands))
		for s := range cands {
			cands[s] = slices.Clone(c.m.cands[s])
		}
		recs = append(recs, stepRecord{ops: c.fs.Ops(), src: slices.Clone(c.src.data), cands: cands, trace: len(c.trace)})
	}
	c.setup()
	record()
	for range steps {
		c.step()
		record()
	}
	c.r.Close()
	return c, recs
}

// TestCrashAfterEveryWrite runs a scripted life of a replica (setup by
// Replicate, source writes, guest I/O, flushes, the seal, copier steps,
// crashes and journal checkpoints) once per filesystem mutation n, and
// crashes a clone of the filesystem right after mutation n, with and
// without tearing what was not synced. The store on each clone must open
// (a disk may be missing only if the crash hit its creation) and pass
// verifyRecovered against the model of the step the crash interrupted.
func TestCrashAfterEveryWrite(t *testing.T) {
	const steps = 60
	seeds := []uint64{101, 102, 103, 104}
	if testing.Short() || raceBuild {
		seeds = seeds[:1]
	}
	for _, seed := range seeds {
		_, recs := scriptRun(t, seed, steps, nil)
		total := recs[len(recs)-1].ops
		for n := 1; n <= total; n++ {
			for _, tear := range []*rand.Rand{nil, rand.New(rand.NewPCG(seed, uint64(n)))} {
				c, again := scriptRun(t, seed, steps, func(m *vfs.Mem) { m.CrashAfter(n, tear) })
				for j := range recs {
					if again[j].ops != recs[j].ops {
						t.Fatalf("seed %d: the script is not deterministic: step %d ends after mutation %d, then %d", seed, j, recs[j].ops, again[j].ops)
					}
				}
				// The step during which mutation n happened.
				i := sort.Search(len(recs), func(i int) bool { return recs[i].ops >= n })
				if err := checkCrashClone(c, c.fs.Crashed(), recs, i); err != nil {
					t.Fatalf("seed %d, crash after mutation %d of %d, in step %d (tear %v): %v\noperations to that step:\n  %s",
						seed, n, total, i, tear != nil, err, strings.Join(c.trace[max(0, recs[i].trace-15):recs[i].trace], "\n  "))
				}
			}
		}
		t.Logf("seed %d: crashed after each of %d filesystem mutations", seed, total)
	}
}

func checkCrashClone(c *modelCase, clone *vfs.Mem, recs []stepRecord, i int) error {
	s, err := NewStore(clone, "/store", c.storeOpts())
	if err != nil {
		return err
	}
	r, err := s.Open(context.Background(), "d", &memSource{data: recs[i].src}, ReplicaOptions{Paused: true})
	if i == 0 {
		// Within setup: the disk may not exist yet, but it must never be
		// unreadable.
		if err == nil {
			r.Close()
		}
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return nil
	}
	if err != nil {
		return err
	}
	defer r.Close()
	allowed := make([][][]byte, len(recs[i].cands))
	for s := range allowed {
		allowed[s] = append(slices.Clone(recs[i-1].cands[s]), recs[i].cands[s]...)
	}
	_, err = verifyRecovered(r, recs[i].src, allowed)
	return err
}
