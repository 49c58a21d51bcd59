package wpatch

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"maps"
	"math"
	"os"
	"sort"
	"sync"

	"github.com/klauspost/compress/zstd"

	"github.com/weightops/weightops/quantize"
	"github.com/weightops/weightops/stream"
	"github.com/weightops/weightops/weights"
)

// A patch is not a checkpoint: opening one where a checkpoint is expected
// says what it is.
func init() {
	weights.RegisterFormat(weights.Format{
		Name:  "wpatch",
		Match: func(h []byte) bool { return bytes.HasPrefix(h, []byte(Magic)) },
		Open: func(path string) (weights.Checkpoint, error) {
			return nil, fmt.Errorf("%s: a weightops patch, not a checkpoint (see weightops patch info / apply)", path)
		},
	})
}

// IsPatch reports whether the file at path starts with the patch magic,
// so a caller can tell "not a patch" from "a damaged patch".
func IsPatch(path string) (bool, error) {
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		return false, nil // a model directory
	}
	f, err := weights.OpenFile(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	var m [len(Magic)]byte
	n, _ := io.ReadFull(f, m[:])
	return n == len(m) && string(m[:]) == Magic, nil
}

// Patch file format, version 1 (".wpatch"). Written in one streaming pass,
// read with random access, one tensor at a time:
//
//	offset 0      magic "WOPATCH\n" (8 bytes)
//	offset 8      payloads, each tensor's bytes compressed alone with zstd
//	header offset header: UTF-8 JSON (Header)
//	end − 24      footer: header offset u64, header length u64,
//	              CRC-32 (IEEE) of the header u32, format version u32
//
// All integers are little-endian. A payload, before compression, is:
//
//	dense:  the values of every element, row-major
//	sparse: uvarint count, then that many uvarint index gaps (the first
//	        index, then each index minus the previous), then the values
//	        of those elements
//
// and values are float32 ("f32"), IEEE half ("f16"), or a quantize
// container ("q": codes + scales, see package quantize) of the dense
// tensor or of the sparse values vector.
const (
	Magic     = "WOPATCH\n"
	Version   = 1
	footerLen = 24
)

// Header is the JSON header of a patch file.
type Header struct {
	FormatVersion int               `json:"format_version"`
	Kind          string            `json:"kind"` // rws, breadcrumbs, task-vector, weights, ...
	BaseSHA256    string            `json:"base_sha256,omitempty"`
	Metadata      map[string]string `json:"metadata,omitempty"`
	Tensors       []Entry           `json:"tensors"`
}

// Entry describes one tensor of a patch.
type Entry struct {
	Name  string  `json:"name"`
	Shape []int64 `json:"shape"`
	// DType is the dtype of the model tensor the patch applies to.
	DType     string `json:"dtype"`
	Encoding  string `json:"encoding"` // dense | sparse
	Values    string `json:"values"`   // f32 | f16 | q
	Quant     string `json:"quant,omitempty"`
	NNZ       int64  `json:"nnz"`
	Offset    int64  `json:"offset"`
	Length    int64  `json:"length"`
	RawLength int64  `json:"raw_length"`
	CRC32     uint32 `json:"crc32"`
}

// Elements is the product of the shape.
func (t Entry) Elements() int64 {
	n, _ := weights.TensorInfo{Shape: t.Shape, DType: weights.F32}.NumElements()
	return n
}

// Encoding chooses how a Writer stores values.
type Encoding struct {
	// Values: "f32" (default), "f16" or "q" (Quant must be set).
	Values string
	Quant  quantize.Config
	// Sparse: "auto" (default: sparse when under a third of the entries
	// are non-zero), "never" or "always".
	Sparse string
}

// Writer writes a patch, one tensor at a time from any goroutine.
type Writer struct {
	path string
	f    *os.File
	mu   sync.Mutex
	at   int64
	hdr  Header
	enc  Encoding
	zw   *zstd.Encoder
	decl map[string]weights.TensorInfo
	// names are the tensors added so far.
	names     map[string]bool
	done      bool
	errs      map[string]QuantError
	baseLater func() (string, error)
	// parts are the tensors arriving in parts (WriteTensorAt), not yet
	// complete.
	parts map[string]*part
	// quants are the quantized tensors arriving in chunks, not yet
	// complete.
	quants map[string]*quantStream
}

