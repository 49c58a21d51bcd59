package quantize

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"slices"
	"sync"

	"github.com/weightops/weightops/gguf"
)

// Encoder quantizes one tensor handed over in order, a segment at a time,
// so a caller streaming a tensor from its file holds a segment, the
// tensor's scales and wherever it puts the packed codes — not the tensor.
// The result is Quantize's, byte for byte: segments other than the last
// hold a multiple of Align elements, so each covers whole groups (and
// whole bytes of packed codes) and is computed exactly as Quantize
// computes it. A single-group tensor (per-tensor granularity, or a
// per-channel one with fewer than two dimensions) needs its extremes
// first: see NeedsRange.
type Encoder struct {
	cfg    Config
	l      layout
	shape  []int64
	pos    int // elements encoded so far
	ranged bool
	s, m   float32 // a single group's scale and min, once ranged
	scales []float32
	mins   []float32
	codes  []uint8 // scratch: one code per element of a segment
	pad    []float32
}

// NewEncoder starts quantizing a tensor of the given shape with cfg.
func NewEncoder(shape []int64, cfg Config) (*Encoder, error) {
	cfg, l, err := cfg.prepare(shape)
	if err != nil {
		return nil, err
	}
	return &Encoder{cfg: cfg, l: l, shape: slices.Clone(shape)}, nil
}

// Align is the element count every segment but the last must be a
// multiple of: whole groups filling whole bytes of codes (whole blocks for
// the ggml codecs).
func (e *Encoder) Align() int {
	switch {
	case e.cfg.Scheme == GGML:
		return e.cfg.BlockSize
	case e.l.groups <= 1:
		return 8
	}
	return lcm8(e.l.group)
}

// lcm8 is the least common multiple of g and 8.
func lcm8(g int) int {
	a := g
	for a%8 != 0 {
		a += g
	}
	return a
}

// NeedsRange reports whether the tensor is one group, whose scale follows
// from the whole tensor's extremes: SetRange must come before Encode.
func (e *Encoder) NeedsRange() bool {
	return e.cfg.Scheme != GGML && e.l.groups == 1
}

// Extremes returns the least and greatest of vs, or an error naming the
// first NaN or ±Inf (base is the index of vs[0] in the tensor): what a
// caller gathers over every segment for SetRange.
func Extremes(vs []float32, base int) (mn, mx float32, err error) {
	if len(vs) == 0 {
		return float32(math.Inf(1)), float32(math.Inf(-1)), nil
	}
	return minMax(vs, base)
}

// SetRange sets a single-group tensor's extremes (see NeedsRange).
func (e *Encoder) SetRange(mn, mx float32) error {
	if !e.NeedsRange() {
		return fmt.Errorf("quantize: SetRange on a tensor of %d groups", e.l.groups)
	}
	s, m, err := e.cfg.params(mn, mx)
	if err != nil {
		return err
	}
	e.s, e.m, e.ranged = s, m, true
	e.scales = []float32{s}
	if e.cfg.Scheme == Asymmetric {
		e.mins = []float32{m}
	}
	return nil
}

