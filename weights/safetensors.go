package weights

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"unicode/utf8"
)

// MaxHeaderSize is the largest safetensors JSON header accepted, as in the
// official library (100 MB).
const MaxHeaderSize = 100_000_000

// Why our own reader rather than github.com/nlpodyssey/safetensors: that
// package deserializes from one []byte holding the whole file, so opening a
// 10 GB checkpoint would read (or map) 10 GB before the first tensor, and its
// writer needs every tensor in memory at once. Here opening reads just the
// header, each tensor is one positioned read (pread) into a caller-reused
// buffer, so a pass over all tensors holds at most one tensor in anonymous
// memory and leaves the rest to the page cache. We still use that package in
// tests as an independent reader of the files we write.

// safetensorsFile is an open .safetensors file.
type safetensorsFile struct {
	path      string
	f         *os.File
	dataStart int64
	infos     []TensorInfo // sorted naturally
	entries   map[string]stEntry
	metadata  map[string]string
}

type stEntry struct {
	info       TensorInfo
	begin, end int64 // byte offsets relative to the data buffer
}

// OpenSafetensors opens a .safetensors file and validates its header the
// way the official library does: header length within the file and at most
// 100 MB, valid UTF-8 JSON, known dtypes, shape × dtype size equal to each
// tensor's byte range, ranges contiguous from 0 and covering the data
// buffer exactly, no overflow. Tensor bytes are not read.
func OpenSafetensors(path string) (Checkpoint, error) {
	f, err := OpenFile(path)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	h, err := ParseSafetensorsHeader(f, st.Size())
	if err != nil {
		f.Close()
		return nil, &TensorError{File: path, Tensor: tensorOf(err), Err: stripTensor(err)}
	}
	sf := &safetensorsFile{path: path, f: f, dataStart: h.DataStart, metadata: h.Metadata,
		entries: make(map[string]stEntry, len(h.Tensors))}
	for _, t := range h.Tensors {
		sf.entries[t.Name] = stEntry{info: t.TensorInfo, begin: t.Begin, end: t.End}
		sf.infos = append(sf.infos, t.TensorInfo)
	}
	SortNatural(sf.infos)
	return sf, nil
}

// SafetensorsHeader is a parsed and validated safetensors header.
type SafetensorsHeader struct {
	// Metadata is the __metadata__ map, nil when absent.
	Metadata map[string]string
	// Tensors in data order (ascending offsets).
	Tensors []HeaderTensor
	// DataStart is the file offset of the data buffer: 8 + header length.
	DataStart int64
}

// HeaderTensor is one tensor entry of a header with its byte range
// relative to the start of the data buffer.
type HeaderTensor struct {
	TensorInfo
	Begin, End int64
}

// headerTensorError carries the tensor name out of the parser so OpenSafetensors
// can build a TensorError naming the file too.
type headerTensorError struct {
	name string
	err  error
}

func (e *headerTensorError) Error() string { return fmt.Sprintf("tensor %q: %v", e.name, e.err) }
func (e *headerTensorError) Unwrap() error { return e.err }

func tensorOf(err error) string {
	var he *headerTensorError
	if errors.As(err, &he) {
		return he.name
	}
	return ""
}

func stripTensor(err error) error {
	var he *headerTensorError
	if errors.As(err, &he) {
		return he.err
	}
	return err
}

// ParseSafetensorsHeader reads and validates the header of a safetensors
// stream of the given total size. It reads only the 8-byte length and the
// JSON header, and allocates at most min(header length, size).
func ParseSafetensorsHeader(r io.ReaderAt, size int64) (*SafetensorsHeader, error) {
	if size < 8 {
		return nil, fmt.Errorf("file is %d bytes, too small for a safetensors header", size)
	}
	var lenBuf [8]byte
	if _, err := r.ReadAt(lenBuf[:], 0); err != nil {
		return nil, fmt.Errorf("reading header length: %w", err)
	}
	n := binary.LittleEndian.Uint64(lenBuf[:])
	if n > MaxHeaderSize {
		// The "length" is the file's first 8 bytes: not printed, since a
		// file that is not safetensors may hold anything there.
		return nil, fmt.Errorf("the header length in the first 8 bytes exceeds the %d-byte limit (not a safetensors file?)", MaxHeaderSize)
	}
	if n > uint64(size-8) {
		return nil, fmt.Errorf("the header length in the first 8 bytes is beyond the end of the %d-byte file (truncated or not safetensors)", size)
	}
	hdr := make([]byte, n)
	if _, err := r.ReadAt(hdr, 8); err != nil {
		return nil, fmt.Errorf("reading header: %w", err)
	}
	h, err := parseHeaderJSON(hdr)
	if err != nil {
		return nil, err
	}
	h.DataStart = 8 + int64(n)
	if err := validateLayout(h, size-h.DataStart); err != nil {
		return nil, err
	}
	return h, nil
}

type rawTensorEntry struct {
	DType       *string
	Shape       []uint64
	DataOffsets []uint64
}

// decodeEntry reads one tensor entry with case-sensitive keys, as the
// official parser does (encoding/json's struct matching ignores case).
func decodeEntry(dec *json.Decoder) (rawTensorEntry, error) {
	var m map[string]json.RawMessage
	var e rawTensorEntry
	if err := dec.Decode(&m); err != nil {
		return e, err
	}
	if raw, ok := m["dtype"]; ok {
		if err := json.Unmarshal(raw, &e.DType); err != nil {
			return e, fmt.Errorf("dtype: %w", err)
		}
	}
	if raw, ok := m["shape"]; ok {
		if err := json.Unmarshal(raw, &e.Shape); err != nil {
			return e, fmt.Errorf("shape: %w", err)
		}
	}
	if raw, ok := m["data_offsets"]; ok {
		if err := json.Unmarshal(raw, &e.DataOffsets); err != nil {
			return e, fmt.Errorf("data_offsets: %w", err)
		}
	}
	return e, nil
}