// QuantError measures what quantizing one tensor lost, in float64.
type QuantError struct {
	Signal2 float64 `json:"signal_sq"` // ‖x‖²
	Err2    float64 `json:"error_sq"`  // ‖x − x̂‖²
	MaxAbs  float64 `json:"max_abs"`
	N       int64   `json:"n"`
}

// RelL2 is ‖x − x̂‖/‖x‖ (0 for an exact zero signal).
func (e QuantError) RelL2() float64 {
	if e.Signal2 == 0 {
		return 0
	}
	return math.Sqrt(e.Err2 / e.Signal2)
}

// SNRdB is 10·log10(‖x‖²/‖x − x̂‖²).
func (e QuantError) SNRdB() float64 {
	if e.Err2 == 0 {
		return math.Inf(1)
	}
	return 10 * math.Log10(e.Signal2/e.Err2)
}

// MarshalJSON adds the derived figures to the sums: rel_l2, and snr_db
// (null when the tensor was reproduced exactly).
func (e QuantError) MarshalJSON() ([]byte, error) {
	type sums QuantError
	var snr *float64
	if v := e.SNRdB(); !math.IsInf(v, 0) {
		snr = &v
	}
	return json.Marshal(struct {
		sums
		RelL2 float64  `json:"rel_l2"`
		SNRdB *float64 `json:"snr_db"`
	}{sums(e), e.RelL2(), snr})
}

// Add accumulates another tensor's error.
func (e *QuantError) Add(o QuantError) {
	e.Signal2 += o.Signal2
	e.Err2 += o.Err2
	e.MaxAbs = math.Max(e.MaxAbs, o.MaxAbs)
	e.N += o.N
}

// observe takes in the errors of values vals quantized to deq: the sums of
// v² and (v − deq)², in index order, and the largest |v − deq|.
func (e *QuantError) observe(vals, deq []float32) {
	deq = deq[:len(vals)]
	s2, e2, mx := e.Signal2, e.Err2, e.MaxAbs
	for i, v := range vals {
		d := float64(v) - float64(deq[i])
		s2 += float64(v) * float64(v)
		e2 += d * d
		mx = maxOf(mx, math.Abs(d))
	}
	e.Signal2, e.Err2, e.MaxAbs = s2, e2, mx
}

// maxOf is math.Max(m, a) for m and a not below zero (or NaN), without
// its call: +Inf wins over NaN, NaN over a number.
func maxOf(m, a float64) float64 {
	switch {
	case a > m, math.IsInf(a, 1):
		return a
	case a != a && !math.IsInf(m, 1):
		return a
	}
	return m
}

// Errors returns the quantization error of every tensor added with
// quantized values.
func (w *Writer) Errors() map[string]QuantError {
	w.mu.Lock()
	defer w.mu.Unlock()
	return maps.Clone(w.errs)
}

// Create starts a patch file at path (a temp file until Commit).
func Create(path, kind string, metadata map[string]string, enc Encoding) (*Writer, error) {
	if enc.Values == "" {
		enc.Values = "f32"
	}
	if enc.Sparse == "" {
		enc.Sparse = "auto"
	}
	switch enc.Values {
	case "f32", "f16":
	case "q":
		if err := enc.Quant.Validate(); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("patch values %q: use f32, f16 or q", enc.Values)
	}
	f, err := weights.CreateTemp(path)
	if err != nil {
		return nil, err
	}
	zw, _ := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(1), zstd.WithSingleSegment(true))
	w := &Writer{path: path, f: f, at: int64(len(Magic)), enc: enc, zw: zw,
		hdr: Header{FormatVersion: Version, Kind: kind, Metadata: metadata}}
	if _, err := f.WriteString(Magic); err != nil {
		w.Abort()
		return nil, err
	}
	return w, nil
}

// SetBase records the SHA-256 of the checkpoint the patch applies to.
func (w *Writer) SetBase(sha string) { w.hdr.BaseSHA256 = sha }

