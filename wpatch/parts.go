package wpatch

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"os"
	"sync"

	"github.com/klauspost/compress/zstd"

	"github.com/weightops/weightops/internal/vec"
	"github.com/weightops/weightops/weights"
)

// frameWindow is the zstd window of a payload compressed as a stream (a
// tensor written in parts, or a large one written whole): what a reader
// that decodes the payload a chunk at a time must keep of its history, so
// what bounds its memory whatever the tensor's size.
const frameWindow = 1 << 22

// streamAbove is the raw payload size above which a tensor written whole
// is compressed as a windowed stream rather than one single-segment frame
// (whose window is the whole payload), and a dense payload so compressed
// is read a chunk at a time. A variable for tests.
var streamAbove int64 = frameWindow

// partChunk is the values re-read at a time from a spool.
const partChunk = 1 << 16

var streamEncoders = sync.Pool{New: func() any {
	zw, _ := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(1), zstd.WithWindowSize(frameWindow))
	return zw
}}

// compressStream compresses what fill writes into dst as one windowed zstd
// frame, and returns the CRC-32 and length of the raw bytes.
func compressStream(dst io.Writer, fill func(w io.Writer) error) (uint32, int64, error) {
	zw := streamEncoders.Get().(*zstd.Encoder)
	defer streamEncoders.Put(zw)
	zw.Reset(dst)
	cw := &crcWriter{w: zw}
	if err := fill(cw); err != nil {
		zw.Reset(nil)
		return 0, 0, err
	}
	if err := zw.Close(); err != nil {
		return 0, 0, err
	}
	return cw.crc, cw.n, nil
}

type crcWriter struct {
	w   io.Writer
	crc uint32
	n   int64
}

func (c *crcWriter) Write(b []byte) (int, error) {
	c.crc = crc32.Update(c.crc, crc32.IEEETable, b)
	c.n += int64(len(b))
	return c.w.Write(b)
}

// part is a tensor arriving in parts (WriteTensorAt). Whether it is
// stored sparse (under a third non-zero) is known only at the end, so its
// values go, raw, into a spool file beside the output in one of two forms
// that each give both encodings, chosen by the first part: every value
// (raw), or the non-zero values and, in a second spool, the varint gaps
// between their indices. At the last part the payload is compressed once
// from the spools — the dense values (the zeros put back), or the count,
// the gaps (computed from a raw spool) and the non-zero values — so the
// writer holds a chunk and a compressor's window, not the tensor, never
// decompresses what it wrote, and spools little of a sparse tensor.
type part struct {
	info weights.TensorInfo
	n    int64 // elements
	got  int64 // bytes received
	nnz  int64
	prev int64 // index of the last non-zero entry (0 before the first)
	vals *os.File
	vw   *bufio.Writer
	gaps *os.File // the gaps spool; nil in raw mode
	gw   *bufio.Writer
	gapN int64 // bytes in gaps
	varb []byte
	nzb  []byte
	raw  bool // vals holds every value, and there are no gaps
}

