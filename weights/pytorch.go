package weights

import (
	"bytes"
	"fmt"
	"io"
	"os"
)

// Limits that keep a hostile pickle from exhausting memory or the stack
// (the pickle package has those of the pickle itself).
const (
	// maxDepth bounds how deep nested dicts and lists are walked, and how
	// deep rebuild calls may nest.
	maxDepth = 64
	// maxNodes bounds the containers and values visited while flattening.
	maxNodes = 1 << 22
	// maxMeta bounds the scalars kept as metadata, and maxMetaValue the
	// length of each key and value.
	maxMeta      = 1024
	maxMetaValue = 4096
	// maxName bounds a flattened tensor name, and maxNameBytes all the
	// names built while flattening (a DAG can repeat long keys).
	maxName      = 64 << 10
	maxNameBytes = 256 << 20
)

// legacyMagic is the number the legacy (non-zip) format pickles first.
const legacyMagic = "1950a86a20f9469cfc6c"

// legacyProtocol is the protocol version the legacy format pickles second.
const legacyProtocol = 1001

// wrapperKeys name the entries of a training checkpoint that hold the
// state dict, tried in this order.
var wrapperKeys = []string{"state_dict", "model_state_dict", "model", "module"}

// OpenPyTorch opens a PyTorch checkpoint written by torch.save: the zip
// format (torch ≥ 1.6, an archive holding <name>/data.pkl and one
// <name>/data/<key> entry per storage) or the legacy format (consecutive
// pickles followed by the raw storages). The even older tar format is
// rejected, as are TorchScript archives, big-endian files and tensors of
// dtypes without a safetensors name (complex, quantized, sparse).
//
// Opening reads only the pickle: for each tensor it records the storage, the
// dtype, the offset, the shape and the strides. ReadTensor reads just the
// bytes the tensor covers, so memory stays O(largest tensor). Tensors that
// are views — sharing a storage, at an offset, with any non-negative
// strides, such as a transpose, a column or a step slice — are returned as
// contiguous row-major copies.
//
// The state dict is the top-level dict; when that holds no tensors itself
// but a "state_dict", "model_state_dict", "model" or "module" dict of
// tensors, that is unwrapped (a training checkpoint). Nested dicts and lists
// are flattened with "." between the keys. Other values are skipped; the
// int, float, bool and string values at the top of the state dict and of the
// dicts unwrapped to reach it are reported by Metadata.
//
// The pickle is read with gopickle's Unpickler and our own class and
// persistent-id hooks, never executing anything. gopickle's own pytorch
// package is not used: it reads every storage into memory at once,
// converting it to float32 slices, and panics on some inputs (tar files).
// Malformed input gives an error, never a panic: the pickle is checked
// opcode by opcode before gopickle sees it, so no length in it makes the
// unpickler allocate more than the pickle holds, and a panic inside gopickle
// is recovered and returned as an error.
//
// The returned Checkpoint is safe for concurrent ReadTensor calls.
func OpenPyTorch(path string) (Checkpoint, error) {
	f, err := OpenFile(path)
	if err != nil {
		return nil, err
	}
	c, err := openPyTorchFile(path, f)
	if err != nil {
		f.Close()
		return nil, err
	}
	return c, nil
}

func openPyTorchFile(path string, f *os.File) (*torchCheckpoint, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	c := &torchCheckpoint{path: path, f: f, size: st.Size()}
	var head [512]byte
	n, err := f.ReadAt(head[:], 0)
	if err != nil && err != io.EOF {
		return nil, c.errorf("reading: %w", err)
	}
	h := head[:n]
	l := &torchLoader{roots: map[string]*torchStorage{}, views: map[string]*storageRef{}}
	var obj any
	switch {
	case bytes.HasPrefix(h, []byte("PK\x03\x04")):
		obj, err = c.loadZip(l)
	case len(h) >= 262 && string(h[257:262]) == "ustar":
		return nil, c.errorf("legacy tar checkpoint format (very old PyTorch) is unsupported; load and re-save it with a newer torch")
	case len(h) >= 2 && h[0] == 0x80:
		obj, err = c.loadLegacy(l)
	case len(h) == 0:
		return nil, c.errorf("empty file")
	default:
		return nil, c.errorf("not a PyTorch checkpoint (neither a zip archive nor a pickle)")
	}
	if err != nil {
		return nil, err
	}
	if err := c.collect(obj); err != nil {
		return nil, err
	}
	return c, nil
}

// torchCheckpoint is an open PyTorch checkpoint.
type torchCheckpoint struct {
	path   string
	f      *os.File
	size   int64
	infos  []TensorInfo // sorted
	byName map[string]*torchTensor
	meta   map[string]string
}

// torchTensor is a validated tensor: where its element 0 lies and how to step.
type torchTensor struct {
	info   TensorInfo
	root   *torchStorage
	base   int64   // byte offset of element 0 within root
	stride []int64 // in elements, one per dimension of info.Shape
}

func (c *torchCheckpoint) errorf(format string, args ...any) error {
	return &TensorError{File: c.path, Err: fmt.Errorf(format, args...)}
}

func (c *torchCheckpoint) tensorErr(name string, err error) error {
	return &TensorError{File: c.path, Tensor: name, Err: err}
}

// Path returns the file the checkpoint was opened from.
func (c *torchCheckpoint) Path() string { return c.path }