// SetBaseLater has Commit ask get for the base's SHA-256, so the base can
// be hashed while the tensors are written; an error from get fails the
// commit (the file is discarded).
func (w *Writer) SetBaseLater(get func() (string, error)) { w.baseLater = get }

// Add encodes, compresses and appends one tensor's values. dtype is the
// model tensor's dtype, recorded so apply can check it.
func (w *Writer) Add(name string, shape []int64, dtype weights.DType, values []float32) error {
	_, err := w.add(name, shape, dtype, values, false)
	return err
}

// AddReconstructed is Add that also returns the values as Load will give
// them back (dequantized for quantized values, zeros where sparse), so a
// caller needing both does not quantize twice.
func (w *Writer) AddReconstructed(name string, shape []int64, dtype weights.DType, values []float32) ([]float32, error) {
	return w.add(name, shape, dtype, values, true)
}

func (w *Writer) add(name string, shape []int64, dtype weights.DType, values []float32, recon bool) ([]float32, error) {
	var nnz int64
	for _, v := range values {
		if v != 0 {
			nnz++
		}
	}
	if !w.sparse(nnz, int64(len(values))) {
		return w.encode(name, shape, dtype, nil, values, int64(len(values)), recon)
	}
	idx := make([]int64, 0, nnz)
	vals := make([]float32, 0, nnz)
	for i, v := range values {
		if v != 0 {
			idx = append(idx, int64(i))
			vals = append(vals, v)
		}
	}
	return w.encode(name, shape, dtype, idx, vals, int64(len(values)), recon)
}

// sparse reports whether a tensor of n elements, nnz of them non-zero, is
// stored sparse.
func (w *Writer) sparse(nnz, n int64) bool {
	return w.enc.Sparse == "always" || (w.enc.Sparse == "auto" && nnz*3 < n)
}

// AddSparse adds a tensor given by its non-zero entries (ascending flat
// indices and their values), without materialising the dense tensor when
// the encoding stores it sparse: what re-encoding a sparse patch needs,
// whatever its declared shape.
func (w *Writer) AddSparse(name string, shape []int64, dtype weights.DType, idx []int64, vals []float32) error {
	n, err := weights.TensorInfo{Shape: shape, DType: weights.F32}.NumElements()
	if err != nil {
		return fmt.Errorf("%s: tensor %q: %w", w.path, name, err)
	}
	if len(idx) != len(vals) {
		return fmt.Errorf("%s: tensor %q: %d indices for %d values", w.path, name, len(idx), len(vals))
	}
	for k, i := range idx {
		if i < 0 || i >= n || (k > 0 && i <= idx[k-1]) {
			return fmt.Errorf("%s: tensor %q: sparse index %d out of order or range", w.path, name, i)
		}
	}
	if w.sparse(int64(len(vals)), n) {
		_, err := w.encode(name, shape, dtype, idx, vals, n, false)
		return err
	}
	// Stored dense: at most 3·nnz elements under "auto".
	if w.enc.Sparse == "never" && n > 1<<31 {
		return fmt.Errorf("%s: tensor %q: %d elements is too many to store dense", w.path, name, n)
	}
	dense := make([]float32, n)
	for k, i := range idx {
		dense[i] = vals[k]
	}
	_, err = w.encode(name, shape, dtype, nil, dense, n, false)
	return err
}

// encode stores one tensor: sparse (idx holds the flat indices of vals) or
// dense (idx nil, vals every element); n is the tensor's element count. With
// recon it returns the dense values as Load will give them back.
func (w *Writer) encode(name string, shape []int64, dtype weights.DType, idx []int64, vals []float32, n int64, recon bool) ([]float32, error) {
	stored, err := w.encodeEntry(name, shape, dtype, idx, vals, n, recon)
	if err != nil || !recon || idx == nil {
		return stored, err
	}
	back := make([]float32, n)
	for k, i := range idx {
		back[i] = stored[k]
	}
	return back, nil
}

