// Package bufpool recycles large byte buffers in power-of-two size
// classes, for data paths that would otherwise allocate (and clear) a
// fresh megabyte per command.
package bufpool

import (
	"math/bits"
	"sync"
)

// Size classes run from 1<<minShift to 1<<maxShift bytes; larger requests
// are allocated and dropped, smaller ones share the smallest class.
const (
	minShift = 12 // 4 KiB
	maxShift = 26 // 64 MiB
)

// Pool is a set of size-classed buffers. The zero value is ready to use
// and it is safe for concurrent use.
type Pool struct {
	classes [maxShift - minShift + 1]sync.Pool
	// headers recycles the *[]byte boxes sync.Pool needs, so that Put
	// allocates nothing once warm (a READ's hot path).
	headers sync.Pool
}

func class(n int) int {
	if n <= 1<<minShift {
		return 0
	}
	return bits.Len(uint(n-1)) - minShift
}

// Get returns a buffer of length n whose contents are undefined.
func (p *Pool) Get(n int) []byte {
	c := class(n)
	if c >= len(p.classes) {
		return make([]byte, n)
	}
	if h, ok := p.classes[c].Get().(*[]byte); ok {
		b := (*h)[:n]
		*h = nil
		p.headers.Put(h)
		return b
	}
	return make([]byte, n, 1<<(c+minShift))
}

// Put recycles a buffer that Get returned; it must not be used afterwards.
// Buffers of other capacities are dropped.
func (p *Pool) Put(b []byte) {
	c := class(cap(b))
	if c >= len(p.classes) || cap(b) != 1<<(c+minShift) {
		return
	}
	h, ok := p.headers.Get().(*[]byte)
	if !ok {
		h = new([]byte)
	}
	*h = b[:cap(b)]
	p.classes[c].Put(h)
}