// Tensors lists every tensor, sorted by NaturalLess on the name.
func (c *torchCheckpoint) Tensors() []TensorInfo {
	return append([]TensorInfo(nil), c.infos...)
}

// Info returns one tensor's description.
func (c *torchCheckpoint) Info(name string) (TensorInfo, bool) {
	t, ok := c.byName[name]
	if !ok {
		return TensorInfo{}, false
	}
	return t.info, true
}

// Metadata returns the scalars found beside the tensors, or nil.
func (c *torchCheckpoint) Metadata() map[string]string {
	if len(c.meta) == 0 {
		return nil
	}
	m := make(map[string]string, len(c.meta))
	for k, v := range c.meta {
		m[k] = v
	}
	return m
}

// Close closes the file.
func (c *torchCheckpoint) Close() error { return c.f.Close() }

// ReadTensor reads one tensor as contiguous row-major little-endian bytes.
func (c *torchCheckpoint) ReadTensor(name string, buf []byte) (Tensor, error) {
	t, ok := c.byName[name]
	if !ok {
		return Tensor{}, c.tensorErr(name, ErrNotFound)
	}
	n := t.info.bytes()
	var out []byte
	if int64(cap(buf)) >= n {
		out = buf[:n]
	} else {
		out = make([]byte, n)
	}
	if err := c.gather(t, out); err != nil {
		return Tensor{}, c.tensorErr(name, err)
	}
	return Tensor{TensorInfo: t.info, Data: out}, nil
}

// gather copies tensor t, laid out by its strides, into out in row-major
// order.
func (c *torchCheckpoint) gather(t *torchTensor, out []byte) error {
	if len(out) == 0 {
		return nil
	}
	es := int64(t.info.DType.Size())
	// Dimensions of size 1 do not move; drop them. Then fold the innermost
	// dimensions that are laid out contiguously into one run.
	var dims, strides []int64
	for i, d := range t.info.Shape {
		if d != 1 {
			dims = append(dims, d)
			strides = append(strides, t.stride[i])
		}
	}
	run := int64(1)
	k := len(dims)
	for k > 0 && strides[k-1] == run {
		run *= dims[k-1]
		k--
	}
	dims, strides = dims[:k], strides[:k]
	if k == 0 {
		return c.readAt(t.root, t.base, out)
	}
	// span is how many elements, from element 0, the tensor reaches.
	span := run
	for i := range dims {
		span += (dims[i] - 1) * strides[i] // validated at open: no overflow
	}
	runBytes := int(run * es)
	spanBytes := span * es
	idx := make([]int64, k)
	var off int64 // element offset from element 0 of the current run
	next := func() {
		for j := k - 1; j >= 0; j-- {
			idx[j]++
			off += strides[j]
			if idx[j] < dims[j] {
				return
			}
			off -= strides[j] * dims[j]
			idx[j] = 0
		}
	}
	if t.root.zf != nil || spanBytes <= 4*int64(len(out))+1<<20 {
		// Read the span once and pick the runs out of it.
		scratch, err := c.readSpan(t.root, t.base, spanBytes)
		if err != nil {
			return err
		}
		for pos := 0; pos < len(out); pos += runBytes {
			copy(out[pos:pos+runBytes], scratch[off*es:])
			next()
		}
		return nil
	}
	// A sparse view of a large storage: read run by run.
	for pos := 0; pos < len(out); pos += runBytes {
		if err := c.readAt(t.root, t.base+off*es, out[pos:pos+runBytes]); err != nil {
			return err
		}
		next()
	}
	return nil
}

// readAt fills p from byte off of the storage.
func (c *torchCheckpoint) readAt(r *torchStorage, off int64, p []byte) error {
	if r.zf == nil {
		n, err := c.f.ReadAt(p, r.off+off)
		if n == len(p) {
			return nil
		}
		if err == io.EOF || err == nil {
			err = io.ErrUnexpectedEOF
		}
		return fmt.Errorf("reading storage %.40q: %w", r.key, err)
	}
	rc, err := r.zf.Open()
	if err != nil {
		return fmt.Errorf("storage %.40q: %w", r.key, err)
	}
	defer rc.Close()
	if _, err := io.CopyN(io.Discard, rc, off); err != nil {
		return fmt.Errorf("reading storage %.40q: %w", r.key, noEOF(err))
	}
	if _, err := io.ReadFull(rc, p); err != nil {
		return fmt.Errorf("reading storage %.40q: %w", r.key, noEOF(err))
	}
	return nil
}

// readSpan returns n bytes from byte off of the storage. For a compressed
// entry the buffer grows with the data actually decompressed, so a lying
// header cannot make it allocate up front.
func (c *torchCheckpoint) readSpan(r *torchStorage, off, n int64) ([]byte, error) {
	if r.zf == nil {
		p := make([]byte, n)
		return p, c.readAt(r, off, p)
	}
	rc, err := r.zf.Open()
	if err != nil {
		return nil, fmt.Errorf("storage %.40q: %w", r.key, err)
	}
	defer rc.Close()
	if _, err := io.CopyN(io.Discard, rc, off); err != nil {
		return nil, fmt.Errorf("reading storage %.40q: %w", r.key, noEOF(err))
	}
	p, err := io.ReadAll(io.LimitReader(rc, n))
	if err == nil && int64(len(p)) < n {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		return nil, fmt.Errorf("reading storage %.40q: %w", r.key, err)
	}
	return p, nil
}

func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