// encodeEntry is encode that, with recon, returns the values as Load will
// give them back in vals' order (for a sparse tensor, its entries').
func (w *Writer) encodeEntry(name string, shape []int64, dtype weights.DType, idx []int64, vals []float32, n int64, recon bool) ([]float32, error) {
	for _, v := range vals {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return nil, fmt.Errorf("%s: tensor %q: patch values must be finite", w.path, name)
		}
	}
	sparse := idx != nil
	pt := Entry{Name: name, Shape: append([]int64{}, shape...), DType: dtype.String(), Values: w.enc.Values}
	var raw bytes.Buffer
	if sparse {
		pt.Encoding, pt.NNZ = "sparse", int64(len(vals))
		var tmp [binary.MaxVarintLen64]byte
		raw.Write(tmp[:binary.PutUvarint(tmp[:], uint64(len(vals)))])
		prev := int64(0)
		for _, i := range idx {
			raw.Write(tmp[:binary.PutUvarint(tmp[:], uint64(i-prev))])
			prev = i
		}
	} else {
		pt.Encoding, pt.NNZ = "dense", n
	}
	stored := vals // the values as Load will return them
	switch w.enc.Values {
	case "f32":
		b := make([]byte, 4*len(vals))
		_ = weights.EncodeFloat32(weights.F32, vals, b)
		raw.Write(b)
	case "f16":
		b := make([]byte, 2*len(vals))
		_ = weights.EncodeFloat32(weights.F16, vals, b)
		raw.Write(b)
		if recon {
			stored = make([]float32, len(vals))
			_ = weights.DecodeFloat32(weights.F16, b, stored)
		}
	case "q":
		qshape := shape
		if sparse {
			qshape = []int64{int64(len(vals))}
		}
		q, err := quantize.Quantize(vals, qshape, w.enc.Quant)
		if err != nil {
			return nil, fmt.Errorf("%s: tensor %q: %w", w.path, name, err)
		}
		qb, err := q.MarshalBinary()
		if err != nil {
			return nil, fmt.Errorf("%s: tensor %q: %w", w.path, name, err)
		}
		raw.Write(qb)
		pt.Quant = w.enc.Quant.String()
		deq := make([]float32, len(vals))
		if err := q.Dequantize(deq); err != nil {
			return nil, fmt.Errorf("%s: tensor %q: %w", w.path, name, err)
		}
		qe := QuantError{N: n}
		qe.observe(vals, deq)
		w.mu.Lock()
		if w.errs == nil {
			w.errs = map[string]QuantError{}
		}
		w.errs[name] = qe
		w.mu.Unlock()
		stored = deq
	}
	var back []float32
	if recon {
		back = stored
	}
	pt.RawLength = int64(raw.Len())
	pt.CRC32 = crc32.ChecksumIEEE(raw.Bytes())
	var comp []byte
	if int64(raw.Len()) > streamAbove {
		// Windowed, so a reader can decode it a chunk at a time.
		var cb bytes.Buffer
		cb.Grow(raw.Len() / 2)
		if _, _, err := compressStream(&cb, func(dst io.Writer) error {
			_, err := dst.Write(raw.Bytes())
			return err
		}); err != nil {
			return nil, fmt.Errorf("%s: tensor %q: %w", w.path, name, err)
		}
		comp = cb.Bytes()
	} else {
		comp = w.zw.EncodeAll(raw.Bytes(), nil)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.claim(name); err != nil {
		return nil, err
	}
	pt.Offset, pt.Length = w.at, int64(len(comp))
	if _, err := w.f.WriteAt(comp, w.at); err != nil {
		return nil, fmt.Errorf("%s: %w", w.path, err)
	}
	w.at += int64(len(comp))
	w.hdr.Tensors = append(w.hdr.Tensors, pt)
	return back, nil
}

// claim records that tensor name is being added, refusing a closed writer
// and a second time; w.mu is held.
func (w *Writer) claim(name string) error {
	if w.done {
		return fmt.Errorf("%s: writer closed", w.path)
	}
	if w.names[name] {
		return fmt.Errorf("%s: tensor %q added twice", w.path, name)
	}
	if w.names == nil {
		w.names = map[string]bool{}
	}
	w.names[name] = true
	return nil
}

