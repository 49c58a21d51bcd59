package merge

import "sync"

// bufPool recycles tensor-sized byte buffers between tensors so that most
// reads skip the zeroing of a fresh allocation. Only buffers up to maxBuf
// are kept and at most limit bytes in all, so the pool never holds a
// model's worth of memory; the few huge tensors (embeddings) allocate
// afresh and are returned to the GC.
type bufPool struct {
	mu     sync.Mutex
	free   [][]byte
	held   int64
	limit  int64
	maxBuf int
}

func newBufPool(limit int64) *bufPool {
	return &bufPool{limit: limit, maxBuf: int(min(limit/4, 64<<20))}
}

// get returns a buffer of length n, from the pool when one is big enough.
func (p *bufPool) get(n int) []byte {
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
		p.held -= int64(cap(b))
		p.mu.Unlock()
		return b[:n]
	}
	p.mu.Unlock()
	return make([]byte, n)
}

// put offers a buffer back.
func (p *bufPool) put(b []byte) {
	if cap(b) == 0 || cap(b) > p.maxBuf {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.held+int64(cap(b)) > p.limit && len(p.free) > 0 {
		// Drop the smallest to make room: big buffers are the costly ones.
		small := 0
		for i := range p.free {
			if cap(p.free[i]) < cap(p.free[small]) {
				small = i
			}
		}
		p.held -= int64(cap(p.free[small]))
		p.free = append(p.free[:small], p.free[small+1:]...)
	}
	if p.held+int64(cap(b)) <= p.limit {
		p.free = append(p.free, b)
		p.held += int64(cap(b))
	}
}
