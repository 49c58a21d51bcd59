package wpatch

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"sync"

	"github.com/klauspost/compress/zstd"

	"github.com/weightops/weightops/weights"
)

// Undo records (format 2). Each patched tensor with elements that do not
// round back has one frame: a windowed zstd stream of its entries in index
// order, each the uvarint gap from the previous index (the first: from 0)
// followed by the element's original bytes. The frames follow an 8-byte
// magic, in tensor-name order, and are described by an index in the
// patched model's metadata (MetaUndoRecords). Small records go in the
// metadata too (base64); large ones in a file beside the model, named and
// hashed by the index: a safetensors header is capped at 100 MB, which a
// whole-model patch's records can exceed, and every shard carries the
// metadata. Frames are written and read a chunk at a time, so neither
// apply nor remove holds a tensor's records.
const (
	// MetaUndoRecords is the JSON undo index (undoIndex).
	MetaUndoRecords = "weightops.undo_records"
	undoMagic       = "WOUNDO2\n"
	// undoFileName is the records file of a directory output; a single
	// file output's is its name + ".undo".
	undoFileName = "weightops.undo"
)

// undoInlineMax is the largest container kept in the metadata, and
// undoSpillAt the frame size past which a tensor's frame goes from memory
// to a spool file (variables for tests).
var (
	undoInlineMax = 8 << 20
	undoSpillAt   = 1 << 20
)

// undoIndex is the JSON value of MetaUndoRecords.
type undoIndex struct {
	Version int `json:"version"`
	// Data is the container, base64, when it is in the metadata; else
	// File names it (beside the model), with its size and SHA-256.
	Data    string       `json:"data,omitempty"`
	File    string       `json:"file,omitempty"`
	Bytes   int64        `json:"bytes"`
	SHA256  string       `json:"sha256,omitempty"`
	Tensors []undoTensor `json:"tensors"`
}

// undoTensor locates one tensor's frame in the container.
type undoTensor struct {
	Name    string `json:"tensor"`
	Offset  int64  `json:"offset"`
	Length  int64  `json:"length"`
	Entries int64  `json:"entries"`
	// Verbatim: some original bytes would not survive decoding and
	// encoding (a NaN's payload), so remove writes the tensor whole.
	Verbatim bool `json:"verbatim,omitempty"`
}

// undoFilePath is where Apply puts the records file for an output: beside
// a single .safetensors file, inside a directory output (see
// weights.CreateOutput for which is which).
func undoFilePath(out string, shardSize int64, sharded bool) string {
	path := out
	if shardSize == 0 && filepath.Base(path) == "model.safetensors" {
		path = filepath.Dir(path)
	}
	if sharded || shardSize > 0 || !weights.IsSafetensorsPath(path) {
		return filepath.Join(path, undoFileName)
	}
	return path + ".undo"
}

// undoFrame collects one tensor's undo entries as they are found, in
// index order: compressed as they come, in memory and past undoSpillAt in
// a spool file.
type undoFrame struct {
	set      *undoSet
	name     string
	entries  int64
	last     int64
	verbatim bool
	zw       *zstd.Encoder
	pending  []byte // entries not yet given to zw (one Write per 64 KiB)
	buf      bytes.Buffer
	spool    *os.File
	err      error
}

// add records element i with original bytes orig (dtype size es).
func (f *undoFrame) add(i int64, orig []byte) {
	if f.err != nil {
		return
	}
	f.pending = binary.AppendUvarint(f.pending, uint64(i-f.last))
	f.pending = append(f.pending, orig...)
	f.last = i
	f.entries++
	if len(f.pending) >= 1<<16 {
		f.flush()
	}
}

// flush gives the pending entries to the encoder.
func (f *undoFrame) flush() {
	if len(f.pending) == 0 || f.err != nil {
		return
	}
	if f.zw == nil {
		f.zw = streamEncoders.Get().(*zstd.Encoder)
		f.zw.Reset(f)
	}
	if _, err := f.zw.Write(f.pending); err != nil {
		f.err = err
	}
	f.pending = f.pending[:0]
}