// WriteTensor makes the writer a stream.Sink: data is the F32 bytes of a
// declared tensor (see Declare, Output).
func (w *Writer) WriteTensor(name string, data []byte) error {
	info, ok := w.declared(name)
	if !ok {
		return fmt.Errorf("%s: tensor %q not declared", w.path, name)
	}
	if len(data)%4 != 0 {
		return fmt.Errorf("%s: tensor %q: %d bytes are not F32 values", w.path, name, len(data))
	}
	// Add reads the values and keeps none of them: a view will do.
	return w.Add(name, info.Shape, info.DType, weights.Float32View(data))
}

// Declare lists the tensors WriteTensor will receive, with the dtype of
// the model tensor each applies to.
func (w *Writer) Declare(infos []weights.TensorInfo) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.decl = map[string]weights.TensorInfo{}
	for _, t := range infos {
		w.decl[t.Name] = t
	}
}

func (w *Writer) declared(name string) (weights.TensorInfo, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	t, ok := w.decl[name]
	return t, ok
}

// Output makes the writer an output of a stream job: every tensor arrives
// as F32 values and is stored with the job's source dtype as the model
// dtype it applies to.
func (w *Writer) Output() stream.Output {
	return stream.Output{
		Path:  w.path,
		DType: func(weights.TensorInfo) weights.DType { return weights.F32 },
		Create: func(tensors []weights.TensorInfo) (stream.Sink, []string, error) {
			w.Declare(tensors)
			return w, []string{w.path}, nil
		},
		// Add holds the values, the raw payload and the compressed one.
		Cost: func(t weights.TensorInfo) int64 {
			n, _ := t.NumElements()
			return 12 * n
		},
		StreamCost: w.streamCost,
	}
}

// streamCost is what a tensor written in parts holds: a compressor's
// window and buffers, and the same again while it is encoded a second
// time. Quantized values are written whole.
func (w *Writer) streamCost(weights.TensorInfo) int64 {
	if w.enc.Values == "q" {
		return -1
	}
	return 6 * frameWindow
}

// Path is the file the patch is committed to.
func (w *Writer) Path() string { return w.path }

// Commit writes the header and footer and renames the file into place.
// Tensors are listed in natural name order whatever order they came in.
func (w *Writer) Commit() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done {
		return fmt.Errorf("%s: already committed or aborted", w.path)
	}
	w.done = true
	if len(w.parts) > 0 || len(w.quants) > 0 {
		w.abortParts()
		weights.DiscardTemp(w.f)
		return fmt.Errorf("%s: committed with tensors still arriving in parts", w.path)
	}
	if w.baseLater != nil {
		sha, err := w.baseLater()
		if err != nil {
			weights.DiscardTemp(w.f)
			return fmt.Errorf("%s: %w", w.path, err)
		}
		w.hdr.BaseSHA256 = sha
	}
	sort.Slice(w.hdr.Tensors, func(i, j int) bool { return weights.NaturalLess(w.hdr.Tensors[i].Name, w.hdr.Tensors[j].Name) })
	if err := w.reorder(); err != nil {
		weights.DiscardTemp(w.f)
		return fmt.Errorf("%s: %w", w.path, err)
	}
	hdr, err := json.Marshal(w.hdr)
	if err == nil {
		var foot [footerLen]byte
		binary.LittleEndian.PutUint64(foot[0:], uint64(w.at))
		binary.LittleEndian.PutUint64(foot[8:], uint64(len(hdr)))
		binary.LittleEndian.PutUint32(foot[16:], crc32.ChecksumIEEE(hdr))
		binary.LittleEndian.PutUint32(foot[20:], Version)
		_, err = w.f.WriteAt(append(hdr, foot[:]...), w.at)
	}
	if err != nil {
		weights.DiscardTemp(w.f)
		return fmt.Errorf("%s: %w", w.path, err)
	}
	return weights.CommitTemp(w.f, w.path)
}

