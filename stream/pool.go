package stream

import (
	"sync"
	"unsafe"
)

// Pool recycles tensor-sized slices between tensors so that most tensors
// skip the zeroing and page faults of fresh allocations. Only slices up to
// a quarter of the limit (and 64 MiB) are kept, and at most limit bytes in
// all, so a pool never holds a model's worth of memory; the few huge
// tensors (embeddings) allocate afresh and go back to the GC. Slices come
// back with stale contents: callers overwrite them fully before reading.
type Pool[T any] struct {
	mu     sync.Mutex
	free   [][]T
	held   int64
	limit  int64
	maxLen int
}

// NewPool returns a pool holding at most limit bytes.
func NewPool[T any](limit int64) *Pool[T] {
	var z T
	size := int64(unsafe.Sizeof(z))
	return &Pool[T]{limit: limit, maxLen: int(min(limit/4, 64<<20) / size)}
}

func (p *Pool[T]) bytes(s []T) int64 {
	var z T
	return int64(cap(s)) * int64(unsafe.Sizeof(z))
}

// Get returns a slice of length n, from the pool when one is big enough
// (the smallest such), else a new one.
func (p *Pool[T]) Get(n int) []T {
	p.mu.Lock()
	best := -1
	for i, b := range p.free {
		if cap(b) >= n && (best < 0 || cap(b) < cap(p.free[best])) {
			best = i
		}
	}
	if best >= 0 {
		b := p.free[best]
		p.free = append(p.free[:best], p.free[best+1:]...)
		p.held -= p.bytes(b)
		p.mu.Unlock()
		return b[:n]
	}
	p.mu.Unlock()
	return make([]T, n)
}

// Put offers a slice back.
func (p *Pool[T]) Put(b []T) {
	if cap(b) == 0 || cap(b) > p.maxLen {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.held+p.bytes(b) > p.limit && len(p.free) > 0 {
		// Drop the smallest to make room: big slices are the costly ones.
		small := 0
		for i := range p.free {
			if cap(p.free[i]) < cap(p.free[small]) {
				small = i
			}
		}
		p.held -= p.bytes(p.free[small])
		p.free = append(p.free[:small], p.free[small+1:]...)
	}
	if p.held+p.bytes(b) <= p.limit {
		p.free = append(p.free, b)
		p.held += p.bytes(b)
	}
}

// Float scratch shared by the kernels of a process: decoded copies of
// inputs and cached task vectors, each at most MaterializeLimit.
var (
	F64 = NewPool[float64](48 << 20)
	F32 = NewPool[float32](48 << 20)
)