// Write takes compressed bytes from the encoder.
func (f *undoFrame) Write(p []byte) (int, error) {
	if f.spool == nil && f.buf.Len()+len(p) > undoSpillAt {
		sp, err := weights.CreateTemp(f.set.spoolAt)
		if err != nil {
			return 0, fmt.Errorf("undo records spool: %w", err)
		}
		f.spool = sp
		if _, err := sp.Write(f.buf.Bytes()); err != nil {
			return 0, fmt.Errorf("undo records spool: %w", err)
		}
		f.buf = bytes.Buffer{}
	}
	if f.spool != nil {
		return f.spool.Write(p)
	}
	return f.buf.Write(p)
}

// close finishes the frame and hands it to its set.
func (f *undoFrame) close() error {
	f.flush()
	if f.zw != nil {
		if err := f.zw.Close(); err != nil && f.err == nil {
			f.err = err
		}
		f.zw.Reset(nil)
		streamEncoders.Put(f.zw)
		f.zw = nil
	}
	if f.err != nil {
		f.discard()
		return f.failure()
	}
	return nil
}

// failure is the frame's error (a spool that could not be written),
// naming the tensor; finish reports it, so no record goes missing
// silently.
func (f *undoFrame) failure() error {
	return fmt.Errorf("%s: tensor %q: undo records: %w", f.set.dst, f.name, f.err)
}

func (f *undoFrame) length() int64 {
	if f.spool != nil {
		n, _ := f.spool.Seek(0, io.SeekCurrent)
		return n
	}
	return int64(f.buf.Len())
}

func (f *undoFrame) copyTo(w io.Writer) error {
	if f.spool == nil {
		_, err := w.Write(f.buf.Bytes())
		return err
	}
	_, err := io.Copy(w, io.NewSectionReader(f.spool, 0, f.length()))
	return err
}

func (f *undoFrame) discard() {
	if f.spool != nil {
		weights.DiscardTemp(f.spool)
		f.spool = nil
	}
	f.buf = bytes.Buffer{}
}

// undoSet gathers the frames of an Apply's tensors (written concurrently)
// and lays them out once all are done.
type undoSet struct {
	dst     string // the records file, if they go in one
	spoolAt string // a path whose directory exists, for spools
	mu      sync.Mutex
	frames  []*undoFrame // every frame begun (closed by the time of finish)
	file    *os.File     // the records file's temp, until committed
}

func newUndoSet(dst string) *undoSet {
	// A directory output is made only when the model is written (and
	// may be nested in directories not made yet): spool in the nearest
	// directory that exists, on its file system.
	dir := filepath.Dir(dst)
	for {
		if st, err := os.Stat(dir); err == nil && st.IsDir() {
			break
		}
		up := filepath.Dir(dir)
		if up == dir {
			break
		}
		dir = up
	}
	return &undoSet{dst: dst, spoolAt: filepath.Join(dir, filepath.Base(dst))}
}

func (s *undoSet) frame(name string) *undoFrame {
	f := &undoFrame{set: s, name: name}
	s.mu.Lock()
	s.frames = append(s.frames, f)
	s.mu.Unlock()
	return f
}

// entries is how many elements the records hold.
func (s *undoSet) entries() int64 {
	var n int64
	for _, f := range s.frames {
		n += f.entries
	}
	return n
}

