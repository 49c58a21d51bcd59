package wpatch

import (
	"bytes"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"os"
	"slices"

	"github.com/weightops/weightops/quantize"
	"github.com/weightops/weightops/weights"
)

// quantStream is a dense tensor of a quantized patch arriving a chunk at a
// time, in order: a quantize.Encoder quantizes each chunk, its packed codes
// go to a spool beside the output and its error is summed in element order;
// at the last chunk the encoding (header and scales, the codes read back,
// the checksum) is compressed and appended as the tensor's payload. The
// entry, the bytes and the error equal Add's for the same values; the
// writer holds a chunk, the scales and a compressor's window.
type quantStream struct {
	w     *Writer
	name  string
	shape []int64
	dtype weights.DType
	n     int64
	got   int64
	enc   *quantize.Encoder
	spool *os.File
	codes []byte
	qe    QuantError
}

// beginQuantized starts a dense quantized tensor of n elements arriving in
// chunks (see quantStream).
// enc must be a fresh encoder for the tensor, with the writer's codec.
func (w *Writer) beginQuantized(name string, shape []int64, dtype weights.DType, enc *quantize.Encoder) (*quantStream, error) {
	if w.enc.Values != "q" {
		return nil, fmt.Errorf("%s: tensor %q: the patch does not store quantized values", w.path, name)
	}
	n, err := weights.TensorInfo{Shape: shape, DType: weights.F32}.NumElements()
	if err != nil {
		return nil, fmt.Errorf("%s: tensor %q: %w", w.path, name, err)
	}
	spool, err := weights.CreateTemp(w.path)
	if err != nil {
		return nil, err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.claim(name); err != nil {
		weights.DiscardTemp(spool)
		return nil, err
	}
	q := &quantStream{w: w, name: name, shape: slices.Clone(shape), dtype: dtype, n: n, enc: enc, spool: spool, qe: QuantError{N: n}}
	if w.quants == nil {
		w.quants = map[string]*quantStream{}
	}
	w.quants[name] = q
	return q, nil
}

// write quantizes the next chunk of values and writes them back as the
// patch will give them (dequantized) into deq.
func (q *quantStream) write(vals, deq []float32) error {
	for _, v := range vals {
		if math.Float32bits(v)&0x7f800000 == 0x7f800000 { // NaN or ±Inf
			return q.fail(fmt.Errorf("%s: tensor %q: patch values must be finite", q.w.path, q.name))
		}
	}
	var err error
	if q.codes, err = q.enc.Encode(vals, deq, q.codes[:0]); err != nil {
		return q.fail(fmt.Errorf("%s: tensor %q: %w", q.w.path, q.name, err))
	}
	if _, err := q.spool.Write(q.codes); err != nil {
		return q.fail(fmt.Errorf("%s: tensor %q: spool: %w", q.w.path, q.name, err))
	}
	// The same sums, in the same order, as observe's (in locals: a store and
	// reload through q per element cost as much as the sums).
	q.qe.observe(vals, deq)
	q.got += int64(len(vals))
	if q.got < q.n {
		return nil
	}
	if err := q.finish(); err != nil {
		return q.fail(err)
	}
	q.forget()
	return nil
}

// setRange hands a single-group tensor's extremes to its encoder.
func (q *quantStream) setRange(mn, mx float32) error {
	if err := q.enc.SetRange(mn, mx); err != nil {
		return q.fail(fmt.Errorf("%s: tensor %q: %w", q.w.path, q.name, err))
	}
	return nil
}

// finish assembles the payload from the scales and the spooled codes.
func (q *quantStream) finish() error {
	w := q.w
	if _, err := q.spool.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("%s: tensor %q: spool: %w", w.path, q.name, err)
	}
	codes := io.Reader(q.spool)
	pt := Entry{Name: q.name, Shape: q.shape, DType: q.dtype.String(), Values: "q", Encoding: "dense", NNZ: q.n,
		Quant: w.enc.Quant.String(), RawLength: q.enc.Size()}
	var size int64
	var payload io.Reader
	if pt.RawLength <= streamAbove {
		// Small: one single-segment frame, as encode writes it.
		var raw bytes.Buffer
		if _, err := q.enc.Finish(&raw, codes); err != nil {
			return fmt.Errorf("%s: tensor %q: %w", w.path, q.name, err)
		}
		pt.CRC32 = crc32.ChecksumIEEE(raw.Bytes())
		comp := w.zw.EncodeAll(raw.Bytes(), nil)
		size, payload = int64(len(comp)), bytes.NewReader(comp)
	} else {
		out, err := weights.CreateTemp(w.path)
		if err != nil {
			return err
		}
		defer weights.DiscardTemp(out)
		var n int64
		pt.CRC32, n, err = compressStream(out, func(dst io.Writer) error {
			_, err := q.enc.Finish(dst, codes)
			return err
		})
		if err != nil {
			return fmt.Errorf("%s: tensor %q: %w", w.path, q.name, err)
		}
		if n != pt.RawLength {
			return fmt.Errorf("%s: tensor %q: encoded %d bytes, expected %d", w.path, q.name, n, pt.RawLength)
		}
		if size, err = out.Seek(0, io.SeekCurrent); err != nil {
			return fmt.Errorf("%s: tensor %q: %w", w.path, q.name, err)
		}
		payload = io.NewSectionReader(out, 0, size)
	}
	if err := w.appendPayload(pt, size, payload); err != nil {
		return err
	}
	w.mu.Lock()
	if w.errs == nil {
		w.errs = map[string]QuantError{}
	}
	w.errs[q.name] = q.qe
	w.mu.Unlock()
	return nil
}

// fail discards the tensor's spool after an error and returns it.
func (q *quantStream) fail(err error) error {
	q.forget()
	return err
}

// forget removes the spool and the writer's record of the stream.
func (q *quantStream) forget() {
	q.w.mu.Lock()
	delete(q.w.quants, q.name)
	q.w.mu.Unlock()
	weights.DiscardTemp(q.spool)
}