// reorder lays payloads out in name order when workers added them in
// another order, so the same patch is the same bytes whatever the
// scheduling: payloads are copied into a fresh temp file.
func (w *Writer) reorder() error {
	at := int64(len(Magic))
	inOrder := true
	for _, t := range w.hdr.Tensors {
		if t.Offset != at {
			inOrder = false
			break
		}
		at += t.Length
	}
	if inOrder {
		return nil
	}
	nf, err := weights.CreateTemp(w.path)
	if err != nil {
		return err
	}
	fail := func(err error) error {
		weights.DiscardTemp(nf)
		return err
	}
	if _, err := nf.WriteString(Magic); err != nil {
		return fail(err)
	}
	at = int64(len(Magic))
	for i, t := range w.hdr.Tensors {
		if _, err := io.Copy(nf, io.NewSectionReader(w.f, t.Offset, t.Length)); err != nil {
			return fail(err)
		}
		w.hdr.Tensors[i].Offset = at
		at += t.Length
	}
	weights.DiscardTemp(w.f)
	w.f, w.at = nf, at
	return nil
}

// Abort discards the patch.
func (w *Writer) Abort() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done {
		return
	}
	w.done = true
	w.abortParts()
	weights.DiscardTemp(w.f)
}

// Patch is an open patch file.
type Patch struct {
	Path string
	Header
	Size  int64
	f     *os.File
	index map[string]int
	// windowed: per entry, whether its payload's window allows decoding
	// it a chunk at a time (see streamable), read once at Open.
	windowed []bool
}

// ErrVersion is returned for patch files of a version this build
// does not read.
var ErrVersion = errors.New("unsupported patch format version")

// Open opens and validates a patch file: magic, footer, header CRC
// and version, and every tensor's byte range, shape, encoding and sizes.
// Nothing is decompressed until Load.
func Open(path string) (*Patch, error) {
	f, err := weights.OpenFile(path)
	if err != nil {
		return nil, err
	}
	p, err := readPatch(f, path)
	if err != nil {
		f.Close()
		return nil, err
	}
	return p, nil
}

func readPatch(f *os.File, path string) (*Patch, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	size := st.Size()
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%s: not a valid patch: %s", path, fmt.Sprintf(format, a...))
	}
	if size < int64(len(Magic))+footerLen {
		return nil, bad("%d bytes is too short", size)
	}
	var magic [8]byte
	if _, err := f.ReadAt(magic[:], 0); err != nil || string(magic[:]) != Magic {
		return nil, bad("wrong magic (not a weightops patch)")
	}
	var foot [footerLen]byte
	if _, err := f.ReadAt(foot[:], size-footerLen); err != nil {
		return nil, bad("reading footer: %v", err)
	}
	// The footer's header range and checksum are checked before its
	// version: the version of a truncated file is whatever bytes end it.
	hoff := binary.LittleEndian.Uint64(foot[0:])
	hlen := binary.LittleEndian.Uint64(foot[8:])
	if hoff < uint64(len(Magic)) || hlen > uint64(size) || hoff > uint64(size)-footerLen-hlen || hoff+hlen != uint64(size)-footerLen {
		return nil, bad("no valid footer at the end of its %d bytes (truncated?)", size)
	}
	hdr := make([]byte, hlen)
	if _, err := f.ReadAt(hdr, int64(hoff)); err != nil {
		return nil, bad("reading header: %v", err)
	}
	if crc32.ChecksumIEEE(hdr) != binary.LittleEndian.Uint32(foot[16:]) {
		return nil, bad("header checksum mismatch (truncated or corrupted)")
	}
	if v := binary.LittleEndian.Uint32(foot[20:]); v != Version {
		return nil, fmt.Errorf("%s: %w %d (this weightops reads version %d)", path, ErrVersion, v, Version)
	}
	p := &Patch{Path: path, Size: size, f: f, index: map[string]int{}}
	if err := json.Unmarshal(hdr, &p.Header); err != nil {
		return nil, bad("header JSON: %v", err)
	}
	if p.FormatVersion != Version {
		return nil, fmt.Errorf("%s: %w %d in header", path, ErrVersion, p.FormatVersion)
	}
	for i, t := range p.Tensors {
		tb := func(format string, a ...any) error {
			return fmt.Errorf("%s: tensor %q: %s", path, t.Name, fmt.Sprintf(format, a...))
		}
		if _, dup := p.index[t.Name]; dup {
			return nil, tb("listed twice")
		}
		p.index[t.Name] = i
		n, err := weights.TensorInfo{Shape: t.Shape, DType: weights.F32}.NumElements()
		if err != nil {
			return nil, tb("%v", err)
		}
		if _, err := weights.ParseDType(t.DType); err != nil {
			return nil, tb("%v", err)
		}
		if t.Offset < int64(len(Magic)) || t.Length < 0 || t.Offset > int64(hoff)-t.Length {
			return nil, tb("payload [%d, +%d) outside the data area", t.Offset, t.Length)
		}
		vs := map[string]int64{"f32": 4, "f16": 2, "q": 0}
		es, ok := vs[t.Values]
		if !ok {
			return nil, tb("unknown values encoding %q", t.Values)
		}
		if t.Values == "q" {
			if _, err := quantize.ParseConfig(t.Quant); err != nil {
				return nil, tb("%v", err)
			}
		}
		// Compressed data expands at most so much; a header claiming more
		// would make Load allocate beyond what the file can justify.
		if t.RawLength < 0 || t.RawLength > 1<<20+1024*t.Length {
			return nil, tb("raw length %d implausible for %d compressed bytes", t.RawLength, t.Length)
		}
		// What a payload can hold bounds what a reader allocates for it:
		// a dense tensor's elements (k ≥ 1 bit each when quantized), a
		// sparse one's values (one index byte each at least). A sparse
		// tensor's declared shape can be large; readers of it must not
		// materialise it unless a model of that shape justifies it.
		switch t.Encoding {
		case "dense":
			if t.NNZ != n || (es > 0 && t.RawLength != n*es) || (es == 0 && n > 8*t.RawLength) {
				return nil, tb("dense payload of %d bytes for %d elements", t.RawLength, n)
			}
		case "sparse":
			if t.NNZ < 0 || t.NNZ > n || t.NNZ > t.RawLength {
				return nil, tb("%d non-zeros in %d elements, %d payload bytes", t.NNZ, n, t.RawLength)
			}
		default:
			return nil, tb("unknown encoding %q", t.Encoding)
		}
	}
	p.windowed = make([]bool, len(p.Tensors))
	for i, t := range p.Tensors {
		p.windowed[i] = p.smallWindow(t)
	}
	return p, nil
}

