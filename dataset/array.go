package dataset

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"

	"github.com/weightops/weightops/weights"
)

// Kind is an array's element type.
type Kind uint8

// The element types IDX and .npy files hold here.
const (
	Uint8 Kind = iota + 1
	Int8
	Int16
	Int32
	Int64
	Float32
	Float64
)

var kindNames = map[Kind]string{Uint8: "uint8", Int8: "int8", Int16: "int16", Int32: "int32", Int64: "int64", Float32: "float32", Float64: "float64"}

var kindSizes = map[Kind]int{Uint8: 1, Int8: 1, Int16: 2, Int32: 4, Int64: 8, Float32: 4, Float64: 8}

// String names the kind as NumPy does ("uint8", "float32", ...).
func (k Kind) String() string {
	if s, ok := kindNames[k]; ok {
		return s
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// Size is the number of bytes of one element.
func (k Kind) Size() int { return kindSizes[k] }

// Array is an n-dimensional array read from an IDX or .npy file: its shape,
// element kind and raw bytes in the file's byte order.
type Array struct {
	// Shape is the array's shape, the first dimension usually samples.
	Shape []int
	// Kind is the element type.
	Kind Kind
	// Order is the byte order of Data (big-endian for IDX).
	Order binary.ByteOrder
	// Data holds the elements, C order.
	Data []byte
}

// Len is the number of elements.
func (a *Array) Len() int { return len(a.Data) / a.Kind.Size() }

// At returns element i as float64.
func (a *Array) At(i int) float64 {
	b := a.Data[i*a.Kind.Size():]
	switch a.Kind {
	case Uint8:
		return float64(b[0])
	case Int8:
		return float64(int8(b[0]))
	case Int16:
		return float64(int16(a.Order.Uint16(b)))
	case Int32:
		return float64(int32(a.Order.Uint32(b)))
	case Int64:
		return float64(int64(a.Order.Uint64(b)))
	case Float32:
		return float64(math.Float32frombits(a.Order.Uint32(b)))
	case Float64:
		return math.Float64frombits(a.Order.Uint64(b))
	}
	return math.NaN()
}

// Float32s converts every element to float32. With scaleUint8, uint8 data
// is divided by 255 (pixels to [0, 1], as torchvision's ToTensor does).
func (a *Array) Float32s(scaleUint8 bool) []float32 {
	out := make([]float32, a.Len())
	if a.Kind == Uint8 {
		for i, b := range a.Data {
			out[i] = float32(b)
			if scaleUint8 {
				out[i] /= 255 // divided, as torch's ToTensor does, not multiplied by 1/255
			}
		}
		return out
	}
	for i := range out {
		out[i] = float32(a.At(i))
	}
	return out
}

// Labels converts the elements to class labels: each must be a
// non-negative integer below 2^31.
func (a *Array) Labels() ([]int, error) {
	out := make([]int, a.Len())
	for i := range out {
		v := a.At(i)
		if v != math.Trunc(v) || v < 0 || v >= 1<<31 {
			return nil, fmt.Errorf("element %d = %v is not a class label (a non-negative integer)", i, v)
		}
		out[i] = int(v)
	}
	return out, nil
}

// ReadArray reads an IDX or .npy file, gzipped or not; the format is
// sniffed from the bytes, not the name.
func ReadArray(path string) (*Array, error) {
	f, err := weights.OpenFile(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	a, err := readArray(f, st.Size())
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return a, nil
}

// readArray parses an array from r. size is the byte count of r, or -1 when
// r is compressed and the size of its content is unknown.
func readArray(r io.Reader, size int64) (*Array, error) {
	br := bufio.NewReader(r)
	magic, _ := br.Peek(6)
	switch {
	case len(magic) >= 2 && magic[0] == 0x1f && magic[1] == 0x8b:
		if size < 0 {
			return nil, errors.New("gzip inside gzip")
		}
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("gzip: %w", err)
		}
		return readArray(zr, -1)
	case len(magic) >= 6 && string(magic) == "\x93NUMPY":
		return readNPY(br, size)
	case len(magic) >= 4 && magic[0] == 0 && magic[1] == 0:
		return readIDX(br, size)
	case len(magic) == 0:
		return nil, errors.New("empty file")
	}
	return nil, errors.New("not an IDX, .npy or gzip file (unknown magic bytes)")
}

// readBody reads exactly n bytes of array data. With a known remaining
// size the two are compared first, so a lying header costs no memory;
// with an unknown one (gzip) the buffer grows only as data arrives.
func readBody(r io.Reader, n int64, remaining int64) ([]byte, error) {
	if remaining >= 0 {
		if remaining != n {
			return nil, fmt.Errorf("header implies %d bytes of data, file has %d", n, remaining)
		}
		buf := make([]byte, n)
		if _, err := io.ReadFull(r, buf); err != nil {
			return nil, fmt.Errorf("reading data: %w", err)
		}
		return buf, nil
	}
	buf, err := io.ReadAll(io.LimitReader(r, n+1))
	if err != nil {
		return nil, fmt.Errorf("reading data: %w", err)
	}
	if int64(len(buf)) != n {
		if int64(len(buf)) > n {
			return nil, fmt.Errorf("header implies %d bytes of data, file has more", n)
		}
		return nil, fmt.Errorf("header implies %d bytes of data, file has %d", n, len(buf))
	}
	return buf, nil
}

// byteCount is prod(shape)×elem, or an error on overflow (limit 2^40 bytes).
func byteCount(shape []int, elem int) (int64, error) {
	n := uint64(elem)
	for _, d := range shape {
		if d < 0 {
			return 0, fmt.Errorf("negative dimension in shape %v", shape)
		}
		hi, lo := bits.Mul64(n, uint64(d))
		if hi != 0 || lo > 1<<40 {
			return 0, fmt.Errorf("shape %v is too large", shape)
		}
		n = lo
	}
	return int64(n), nil
}

var idxKinds = map[byte]Kind{0x08: Uint8, 0x09: Int8, 0x0B: Int16, 0x0C: Int32, 0x0D: Float32, 0x0E: Float64}

// readIDX parses an IDX file: two zero bytes, a type byte, the number of
// dimensions, that many big-endian uint32 sizes, then big-endian data.
func readIDX(r io.Reader, size int64) (*Array, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, fmt.Errorf("IDX header: %w", noEOF(err))
	}
	kind, ok := idxKinds[hdr[2]]
	if !ok {
		return nil, fmt.Errorf("IDX: unknown element type 0x%02x", hdr[2])
	}
	nd := int(hdr[3])
	if nd == 0 {
		return nil, errors.New("IDX: zero dimensions")
	}
	dims := make([]byte, 4*nd)
	if _, err := io.ReadFull(r, dims); err != nil {
		return nil, fmt.Errorf("IDX header: %w", noEOF(err))
	}
	shape := make([]int, nd)
	for i := range shape {
		d := binary.BigEndian.Uint32(dims[4*i:])
		if d > 1<<31-1 {
			return nil, fmt.Errorf("IDX: dimension %d is %d", i, d)
		}
		shape[i] = int(d)
	}
	n, err := byteCount(shape, kind.Size())
	if err != nil {
		return nil, fmt.Errorf("IDX: %w", err)
	}
	rem := int64(-1)
	if size >= 0 {
		rem = size - 4 - int64(4*nd)
	}
	data, err := readBody(r, n, rem)
	if err != nil {
		return nil, fmt.Errorf("IDX %s %v: %w", kind, shape, err)
	}
	return &Array{Shape: shape, Kind: kind, Order: binary.BigEndian, Data: data}, nil
}

func noEOF(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return errors.New("file is truncated")
	}
	return err
}

