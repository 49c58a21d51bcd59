package wpatch

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"

	"github.com/klauspost/compress/zstd"

	"github.com/weightops/weightops/weights"
)

// sparseStream reads a sparse payload's entries in index order, a chunk
// of the tensor at a time, so patch apply holds two decoders' windows per
// patch, not the entries. The payload is the entry count, the index gaps,
// then the values: one decoder walks the gaps, the other, which first
// skips the gaps, the values, and sees every byte, so it checks length
// and checksum once the last entry is read.
type sparseStream struct {
	p  *Patch
	t  Entry
	dt weights.DType
	n  int64
	ix *zstd.Decoder
	vx *zstd.Decoder
	// ir reads the gaps; vr the values, through vc (length and CRC).
	ir   *bufio.Reader
	vr   *bufio.Reader
	vc   *crcReader
	read int64 // entries consumed
	last int64 // index of the last entry consumed
	pend bool  // an entry's index was read (next) but not yet consumed
	next int64
	pos  int64 // elements asked for so far
	idx  []int64
	vals []float32
	buf  []byte
}

type crcReader struct {
	r   io.Reader
	crc uint32
	n   int64
}

func (c *crcReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.crc = crc32.Update(c.crc, crc32.IEEETable, b[:n])
	c.n += int64(n)
	return n, err
}

// sparse opens entry t, of n elements, for reading in order.
func (p *Patch) sparse(t Entry, n int64) (*sparseStream, error) {
	dt := weights.F32
	if t.Values == "f16" {
		dt = weights.F16
	}
	if t.Elements() != n || t.NNZ < 0 || t.NNZ > n {
		return nil, fmt.Errorf("%s: tensor %q: %d entries for %d elements", p.Path, t.Name, t.NNZ, n)
	}
	s := &sparseStream{p: p, t: t, dt: dt, n: n}
	var err error
	for _, d := range []**zstd.Decoder{&s.ix, &s.vx} {
		if *d, err = zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(frameWindow)); err != nil {
			s.close()
			return nil, err
		}
	}
	if err := s.rewind(); err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

func (s *sparseStream) fail(format string, a ...any) error {
	return fmt.Errorf("%s: tensor %q: %s", s.p.Path, s.t.Name, fmt.Sprintf(format, a...))
}

// rewind starts both readers again: the gaps after the count, the values
// after the count and every gap.
func (s *sparseStream) rewind() error {
	sec := func() io.Reader { return io.NewSectionReader(s.p.f, s.t.Offset, s.t.Length) }
	if err := s.ix.Reset(sec()); err != nil {
		return s.fail("corrupted payload: %v", err)
	}
	if err := s.vx.Reset(sec()); err != nil {
		return s.fail("corrupted payload: %v", err)
	}
	s.vc = &crcReader{r: s.vx}
	if s.ir == nil {
		s.ir, s.vr = bufio.NewReaderSize(s.ix, 1<<16), bufio.NewReaderSize(s.vc, 1<<16)
	} else {
		s.ir.Reset(s.ix)
		s.vr.Reset(s.vc)
	}
	s.read, s.last, s.pend, s.pos = 0, -1, false, 0
	for _, r := range []*bufio.Reader{s.ir, s.vr} {
		cnt, err := binary.ReadUvarint(r)
		if err != nil || int64(cnt) != s.t.NNZ {
			return s.fail("bad sparse count")
		}
	}
	if err := skipUvarints(s.vr, s.t.NNZ); err != nil {
		return s.fail("bad sparse index")
	}
	if s.t.NNZ == 0 {
		return s.end()
	}
	return nil
}

// peek reads the next entry's index, checking it is in range and after
// the last.
func (s *sparseStream) peek() error {
	gap, err := readUvarint(s.ir)
	switch {
	case err != nil || gap > uint64(s.n):
		return s.fail("bad sparse index")
	case s.read > 0 && gap == 0:
		return s.fail("repeated sparse index")
	}
	at := max(s.last, 0) + int64(gap)
	if at >= s.n {
		return s.fail("sparse index %d beyond %d elements", at, s.n)
	}
	s.next, s.pend = at, true
	return nil
}

