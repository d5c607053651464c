package scsi

import (
	"math/bits"
	"sync"
)

// Range locks: the device is cut into regions of 1<<lockRegionShift
// blocks, each hashed onto one of 64 stripes. Every command that writes
// holds the stripes of its range shared; COMPARE AND WRITE holds them
// exclusive, so that its read-compare-write is atomic against any write to
// an overlapping range (SBC-3 §5.2) while ordinary writes never wait for
// each other and reads take no lock at all. Stripes are always taken in
// ascending order, so two commands cannot deadlock.
const lockRegionShift = 11

type rangeLocks struct {
	stripes [64]sync.RWMutex
}

// stripeMask is the set of stripes covering blocks [lba, lba+n), n > 0.
func stripeMask(lba, n uint64) uint64 {
	first, last := lba>>lockRegionShift, (lba+n-1)>>lockRegionShift
	if last-first >= 63 {
		return ^uint64(0)
	}
	var m uint64
	for r := first; r <= last; r++ {
		m |= 1 << (r % 64)
	}
	return m
}

// shared locks blocks [lba, lba+n) against COMPARE AND WRITE and returns
// the unlock function's argument.
func (l *rangeLocks) shared(lba, n uint64) uint64 {
	m := stripeMask(lba, n)
	for s := m; s != 0; s &= s - 1 {
		l.stripes[bits.TrailingZeros64(s)].RLock()
	}
	return m
}

func (l *rangeLocks) unlockShared(m uint64) {
	for ; m != 0; m &= m - 1 {
		l.stripes[bits.TrailingZeros64(m)].RUnlock()
	}
}

// exclusive locks blocks [lba, lba+n) against every other writer.
func (l *rangeLocks) exclusive(lba, n uint64) uint64 {
	m := stripeMask(lba, n)
	for s := m; s != 0; s &= s - 1 {
		l.stripes[bits.TrailingZeros64(s)].Lock()
	}
	return m
}

func (l *rangeLocks) unlockExclusive(m uint64) {
	for ; m != 0; m &= m - 1 {
		l.stripes[bits.TrailingZeros64(m)].Unlock()
	}
}
