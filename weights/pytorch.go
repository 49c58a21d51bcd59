package weights

import (
	"archive/zip"
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"math/big"
	"math/bits"
	"os"
	"path"
	"strconv"
	"strings"

	"github.com/nlpodyssey/gopickle/pickle"
	"github.com/nlpodyssey/gopickle/types"
)

// Limits that keep a hostile pickle from exhausting memory or the stack.
const (
	// ptMaxPickle bounds the size of one pickle stream (data.pkl or one of
	// the legacy format's pickles). Real ones hold only metadata: a few MB.
	ptMaxPickle = 1 << 30
	// ptMaxPickleCost bounds the memory the unpickler is estimated to
	// allocate for a pickle (see scanPickle).
	ptMaxPickleCost = 1 << 30
	// ptMaxDepth bounds how deep nested dicts and lists are walked, and how
	// deep rebuild calls may nest.
	ptMaxDepth = 64
	// ptMaxNodes bounds the containers and values visited while flattening.
	ptMaxNodes = 1 << 22
	// ptMaxMeta bounds the scalars kept as metadata, and ptMaxMetaValue the
	// length of each key and value.
	ptMaxMeta      = 1024
	ptMaxMetaValue = 4096
	// ptMaxLong bounds integers in a pickle (bytes, or decimal digits) and
	// the module and class names of a global.
	ptMaxLong = 4096
	// ptMaxName bounds a flattened tensor name, and ptMaxNameBytes all the
	// names built while flattening (a DAG can repeat long keys).
	ptMaxName      = 64 << 10
	ptMaxNameBytes = 256 << 20
)

// ptLegacyMagic is the number the legacy (non-zip) format pickles first.
const ptLegacyMagic = "1950a86a20f9469cfc6c"

// ptLegacyProtocol is the protocol version the legacy format pickles second.
const ptLegacyProtocol = 1001

// ptWrapperKeys name the entries of a training checkpoint that hold the
// state dict, tried in this order.
var ptWrapperKeys = []string{"state_dict", "model_state_dict", "model", "module"}

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
	f, err := os.Open(path)
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