// WriteTensorAt makes the writer a stream.RangeSink: data is the F32 bytes
// of a declared tensor from byte off on. The parts of a tensor must come
// in order (as a streamed tensor's chunks do), each tensor from one
// goroutine at a time; different tensors may come concurrently.
func (w *Writer) WriteTensorAt(name string, data []byte, off int64) error {
	p, err := w.part(name, off)
	if err != nil {
		return err
	}
	if len(data)%4 != 0 || p.got+int64(len(data)) > 4*p.n {
		return w.failPart(name, p, fmt.Errorf("%s: tensor %q: %d bytes at %d do not fit %d F32 values", w.path, name, len(data), off, p.n))
	}
	if p.got == 0 {
		// Spool as the first part suggests the tensor will be stored:
		// either spool gives either encoding, this one most cheaply.
		p.raw = w.enc.Sparse == "never"
		if w.enc.Sparse == "auto" {
			var nz int
			for _, v := range weights.Float32View(data) {
				if v != 0 {
					nz++
				}
			}
			p.raw = 3*nz >= len(data)/4
		}
	}
	idxp := positions.Get().(*[]uint32)
	defer positions.Put(idxp)
	idx := *idxp
	notFinite := func() error {
		return w.failPart(name, p, fmt.Errorf("%s: tensor %q: patch values must be finite", w.path, name))
	}
	if p.raw {
		if !storedValues(data, idx, func(_ []float32, pos []uint32) { p.nnz += int64(len(pos)) }) {
			return notFinite()
		}
		if _, err := p.vw.Write(data); err != nil {
			return w.failPart(name, p, fmt.Errorf("%s: tensor %q: spool: %w", w.path, name, err))
		}
		p.got += int64(len(data))
		if p.got < 4*p.n {
			return nil
		}
		return w.failPart(name, p, w.finishPart(name, p))
	}
	if p.gaps == nil {
		if p.gaps, err = weights.CreateTemp(w.path); err != nil {
			return w.failPart(name, p, err)
		}
		p.gw = spoolWriters.Get().(*bufio.Writer)
		p.gw.Reset(p.gaps)
	}
	base := p.got / 4
	b, nz := p.varb[:0], p.nzb[:0]
	finite := storedValues(data, idx, func(x []float32, pos []uint32) {
		for _, i := range pos {
			at := base + int64(i)
			b = binary.AppendUvarint(b, uint64(at-p.prev))
			nz = binary.LittleEndian.AppendUint32(nz, math.Float32bits(x[i]))
			p.prev = at
		}
		p.nnz += int64(len(pos))
		base += int64(len(x))
	})
	if !finite {
		return notFinite()
	}
	p.varb, p.nzb = b, nz
	spoolErr := func(err error) error {
		return w.failPart(name, p, fmt.Errorf("%s: tensor %q: spool: %w", w.path, name, err))
	}
	if _, err := p.vw.Write(nz); err != nil {
		return spoolErr(err)
	}
	if _, err := p.gw.Write(b); err != nil {
		return spoolErr(err)
	}
	p.gapN += int64(len(b))
	p.got += int64(len(data))
	if p.got < 4*p.n {
		return nil
	}
	// The tensor is complete: its spools go, whether the payload made it.
	return w.failPart(name, p, w.finishPart(name, p))
}

// part returns the state of a tensor arriving in parts, starting it at
// its first part.
func (w *Writer) part(name string, off int64) (*part, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done {
		return nil, fmt.Errorf("%s: writer closed", w.path) // before anything about the tensor
	}
	if w.enc.Values == "q" {
		return nil, fmt.Errorf("%s: tensor %q: quantized values are written whole", w.path, name)
	}
	if p, ok := w.parts[name]; ok {
		if off != p.got {
			return nil, fmt.Errorf("%s: tensor %q: part at byte %d, expected %d (parts come in order)", w.path, name, off, p.got)
		}
		return p, nil
	}
	info, ok := w.decl[name]
	if !ok {
		return nil, fmt.Errorf("%s: tensor %q not declared", w.path, name)
	}
	if off != 0 && !w.names[name] {
		return nil, fmt.Errorf("%s: tensor %q: first part at byte %d", w.path, name, off)
	}
	n, err := weights.TensorInfo{Shape: info.Shape, DType: weights.F32}.NumElements()
	if err != nil {
		return nil, fmt.Errorf("%s: tensor %q: %w", w.path, name, err)
	}
	if err := w.claim(name); err != nil {
		return nil, err
	}
	p := &part{info: info, n: n}
	if p.vals, err = weights.CreateTemp(w.path); err != nil {
		delete(w.names, name)
		return nil, err
	}
	p.vw = spoolWriters.Get().(*bufio.Writer)
	p.vw.Reset(p.vals)
	if w.parts == nil {
		w.parts = map[string]*part{}
	}
	w.parts[name] = p
	return p, nil
}

// failPart discards a tensor's spools, after an error or once its
// payload is appended, and returns err.
func (w *Writer) failPart(name string, p *part, err error) error {
	w.mu.Lock()
	delete(w.parts, name)
	w.mu.Unlock()
	p.discard()
	return err
}

func (p *part) discard() {
	dropSpool(&p.vals, &p.vw)
	dropSpool(&p.gaps, &p.gw)
}

// dropSpool removes a spool file and returns its buffer to the pool.
func dropSpool(f **os.File, w **bufio.Writer) {
	if *f != nil {
		weights.DiscardTemp(*f)
		(*w).Reset(nil)
		spoolWriters.Put(*w)
		*f, *w = nil, nil
	}
}

