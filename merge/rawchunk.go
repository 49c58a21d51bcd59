package merge

import "github.com/weightops/weightops/weights"

// rawChunk is one input's raw bytes of the current chunk (a RawInputKernel
// input), decoded to float64 on demand, once per chunk.
type rawChunk struct {
	t   weights.Tensor
	dec []float64
	ok  bool // dec holds the current chunk
}

// set takes the input's bytes of the next chunk.
func (r *rawChunk) set(t weights.Tensor) { r.t, r.ok = t, false }

// elems is the chunk's number of elements.
func (r *rawChunk) elems() int {
	if bb := r.t.DType.BlockBytes(); bb > 0 {
		return int(int64(len(r.t.Data)) / bb * r.t.DType.BlockElems())
	}
	return 0
}

// float64s returns the pass's decoded chunk when it has one (in: a
// missing input, read as zeros), else the raw bytes decoded, n elements.
func (r *rawChunk) float64s(in []float64, n int) ([]float64, error) {
	if in != nil {
		return in[:n], nil
	}
	if !r.ok {
		if cap(r.dec) < n {
			r.dec = make([]float64, n)
		}
		if err := weights.Decode(r.t.DType, r.t.Data, r.dec[:n]); err != nil {
			return nil, err
		}
		r.ok = true
	}
	return r.dec[:n], nil
}
