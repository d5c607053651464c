package replicator

import (
	"math/rand/v2"
	"testing"
)

func TestBitmapRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for range 200 {
		n := rng.Int64N(500) + 1
		b := NewBitmap(n)
		for range rng.IntN(10) {
			from := rng.Int64N(n)
			b.SetRange(from, from+rng.Int64N(n-from)+1)
		}
		enc, _ := b.MarshalBinary()
		var got Bitmap
		if err := got.UnmarshalBinary(enc); err != nil {
			t.Fatal(err)
		}
		for i := range n {
			if got.Get(i) != b.Get(i) {
				t.Fatalf("bit %d of %d differs after a round trip", i, n)
			}
		}
		if got.Len() != n || got.Count() != b.Count() {
			t.Fatalf("len %d count %d, want %d %d", got.Len(), got.Count(), n, b.Count())
		}
	}
}

func TestBitmapRejectsBadRuns(t *testing.T) {
	for _, enc := range [][]byte{
		{},               // no length
		{10, 5, 6},       // run past the end
		{10, 0, 2, 0, 2}, // adjacent runs must have been one
		{10, 1},          // gap without a count
	} {
		var b Bitmap
		if err := b.UnmarshalBinary(enc); err == nil {
			t.Errorf("UnmarshalBinary(%v) accepted a malformed encoding", enc)
		}
	}
}