// finish lays the frames out in name order and returns the index: with
// the container inline, or in the records file's temp (committed by
// commit). The frames' spools are removed.
func (s *undoSet) finish() (*undoIndex, error) {
	defer s.discardFrames()
	var kept []*undoFrame
	for _, f := range s.frames {
		if f.err != nil {
			return nil, f.failure()
		}
		if f.entries > 0 {
			kept = append(kept, f)
		}
	}
	s.frames = kept
	sort.Slice(s.frames, func(i, j int) bool { return s.frames[i].name < s.frames[j].name })
	idx := &undoIndex{Version: 2, Tensors: []undoTensor{}}
	at := int64(len(undoMagic))
	for _, f := range s.frames {
		n := f.length()
		idx.Tensors = append(idx.Tensors, undoTensor{Name: f.name, Offset: at, Length: n, Entries: f.entries, Verbatim: f.verbatim})
		at += n
	}
	idx.Bytes = at
	if at <= int64(undoInlineMax) {
		var b bytes.Buffer
		b.WriteString(undoMagic)
		for _, f := range s.frames {
			if err := f.copyTo(&b); err != nil {
				return nil, fmt.Errorf("undo records spool: %w", err)
			}
		}
		idx.Data = base64.StdEncoding.EncodeToString(b.Bytes())
		return idx, nil
	}
	f, err := weights.CreateTemp(s.spoolAt)
	if err != nil {
		return nil, err
	}
	h := sha256.New()
	bw := bufio.NewWriterSize(io.MultiWriter(f, h), 1<<20)
	bw.WriteString(undoMagic)
	for _, fr := range s.frames {
		if err := fr.copyTo(bw); err != nil {
			weights.DiscardTemp(f)
			return nil, fmt.Errorf("%s: %w", s.dst, err)
		}
	}
	if err := bw.Flush(); err != nil {
		weights.DiscardTemp(f)
		return nil, fmt.Errorf("%s: %w", s.dst, err)
	}
	s.file = f
	idx.File = filepath.Base(s.dst)
	idx.SHA256 = hex.EncodeToString(h.Sum(nil))
	return idx, nil
}

// commit puts the records file in place (when there is one) once the
// model is written; with records inline, a stale records file of an
// earlier apply to the same output is removed.
func (s *undoSet) commit() error {
	if s.file == nil {
		if isUndoFile(s.dst) {
			os.Remove(s.dst)
		}
		return nil
	}
	err := weights.CommitTemp(s.file, s.dst)
	s.file = nil
	return err
}

// abort drops whatever is not committed (after the jobs have stopped).
func (s *undoSet) abort() {
	s.discardFrames()
	if s.file != nil {
		weights.DiscardTemp(s.file)
		s.file = nil
	}
}

func (s *undoSet) discardFrames() {
	for _, f := range s.frames {
		f.discard()
	}
}

// isUndoFile reports whether path is a regular file holding undo records.
func isUndoFile(path string) bool {
	st, err := os.Lstat(path)
	if err != nil || !st.Mode().IsRegular() {
		return false
	}
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	b := make([]byte, len(undoMagic))
	_, err = io.ReadFull(f, b)
	return err == nil && string(b) == undoMagic
}

// undoSource is a patched model's undo records, opened for Remove and
// Records: its index and container (format 2), or the records of the
// first format, decoded.
type undoSource struct {
	path      string // the patched model, for errors
	model     weights.Checkpoint
	container io.ReaderAt
	file      *os.File
	tensors   map[string]undoTensor
	legacy    map[string]undoRecord
}