// spoolWriters buffer writes to spools: reused, since a patch's hundreds
// of tensors would otherwise each leave a megabyte for the collector.
// nonZeroFinite is the pair of bands (lows, highs) vec.SplitBands finds a
// part's stored values with: magnitude keys 1 to the largest finite
// float32's, so the positions it gives are the non-zero values (−0 is a
// zero) and the keys above the band are the infinities and NaNs. The
// second band holds no key.
var nonZeroFinite = [2][2]uint32{{1, math.MaxUint32}, {0x7f7fffff, math.MaxUint32}}

// storedValues calls f on data's float32 values a piece of len(idx) at a
// time, with the positions of the piece's non-zero values; it reports
// false, at once, for a piece holding an infinity or a NaN.
func storedValues(data []byte, idx []uint32, f func(x []float32, pos []uint32)) bool {
	for vals := weights.Float32View(data); len(vals) > 0; {
		x := vals[:min(len(vals), len(idx))]
		vals = vals[len(x):]
		bad, m := vec.SplitBands(x, nonZeroFinite[0], nonZeroFinite[1], idx)
		if bad[0] > 0 {
			return false
		}
		f(x, idx[:m])
	}
	return true
}

// positions is the scratch of vec.SplitBands' positions, a chunk's worth.
var positions = sync.Pool{New: func() any { b := make([]uint32, 1<<16); return &b }}

var spoolWriters = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 1<<20) }}

// copyBuf is the scratch of copyValues, writeGaps and densify: a chunk's
// raw values, float32 values and encoded output.
type copyBuf struct {
	raw  []byte
	vals []float32
	out  []byte
}

var copyBufs = sync.Pool{New: func() any {
	return &copyBuf{make([]byte, 4*partChunk), make([]float32, partChunk), make([]byte, binary.MaxVarintLen64*partChunk)}
}}

// finishPart compresses a complete tensor's payload from its spools and
// appends it to the patch.
func (w *Writer) finishPart(name string, p *part) error {
	spoolErr := func(err error) error { return fmt.Errorf("%s: tensor %q: spool: %w", w.path, name, err) }
	if err := p.vw.Flush(); err != nil {
		return spoolErr(err)
	}
	sparse := w.sparse(p.nnz, p.n)
	pt := Entry{Name: name, Shape: append([]int64{}, p.info.Shape...), DType: p.info.DType.String(), Values: w.enc.Values,
		Encoding: "dense", NNZ: p.n}
	if sparse {
		pt.Encoding, pt.NNZ = "sparse", p.nnz
	}
	es := int64(4)
	if w.enc.Values == "f16" {
		es = 2
	}
	out, err := weights.CreateTemp(w.path)
	if err != nil {
		return err
	}
	defer weights.DiscardTemp(out)
	if p.gw != nil {
		if err := p.gw.Flush(); err != nil {
			return spoolErr(err)
		}
	}
	pt.CRC32, pt.RawLength, err = compressStream(out, func(dst io.Writer) error {
		raw := func() io.Reader { return io.NewSectionReader(p.vals, 0, 4*p.n) }
		if sparse {
			if _, err := dst.Write(binary.AppendUvarint(nil, uint64(p.nnz))); err != nil {
				return err
			}
		}
		switch {
		case p.raw && !sparse:
			return copyValues(raw(), p.n, false, es, dst)
		case p.raw: // the gaps from the values, then the non-zero values
			if err := writeGaps(raw(), p.n, dst); err != nil {
				return err
			}
			return copyValues(raw(), p.n, true, es, dst)
		case sparse:
			if _, err := io.Copy(dst, io.NewSectionReader(p.gaps, 0, p.gapN)); err != nil {
				return err
			}
			return copyValues(io.NewSectionReader(p.vals, 0, 4*p.nnz), p.nnz, false, es, dst)
		}
		// Dense from the entries: the zeros put back between them.
		gaps := bufio.NewReaderSize(io.NewSectionReader(p.gaps, 0, p.gapN), 1<<16)
		vals := bufio.NewReaderSize(io.NewSectionReader(p.vals, 0, 4*p.nnz), 1<<16)
		return densify(vals, gaps, p.n, es, dst)
	})
	if err != nil {
		return fmt.Errorf("%s: tensor %q: %w", w.path, name, err)
	}
	size, err := out.Seek(0, io.SeekCurrent)
	if err != nil {
		return fmt.Errorf("%s: tensor %q: %w", w.path, name, err)
	}
	return w.appendPayload(pt, size, io.NewSectionReader(out, 0, size))
}