// maxNPYHeader bounds a .npy header; numpy itself refuses headers over
// 10000 bytes by default.
const maxNPYHeader = 1 << 16

var npyKinds = map[string]Kind{
	"u1": Uint8, "i1": Int8, "i2": Int16, "i4": Int32, "i8": Int64, "f4": Float32, "f8": Float64,
}

// readNPY parses a .npy file (format versions 1, 2 and 3) holding a
// C-ordered array of a plain numeric dtype.
func readNPY(r io.Reader, size int64) (*Array, error) {
	var pre [8]byte
	if _, err := io.ReadFull(r, pre[:]); err != nil {
		return nil, fmt.Errorf("npy header: %w", noEOF(err))
	}
	major := pre[6]
	var hlen int
	used := int64(8)
	switch major {
	case 1:
		var b [2]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return nil, fmt.Errorf("npy header: %w", noEOF(err))
		}
		hlen = int(binary.LittleEndian.Uint16(b[:]))
		used += 2
	case 2, 3:
		var b [4]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return nil, fmt.Errorf("npy header: %w", noEOF(err))
		}
		v := binary.LittleEndian.Uint32(b[:])
		if v > maxNPYHeader {
			return nil, fmt.Errorf("npy header of %d bytes (limit %d)", v, maxNPYHeader)
		}
		hlen = int(v)
		used += 4
	default:
		return nil, fmt.Errorf("npy format version %d.%d not supported", pre[6], pre[7])
	}
	if size >= 0 && used+int64(hlen) > size {
		return nil, errors.New("npy header: file is truncated")
	}
	hb := make([]byte, hlen)
	if _, err := io.ReadFull(r, hb); err != nil {
		return nil, fmt.Errorf("npy header: %w", noEOF(err))
	}
	used += int64(hlen)
	h, err := parseNPYHeader(string(bytes.TrimRight(hb, " \n\x00")))
	if err != nil {
		return nil, fmt.Errorf("npy header: %w", err)
	}
	if h.fortran {
		return nil, errors.New("npy: Fortran-ordered arrays are not supported (save with np.ascontiguousarray)")
	}
	if len(h.descr) != 3 {
		return nil, fmt.Errorf("npy: dtype %q not supported (want float32, float64, uint8 or an integer type)", h.descr)
	}
	kind, ok := npyKinds[h.descr[1:]]
	if !ok {
		return nil, fmt.Errorf("npy: dtype %q not supported (want float32, float64, uint8 or an integer type)", h.descr)
	}
	var order binary.ByteOrder
	switch h.descr[0] {
	case '<':
		order = binary.LittleEndian
	case '>':
		order = binary.BigEndian
	case '|', '=':
		if kind.Size() != 1 && h.descr[0] == '|' {
			return nil, fmt.Errorf("npy: dtype %q has no byte order", h.descr)
		}
		order = binary.LittleEndian
	default:
		return nil, fmt.Errorf("npy: dtype %q not supported", h.descr)
	}
	n, err := byteCount(h.shape, kind.Size())
	if err != nil {
		return nil, fmt.Errorf("npy: %w", err)
	}
	rem := int64(-1)
	if size >= 0 {
		rem = size - used
	}
	data, err := readBody(r, n, rem)
	if err != nil {
		return nil, fmt.Errorf("npy %s %v: %w", kind, h.shape, err)
	}
	shape := h.shape
	if len(shape) == 0 {
		shape = []int{1}
	}
	return &Array{Shape: shape, Kind: kind, Order: order, Data: data}, nil
}

