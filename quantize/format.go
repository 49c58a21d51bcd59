package quantize

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"

	"github.com/weightops/weightops/gguf"
	"github.com/x448/float16"
)

// Format constants; MarshalBinary documents the layout.
const (
	formatVersion = 1
	fixedHeader   = 20
	trailer       = 4
	maxDims       = 64
)

var (
	magic      = [4]byte{'W', 'O', 'Q', 'Z'}
	castagnoli = crc32.MakeTable(crc32.Castagnoli)
)

// ErrFormat is wrapped by every UnmarshalBinary error about malformed
// input, so callers can tell bad data from bad arguments with errors.Is.
var ErrFormat = errors.New("quantize: malformed quantized tensor")

func formatErr(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrFormat}, args...)...)
}

// Size is the exact length of q's MarshalBinary encoding in bytes: header,
// scales, mins, packed codes and checksum.
func (q *Quantized) Size() int64 {
	return int64(fixedHeader+8*len(q.Shape)+trailer) +
		int64(q.scaleBytes())*int64(len(q.Scales)+len(q.Mins)) + int64(len(q.Codes))
}

// BitsPerElement is the encoded size in bits divided by the element count,
// header included (0 for an empty tensor).
func (q *Quantized) BitsPerElement() float64 {
	if q.N == 0 {
		return 0
	}
	return 8 * float64(q.Size()) / float64(q.N)
}

// head encodes everything before the codes: header, scales and mins.
func (q *Quantized) head() []byte {
	b := make([]byte, 0, q.Size()-int64(len(q.Codes))-trailer)
	b = append(b, magic[:]...)
	b = binary.LittleEndian.AppendUint16(b, formatVersion)
	f16 := byte(0)
	if q.F16Scales {
		f16 = 1
	}
	if q.Scheme == GGML {
		f16 = byte(q.Type)
	}
	b = append(b, byte(q.Bits), byte(q.Scheme), byte(q.Granularity), f16, 0, 0)
	b = binary.LittleEndian.AppendUint32(b, uint32(q.BlockSize))
	b = binary.LittleEndian.AppendUint32(b, uint32(len(q.Shape)))
	for _, d := range q.Shape {
		b = binary.LittleEndian.AppendUint64(b, uint64(d))
	}
	for _, vs := range [][]float32{q.Scales, q.Mins} {
		for _, v := range vs {
			if q.F16Scales {
				b = binary.LittleEndian.AppendUint16(b, float16.Fromfloat32(v).Bits())
			} else {
				b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
			}
		}
	}
	return b
}