// copyValues writes the n float32 values read from src as es-byte values
// (F32 or F16), only the non-zero ones with nonzero.
func copyValues(src io.Reader, n int64, nonzero bool, es int64, dst io.Writer) error {
	cb := copyBufs.Get().(*copyBuf)
	defer copyBufs.Put(cb)
	dt := weights.F32
	if es == 2 {
		dt = weights.F16
	}
	for at := int64(0); at < n; at += partChunk {
		m := min(partChunk, n-at)
		if _, err := io.ReadFull(src, cb.raw[:4*m]); err != nil {
			return fmt.Errorf("spool: %w", err)
		}
		v := weights.Float32View(cb.raw[:4*m])
		if nonzero {
			k := cb.vals[:0]
			for _, x := range v {
				if x != 0 {
					k = append(k, x)
				}
			}
			v = k
		}
		b := cb.out[:es*int64(len(v))]
		_ = weights.EncodeFloat32(dt, v, b)
		if _, err := dst.Write(b); err != nil {
			return err
		}
	}
	return nil
}

// writeGaps writes the varint index gaps of the non-zero values among the
// n float32 values read from src.
func writeGaps(src io.Reader, n int64, dst io.Writer) error {
	cb := copyBufs.Get().(*copyBuf)
	defer copyBufs.Put(cb)
	prev := int64(0)
	for at := int64(0); at < n; at += partChunk {
		m := min(partChunk, n-at)
		if _, err := io.ReadFull(src, cb.raw[:4*m]); err != nil {
			return fmt.Errorf("spool: %w", err)
		}
		b := cb.out[:0]
		for k, x := range weights.Float32View(cb.raw[:4*m]) {
			if x != 0 {
				b = binary.AppendUvarint(b, uint64(at+int64(k)-prev))
				prev = at + int64(k)
			}
		}
		cb.out = b[:cap(b)]
		if _, err := dst.Write(b); err != nil {
			return err
		}
	}
	return nil
}

// densify writes n es-byte values: the float32 entries read from vals at
// the indices the varint gaps give, zeros between.
func densify(vals, gaps *bufio.Reader, n int64, es int64, dst io.Writer) error {
	cb := copyBufs.Get().(*copyBuf)
	defer copyBufs.Put(cb)
	dt := weights.F32
	if es == 2 {
		dt = weights.F16
	}
	next, have := int64(-1), false // the next entry's index, once read
	idx := make([]int64, 0, partChunk)
	for at := int64(0); at < n; at += partChunk {
		m := min(partChunk, n-at)
		// This chunk's indices, then their values in one read.
		idx = idx[:0]
		for {
			if !have {
				g, err := binary.ReadUvarint(gaps)
				if err == io.EOF {
					break
				}
				if err != nil {
					return fmt.Errorf("spool: %w", err)
				}
				next, have = max(next, 0)+int64(g), true
			}
			if next >= at+m {
				break
			}
			idx, have = append(idx, next), false
		}
		if _, err := io.ReadFull(vals, cb.raw[:4*len(idx)]); err != nil {
			return fmt.Errorf("spool: %w", err)
		}
		v := cb.vals[:m]
		clear(v)
		for k, x := range weights.Float32View(cb.raw[:4*len(idx)]) {
			v[idx[k]-at] = x
		}
		b := cb.out[:es*m]
		_ = weights.EncodeFloat32(dt, v, b)
		if _, err := dst.Write(b); err != nil {
			return err
		}
	}
	return nil
}

// appendPayload reserves room for a payload of size bytes, copies it in
// and lists the tensor.
func (w *Writer) appendPayload(pt Entry, size int64, payload io.Reader) error {
	w.mu.Lock()
	if w.done {
		w.mu.Unlock()
		return fmt.Errorf("%s: writer closed", w.path)
	}
	pt.Offset, pt.Length = w.at, size
	w.at += size
	w.mu.Unlock()
	if _, err := io.Copy(io.NewOffsetWriter(w.f, pt.Offset), payload); err != nil {
		return fmt.Errorf("%s: %w", w.path, err)
	}
	w.mu.Lock()
	w.hdr.Tensors = append(w.hdr.Tensors, pt)
	w.mu.Unlock()
	return nil
}

// abortParts discards the spools of tensors still arriving.
func (w *Writer) abortParts() {
	for name, p := range w.parts {
		p.discard()
		delete(w.parts, name)
	}
	for name, q := range w.quants {
		weights.DiscardTemp(q.spool)
		delete(w.quants, name)
	}
}