// scan is peek and consume in a loop over the buffered bytes, as long as
// a whole varint is surely buffered: the indices below hi are appended to
// idx, the first at or above it is left pending, with peek's checks and
// errors (a per-entry peek through bufio was a quarter of patch apply's
// CPU). The caller falls back to peek near the end of the buffer.
func (s *sparseStream) scan(hi int64) error {
	buf, _ := s.ir.Peek(s.ir.Buffered())
	p := 0
	defer func() { _, _ = s.ir.Discard(p) }()
	for p+binary.MaxVarintLen64 <= len(buf) && s.read < s.t.NNZ {
		var gap uint64
		if c := buf[p]; c < 0x80 {
			gap = uint64(c)
			p++
		} else {
			v, n := binary.Uvarint(buf[p:])
			if n <= 0 {
				return s.fail("bad sparse index")
			}
			gap = v
			p += n
		}
		switch {
		case gap > uint64(s.n):
			return s.fail("bad sparse index")
		case s.read > 0 && gap == 0:
			return s.fail("repeated sparse index")
		}
		at := max(s.last, 0) + int64(gap)
		if at >= s.n {
			return s.fail("sparse index %d beyond %d elements", at, s.n)
		}
		if at >= hi {
			s.next, s.pend = at, true
			return nil
		}
		s.idx = append(s.idx, at)
		s.last = at
		s.read++
	}
	return nil
}

// at returns the entries with indices in [lo, hi) (valid until the next
// call): the next ones when lo is where the last call ended.
func (s *sparseStream) at(lo, hi int64) ([]int64, []float32, error) {
	if lo < s.pos {
		if err := s.rewind(); err != nil {
			return nil, nil, err
		}
	}
	s.pos = hi
	// The indices first, then their values in one read.
	s.idx = s.idx[:0]
	for s.read < s.t.NNZ {
		if !s.pend && s.ir.Buffered() >= binary.MaxVarintLen64 {
			if err := s.scan(hi); err != nil {
				return nil, nil, err
			}
			continue
		}
		if !s.pend {
			if err := s.peek(); err != nil {
				return nil, nil, err
			}
		}
		if s.next >= hi {
			break
		}
		s.idx = append(s.idx, s.next)
		s.last, s.pend = s.next, false
		s.read++
	}
	m, es := len(s.idx), s.dt.Size()
	if cap(s.vals) < m {
		s.vals, s.buf = make([]float32, m), make([]byte, m*es)
	}
	b, vals := s.buf[:m*es], s.vals[:m]
	if _, err := io.ReadFull(s.vr, b); err != nil {
		return nil, nil, s.fail("corrupted payload: %v", err)
	}
	_ = weights.DecodeFloat32(s.dt, b, vals)
	for _, x := range vals {
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			return nil, nil, s.fail("holds NaN or Inf values; a patch must be finite")
		}
	}
	if s.read == s.t.NNZ && m > 0 {
		if err := s.end(); err != nil {
			return nil, nil, err
		}
	}
	// Entries before lo (chunks skipped) are read past, not returned.
	k := 0
	for k < m && s.idx[k] < lo {
		k++
	}
	return s.idx[k:], vals[k:], nil
}

// end checks, once every entry is read, that the payload ends there and
// matches its length and checksum.
func (s *sparseStream) end() error {
	var one [1]byte
	if _, err := io.ReadFull(s.vr, one[:]); err != io.EOF || s.vc.n != s.t.RawLength || s.vc.crc != s.t.CRC32 {
		return s.fail("payload checksum mismatch (corrupted)")
	}
	return nil
}

func (s *sparseStream) close() {
	for _, d := range []*zstd.Decoder{s.ix, s.vx} {
		if d != nil {
			d.Close()
		}
	}
}

// readUvarint is binary.ReadUvarint on r's buffered bytes when they hold
// the whole varint (a byte at a time through io.ByteReader cost more than
// the rest of patch apply's index walk).
func readUvarint(r *bufio.Reader) (uint64, error) {
	b, _ := r.Peek(binary.MaxVarintLen64)
	v, n := binary.Uvarint(b)
	switch {
	case n > 0:
		_, _ = r.Discard(n)
		return v, nil
	case n < 0:
		return 0, errVarintOverflow
	}
	return binary.ReadUvarint(r) // short at the end: its error
}

var errVarintOverflow = errors.New("varint overflows a 64-bit integer")

// skipUvarints reads past n varints from r, scanning its buffered bytes:
// a varint ends at each byte below 0x80. It fails where
// binary.ReadUvarint would: a varint longer than ten bytes, a tenth byte
// above 1, or the end of the stream first.
func skipUvarints(r *bufio.Reader, n int64) error {
	run := 0 // continuation bytes of the varint being read
	for n > 0 {
		if _, err := r.Peek(1); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
		b, _ := r.Peek(r.Buffered())
		p := 0
		for ; p < len(b) && n > 0; p++ {
			c := b[p]
			if c < 0x80 {
				if run == binary.MaxVarintLen64-1 && c > 1 {
					return errVarintOverflow
				}
				run = 0
				n--
				continue
			}
			if run++; run == binary.MaxVarintLen64 {
				return errVarintOverflow
			}
		}
		_, _ = r.Discard(p)
	}
	return nil
}