func openPyTorchFile(path string, f *os.File) (*ptCheckpoint, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	c := &ptCheckpoint{path: path, f: f, size: st.Size()}
	var head [512]byte
	n, err := f.ReadAt(head[:], 0)
	if err != nil && err != io.EOF {
		return nil, c.errorf("reading: %w", err)
	}
	h := head[:n]
	l := &ptLoader{roots: map[string]*ptRoot{}, views: map[string]*ptStorageRef{}}
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

// ptCheckpoint is an open PyTorch checkpoint.
type ptCheckpoint struct {
	path   string
	f      *os.File
	size   int64
	infos  []TensorInfo // sorted
	byName map[string]*ptTensor
	meta   map[string]string
}

// ptTensor is a validated tensor: where its element 0 lies and how to step.
type ptTensor struct {
	info   TensorInfo
	root   *ptRoot
	base   int64   // byte offset of element 0 within root
	stride []int64 // in elements, one per dimension of info.Shape
}

func (c *ptCheckpoint) errorf(format string, args ...any) error {
	return &TensorError{File: c.path, Err: fmt.Errorf(format, args...)}
}

func (c *ptCheckpoint) tensorErr(name string, err error) error {
	return &TensorError{File: c.path, Tensor: name, Err: err}
}

// Path returns the file the checkpoint was opened from.
func (c *ptCheckpoint) Path() string { return c.path }

// Tensors lists every tensor, sorted by NaturalLess on the name.
func (c *ptCheckpoint) Tensors() []TensorInfo {
	return append([]TensorInfo(nil), c.infos...)
}

// Info returns one tensor's description.
func (c *ptCheckpoint) Info(name string) (TensorInfo, bool) {
	t, ok := c.byName[name]
	if !ok {
		return TensorInfo{}, false
	}
	return t.info, true
}

// Metadata returns the scalars found beside the tensors, or nil.
func (c *ptCheckpoint) Metadata() map[string]string {
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
func (c *ptCheckpoint) Close() error { return c.f.Close() }

// ReadTensor reads one tensor as contiguous row-major little-endian bytes.
func (c *ptCheckpoint) ReadTensor(name string, buf []byte) (Tensor, error) {
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
func (c *ptCheckpoint) gather(t *ptTensor, out []byte) error {
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
func (c *ptCheckpoint) readAt(r *ptRoot, off int64, p []byte) error {
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
func (c *ptCheckpoint) readSpan(r *ptRoot, off, n int64) ([]byte, error) {
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

// ---------------------------------------------------------------------------
// Zip format

func (c *ptCheckpoint) loadZip(l *ptLoader) (any, error) {
	zr, err := zip.NewReader(c.f, c.size)
	if err != nil && !(errors.Is(err, zip.ErrInsecurePath) && zr != nil) {
		return nil, c.errorf("reading zip archive: %w", err)
	}
	entries := make(map[string]*zip.File, len(zr.File))
	var pkl *zip.File
	for _, e := range zr.File {
		if _, dup := entries[e.Name]; !dup {
			entries[e.Name] = e
		}
		if path.Base(e.Name) == "data.pkl" {
			if pkl == nil || strings.Count(e.Name, "/") < strings.Count(pkl.Name, "/") {
				pkl = e
			}
		}
	}
	if pkl == nil {
		return nil, c.errorf("zip archive has no data.pkl: not a torch.save checkpoint")
	}
	prefix := strings.TrimSuffix(pkl.Name, "data.pkl")
	if _, ok := entries[prefix+"constants.pkl"]; ok {
		return nil, c.errorf("TorchScript archive (torch.jit.save) is unsupported; save the model's state_dict() with torch.save")
	}
	if bo, ok := entries[prefix+"byteorder"]; ok {
		b, err := readZipEntry(bo, 64)
		if err != nil {
			return nil, c.errorf("reading %s: %w", bo.Name, err)
		}
		switch s := strings.TrimSpace(string(b)); s {
		case "little":
		case "big":
			return nil, c.errorf("big-endian checkpoint is unsupported; re-save it on a little-endian machine")
		default:
			return nil, c.errorf("unknown byte order %q in %s", s, bo.Name)
		}
	}
	data, err := readZipEntry(pkl, ptMaxPickle)
	if err != nil {
		return nil, c.errorf("reading %s: %w", pkl.Name, err)
	}
	n, _, err := scanPickle(bytes.NewReader(data), int64(len(data)), false)
	if err != nil {
		return nil, c.errorf("%s: %w", pkl.Name, err)
	}
	obj, err := l.unpickle(data[:n])
	if err != nil {
		return nil, c.errorf("%s: %w", pkl.Name, err)
	}
	for _, r := range l.order {
		name := prefix + "data/" + r.key
		e, ok := entries[name]
		if !ok {
			return nil, c.errorf("storage %.40q: no entry %s in the archive", r.key, name)
		}
		if e.UncompressedSize64 > math.MaxInt64/2 {
			return nil, c.errorf("%s: bad size %d", name, e.UncompressedSize64)
		}
		r.size = int64(e.UncompressedSize64)
		switch e.Method {
		case zip.Store:
			off, err := e.DataOffset()
			if err != nil {
				return nil, c.errorf("%s: %w", name, err)
			}
			if e.CompressedSize64 != e.UncompressedSize64 || off < 0 || off > c.size || r.size > c.size-off {
				return nil, c.errorf("%s: entry of %d bytes at offset %d overruns the %d-byte file", name, r.size, off, c.size)
			}
			r.off = off
		case zip.Deflate:
			// torch never compresses; allow it anyway, streaming. The
			// declared size cannot exceed what deflate can expand to.
			if e.CompressedSize64 > uint64(c.size) || r.size/1032 > int64(e.CompressedSize64)+1 {
				return nil, c.errorf("%s: implausible sizes (%d compressed, %d uncompressed)", name, e.CompressedSize64, r.size)
			}
			r.zf = e
		default:
			return nil, c.errorf("%s: unsupported zip compression method %d", name, e.Method)
		}
	}
	return obj, nil
}

// readZipEntry reads a whole entry of at most limit bytes.
func readZipEntry(e *zip.File, limit int64) ([]byte, error) {
	rc, err := e.Open()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("entry larger than %d bytes", limit)
	}
	return b, nil
}

// ---------------------------------------------------------------------------
// Legacy format

func (c *ptCheckpoint) loadLegacy(l *ptLoader) (any, error) {
	br := bufio.NewReaderSize(io.NewSectionReader(c.f, 0, c.size), 64<<10)
	var pos int64
	next := func(what string) (any, error) {
		n, body, err := scanPickle(br, c.size-pos, true)
		pos += n
		if err != nil {
			return nil, c.errorf("legacy format: %s pickle: %w", what, err)
		}
		obj, err := l.unpickle(body)
		if err != nil {
			return nil, c.errorf("legacy format: %s pickle: %w", what, err)
		}
		return obj, nil
	}
	magic, err := next("magic number")
	if err != nil {
		return nil, err
	}
	if m, ok := magic.(*big.Int); !ok || m.Text(16) != ptLegacyMagic {
		return nil, c.errorf("not a PyTorch checkpoint (a pickle without the torch.save magic number)")
	}
	proto, err := next("protocol version")
	if err != nil {
		return nil, err
	}
	if p, ok := proto.(int); !ok || p != ptLegacyProtocol {
		return nil, c.errorf("unsupported legacy protocol version %s (want %d)", pyShort(proto), ptLegacyProtocol)
	}
	sysInfo, err := next("sys_info")
	if err != nil {
		return nil, err
	}
	if le, ok := dictLookup(sysInfo, "little_endian"); ok && le == false {
		return nil, c.errorf("big-endian checkpoint is unsupported; re-save it on a little-endian machine")
	}
	obj, err := next("main")
	if err != nil {
		return nil, err
	}
	keysObj, err := next("storage keys")
	if err != nil {
		return nil, err
	}
	keys, ok := pyItems(keysObj)
	if !ok {
		return nil, c.errorf("legacy format: storage keys are a %s, not a list", pyTypeName(keysObj))
	}
	// The storages follow in the order of the keys, each an 8-byte
	// little-endian element count and the raw bytes. Only seek over them.
	var count [8]byte
	for _, k := range keys {
		key, ok := pyString(k)
		if !ok {
			return nil, c.errorf("legacy format: storage key is a %s, not a string", pyTypeName(k))
		}
		r := l.roots[key]
		if r == nil {
			return nil, c.errorf("legacy format: storage %.40q is listed but the pickle never refers to it", key)
		}
		if r.resolved {
			return nil, c.errorf("legacy format: storage %.40q listed twice", key)
		}
		if _, err := c.f.ReadAt(count[:], pos); err != nil {
			return nil, c.errorf("legacy format: storage %.40q: reading its size at byte %d: %w", key, pos, noEOF(err))
		}
		pos += 8
		n := int64(le64(count[:]))
		es := int64(r.elem.size)
		if n < 0 || n > (c.size-pos)/es {
			return nil, c.errorf("legacy format: storage %.40q of %d elements of %d bytes at byte %d overruns the %d-byte file", key, uint64(n), es, pos, c.size)
		}
		r.off, r.size, r.resolved = pos, n*es, true
		pos += n * es
	}
	for _, r := range l.order {
		if !r.resolved {
			return nil, c.errorf("legacy format: storage %.40q has no data in the file", r.key)
		}
	}
	return obj, nil
}

func le64(b []byte) uint64 {
	return uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24 |
		uint64(b[4])<<32 | uint64(b[5])<<40 | uint64(b[6])<<48 | uint64(b[7])<<56
}

// ---------------------------------------------------------------------------
// Pickle scanning

// pickleSource is what scanPickle reads: a bufio.Reader or bytes.Reader.
type pickleSource interface {
	io.Reader
	io.ByteReader
}

// scanPickle reads one pickle from r, up to and including its STOP opcode,
// with limit bytes available, and returns how many bytes it took (and, if
// keep, those bytes). It knows the argument layout of every opcode gopickle
// knows, and checks each length argument against the bytes left before
// anything is allocated for it: gopickle allocates a string or frame from
// its declared length before reading it. It also estimates what unpickling
// will allocate (a MARK costs a fresh stack; every opcode a stack slot or
// an object) and refuses beyond ptMaxPickleCost.
func scanPickle(r pickleSource, limit int64, keep bool) (int64, []byte, error) {
	var (
		n    int64
		body []byte
		cost int64
		op   byte // the opcode being scanned
	)
	if limit > ptMaxPickle {
		limit = ptMaxPickle
	}
	truncated := func() error {
		return fmt.Errorf("pickle truncated or malformed at byte %d", n)
	}
	readByte := func() (byte, error) {
		if n >= limit {
			return 0, truncated()
		}
		b, err := r.ReadByte()
		if err != nil {
			return 0, truncated()
		}
		n++
		if keep {
			body = append(body, b)
		}
		return b, nil
	}
	readN := func(k int64) ([]byte, error) {
		if k < 0 || k > limit-n {
			return nil, fmt.Errorf("pickle opcode at byte %d wants %d bytes, only %d left", n, k, limit-n)
		}
		cost += k
		if cost > ptMaxPickleCost {
			return nil, fmt.Errorf("pickle too large to unpickle (over %d bytes)", int64(ptMaxPickleCost))
		}
		start := len(body)
		if keep {
			body = append(body, make([]byte, k)...)
			if _, err := io.ReadFull(r, body[start:]); err != nil {
				return nil, truncated()
			}
			n += k
			return body[start:], nil
		}
		if k <= 8 {
			var tmp [8]byte
			if _, err := io.ReadFull(r, tmp[:k]); err != nil {
				return nil, truncated()
			}
			n += k
			return tmp[:k], nil
		}
		if _, err := io.CopyN(io.Discard, r, k); err != nil {
			return nil, truncated()
		}
		n += k
		return nil, nil
	}
	// readLine reads a newline-terminated argument of at most max bytes.
	readLine := func(max int64) (int64, error) {
		start := n
		for {
			b, err := readByte()
			if err != nil {
				return 0, err
			}
			cost++
			if b == '\n' {
				return n - start, nil
			}
			if n-start > max {
				return 0, fmt.Errorf("pickle argument at byte %d longer than %d bytes", start, max)
			}
		}
	}
	// Decoding a long integer takes time quadratic in its length (gopickle
	// shifts a big.Int byte by byte): bound the work.
	longWork := func(k int64) error {
		if k > ptMaxLong {
			return fmt.Errorf("integer of %d bytes in pickle at byte %d", k, n)
		}
		cost += k * k / 8
		return nil
	}
	lenPrefixed := func(width int, signed bool) error {
		b, err := readN(int64(width))
		if err != nil {
			return err
		}
		var k uint64
		for i := width - 1; i >= 0; i-- {
			k = k<<8 | uint64(b[i])
		}
		if signed && width == 4 && k >= 1<<31 {
			return fmt.Errorf("negative length in pickle at byte %d", n)
		}
		if k > math.MaxInt64 {
			return fmt.Errorf("huge length in pickle at byte %d", n)
		}
		if op == 0x8a || op == 0x8b { // LONG1, LONG4
			if err := longWork(int64(k)); err != nil {
				return err
			}
		}
		_, err = readN(int64(k))
		return err
	}
	for {
		var err error
		op, err = readByte()
		if err != nil {
			return n, body, err
		}
		cost += 64
		if cost > ptMaxPickleCost {
			return n, body, fmt.Errorf("pickle too large to unpickle (over %d bytes)", int64(ptMaxPickleCost))
		}
		switch op {
		case '.': // STOP
			return n, body, nil
		case '(': // MARK: the unpickler starts a new stack
			cost += 512
		case '0', '1', '2', 'N', 'Q', 'R', 'a', 'b', 'd', '}', 'e', 'l', ']', 'o',
			's', 't', ')', 'u', 0x81, 0x85, 0x86, 0x87, 0x88, 0x89,
			0x8f, 0x90, 0x91, 0x92, 0x93, 0x94, 0x97, 0x98:
			// no argument
		case 'F', 'I', 'g', 'p': // decimal numbers
			_, err = readLine(ptMaxLong)
		case 'L': // decimal long integer
			var k int64
			if k, err = readLine(ptMaxLong); err == nil {
				err = longWork(k)
			}
		case 'P', 'S', 'V': // strings
			_, err = readLine(ptMaxPickle)
		case 'c', 'i': // module and name
			if _, err = readLine(ptMaxLong); err == nil {
				_, err = readLine(ptMaxLong)
			}
		case 'K', 'h', 'q', 0x80, 0x82:
			_, err = readN(1)
		case 'M', 0x83:
			_, err = readN(2)
		case 'J', 'j', 'r', 0x84:
			_, err = readN(4)
		case 'G':
			_, err = readN(8)
		case 'U', 'C', 0x8c, 0x8a: // 1-byte length
			err = lenPrefixed(1, false)
		case 'T', 0x8b: // signed 4-byte length
			err = lenPrefixed(4, true)
		case 'B', 'X': // unsigned 4-byte length
			err = lenPrefixed(4, false)
		case 0x8d, 0x8e, 0x96: // 8-byte length
			err = lenPrefixed(8, false)
		case 0x95: // FRAME: the frame's bytes are opcodes, scanned next
			var b []byte
			if b, err = readN(8); err == nil {
				k := le64(b)
				if k > uint64(limit-n) {
					err = fmt.Errorf("pickle frame of %d bytes at byte %d, only %d left", k, n, limit-n)
				} else if cost += int64(k); cost > ptMaxPickleCost {
					err = fmt.Errorf("pickle too large to unpickle (over %d bytes)", int64(ptMaxPickleCost))
				}
			}
		default:
			return n, body, fmt.Errorf("unknown pickle opcode 0x%02x at byte %d", op, n-1)
		}
		if err != nil {
			return n, body, err
		}
	}
}

// ---------------------------------------------------------------------------
// Unpickling: the objects our hooks build

// ptElemType is a torch storage class (torch.FloatStorage, ...) or dtype
// object (torch.float32, ...), as found by FindClass.
type ptElemType struct {
	name  string // torch's name, for messages
	dtype DType
	ok    bool // dtype is one we read
	size  int  // bytes per element
}

var ptStorageClasses = map[string]*ptElemType{}
var ptDTypes = map[string]*ptElemType{}

func init() {
	for _, s := range []struct {
		name  string
		dtype DType
		ok    bool
		size  int
	}{
		{"DoubleStorage", F64, true, 8},
		{"FloatStorage", F32, true, 4},
		{"HalfStorage", F16, true, 2},
		{"BFloat16Storage", BF16, true, 2},
		{"LongStorage", I64, true, 8},
		{"IntStorage", I32, true, 4},
		{"ShortStorage", I16, true, 2},
		{"CharStorage", I8, true, 1},
		{"ByteStorage", U8, true, 1},
		{"BoolStorage", Bool, true, 1},
		{"UntypedStorage", U8, true, 1},
		{"_UntypedStorage", U8, true, 1},
		{"ComplexDoubleStorage", 0, false, 16},
		{"ComplexFloatStorage", 0, false, 8},
		{"QInt8Storage", 0, false, 1},
		{"QUInt8Storage", 0, false, 1},
		{"QInt32Storage", 0, false, 4},
		{"QUInt4x2Storage", 0, false, 1},
		{"QUInt2x4Storage", 0, false, 1},
	} {
		ptStorageClasses[s.name] = &ptElemType{"torch." + s.name, s.dtype, s.ok, s.size}
	}
	for _, d := range []struct {
		names []string
		dtype DType
		ok    bool
		size  int
	}{
		{[]string{"float64", "double"}, F64, true, 8},
		{[]string{"float32", "float"}, F32, true, 4},
		{[]string{"float16", "half"}, F16, true, 2},
		{[]string{"bfloat16"}, BF16, true, 2},
		{[]string{"int64", "long"}, I64, true, 8},
		{[]string{"int32", "int"}, I32, true, 4},
		{[]string{"int16", "short"}, I16, true, 2},
		{[]string{"int8"}, I8, true, 1},
		{[]string{"uint8"}, U8, true, 1},
		{[]string{"bool"}, Bool, true, 1},
		{[]string{"uint16"}, U16, true, 2},
		{[]string{"uint32"}, U32, true, 4},
		{[]string{"uint64"}, U64, true, 8},
		{[]string{"float8_e4m3fn"}, F8E4M3, true, 1},
		{[]string{"float8_e5m2"}, F8E5M2, true, 1},
		{[]string{"float8_e4m3fnuz", "float8_e5m2fnuz", "float8_e8m0fnu", "qint8", "quint8", "quint4x2", "quint2x4", "bits8"}, 0, false, 1},
		{[]string{"bits16", "complex32", "chalf"}, 0, false, 2},
		{[]string{"qint32"}, 0, false, 4},
		{[]string{"complex64", "cfloat"}, 0, false, 8},
		{[]string{"complex128", "cdouble"}, 0, false, 16},
	} {
		for _, n := range d.names {
			ptDTypes[n] = &ptElemType{"torch." + n, d.dtype, d.ok, d.size}
		}
	}
}

// ptRoot is one stored storage: a zip entry data/<key>, or a span of the
// legacy file.
type ptRoot struct {
	key      string
	elem     *ptElemType // of the first reference; the legacy size counts these
	off      int64       // file offset of byte 0 (stored data)
	size     int64       // bytes
	zf       *zip.File   // set when the zip entry is compressed
	resolved bool        // legacy: data located
}

// ptStorageRef is what a persistent id unpickles to: a typed window on a
// root storage.
type ptStorageRef struct {
	root *ptRoot
	elem *ptElemType
	off  int64 // bytes into root
	size int64 // bytes, as the pickle declares
}

// ptTensorRef is what a _rebuild_tensor call unpickles to.
type ptTensorRef struct {
	storage *ptStorageRef
	dtype   *ptElemType
	offset  int64 // elements of dtype
	shape   []int64
	stride  []int64
}

// ptBadTensor stands for a tensor we cannot read; it becomes an error only
// if it is part of the state dict.
type ptBadTensor struct{ err error }

// ptOpaque stands for any other Python class or object: it can be called,
// instantiated and given state, and is then skipped.
type ptOpaque struct{ name string }

// ptFunc is a Python callable implemented here.
type ptFunc func(args ...any) (any, error)

// Call implements types.Callable.
func (f ptFunc) Call(args ...any) (any, error) { return f(args...) }

// Call implements types.Callable.
func (o *ptOpaque) Call(args ...any) (any, error) { return &ptOpaque{name: o.name}, nil }

// PyNew implements types.PyNewable.
func (o *ptOpaque) PyNew(args ...any) (any, error) { return &ptOpaque{name: o.name}, nil }

// PySetState implements types.PyStateSettable, ignoring the state.
func (o *ptOpaque) PySetState(any) error { return nil }

// PySetState implements types.PyStateSettable, ignoring the state.
func (t *ptTensorRef) PySetState(any) error { return nil }

// PySetState implements types.PyStateSettable, ignoring the state.
func (t *ptBadTensor) PySetState(any) error { return nil }

// ptLoader holds the state of one checkpoint's unpickling.
type ptLoader struct {
	roots map[string]*ptRoot
	order []*ptRoot
	views map[string]*ptStorageRef // legacy storage views by view key
	depth int                      // nesting of rebuild calls
}

// unpickle runs gopickle over a pickle scanPickle accepted, with our hooks,
// turning a panic into an error.
func (l *ptLoader) unpickle(data []byte) (obj any, err error) {
	defer func() {
		if r := recover(); r != nil {
			msg := fmt.Sprint(r)
			if len(msg) > 300 {
				msg = msg[:300] + "..."
			}
			obj, err = nil, fmt.Errorf("malformed pickle: %s", msg)
		}
	}()
	u := pickle.NewUnpickler(bytes.NewReader(data))
	u.FindClass = l.findClass
	u.PersistentLoad = l.persistentLoad
	obj, err = u.Load()
	if err != nil {
		if msg := err.Error(); len(msg) > 300 { // gopickle may %#v a big object
			return nil, fmt.Errorf("malformed pickle: %s...", msg[:300])
		}
		return nil, fmt.Errorf("malformed pickle: %w", err)
	}
	return obj, nil
}

// findClass resolves the globals a checkpoint pickle names. Nothing is
// imported or run: tensor rebuilders and storage classes map to our types,
// everything else to an inert ptOpaque.
func (l *ptLoader) findClass(module, name string) (any, error) {
	switch module {
	case "torch._utils":
		switch name {
		case "_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3":
			return ptFunc(func(args ...any) (any, error) { return l.rebuildTensor(name, args), nil }), nil
		case "_rebuild_parameter", "_rebuild_parameter_with_state":
			return ptFunc(rebuildParameter), nil
		case "_rebuild_qtensor":
			return ptUnsupported("quantized tensors are"), nil
		case "_rebuild_sparse_tensor", "_rebuild_sparse_csr_tensor":
			return ptUnsupported("sparse tensors are"), nil
		case "_rebuild_meta_tensor_no_storage":
			return ptUnsupported("meta tensors (which hold no data) are"), nil
		}
		if strings.HasPrefix(name, "_rebuild_") {
			return ptUnsupported("tensors rebuilt by torch._utils." + name + " are"), nil
		}
	case "torch._tensor":
		switch name {
		case "_rebuild_from_type_v2", "_rebuild_from_type":
			return ptFunc(l.rebuildFromType), nil
		}
	case "torch", "torch.cuda", "torch.storage":
		if et, ok := ptStorageClasses[name]; ok {
			return et, nil
		}
		if module == "torch" {
			if et, ok := ptDTypes[name]; ok {
				return et, nil
			}
			if name == "Size" {
				return ptFunc(torchSize), nil
			}
		}
	}
	return &ptOpaque{name: module + "." + name}, nil
}

func ptUnsupported(what string) ptFunc {
	return func(...any) (any, error) {
		return &ptBadTensor{fmt.Errorf("%s unsupported", what)}, nil
	}
}

// torchSize is torch.Size(seq): keep the tuple.
func torchSize(args ...any) (any, error) {
	if len(args) == 1 {
		return args[0], nil
	}
	return &ptOpaque{name: "torch.Size"}, nil
}

// persistentLoad resolves a storage reference:
// ('storage', storage_type, key, location, numel) in the zip format, plus a
// sixth view_metadata element (None or (view_key, offset, size)) in the
// legacy format.
func (l *ptLoader) persistentLoad(pid any) (any, error) {
	t, ok := pid.(*types.Tuple)
	if !ok || len(*t) == 0 {
		return nil, fmt.Errorf("persistent id is a %s, not a tuple", pyTypeName(pid))
	}
	items := *t
	typename, _ := pyString(items[0])
	switch typename {
	case "storage":
	case "module":
		return &ptOpaque{name: "module"}, nil
	default:
		return nil, fmt.Errorf("unknown persistent id type %q", typename)
	}
	if len(items) < 5 {
		return nil, fmt.Errorf("storage persistent id has %d elements, want 5 or 6", len(items))
	}
	et, ok := items[1].(*ptElemType)
	if !ok {
		return nil, fmt.Errorf("storage type is a %s, not a torch storage class", pyTypeName(items[1]))
	}
	key, ok := pyString(items[2])
	if !ok {
		return nil, fmt.Errorf("storage key is a %s, not a string", pyTypeName(items[2]))
	}
	numel, ok := pyInt(items[4])
	if !ok || numel < 0 || numel > math.MaxInt64/16 {
		return nil, fmt.Errorf("storage %.40q: bad element count %s", key, pyShort(items[4]))
	}
	es := int64(et.size)
	root := l.roots[key]
	if root == nil {
		root = &ptRoot{key: key, elem: et}
		l.roots[key] = root
		l.order = append(l.order, root)
	}
	ref := &ptStorageRef{root: root, elem: et, size: numel * es}
	if len(items) >= 6 && items[5] != nil {
		vm, ok := pyItems(items[5])
		if !ok || len(vm) != 3 {
			return nil, fmt.Errorf("storage %.40q: bad view metadata", key)
		}
		viewKey, ok1 := pyString(vm[0])
		off, ok2 := pyInt(vm[1])
		size, ok3 := pyInt(vm[2])
		if !ok1 || !ok2 || !ok3 || off < 0 || size < 0 || off > math.MaxInt64/16 || size > math.MaxInt64/16 {
			return nil, fmt.Errorf("storage %.40q: bad view metadata", key)
		}
		if v, ok := l.views[viewKey]; ok {
			return v, nil
		}
		ref.off, ref.size = off*es, size*es
		l.views[viewKey] = ref
	}
	return ref, nil
}

// rebuildTensor implements torch._utils._rebuild_tensor(storage, offset,
// size, stride), _rebuild_tensor_v2(..., requires_grad, backward_hooks[,
// metadata]) and _rebuild_tensor_v3(..., requires_grad, backward_hooks,
// dtype[, metadata]).
func (l *ptLoader) rebuildTensor(fn string, args []any) any {
	bad := func(format string, a ...any) any {
		return &ptBadTensor{fmt.Errorf("torch._utils.%s: "+format, append([]any{fn}, a...)...)}
	}
	lo, hi := 4, 4
	switch fn {
	case "_rebuild_tensor_v2":
		lo, hi = 6, 7
	case "_rebuild_tensor_v3":
		lo, hi = 7, 8
	}
	if len(args) < lo || len(args) > hi {
		return bad("%d arguments", len(args))
	}
	st, ok := args[0].(*ptStorageRef)
	if !ok {
		return bad("storage is a %s", pyTypeName(args[0]))
	}
	offset, ok := pyInt(args[1])
	if !ok || offset < 0 {
		return bad("bad storage offset %s", pyShort(args[1]))
	}
	shape, ok := pyInts(args[2])
	if !ok {
		return bad("size is not a tuple of ints")
	}
	stride, ok := pyInts(args[3])
	if !ok {
		return bad("stride is not a tuple of ints")
	}
	dt := st.elem
	if fn == "_rebuild_tensor_v3" {
		if dt, ok = args[6].(*ptElemType); !ok {
			return bad("dtype is a %s", pyTypeName(args[6]))
		}
	}
	return &ptTensorRef{storage: st, dtype: dt, offset: offset, shape: shape, stride: stride}
}

// rebuildParameter implements torch._utils._rebuild_parameter(data,
// requires_grad, backward_hooks) and _rebuild_parameter_with_state: a
// Parameter is its data.
func rebuildParameter(args ...any) (any, error) {
	if len(args) >= 1 {
		switch args[0].(type) {
		case *ptTensorRef, *ptBadTensor:
			return args[0], nil
		}
	}
	return &ptBadTensor{errors.New("torch._utils._rebuild_parameter: data is not a tensor")}, nil
}

// rebuildFromType implements torch._tensor._rebuild_from_type_v2(func,
// type, args, state), used for tensors with Python state: call func(*args)
// and drop the type and state.
func (l *ptLoader) rebuildFromType(args ...any) (any, error) {
	if len(args) < 3 {
		return &ptBadTensor{errors.New("torch._tensor._rebuild_from_type: too few arguments")}, nil
	}
	fn, ok := args[0].(types.Callable)
	fargs, ok2 := args[2].(*types.Tuple)
	if !ok || !ok2 {
		return &ptBadTensor{errors.New("torch._tensor._rebuild_from_type: bad arguments")}, nil
	}
	if l.depth >= ptMaxDepth {
		return nil, errors.New("torch._tensor._rebuild_from_type nested too deep")
	}
	l.depth++
	defer func() { l.depth-- }()
	return fn.Call(*fargs...)
}

// ---------------------------------------------------------------------------
// Python value helpers

func pyString(v any) (string, bool) {
	switch s := v.(type) {
	case string:
		return s, true
	case []byte:
		return string(s), true
	}
	return "", false
}

func pyInt(v any) (int64, bool) {
	switch i := v.(type) {
	case int:
		return int64(i), true
	case *big.Int:
		if i.IsInt64() {
			return i.Int64(), true
		}
	}
	return 0, false
}

// pyItems returns the elements of a tuple or list.
func pyItems(v any) ([]any, bool) {
	switch s := v.(type) {
	case *types.Tuple:
		return *s, true
	case *types.List:
		return *s, true
	}
	return nil, false
}

func pyInts(v any) ([]int64, bool) {
	items, ok := pyItems(v)
	if !ok {
		return nil, false
	}
	out := make([]int64, len(items))
	for i, x := range items {
		if out[i], ok = pyInt(x); !ok {
			return nil, false
		}
	}
	return out, true
}

// pyKV is one dict entry.
type pyKV struct {
	key string
	val any
}

// pyDict returns the entries of a dict or OrderedDict whose keys are
// strings or ints, in order, the last value winning for a repeated key as
// in Python. Other keys are skipped.
func pyDict(v any) ([]pyKV, bool) {
	var out []pyKV
	seen := map[string]int{}
	add := func(k, val any) {
		var key string
		switch kk := k.(type) {
		case string:
			key = kk
		case []byte:
			key = string(kk)
		case int:
			key = strconv.Itoa(kk)
		case *big.Int:
			key = kk.String()
		default:
			return
		}
		if i, ok := seen[key]; ok {
			out[i].val = val
			return
		}
		seen[key] = len(out)
		out = append(out, pyKV{key, val})
	}
	switch d := v.(type) {
	case *types.Dict:
		for _, e := range *d {
			add(e.Key, e.Value)
		}
	case *types.OrderedDict:
		for e := d.List.Front(); e != nil; e = e.Next() {
			if oe, ok := e.Value.(*types.OrderedDictEntry); ok {
				add(oe.Key, oe.Value)
			}
		}
	default:
		return nil, false
	}
	return out, true
}

// dictLookup finds a string key in a dict.
func dictLookup(v any, key string) (any, bool) {
	kvs, _ := pyDict(v)
	for _, kv := range kvs {
		if kv.key == key {
			return kv.val, true
		}
	}
	return nil, false
}

// pyScalar formats an int, float, bool or string the way Python prints it.
func pyScalar(v any) (string, bool) {
	switch x := v.(type) {
	case int:
		return strconv.Itoa(x), true
	case *big.Int:
		return x.String(), true
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64), true
	case bool:
		if x {
			return "True", true
		}
		return "False", true
	case string:
		return x, true
	}
	return "", false
}

// pyShort formats a value for a message: a scalar (cut short) or its type.
func pyShort(v any) string {
	if s, ok := pyScalar(v); ok {
		if len(s) > 40 {
			s = s[:40] + "..."
		}
		if _, isStr := v.(string); isStr {
			return strconv.Quote(s)
		}
		return s
	}
	return "a " + pyTypeName(v)
}

// pyTypeName names a value's type for messages.
func pyTypeName(v any) string {
	switch x := v.(type) {
	case nil:
		return "None"
	case *types.Dict:
		return "dict"
	case *types.OrderedDict:
		return "OrderedDict"
	case *types.List:
		return "list"
	case *types.Tuple:
		return "tuple"
	case string:
		return "str"
	case []byte:
		return "bytes"
	case int, *big.Int:
		return "int"
	case float64:
		return "float"
	case bool:
		return "bool"
	case *ptTensorRef, *ptBadTensor:
		return "tensor"
	case *ptStorageRef:
		return "storage"
	case *ptElemType:
		return x.name
	case *ptOpaque:
		return x.name
	}
	return fmt.Sprintf("%T", v)
}

// ---------------------------------------------------------------------------
// Flattening the unpickled object into named tensors

// collect finds the state dict in obj, flattens it and validates every
// tensor against its storage.
func (c *ptCheckpoint) collect(obj any) error {
	budget := 0 // nodes visited looking for tensors, across all unwraps
	d, ok := pyDict(obj)
	if !ok {
		hint := ""
		if _, isOpaque := obj.(*ptOpaque); isOpaque {
			hint = " (a pickled nn.Module? save model.state_dict() instead)"
		}
		return c.errorf("top-level object is a %s, not a dict of tensors%s", pyTypeName(obj), hint)
	}
	c.meta = map[string]string{}
	c.addScalars(d)
	for range 4 {
		inner := c.unwrap(d, &budget)
		if inner == nil {
			break
		}
		d = inner
		c.addScalars(d)
	}
	w := &ptWalker{c: c, onPath: map[any]bool{}}
	for _, kv := range d {
		if err := w.walk(kv.key, kv.val, 1); err != nil {
			return err
		}
	}
	SortNatural(c.infos)
	return nil
}

// unwrap returns the state dict inside a training checkpoint's dict d, or
// nil if d is the state dict.
func (c *ptCheckpoint) unwrap(d []pyKV, budget *int) []pyKV {
	for _, kv := range d {
		switch kv.val.(type) {
		case *ptTensorRef, *ptBadTensor:
			return nil // d holds tensors: it is the state dict
		}
	}
	for _, key := range ptWrapperKeys {
		for _, kv := range d {
			if kv.key != key {
				continue
			}
			if inner, ok := pyDict(kv.val); ok && hasTensor(kv.val, 0, budget) {
				return inner
			}
		}
	}
	return nil
}

// hasTensor reports whether a tensor is reachable from v.
func hasTensor(v any, depth int, budget *int) bool {
	if *budget++; *budget > ptMaxNodes || depth > ptMaxDepth {
		return false
	}
	switch x := v.(type) {
	case *ptTensorRef, *ptBadTensor:
		return true
	case *types.Tuple, *types.List:
		items, _ := pyItems(x)
		for _, it := range items {
			if hasTensor(it, depth+1, budget) {
				return true
			}
		}
	case *types.Dict, *types.OrderedDict:
		kvs, _ := pyDict(x)
		for _, kv := range kvs {
			if hasTensor(kv.val, depth+1, budget) {
				return true
			}
		}
	}
	return false
}

func (c *ptCheckpoint) addScalars(d []pyKV) {
	for _, kv := range d {
		if len(c.meta) >= ptMaxMeta {
			return
		}
		if s, ok := pyScalar(kv.val); ok && len(s) <= ptMaxMetaValue && len(kv.key) <= ptMaxMetaValue {
			c.meta[kv.key] = s
		}
	}
}

// ptWalker flattens nested containers into dotted tensor names.
type ptWalker struct {
	c      *ptCheckpoint
	nodes  int
	onPath map[any]bool // containers being walked, to break cycles
	names  int          // bytes of names built
}

func (w *ptWalker) walk(name string, v any, depth int) error {
	if w.nodes++; w.nodes > ptMaxNodes {
		return w.c.errorf("over %d values in the pickle", ptMaxNodes)
	}
	if len(name) > ptMaxName {
		return w.c.errorf("tensor name of over %d bytes (%.40q...)", ptMaxName, name)
	}
	if w.names += len(name); w.names > ptMaxNameBytes {
		return w.c.errorf("tensor names total over %d bytes", ptMaxNameBytes)
	}
	switch x := v.(type) {
	case *ptTensorRef:
		return w.c.addTensor(name, x)
	case *ptBadTensor:
		return w.c.tensorErr(name, x.err)
	case *types.Dict, *types.OrderedDict, *types.List, *types.Tuple:
		if w.onPath[x] {
			return nil // a cycle
		}
		if depth >= ptMaxDepth {
			return w.c.errorf("%q: containers nested deeper than %d", name, ptMaxDepth)
		}
		w.onPath[x] = true
		defer delete(w.onPath, x)
		if items, ok := pyItems(x); ok {
			for i, it := range items {
				if err := w.walk(name+"."+strconv.Itoa(i), it, depth+1); err != nil {
					return err
				}
			}
			return nil
		}
		kvs, _ := pyDict(x)
		for _, kv := range kvs {
			if err := w.walk(name+"."+kv.key, kv.val, depth+1); err != nil {
				return err
			}
		}
	}
	return nil
}

// addTensor validates a tensor's view against its storage and records it.
func (c *ptCheckpoint) addTensor(name string, t *ptTensorRef) error {
	if c.byName == nil {
		c.byName = map[string]*ptTensor{}
	}
	if _, dup := c.byName[name]; dup {
		return c.tensorErr(name, errors.New("two tensors have this name"))
	}
	fail := func(format string, a ...any) error {
		return c.tensorErr(name, fmt.Errorf(format, a...))
	}
	if !t.dtype.ok {
		return fail("dtype %s is unsupported", t.dtype.name)
	}
	if len(t.shape) != len(t.stride) {
		return fail("shape %v and stride %v differ in rank", t.shape, t.stride)
	}
	info := TensorInfo{Name: name, DType: t.dtype.dtype, Shape: t.shape}
	n, err := info.NumElements()
	if err != nil {
		return c.tensorErr(name, err)
	}
	nbytes, err := info.ByteSize()
	if err != nil {
		return c.tensorErr(name, err)
	}
	es := int64(t.dtype.size)
	ref, root := t.storage, t.storage.root
	if ref.off > root.size || ref.size > root.size-ref.off {
		return fail("storage %.40q: a view of %d bytes at byte %d of a %d-byte storage", root.key, ref.size, ref.off, root.size)
	}
	// last is the highest element index the view reaches.
	last := t.offset
	overflow := false
	for i, d := range t.shape {
		if t.stride[i] < 0 {
			return fail("negative stride %v", t.stride)
		}
		if d > 1 {
			hi, lo := bits.Mul64(uint64(d-1), uint64(t.stride[i]))
			s, carry := bits.Add64(uint64(last), lo, 0)
			if hi != 0 || carry != 0 || s > math.MaxInt64/16 {
				overflow = true
				break
			}
			last = int64(s)
		}
	}
	if n > 0 {
		if overflow || last >= (ref.size/es) {
			return fail("offset %d, shape %v and stride %v reach past the %d elements of storage %.40q", t.offset, t.shape, t.stride, ref.size/es, root.key)
		}
	}
	// The tensor's bytes come from the storage, but a stride-0 broadcast
	// can make it larger: still never allocate beyond the file's size (or
	// a compressed entry's).
	limit := c.size
	if root.zf != nil && root.size > limit {
		limit = root.size
	}
	if nbytes > limit {
		return fail("%d bytes, more than the file holds", nbytes)
	}
	base := ref.off
	if n > 0 {
		base += t.offset * es // t.offset <= last < ref.size/es: no overflow
	}
	c.byName[name] = &ptTensor{info: info, root: root, base: base, stride: t.stride}
	c.infos = append(c.infos, info)
	return nil
}