// valueStream decodes a dense payload of f32 or f16 values a chunk at a
// time, in order, checking its length and checksum when the last value is
// read: what lets patch apply hold a compressor's window per patch instead
// of the tensor's values. Only a payload compressed with a window up to
// frameWindow streams (see streamable); older patches' large payloads are
// single frames whose window is the whole payload, and are loaded whole.
type valueStream struct {
	p    *Patch
	t    Entry
	dt   weights.DType
	n    int64
	zr   *zstd.Decoder
	pos  int64 // values decoded so far
	crc  uint32
	buf  []byte
	vals []float32
}

// streamable reports whether entry t is decoded a chunk at a time: a
// dense one by a valueStream, a sparse one by a sparseStream.
func (p *Patch) streamable(t Entry) bool {
	i, ok := p.index[t.Name]
	return ok && p.windowed[i] && t.RawLength > streamAbove
}

// smallWindow reports whether entry t is f32 or f16 values, dense or
// sparse, compressed with a window up to frameWindow.
func (p *Patch) smallWindow(t Entry) bool {
	if (t.Encoding != "dense" && t.Encoding != "sparse") || (t.Values != "f32" && t.Values != "f16") {
		return false
	}
	hb := make([]byte, min(t.Length, zstd.HeaderMaxSize))
	if _, err := p.f.ReadAt(hb, t.Offset); err != nil {
		return false
	}
	var h zstd.Header
	if h.Decode(hb) != nil || h.Skippable {
		return false
	}
	w := h.WindowSize
	if h.SingleSegment {
		// A small stream closed within its first block: the window is
		// the content.
		w = h.FrameContentSize
	}
	return w > 0 && w <= frameWindow
}

// values opens entry t, of n elements, for reading in order.
func (p *Patch) values(t Entry, n int64) (*valueStream, error) {
	dt, es := weights.F32, int64(4)
	if t.Values == "f16" {
		dt, es = weights.F16, 2
	}
	if t.Elements() != n || t.NNZ != n || t.RawLength != es*n {
		return nil, fmt.Errorf("%s: tensor %q: payload of %d bytes for %d values, %d expected", p.Path, t.Name, t.RawLength, t.NNZ, n)
	}
	zr, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(frameWindow))
	if err != nil {
		return nil, err
	}
	v := &valueStream{p: p, t: t, dt: dt, n: n, zr: zr}
	if err := v.rewind(); err != nil {
		zr.Close()
		return nil, err
	}
	return v, nil
}

func (v *valueStream) rewind() error {
	v.pos, v.crc = 0, 0
	return v.zr.Reset(io.NewSectionReader(v.p.f, v.t.Offset, v.t.Length))
}

func (v *valueStream) fail(format string, a ...any) error {
	return fmt.Errorf("%s: tensor %q: %s", v.p.Path, v.t.Name, fmt.Sprintf(format, a...))
}

// at returns values [s, e) (valid until the next call): the next ones when
// s is where the last call ended, as a streamed tensor's chunks ask.
func (v *valueStream) at(s, e int64) ([]float32, error) {
	if s < v.pos {
		if err := v.rewind(); err != nil {
			return nil, v.fail("corrupted payload: %v", err)
		}
	}
	for v.pos < s { // skip
		if _, err := v.next(min(s-v.pos, partChunk)); err != nil {
			return nil, err
		}
	}
	return v.next(e - s)
}

func (v *valueStream) next(m int64) ([]float32, error) {
	es := int64(v.dt.Size())
	if cap(v.vals) < int(m) {
		v.buf, v.vals = make([]byte, es*m), make([]float32, m)
	}
	b, vals := v.buf[:es*m], v.vals[:m]
	if _, err := io.ReadFull(v.zr, b); err != nil {
		return nil, v.fail("corrupted payload: %v", err)
	}
	v.crc = crc32.Update(v.crc, crc32.IEEETable, b)
	v.pos += m
	if v.pos == v.n {
		var one [1]byte
		if _, err := io.ReadFull(v.zr, one[:]); err != io.EOF || v.crc != v.t.CRC32 {
			return nil, v.fail("payload checksum mismatch (corrupted)")
		}
	}
	_ = weights.DecodeFloat32(v.dt, b, vals)
	for _, x := range vals {
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			return nil, v.fail("holds NaN or Inf values; a patch must be finite")
		}
	}
	return vals, nil
}

func (v *valueStream) close() { v.zr.Close() }