// openUndo reads and checks a patched model's undo index (names, ranges,
// counts, and a records file's size and SHA-256) or its records of the
// first format.
func openUndo(patched weights.Checkpoint) (*undoSource, error) {
	md := patched.Metadata()
	src := &undoSource{path: patched.Path(), model: patched, tensors: map[string]undoTensor{}}
	s, ok := md[MetaUndoRecords]
	if !ok {
		if _, ok := md[MetaUndo]; !ok {
			return nil, fmt.Errorf("%s: holds no undo records (it was written without them, as to a .gguf), so it cannot be unpatched", patched.Path())
		}
		recs, err := decodeUndo(md[MetaUndo], patched)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", patched.Path(), err)
		}
		src.legacy = recs
		return src, nil
	}
	fail := func(format string, a ...any) (*undoSource, error) {
		src.close()
		return nil, fmt.Errorf("%s: undo records: %s", patched.Path(), fmt.Sprintf(format, a...))
	}
	var idx undoIndex
	if err := json.Unmarshal([]byte(s), &idx); err != nil {
		return fail("%s is not valid JSON: %v", MetaUndoRecords, err)
	}
	if idx.Version != 2 {
		return fail("version %d, this build reads 2", idx.Version)
	}
	var size int64
	switch {
	case idx.Data != "" && idx.File != "":
		return fail("both inline and in a file")
	case idx.File != "":
		f, err := openUndoFile(patched.Path(), idx)
		if err != nil {
			return fail("%v", err)
		}
		src.file, src.container, size = f, f, idx.Bytes
	default:
		b, err := base64.StdEncoding.DecodeString(idx.Data)
		if err != nil {
			return fail("%v", err)
		}
		src.container, size = bytes.NewReader(b), int64(len(b))
	}
	magic := make([]byte, len(undoMagic))
	if _, err := src.container.ReadAt(magic, 0); err != nil || string(magic) != undoMagic {
		return fail("not undo records (bad magic)")
	}
	// The model's bytes bound what the records can hold.
	total := weights.TotalBytes(patched.Tensors())
	for _, t := range idx.Tensors {
		info, ok := patched.Info(t.Name)
		if !ok {
			return fail("tensor %q not in the model", t.Name)
		}
		if _, dup := src.tensors[t.Name]; dup {
			return fail("tensor %q listed twice", t.Name)
		}
		n, _ := info.NumElements()
		if t.Entries <= 0 || t.Entries > n || t.Offset < int64(len(undoMagic)) || t.Length <= 0 || t.Length > size || t.Offset > size-t.Length || t.Length > 2*total+1<<16 {
			return fail("tensor %q: bad range or count", t.Name)
		}
		src.tensors[t.Name] = t
	}
	return src, nil
}