// Close closes the file.
func (p *Patch) Close() error { return p.f.Close() }

// Tensor finds a tensor's entry.
func (p *Patch) Tensor(name string) (Entry, bool) {
	i, ok := p.index[name]
	if !ok {
		return Entry{}, false
	}
	return p.Tensors[i], true
}

// Load decompresses one tensor into dst, which must hold exactly its
// elements (the caller sizes it from the model, not from the patch).
// Sparse entries not stored are set to zero.
func (p *Patch) Load(name string, dst []float32) error {
	t, idx, vals, err := p.load(name)
	if err != nil {
		return err
	}
	if n := t.Elements(); int64(len(dst)) != n {
		return fmt.Errorf("%s: tensor %q: %d elements, %d expected", p.Path, name, n, len(dst))
	}
	if idx == nil {
		copy(dst, vals)
		return nil
	}
	clear(dst)
	for k, i := range idx {
		dst[i] = vals[k]
	}
	return nil
}

// LoadSparse decompresses one tensor as stored: a sparse one as its flat
// indices (ascending) and values, a dense one with idx nil and every
// value. It allocates what the payload holds, whatever the declared shape.
func (p *Patch) LoadSparse(name string) (idx []int64, vals []float32, err error) {
	_, idx, vals, err = p.load(name)
	return idx, vals, err
}