func parseHeaderJSON(hdr []byte) (*SafetensorsHeader, error) {
	if !utf8.Valid(hdr) {
		return nil, errors.New("header is not valid UTF-8")
	}
	trimmed := bytes.TrimRight(hdr, " ")
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return nil, errors.New("header is not a JSON object (not a safetensors file?)")
	}
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	dec.UseNumber()
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, fmt.Errorf("header is not a JSON object: %v", err)
	}
	h := &SafetensorsHeader{}
	seen := make(map[string]bool)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("invalid header JSON: %w", err)
		}
		name, _ := tok.(string)
		if seen[name] {
			return nil, &headerTensorError{name, errors.New("listed twice in the header")}
		}
		seen[name] = true
		if name == "__metadata__" {
			var md map[string]string
			if err := dec.Decode(&md); err != nil {
				return nil, fmt.Errorf("invalid __metadata__ (must map strings to strings): %w", err)
			}
			h.Metadata = md
			continue
		}
		e, err := decodeEntry(dec)
		if err != nil {
			return nil, &headerTensorError{name, fmt.Errorf("invalid header entry: %w", err)}
		}
		if e.DType == nil || e.Shape == nil || len(e.DataOffsets) != 2 {
			return nil, &headerTensorError{name, errors.New("header entry needs dtype, shape and two data_offsets")}
		}
		dt, ok := SafetensorsDType(*e.DType)
		if !ok {
			return nil, &headerTensorError{name, fmt.Errorf("unknown dtype %q", *e.DType)}
		}
		shape := make([]int64, len(e.Shape))
		for i, d := range e.Shape {
			if d > 1<<62 {
				return nil, &headerTensorError{name, fmt.Errorf("%w: dimension %d", ErrOverflow, d)}
			}
			shape[i] = int64(d)
		}
		if e.DataOffsets[0] > 1<<62 || e.DataOffsets[1] > 1<<62 {
			return nil, &headerTensorError{name, fmt.Errorf("data_offsets %v out of range", e.DataOffsets)}
		}
		h.Tensors = append(h.Tensors, HeaderTensor{
			TensorInfo: TensorInfo{Name: name, DType: dt, Shape: shape},
			Begin:      int64(e.DataOffsets[0]), End: int64(e.DataOffsets[1]),
		})
	}
	if _, err := dec.Token(); err != nil {
		return nil, fmt.Errorf("invalid header JSON: %w", err)
	}
	if dec.More() {
		return nil, errors.New("invalid header JSON: trailing data after the object")
	}
	return h, nil
}

// validateLayout checks byte ranges as the official library does: sorted by
// start they must be contiguous from 0, match shape × dtype size, and end
// exactly at the end of the data buffer.
func validateLayout(h *SafetensorsHeader, dataLen int64) error {
	sort.SliceStable(h.Tensors, func(i, j int) bool {
		a, b := h.Tensors[i], h.Tensors[j]
		if a.Begin != b.Begin {
			return a.Begin < b.Begin
		}
		return a.End < b.End
	})
	var at int64
	for _, t := range h.Tensors {
		if t.Begin != at || t.End < t.Begin {
			return &headerTensorError{t.Name, fmt.Errorf("data_offsets [%d, %d] are not contiguous (expected start %d): overlapping or gapped tensors", t.Begin, t.End, at)}
		}
		want, err := t.ByteSize()
		if err != nil {
			return &headerTensorError{t.Name, err}
		}
		if want != t.End-t.Begin {
			return &headerTensorError{t.Name, fmt.Errorf("shape %v × %s is %d bytes but data_offsets span %d", t.Shape, t.DType, want, t.End-t.Begin)}
		}
		at = t.End
	}
	if at != dataLen {
		return fmt.Errorf("tensors cover %d bytes but the data buffer holds %d (truncated or padded file)", at, dataLen)
	}
	return nil
}

func (s *safetensorsFile) Path() string                { return s.path }
func (s *safetensorsFile) Tensors() []TensorInfo       { return s.infos }
func (s *safetensorsFile) Metadata() map[string]string { return s.metadata }
func (s *safetensorsFile) Close() error                { return s.f.Close() }
func (s *safetensorsFile) Info(name string) (TensorInfo, bool) {
	e, ok := s.entries[name]
	return e.info, ok
}

// TensorSection is the tensor's data in the file.
func (s *safetensorsFile) TensorSection(name string) (*io.SectionReader, bool) {
	e, ok := s.entries[name]
	if !ok {
		return nil, false
	}
	return io.NewSectionReader(s.f, s.dataStart+e.begin, e.end-e.begin), true
}

func (s *safetensorsFile) ReadTensor(name string, buf []byte) (Tensor, error) {
	e, ok := s.entries[name]
	if !ok {
		return Tensor{}, &TensorError{File: s.path, Tensor: name, Err: ErrNotFound}
	}
	n := int(e.end - e.begin)
	if cap(buf) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := s.f.ReadAt(buf, s.dataStart+e.begin); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return Tensor{}, &TensorError{File: s.path, Tensor: name, Err: fmt.Errorf("reading data: %w", err)}
	}
	return Tensor{TensorInfo: e.info, Data: buf}, nil
}