// Encode quantizes the next segment vs, appends its packed codes to dst
// and returns it, and writes the values as Dequantize gives them back into
// deq (len(vs) elements).
func (e *Encoder) Encode(vs, deq []float32, dst []byte) ([]byte, error) {
	lo, hi := e.pos, e.pos+len(vs)
	switch {
	case hi > e.l.n:
		return dst, fmt.Errorf("quantize: segment %d..%d past the tensor's %d elements", lo, hi, e.l.n)
	case hi < e.l.n && len(vs)%e.Align() != 0:
		return dst, fmt.Errorf("quantize: segment of %d elements is not a multiple of %d", len(vs), e.Align())
	case len(deq) != len(vs):
		return dst, fmt.Errorf("quantize: %d values, %d to dequantize", len(vs), len(deq))
	case e.NeedsRange() && !e.ranged:
		return dst, fmt.Errorf("quantize: a single-group tensor needs SetRange first")
	}
	if len(vs) == 0 {
		return dst, nil
	}
	if e.cfg.Scheme == GGML {
		return e.encodeGGML(vs, deq, dst)
	}
	if cap(e.codes) < len(vs) {
		e.codes = make([]uint8, len(vs))
	}
	codes := e.codes[:len(vs)]
	k := e.cfg.Bits
	if e.l.groups == 1 {
		e.cfg.encode(codes, vs, e.s, e.m)
	} else {
		g0, g1 := lo/e.l.group, (hi-1)/e.l.group+1
		e.scales = slices.Grow(e.scales, g1-g0)[:g1]
		var mins []float32
		if e.cfg.Scheme == Asymmetric {
			e.mins = slices.Grow(e.mins, g1-g0)[:g1]
			mins = e.mins[g0:]
		}
		if err := e.cfg.quantGroups(e.l, lo, vs, codes, e.scales[g0:], mins); err != nil {
			return dst, err
		}
	}
	at := len(dst)
	dst = slices.Grow(dst, packedLen(len(vs), k))[:at+packedLen(len(vs), k)]
	pack(dst[at:], codes, k)
	e.cfg.decodeGroups(e.l, lo, codes, deq, e.scales, e.mins)
	e.pos = hi
	return dst, nil
}

// encodeGGML is Encode for the ggml block codecs: whole blocks, the last
// one padded with zeros as quantizeGGML pads it.
func (e *Encoder) encodeGGML(vs, deq []float32, dst []byte) ([]byte, error) {
	c := e.cfg
	for i, v := range vs {
		if !isFinite(v) {
			return dst, fmt.Errorf("quantize: element %d is %v; only finite values can be quantized", e.pos+i, v)
		}
	}
	blocks := c.ggmlBlocks(len(vs))
	x, out := vs, deq
	if whole := blocks * c.BlockSize; whole > len(vs) {
		e.pad = append(append(e.pad[:0], vs...), make([]float32, whole-len(vs))...)
		x = e.pad
		out = make([]float32, whole)
	}
	at, size := len(dst), blocks*c.blockBytes()
	dst = slices.Grow(dst, size)[:at+size]
	if err := gguf.Quantize(c.Type, x, dst[at:]); err != nil {
		return dst[:at], err
	}
	if err := gguf.Dequantize(c.Type, dst[at:], out); err != nil {
		return dst[:at], err
	}
	copy(deq, out)
	e.pos += len(vs)
	return dst, nil
}

// Groups is the tensor's number of scale groups (blocks for the ggml
// codecs): what the Encoder keeps, at most two float32 numbers each.
func (e *Encoder) Groups() int {
	if e.cfg.Scheme == GGML {
		return e.cfg.ggmlBlocks(e.l.n)
	}
	return e.l.groups
}

// codeBytes is the length of the tensor's packed codes (its ggml blocks).
func (e *Encoder) codeBytes() int64 {
	if e.cfg.Scheme == GGML {
		return int64(e.cfg.ggmlBlocks(e.l.n) * e.cfg.blockBytes())
	}
	return int64(packedLen(e.l.n, e.cfg.Bits))
}

// Size is the length of the encoding Finish writes, once every element
// is encoded.
func (e *Encoder) Size() int64 {
	n := int64(fixedHeader+8*len(e.shape)+trailer) + e.codeBytes()
	if e.cfg.Scheme != GGML {
		n += int64(e.cfg.scaleBytes()) * int64(len(e.scales)+len(e.mins))
	}
	return n
}

