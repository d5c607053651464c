package replicator

import (
	"encoding/binary"
	"errors"
	"fmt"
	"iter"
	"math/bits"
)

// Bitmap is a fixed-size set of block indexes [0, Len()).
type Bitmap struct {
	n int64
	w []uint64
}

// NewBitmap returns an empty bitmap of n bits.
func NewBitmap(n int64) *Bitmap { return &Bitmap{n: n, w: make([]uint64, (n+63)/64)} }

// Len is the number of bits.
func (b *Bitmap) Len() int64 { return b.n }

// Get reports whether bit i is set.
func (b *Bitmap) Get(i int64) bool { return b.w[i/64]&(1<<(i%64)) != 0 }

// Set sets bit i.
func (b *Bitmap) Set(i int64) { b.w[i/64] |= 1 << (i % 64) }

// SetRange sets bits [from, to) and returns how many were clear.
func (b *Bitmap) SetRange(from, to int64) (added int64) {
	for i := from; i < to; i++ {
		if i%64 == 0 && to-i >= 64 {
			added += int64(bits.OnesCount64(^b.w[i/64]))
			b.w[i/64] = ^uint64(0)
			i += 63
			continue
		}
		if !b.Get(i) {
			added++
			b.Set(i)
		}
	}
	return added
}

// AllSet reports whether bits [from, to) are all set, a word at a time
// where it can: the copier skips a TiB of valid chunks under a lock.
func (b *Bitmap) AllSet(from, to int64) bool {
	for i := from; i < to; {
		if i%64 == 0 && to-i >= 64 {
			if b.w[i/64] != ^uint64(0) {
				return false
			}
			i += 64
			continue
		}
		if !b.Get(i) {
			return false
		}
		i++
	}
	return true
}

// Count is the number of set bits.
func (b *Bitmap) Count() int64 {
	var c int
	for _, w := range b.w {
		c += bits.OnesCount64(w)
	}
	return int64(c)
}

// Clone returns a copy of b.
func (b *Bitmap) Clone() *Bitmap {
	return &Bitmap{n: b.n, w: append([]uint64(nil), b.w...)}
}

// Runs yields the maximal runs of set bits as (start, count).
func (b *Bitmap) Runs() iter.Seq2[int64, int64] {
	return func(yield func(int64, int64) bool) {
		for i := int64(0); i < b.n; {
			if w := b.w[i/64] >> (i % 64); w == 0 {
				i += 64 - i%64 // rest of this word is clear
				continue
			}
			if !b.Get(i) {
				i++
				continue
			}
			j := i + 1
			for j < b.n && b.Get(j) {
				j++
			}
			if !yield(i, j-i) {
				return
			}
			i = j
		}
	}
}

// MarshalBinary encodes b compactly: the bit count, then the lengths of the
// alternating clear and set runs (starting with a clear one), as uvarints. A
// handful of scattered guest writes costs a few bytes, not a bitmap.
func (b *Bitmap) MarshalBinary() ([]byte, error) {
	out := binary.AppendUvarint(nil, uint64(b.n))
	prev := int64(0)
	for start, count := range b.Runs() {
		out = binary.AppendUvarint(out, uint64(start-prev))
		out = binary.AppendUvarint(out, uint64(count))
		prev = start + count
	}
	return out, nil
}

// maxBits bounds a disk's block count (64 TiB at the default 16 KiB grain)
// and so what a corrupt length can make UnmarshalBinary allocate (512 MiB).
const maxBits = 1 << 32

var errBadBitmap = errors.New("malformed bitmap encoding")

// UnmarshalBinary decodes MarshalBinary's encoding.
func (b *Bitmap) UnmarshalBinary(data []byte) error {
	n, k := binary.Uvarint(data)
	if k <= 0 || n > maxBits {
		return fmt.Errorf("bit count: %w", errBadBitmap)
	}
	data = data[k:]
	*b = *NewBitmap(int64(n))
	pos := uint64(0)
	for len(data) > 0 {
		gap, k1 := binary.Uvarint(data)
		if k1 <= 0 {
			return fmt.Errorf("run gap: %w", errBadBitmap)
		}
		count, k2 := binary.Uvarint(data[k1:])
		if k2 <= 0 || count == 0 || gap > n-pos || count > n-pos-gap || (pos > 0 && gap == 0) {
			return fmt.Errorf("run at bit %d: %w", pos, errBadBitmap)
		}
		pos += gap
		b.SetRange(int64(pos), int64(pos+count))
		pos += count
		data = data[k1+k2:]
	}
	return nil
}
