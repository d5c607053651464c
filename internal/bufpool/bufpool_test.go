package bufpool

import "testing"

func TestGetPut(t *testing.T) {
	var p Pool
	for _, n := range []int{1, 4096, 4097, 1 << 20, 3<<20 + 5, 1 << 27} {
		b := p.Get(n)
		if len(b) != n {
			t.Fatalf("Get(%d) has length %d", n, len(b))
		}
		if n <= 1<<maxShift && cap(b)&(cap(b)-1) != 0 {
			t.Fatalf("Get(%d) has capacity %d, not a size class", n, cap(b))
		}
		p.Put(b)
		if again := p.Get(n); len(again) != n {
			t.Fatalf("second Get(%d) has length %d", n, len(again))
		}
	}
	p.Put(make([]byte, 1000, 3000)) // not from the pool: dropped
}

// TestSteadyStateAllocatesNothing: once warm, a Get/Put cycle allocates
// nothing, which is why the SCSI layer pools READ buffers here.
func TestSteadyStateAllocatesNothing(t *testing.T) {
	var p Pool
	p.Put(p.Get(64 << 10))
	if n := testing.AllocsPerRun(100, func() { p.Put(p.Get(64 << 10)) }); n > 0 {
		t.Fatalf("Get/Put allocates %.1f times per cycle", n)
	}
}