// openUndoFile opens the records file an index names, beside the patched
// model: a plain name, a regular file (not a link), of the recorded size
// and SHA-256.
func openUndoFile(model string, idx undoIndex) (*os.File, error) {
	if idx.File != filepath.Base(idx.File) || idx.File == "." || idx.File == ".." || idx.File == "" {
		return nil, fmt.Errorf("records file %q is not a plain file name", idx.File)
	}
	path := filepath.Join(weights.ModelDir(model), idx.File)
	if st, err := os.Lstat(path); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("they are in %s, which is missing (keep it beside the patched model)", path)
		}
		return nil, err
	} else if st.Mode()&os.ModeSymlink != 0 {
		return nil, fmt.Errorf("%s is a link; the records file must be a regular file", path)
	}
	f, err := weights.OpenFile(path)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err == nil && st.Size() != idx.Bytes {
		err = fmt.Errorf("%s is %d bytes, the model records %d", path, st.Size(), idx.Bytes)
	}
	if err == nil {
		var sum string
		if sum, err = weights.ReaderSHA256(f); err == nil && sum != idx.SHA256 {
			err = fmt.Errorf("%s does not have the SHA-256 the model records (not this model's records)", path)
		}
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

func (s *undoSource) close() {
	if s.file != nil {
		s.file.Close()
		s.file = nil
	}
}

// names lists the tensors with records.
func (s *undoSource) names() []string {
	var out []string
	for name := range s.tensors {
		out = append(out, name)
	}
	for name := range s.legacy {
		out = append(out, name)
	}
	sort.Strings(out)
	return out
}

// entries is how many elements the records hold.
func (s *undoSource) entries() int64 {
	var n int64
	for _, t := range s.tensors {
		n += t.Entries
	}
	for _, r := range s.legacy {
		n += int64(len(r.indices))
	}
	return n
}

// bytes is the records' size, compressed.
func (s *undoSource) bytes() int64 {
	if s.legacy != nil {
		return int64(len(s.model.Metadata()[MetaUndo]))
	}
	n := int64(len(undoMagic))
	for _, t := range s.tensors {
		n += t.Length
	}
	return n
}

// verbatim reports whether tensor name must be restored whole.
func (s *undoSource) verbatim(name string) bool {
	if r, ok := s.legacy[name]; ok {
		info, _ := s.model.Info(name)
		return !roundTrips(info.DType, r.orig)
	}
	return s.tensors[name].Verbatim
}

// cursor opens tensor name's records for reading in index order; a
// tensor without records gets an empty cursor.
func (s *undoSource) cursor(name string) (*undoCursor, error) {
	info, _ := s.model.Info(name)
	n, _ := info.NumElements()
	c := &undoCursor{path: s.path, name: name, es: info.DType.Size(), n: n}
	if r, ok := s.legacy[name]; ok {
		c.rec = &r
		return c, c.advance()
	}
	t, ok := s.tensors[name]
	if !ok {
		return c, nil
	}
	zr, err := zstd.NewReader(io.NewSectionReader(s.container, t.Offset, t.Length), zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(frameWindow))
	if err != nil {
		return nil, err
	}
	c.zr, c.left = zr, t.Entries
	c.r = bufio.NewReaderSize(zr, 1<<16)
	c.orig = make([]byte, c.es)
	return c, c.advance()
}

// record reads tensor name's records whole (for a tensor restored whole).
func (s *undoSource) record(name string) (undoRecord, error) {
	if r, ok := s.legacy[name]; ok {
		return r, nil
	}
	c, err := s.cursor(name)
	if err != nil {
		return undoRecord{}, err
	}
	defer c.close()
	u := undoRecord{name: name}
	for c.have {
		u.indices = append(u.indices, c.at)
		u.orig = append(u.orig, c.orig...)
		if err := c.advance(); err != nil {
			return undoRecord{}, err
		}
	}
	return u, c.finish()
}

// verify reads tensor name's records through, checking them.
func (s *undoSource) verify(name string) error {
	c, err := s.cursor(name)
	if err != nil {
		return err
	}
	defer c.close()
	for c.have {
		if err := c.advance(); err != nil {
			return err
		}
	}
	return c.finish()
}

// undoCursor reads one tensor's records in index order, an entry ahead:
// have reports whether at and orig hold the next one.
type undoCursor struct {
	path, name string
	es         int
	n          int64
	zr         *zstd.Decoder
	r          *bufio.Reader
	left       int64 // entries still to read from r
	read       int64
	have       bool
	at         int64
	orig       []byte
	rec        *undoRecord // the first format's records, decoded
	k          int
}

func (c *undoCursor) fail(format string, a ...any) error {
	return fmt.Errorf("%s: tensor %q: undo records: %s", c.path, c.name, fmt.Sprintf(format, a...))
}

// advance reads the next entry.
func (c *undoCursor) advance() error {
	c.have = false
	if c.rec != nil {
		if c.k < len(c.rec.indices) {
			c.have, c.at = true, c.rec.indices[c.k]
			c.orig = c.rec.orig[c.k*c.es : (c.k+1)*c.es]
			c.k++
		}
		return nil
	}
	if c.left == 0 {
		return nil
	}
	g, err := binary.ReadUvarint(c.r)
	if err != nil {
		return c.fail("truncated after %d entries: %v", c.read, err)
	}
	if c.read > 0 && g == 0 || g >= uint64(c.n) || int64(g) >= c.n-c.at {
		return c.fail("bad index")
	}
	if _, err := io.ReadFull(c.r, c.orig); err != nil {
		return c.fail("truncated after %d entries: %v", c.read, err)
	}
	c.at += int64(g)
	c.read++
	c.left--
	c.have = true
	return nil
}

// finish checks that the frame held exactly its entries.
func (c *undoCursor) finish() error {
	if c.have {
		return c.fail("index %d past the tensor's last chunk", c.at)
	}
	if c.r != nil {
		if _, err := c.r.ReadByte(); err != io.EOF {
			return c.fail("data after the recorded %d entries", c.read)
		}
	}
	return nil
}

func (c *undoCursor) close() {
	if c.zr != nil {
		c.zr.Close()
		c.zr = nil
	}
}
