package scsi

import (
	"math/bits"
	"sync"
)

// minPooledBuf is the smallest pooled buffer; smaller requests share it.
const minPooledBuf = 4096

// bufPool recycles Data-In buffers of READ (and scratch buffers of VERIFY
// and WRITE SAME) in power-of-two size classes up to the unit's maximum
// transfer length, so that the hot path allocates nothing once warm.
type bufPool struct {
	classes []sync.Pool // class i holds buffers of minPooledBuf<<i bytes
}

// pooledBuf is a buffer and the pool it returns to; a nil pool means the
// buffer was too large to pool.
type pooledBuf struct {
	b    []byte
	pool *sync.Pool
}

func newBufPool(maxLen int) *bufPool {
	return &bufPool{classes: make([]sync.Pool, sizeClass(maxLen)+1)}
}

// sizeClass is the index of the smallest class holding n bytes.
func sizeClass(n int) int {
	if n <= minPooledBuf {
		return 0
	}
	return bits.Len(uint(n-1)) - bits.Len(minPooledBuf-1)
}

// get returns a buffer of length n; its contents are undefined.
func (p *bufPool) get(n int) *pooledBuf {
	c := sizeClass(n)
	if c >= len(p.classes) {
		return &pooledBuf{b: make([]byte, n)}
	}
	pool := &p.classes[c]
	if v := pool.Get(); v != nil {
		pb := v.(*pooledBuf)
		pb.b = pb.b[:n]
		return pb
	}
	return &pooledBuf{b: make([]byte, n, minPooledBuf<<c), pool: pool}
}

func (b *pooledBuf) release() {
	if b.pool != nil {
		b.pool.Put(b)
	}
}