// WriteTo writes q's binary encoding (see MarshalBinary) to w without
// copying the codes.
func (q *Quantized) WriteTo(w io.Writer) (int64, error) {
	if err := q.check(); err != nil {
		return 0, err
	}
	if len(q.Shape) > maxDims {
		return 0, fmt.Errorf("quantize: %d dimensions, the format allows %d", len(q.Shape), maxDims)
	}
	head := q.head()
	crc := crc32.Update(crc32.Update(0, castagnoli, head), castagnoli, q.Codes)
	var total int64
	for _, b := range [][]byte{head, q.Codes, binary.LittleEndian.AppendUint32(nil, crc)} {
		n, err := w.Write(b)
		total += int64(n)
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

// MarshalBinary encodes q in this versioned layout, all little-endian;
// equal tensors encode to equal bytes:
//
//	offset  size       field
//	0       4          magic "WOQZ"
//	4       2          format version, uint16 = 1
//	6       1          bits k, 1..8
//	7       1          scheme: 0 asymmetric, 1 symmetric, 2 ggml blocks
//	8       1          granularity: 0 tensor, 1 channel, 2 block
//	9       1          scale format: 0 float32, 1 F16; for the ggml
//	                   scheme, the ggml type id (8 Q8_0, 2 Q4_0, 12 Q4_K…)
//	10      2          reserved, zero
//	12      4          block size, uint32 (0 unless granularity is block)
//	16      4          ndim, uint32, at most 64
//	20      8·ndim     dimensions, int64 each, ≥ 0
//	        G·w        scales, w = 4 (float32 bits) or 2 (F16 bits), G groups
//	        G·w        mins, asymmetric only
//	        ⌈N·k/8⌉    packed codes, unused high bits of the last byte zero;
//	                   for the ggml scheme, ⌈N/B⌉ ggml blocks of the type
//	                   (B its block size, the last block zero-padded) and
//	                   no scales or mins
//	end−4   4          CRC-32C (Castagnoli) of every preceding byte
//
// G follows from the shape and config (see Granularity), so every length is
// implied by the header and the reader accepts only the exact total.
func (q *Quantized) MarshalBinary() ([]byte, error) {
	var buf bytes.Buffer
	buf.Grow(int(q.Size()))
	if _, err := q.WriteTo(&buf); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// UnmarshalBinary decodes MarshalBinary's output into q, copying what it
// keeps. It validates before allocating, so it never allocates more than
// len(data) implies; it rejects unknown versions, any length other than
// the one the header implies, non-canonical fields, non-finite scales,
// out-of-range codes and a checksum mismatch. Errors wrap ErrFormat.
func (q *Quantized) UnmarshalBinary(data []byte) error {
	if len(data) < fixedHeader+trailer {
		return formatErr("%d bytes, shorter than the %d-byte header and checksum", len(data), fixedHeader+trailer)
	}
	le := binary.LittleEndian
	if [4]byte(data[:4]) != magic {
		return formatErr("bad magic %q, want %q", data[:4], magic[:])
	}
	if v := le.Uint16(data[4:]); v != formatVersion {
		return formatErr("unsupported format version %d (this build reads version %d)", v, formatVersion)
	}
	if data[10] != 0 || data[11] != 0 {
		return formatErr("reserved header bytes are not zero")
	}
	if data[9] > 1 && Scheme(data[7]) != GGML {
		return formatErr("unknown scale format %d", data[9])
	}
	block := le.Uint32(data[12:])
	if block > MaxBlockSize {
		return formatErr("block size %d exceeds %d", block, MaxBlockSize)
	}
	cfg := Config{
		Bits:        int(data[6]),
		Scheme:      Scheme(data[7]),
		Granularity: Granularity(data[8]),
		BlockSize:   int(block),
		F16Scales:   data[9] == 1,
	}
	if cfg.Scheme == GGML {
		cfg.F16Scales, cfg.Type = false, gguf.Type(data[9])
	}
	if err := cfg.Validate(); err != nil {
		return formatErr("%v", err)
	}
	if cfg != cfg.canonical() {
		return formatErr("block size %d with %s granularity", block, cfg.Granularity)
	}
	ndim := le.Uint32(data[16:])
	if ndim > maxDims {
		return formatErr("%d dimensions, at most %d allowed", ndim, maxDims)
	}
	rest := len(data) - fixedHeader - trailer
	if int(ndim) > rest/8 {
		return formatErr("%d dimensions need %d bytes, only %d follow the header", ndim, 8*ndim, rest)
	}
	shape := make([]int64, ndim)
	for i := range shape {
		shape[i] = int64(le.Uint64(data[fixedHeader+8*i:]))
		if shape[i] < 0 {
			return formatErr("negative dimension %d", shape[i])
		}
	}
	off := fixedHeader + 8*int(ndim)
	rest -= 8 * int(ndim)
	l, err := cfg.layout(shape)
	if err != nil {
		return formatErr("%v", err)
	}
	if cfg.Scheme == GGML {
		return q.unmarshalGGML(cfg, shape, l.n, data, off)
	}
	per := cfg.scaleBytes() * cfg.valuesPerGroup()
	codeLen := packedLen(l.n, cfg.Bits)
	if l.groups > rest/per || codeLen > rest || l.groups*per+codeLen != rest {
		return formatErr("shape %v with %s needs %d groups and %d code bytes; %d bytes follow the shape",
			shape, cfg, l.groups, codeLen, rest)
	}
	got := Quantized{Config: cfg, Shape: shape, N: l.n, Scales: make([]float32, l.groups)}
	if cfg.Scheme == Asymmetric {
		got.Mins = make([]float32, l.groups)
	}
	for _, vs := range [][]float32{got.Scales, got.Mins} {
		for i := range vs {
			if cfg.F16Scales {
				vs[i] = float16.Frombits(le.Uint16(data[off:])).Float32()
				off += 2
			} else {
				vs[i] = math.Float32frombits(le.Uint32(data[off:]))
				off += 4
			}
		}
	}
	got.Codes = make([]byte, codeLen)
	copy(got.Codes, data[off:])
	if err := got.check(); err != nil {
		return formatErr("%v", err)
	}
	if !paddingClear(got.Codes, l.n, cfg.Bits) {
		return formatErr("padding bits after the last code are not zero")
	}
	if cfg.Scheme == Symmetric || cfg.Scheme == Tanh {
		if i := firstCodeAbove(got.Codes, l.n, cfg.Bits, uint8(2*cfg.levels())); i >= 0 {
			return formatErr("code %d is %d, above the %s maximum %d", i, 1<<cfg.Bits-1, cfg.Scheme, 2*cfg.levels())
		}
	}
	body := data[:len(data)-trailer]
	if want, have := le.Uint32(data[len(body):]), crc32.Checksum(body, castagnoli); want != have {
		return formatErr("checksum mismatch: stored %08x, computed %08x", want, have)
	}
	*q = got
	return nil
}

// unmarshalGGML finishes UnmarshalBinary for the ggml scheme: the blocks
// follow the shape; every one must decode to finite values.
func (q *Quantized) unmarshalGGML(cfg Config, shape []int64, n int, data []byte, off int) error {
	le := binary.LittleEndian
	want := cfg.ggmlBlocks(n) * cfg.blockBytes()
	if rest := len(data) - trailer - off; rest != want {
		return formatErr("shape %v with %s needs %d block bytes; %d bytes follow the shape", shape, cfg, want, rest)
	}
	body := data[:len(data)-trailer]
	if stored, have := le.Uint32(data[len(body):]), crc32.Checksum(body, castagnoli); stored != have {
		return formatErr("checksum mismatch: stored %08x, computed %08x", stored, have)
	}
	got := Quantized{Config: cfg, Shape: shape, N: n, Codes: append([]byte(nil), data[off:len(body)]...)}
	if err := checkGGMLValues(&got); err != nil {
		return formatErr("%v", err)
	}
	*q = got
	return nil
}

// firstCodeAbove returns the index of the first of n packed k-bit codes
// greater than top, or −1.
func firstCodeAbove(packed []byte, n, k int, top uint8) int {
	var buf [unitTarget]uint8
	for lo := 0; lo < n; lo += len(buf) {
		cs := buf[:min(len(buf), n-lo)]
		unpack(cs, packed[lo/8*k:], k)
		for i, c := range cs {
			if c > top {
				return lo + i
			}
		}
	}
	return -1
}