// Finish writes the tensor's encoding (MarshalBinary's bytes) to w once
// every element is encoded: header, scales and mins, then the packed codes
// Encode returned, read back in order from codes, then the checksum.
func (e *Encoder) Finish(w io.Writer, codes io.Reader) (int64, error) {
	if e.pos != e.l.n {
		return 0, fmt.Errorf("quantize: %d of %d elements encoded", e.pos, e.l.n)
	}
	if e.NeedsRange() && !e.ranged && e.l.n > 0 {
		return 0, fmt.Errorf("quantize: a single-group tensor needs SetRange first")
	}
	if len(e.shape) > maxDims {
		return 0, fmt.Errorf("quantize: %d dimensions, the format allows %d", len(e.shape), maxDims)
	}
	q := &Quantized{Config: e.cfg, Shape: e.shape, N: e.l.n, Scales: e.scales, Mins: e.mins}
	if e.cfg.Scheme == GGML {
		q.Scales, q.Mins = nil, nil
	} else if e.l.n == 0 {
		q.Scales = []float32{}
		if e.cfg.Scheme == Asymmetric {
			q.Mins = []float32{}
		}
	}
	want := e.codeBytes()
	head := q.head()
	crc := crc32.Update(0, castagnoli, head)
	total, err := writeAll(w, head, 0)
	if err != nil {
		return total, err
	}
	buf := make([]byte, 1<<16)
	for left := want; left > 0; {
		n, err := io.ReadFull(codes, buf[:min(int64(len(buf)), left)])
		if err != nil {
			return total, fmt.Errorf("quantize: reading codes back: %w", err)
		}
		crc = crc32.Update(crc, castagnoli, buf[:n])
		if total, err = writeAll(w, buf[:n], total); err != nil {
			return total, err
		}
		left -= int64(n)
	}
	return writeAll(w, binary.LittleEndian.AppendUint32(nil, crc), total)
}

func writeAll(w io.Writer, b []byte, total int64) (int64, error) {
	n, err := w.Write(b)
	return total + int64(n), err
}

// DequantizeRange writes the reconstructed values of elements [lo,
// lo+len(dst)) into dst: what Dequantize gives there, decoding only the
// groups (ggml blocks) that cover the range, so a reader can walk a large
// tensor a chunk at a time without a tensor-sized float32 copy.
func (q *Quantized) DequantizeRange(dst []float32, lo int) error {
	hi := lo + len(dst)
	if lo < 0 || hi > q.N {
		return fmt.Errorf("quantize: range %d..%d outside %d elements", lo, hi, q.N)
	}
	if len(dst) == 0 {
		return nil
	}
	if q.Scheme == GGML {
		b := q.BlockSize
		b0, b1 := lo/b, (hi-1)/b+1
		sc := rangeScratch.Get().(*rangeBuf)
		defer rangeScratch.Put(sc)
		if cap(sc.out) < (b1-b0)*b {
			sc.out = make([]float32, (b1-b0)*b)
		}
		tmp := sc.out[:(b1-b0)*b]
		bb := q.blockBytes()
		if err := gguf.Dequantize(q.Type, q.Codes[b0*bb:b1*bb], tmp); err != nil {
			return err
		}
		copy(dst, tmp[lo-b0*b:])
		return nil
	}
	l, err := q.layout(q.Shape)
	if err != nil {
		return err
	}
	// From the element 8-aligned below lo: its codes start on a byte.
	start := lo &^ 7
	sc := rangeScratch.Get().(*rangeBuf)
	defer rangeScratch.Put(sc)
	if cap(sc.codes) < hi-start {
		sc.codes = make([]uint8, hi-start)
	}
	if cap(sc.out) < hi-start {
		sc.out = make([]float32, hi-start)
	}
	codes := sc.codes[:hi-start]
	unpack(codes, q.Codes[start/8*q.Bits:], q.Bits)
	out := dst
	if start != lo {
		out = sc.out[:hi-start]
	}
	q.decodeGroups(l, start, codes, out, q.Scales, q.Mins)
	if start != lo {
		copy(dst, out[lo-start:])
	}
	return nil
}

// rangeBuf is DequantizeRange's scratch, pooled: it is called per chunk.
type rangeBuf struct {
	codes []uint8
	out   []float32
}

var rangeScratch = sync.Pool{New: func() any { return &rangeBuf{} }}