type npyHeader struct {
	descr   string
	fortran bool
	shape   []int
}

// parseNPYHeader reads the Python dict literal of a .npy header, e.g.
// {'descr': '<f4', 'fortran_order': False, 'shape': (10, 28, 28), }.
func parseNPYHeader(s string) (npyHeader, error) {
	var h npyHeader
	p := &pyParser{s: s}
	if !p.eat('{') {
		return h, errors.New("not a dict")
	}
	seen := map[string]bool{}
	for {
		p.space()
		if p.eat('}') {
			break
		}
		key, err := p.str()
		if err != nil {
			return h, err
		}
		if !p.eat(':') {
			return h, fmt.Errorf("expected ':' after %q", key)
		}
		switch key {
		case "descr":
			if h.descr, err = p.str(); err != nil {
				return h, fmt.Errorf("descr: %w (structured dtypes are not supported)", err)
			}
		case "fortran_order":
			switch {
			case p.word("True"):
				h.fortran = true
			case p.word("False"):
			default:
				return h, errors.New("fortran_order is not True or False")
			}
		case "shape":
			if h.shape, err = p.tuple(); err != nil {
				return h, fmt.Errorf("shape: %w", err)
			}
		default:
			return h, fmt.Errorf("unknown key %q", key)
		}
		seen[key] = true
		p.space()
		if !p.eat(',') {
			p.space()
			if !p.eat('}') {
				return h, errors.New("expected ',' or '}'")
			}
			break
		}
	}
	for _, k := range []string{"descr", "fortran_order", "shape"} {
		if !seen[k] {
			return h, fmt.Errorf("missing key %q", k)
		}
	}
	return h, nil
}

type pyParser struct {
	s string
	i int
}

func (p *pyParser) space() {
	for p.i < len(p.s) && (p.s[p.i] == ' ' || p.s[p.i] == '\t' || p.s[p.i] == '\n') {
		p.i++
	}
}

func (p *pyParser) eat(c byte) bool {
	p.space()
	if p.i < len(p.s) && p.s[p.i] == c {
		p.i++
		return true
	}
	return false
}

func (p *pyParser) word(w string) bool {
	p.space()
	if len(p.s)-p.i >= len(w) && p.s[p.i:p.i+len(w)] == w {
		p.i += len(w)
		return true
	}
	return false
}

func (p *pyParser) str() (string, error) {
	p.space()
	if p.i >= len(p.s) || (p.s[p.i] != '\'' && p.s[p.i] != '"') {
		return "", errors.New("expected a string")
	}
	q := p.s[p.i]
	j := p.i + 1
	for j < len(p.s) && p.s[j] != q {
		j++
	}
	if j >= len(p.s) {
		return "", errors.New("unterminated string")
	}
	out := p.s[p.i+1 : j]
	p.i = j + 1
	return out, nil
}

func (p *pyParser) tuple() ([]int, error) {
	if !p.eat('(') {
		return nil, errors.New("expected a tuple")
	}
	out := []int{}
	for {
		if p.eat(')') {
			return out, nil
		}
		p.space()
		j := p.i
		for j < len(p.s) && p.s[j] >= '0' && p.s[j] <= '9' {
			j++
		}
		if j == p.i || j-p.i > 12 {
			return nil, errors.New("expected a dimension")
		}
		v := 0
		for _, c := range p.s[p.i:j] {
			v = v*10 + int(c-'0')
		}
		p.i = j
		p.word("L") // Python 2 long suffix
		out = append(out, v)
		if len(out) > 32 {
			return nil, errors.New("too many dimensions")
		}
		if !p.eat(',') {
			if !p.eat(')') {
				return nil, errors.New("expected ',' or ')'")
			}
			return out, nil
		}
	}
}