// load reads, checks and decodes one tensor's payload. Values must be
// finite: a NaN in a patch would spread into every model it patches.
// payload reads, decompresses and checks tensor name's raw payload.
func (p *Patch) payload(name string) (Entry, []byte, error) {
	t, ok := p.Tensor(name)
	if !ok {
		return t, nil, fmt.Errorf("%s: tensor %q: %w", p.Path, name, weights.ErrNotFound)
	}
	fail := func(format string, a ...any) (Entry, []byte, error) {
		return t, nil, fmt.Errorf("%s: tensor %q: %s", p.Path, name, fmt.Sprintf(format, a...))
	}
	comp := make([]byte, t.Length)
	if _, err := p.f.ReadAt(comp, t.Offset); err != nil {
		return fail("reading payload: %v", err)
	}
	zr, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(uint64(max(2*t.RawLength, 2*frameWindow))+1<<16))
	if err != nil {
		return fail("%v", err)
	}
	defer zr.Close()
	raw, err := zr.DecodeAll(comp, make([]byte, 0, t.RawLength))
	if err != nil {
		return fail("corrupted payload: %v", err)
	}
	if int64(len(raw)) != t.RawLength || crc32.ChecksumIEEE(raw) != t.CRC32 {
		return fail("payload checksum mismatch (corrupted)")
	}
	return t, raw, nil
}

// quantized returns a dense quantized entry's codes and scales, checked,
// without dequantizing them: k bits an element instead of 32 for a reader
// that dequantizes a chunk at a time (DequantizeRange).
func (p *Patch) quantized(name string, n int64) (*quantize.Quantized, error) {
	t, raw, err := p.payload(name)
	if err != nil {
		return nil, err
	}
	var q quantize.Quantized
	if err := q.UnmarshalBinary(raw); err != nil {
		return nil, fmt.Errorf("%s: tensor %q: %w", p.Path, name, err)
	}
	if int64(q.N) != n || t.Encoding != "dense" {
		return nil, fmt.Errorf("%s: tensor %q: quantized block holds %d values, %d expected", p.Path, name, q.N, n)
	}
	return &q, nil
}

func (p *Patch) load(name string) (Entry, []int64, []float32, error) {
	t, raw, err := p.payload(name)
	if err != nil {
		return t, nil, nil, err
	}
	fail := func(format string, a ...any) (Entry, []int64, []float32, error) {
		return t, nil, nil, fmt.Errorf("%s: tensor %q: %s", p.Path, name, fmt.Sprintf(format, a...))
	}
	n := t.Elements()
	r := bytes.NewReader(raw)
	var idx []int64
	count := n
	if t.Encoding == "sparse" {
		cnt, err := binary.ReadUvarint(r)
		if err != nil || int64(cnt) != t.NNZ {
			return fail("bad sparse count")
		}
		idx = make([]int64, 0, min(cnt, uint64(len(raw))))
		var at int64
		for k := uint64(0); k < cnt; k++ {
			gap, err := binary.ReadUvarint(r)
			if err != nil || gap > uint64(n) {
				return fail("bad sparse index")
			}
			if k > 0 && gap == 0 {
				return fail("repeated sparse index")
			}
			at += int64(gap)
			if at >= n {
				return fail("sparse index %d beyond %d elements", at, n)
			}
			idx = append(idx, at)
		}
		count = t.NNZ
	}
	vals, err := decodeValues(t, raw[len(raw)-r.Len():], count)
	if err != nil {
		return fail("%v", err)
	}
	for _, v := range vals {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return fail("holds NaN or Inf values; a patch must be finite")
		}
	}
	return t, idx, vals, nil // idx is non-nil (maybe empty) for a sparse entry
}

func decodeValues(t Entry, b []byte, count int64) ([]float32, error) {
	switch t.Values {
	case "f32", "f16":
		es := int64(4)
		dt := weights.F32
		if t.Values == "f16" {
			es, dt = 2, weights.F16
		}
		if int64(len(b)) != count*es {
			return nil, fmt.Errorf("%d value bytes for %d values", len(b), count)
		}
		out := make([]float32, count)
		return out, weights.DecodeFloat32(dt, b, out)
	case "q":
		var q quantize.Quantized
		if err := q.UnmarshalBinary(b); err != nil {
			return nil, err
		}
		if q.N != int(count) {
			return nil, fmt.Errorf("quantized block holds %d values, %d expected", q.N, count)
		}
		out := make([]float32, count)
		return out, q.Dequantize(out)
	}
	return nil, fmt.Errorf("unknown values %q", t.Values)
}

// Bytes is the compressed payload size of all tensors.
func (p *Patch) Bytes() int64 {
	var n int64
	for _, t := range p.Tensors {
		n += t.Length
	}
	return n
}
