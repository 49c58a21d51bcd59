package weights

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
)

// TensorWriter receives the bytes of tensors whose names, dtypes and shapes
// were declared up front. Tensors may arrive in any order and from several
// goroutines at once. Nothing appears at the output path until Commit
// succeeds; Abort (safe to call after Commit) discards everything.
type TensorWriter interface {
	WriteTensor(name string, data []byte) error
	Commit() error
	Abort()
}

// SafetensorsOrder returns the order the official library lays tensors out
// in: descending dtype (widest first), then ascending name by bytes.
func SafetensorsOrder(infos []TensorInfo) []TensorInfo {
	out := append([]TensorInfo(nil), infos...)
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].DType != out[j].DType {
			return out[i].DType > out[j].DType
		}
		return out[i].Name < out[j].Name
	})
	return out
}

// EncodeSafetensorsHeader builds the bytes that precede the data buffer: an
// 8-byte little-endian length and the JSON header padded with spaces to a
// multiple of 8, byte for byte as safetensors' Rust serializer writes it:
// "__metadata__" first (its keys sorted), then the tensors in
// SafetensorsOrder, each as {"dtype":…,"shape":[…],"data_offsets":[b,e]},
// no whitespace, no HTML escaping. It also returns the tensors with their
// byte ranges in data order.
func EncodeSafetensorsHeader(infos []TensorInfo, metadata map[string]string) ([]byte, []HeaderTensor, error) {
	ordered := SafetensorsOrder(infos)
	var js bytes.Buffer
	js.WriteByte('{')
	first := true
	str := func(s string) {
		var b bytes.Buffer
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(false)
		_ = enc.Encode(s) // strings always encode
		js.Write(bytes.TrimSuffix(b.Bytes(), []byte("\n")))
	}
	if len(metadata) > 0 {
		keys := make([]string, 0, len(metadata))
		for k := range metadata {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		js.WriteString(`"__metadata__":{`)
		for i, k := range keys {
			if i > 0 {
				js.WriteByte(',')
			}
			str(k)
			js.WriteByte(':')
			str(metadata[k])
		}
		js.WriteByte('}')
		first = false
	}
	var at int64
	seen := make(map[string]bool, len(ordered))
	out := make([]HeaderTensor, 0, len(ordered))
	for _, t := range ordered {
		if t.Name == "__metadata__" || seen[t.Name] {
			return nil, nil, fmt.Errorf("tensor %q: duplicate or reserved name", t.Name)
		}
		seen[t.Name] = true
		if !t.DType.InSafetensors() {
			return nil, nil, fmt.Errorf("tensor %q: dtype %s cannot be stored in safetensors", t.Name, t.DType)
		}
		n, err := t.ByteSize()
		if err != nil {
			return nil, nil, fmt.Errorf("tensor %q: %w", t.Name, err)
		}
		if !first {
			js.WriteByte(',')
		}
		first = false
		str(t.Name)
		fmt.Fprintf(&js, `:{"dtype":"%s","shape":[`, t.DType)
		for i, d := range t.Shape {
			if i > 0 {
				js.WriteByte(',')
			}
			fmt.Fprint(&js, d)
		}
		fmt.Fprintf(&js, `],"data_offsets":[%d,%d]}`, at, at+n)
		out = append(out, HeaderTensor{TensorInfo: t, Begin: at, End: at + n})
		at += n
	}
	js.WriteByte('}')
	for js.Len()%8 != 0 {
		js.WriteByte(' ')
	}
	if js.Len() > MaxHeaderSize {
		// Readers (ours, the official library's) would refuse the file.
		return nil, nil, fmt.Errorf("the safetensors header would be %d bytes, over the %d-byte limit readers accept (%d tensors, %d metadata bytes)", js.Len(), MaxHeaderSize, len(ordered), metadataBytes(metadata))
	}
	hdr := make([]byte, 8, 8+js.Len())
	binary.LittleEndian.PutUint64(hdr, uint64(js.Len()))
	return append(hdr, js.Bytes()...), out, nil
}

func metadataBytes(md map[string]string) int {
	n := 0
	for k, v := range md {
		n += len(k) + len(v)
	}
	return n
}

// SafetensorsWriter writes one .safetensors file through a temp file in the
// destination directory, renamed into place by Commit.
type SafetensorsWriter struct {
	path      string
	f         *os.File
	dataStart int64
	size      int64
	mu        sync.Mutex
	entries   map[string]*writeEntry
	done      bool
	ahead     *SyncAhead
}

type writeEntry struct {
	HeaderTensor
	written bool
	// got counts the bytes of a tensor written in parts (WriteTensorAt);
	// the tensor is written when they cover it.
	got int64
}

// CreateSafetensors declares the tensors of a new file and writes its
// header. The file's final size is reserved up front, so tensors can be
// written in any order, concurrently, with positioned writes.
func CreateSafetensors(path string, infos []TensorInfo, metadata map[string]string) (*SafetensorsWriter, error) {
	if path == "" {
		return nil, errNoOutput
	}
	hdr, tensors, err := EncodeSafetensorsHeader(infos, metadata)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	f, err := CreateTemp(path)
	if err != nil {
		return nil, err
	}
	w := &SafetensorsWriter{path: path, f: f, dataStart: int64(len(hdr)), entries: make(map[string]*writeEntry, len(tensors))}
	w.size = w.dataStart
	for _, t := range tensors {
		w.entries[t.Name] = &writeEntry{HeaderTensor: t}
		w.size = w.dataStart + t.End
	}
	if _, err := f.Write(hdr); err != nil {
		w.Abort()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if err := f.Truncate(w.size); err != nil {
		w.Abort()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	w.ahead = StartSyncAhead(f)
	return w, nil
}

// Path is the final path the file is committed to.
func (w *SafetensorsWriter) Path() string { return w.path }

// WriteTensor writes one declared tensor's bytes at its place in the file.
func (w *SafetensorsWriter) WriteTensor(name string, data []byte) error {
	w.mu.Lock()
	e, ok := w.entries[name]
	switch {
	case w.done:
		w.mu.Unlock()
		return fmt.Errorf("%s: tensor %q: writer already closed", w.path, name)
	case !ok:
		w.mu.Unlock()
		return fmt.Errorf("%s: tensor %q: not declared", w.path, name)
	case e.written || e.got > 0:
		w.mu.Unlock()
		return fmt.Errorf("%s: tensor %q: written twice", w.path, name)
	case int64(len(data)) != e.End-e.Begin:
		w.mu.Unlock()
		return fmt.Errorf("%s: tensor %q: %d bytes given, %d declared", w.path, name, len(data), e.End-e.Begin)
	}
	e.written = true
	w.mu.Unlock()
	if _, err := w.f.WriteAt(data, w.dataStart+e.Begin); err != nil {
		return fmt.Errorf("%s: tensor %q: %w", w.path, name, err)
	}
	w.ahead.Wrote(len(data))
	return nil
}

// WriteTensorAt writes part of a declared tensor: data at byte off of its
// bytes. The parts of a tensor may arrive in any order and from several
// goroutines, each byte once; the tensor counts as written when they add
// up to its size. A tensor is written whole or in parts, not both.
func (w *SafetensorsWriter) WriteTensorAt(name string, data []byte, off int64) error {
	w.mu.Lock()
	e, ok := w.entries[name]
	switch {
	case w.done:
		w.mu.Unlock()
		return fmt.Errorf("%s: tensor %q: writer already closed", w.path, name)
	case !ok:
		w.mu.Unlock()
		return fmt.Errorf("%s: tensor %q: not declared", w.path, name)
	case e.written:
		w.mu.Unlock()
		return fmt.Errorf("%s: tensor %q: written twice", w.path, name)
	case off < 0 || off+int64(len(data)) > e.End-e.Begin || e.got+int64(len(data)) > e.End-e.Begin:
		w.mu.Unlock()
		return fmt.Errorf("%s: tensor %q: %d bytes at %d overrun its %d bytes (%d already written)", w.path, name, len(data), off, e.End-e.Begin, e.got)
	}
	e.got += int64(len(data))
	e.written = e.got == e.End-e.Begin
	w.mu.Unlock()
	if _, err := w.f.WriteAt(data, w.dataStart+e.Begin+off); err != nil {
		return fmt.Errorf("%s: tensor %q: %w", w.path, name, err)
	}
	w.ahead.Wrote(len(data))
	return nil
}

// Commit checks that every declared tensor was written, syncs the file and
// renames it into place.
func (w *SafetensorsWriter) Commit() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done {
		return fmt.Errorf("%s: already committed or aborted", w.path)
	}
	var missing []string
	for name, e := range w.entries {
		if !e.written {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		w.abortLocked()
		return fmt.Errorf("%s: %d tensors never written (first: %q)", w.path, len(missing), missing[0])
	}
	w.done = true
	w.ahead.Stop()
	return CommitTemp(w.f, w.path)
}

// Abort discards the temp file. It does nothing after a successful Commit.
func (w *SafetensorsWriter) Abort() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.abortLocked()
}

func (w *SafetensorsWriter) abortLocked() {
	if w.done {
		return
	}
	w.done = true
	w.ahead.Stop()
	DiscardTemp(w.f)
}

// ShardedWriter writes a Hugging Face sharded checkpoint: files named
// model-0000i-of-0000N.safetensors and a model.safetensors.index.json, or a
// single model.safetensors when everything fits in one shard.
type ShardedWriter struct {
	dir     string
	made    bool // dir was created for this writer
	shards  []*SafetensorsWriter
	owner   map[string]*SafetensorsWriter
	index   []byte
	indexAt string
}

// ShardName is the Hugging Face name of shard i (1-based) of n.
func ShardName(i, n int) string { return fmt.Sprintf("model-%05d-of-%05d.safetensors", i, n) }

// IndexName is the file name of a safetensors shard index.
const IndexName = "model.safetensors.index.json"

// PlanShards splits tensors, taken in NaturalLess order, greedily into
// groups of at most maxBytes (a tensor larger than maxBytes gets a shard of
// its own), as transformers' save_pretrained does. maxBytes <= 0 means one
// group.
func PlanShards(infos []TensorInfo, maxBytes int64) [][]TensorInfo {
	sorted := append([]TensorInfo(nil), infos...)
	SortNatural(sorted)
	var groups [][]TensorInfo
	var cur []TensorInfo
	var size int64
	for _, t := range sorted {
		b, _ := t.ByteSize()
		if maxBytes > 0 && len(cur) > 0 && size+b > maxBytes {
			groups = append(groups, cur)
			cur, size = nil, 0
		}
		cur = append(cur, t)
		size += b
	}
	if len(cur) > 0 || len(groups) == 0 {
		groups = append(groups, cur)
	}
	return groups
}

// errNoOutput refuses an empty output path, which would otherwise fail
// as "mkdir : no such file or directory".
var errNoOutput = errors.New("no output path given")

// CreateSharded prepares a sharded checkpoint in dir (created if needed).
// Every shard carries the same metadata.
func CreateSharded(dir string, infos []TensorInfo, metadata map[string]string, maxShardBytes int64) (*ShardedWriter, error) {
	if dir == "" {
		return nil, errNoOutput
	}
	_, statErr := os.Stat(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	groups := PlanShards(infos, maxShardBytes)
	sw := &ShardedWriter{dir: dir, owner: map[string]*SafetensorsWriter{}, made: os.IsNotExist(statErr)}
	if len(groups) == 1 {
		w, err := CreateSafetensors(filepath.Join(dir, "model.safetensors"), groups[0], metadata)
		if err != nil {
			return nil, err
		}
		sw.shards = []*SafetensorsWriter{w}
		for _, t := range groups[0] {
			sw.owner[t.Name] = w
		}
		return sw, nil
	}
	weightMap := map[string]string{}
	var total int64
	for i, g := range groups {
		name := ShardName(i+1, len(groups))
		w, err := CreateSafetensors(filepath.Join(dir, name), g, metadata)
		if err != nil {
			sw.Abort()
			return nil, err
		}
		sw.shards = append(sw.shards, w)
		for _, t := range g {
			sw.owner[t.Name] = w
			weightMap[t.Name] = name
			b, _ := t.ByteSize()
			total += b
		}
	}
	idx, err := MarshalIndex(total, weightMap)
	if err != nil {
		sw.Abort()
		return nil, err
	}
	sw.index, sw.indexAt = idx, filepath.Join(dir, IndexName)
	return sw, nil
}

// MarshalIndex renders an index file as transformers writes it: sorted
// keys, two-space indent, trailing newline.
func MarshalIndex(totalSize int64, weightMap map[string]string) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	err := enc.Encode(map[string]any{
		"metadata":   map[string]int64{"total_size": totalSize},
		"weight_map": weightMap,
	})
	return b.Bytes(), err
}

// Files lists the final paths this writer produces (shards, then index).
func (s *ShardedWriter) Files() []string {
	var out []string
	for _, w := range s.shards {
		out = append(out, w.path)
	}
	if s.indexAt != "" {
		out = append(out, s.indexAt)
	}
	return out
}

// WriteTensor routes a tensor to its shard.
func (s *ShardedWriter) WriteTensor(name string, data []byte) error {
	w, ok := s.owner[name]
	if !ok {
		return fmt.Errorf("%s: tensor %q: not declared", s.dir, name)
	}
	return w.WriteTensor(name, data)
}

// WriteTensorAt routes part of a tensor to its shard (see
// SafetensorsWriter.WriteTensorAt).
func (s *ShardedWriter) WriteTensorAt(name string, data []byte, off int64) error {
	w, ok := s.owner[name]
	if !ok {
		return fmt.Errorf("%s: tensor %q: not declared", s.dir, name)
	}
	return w.WriteTensorAt(name, data, off)
}

// Commit commits every shard, then the index last, so a reader never sees
// an index pointing at shards that are not there. If any step fails the
// shards already in place are removed.
func (s *ShardedWriter) Commit() error {
	var done []string
	fail := func(err error) error {
		for _, p := range done {
			os.Remove(p)
		}
		s.Abort()
		return err
	}
	for _, w := range s.shards {
		if err := w.Commit(); err != nil {
			return fail(err)
		}
		done = append(done, w.path)
	}
	if s.indexAt != "" {
		if err := WriteFileAtomic(s.indexAt, s.index); err != nil {
			return fail(err)
		}
	}
	keep := map[string]bool{}
	for _, f := range s.Files() {
		keep[filepath.Base(f)] = true
	}
	return RemoveStale(s.dir, keep)
}

var (
	stShardRe  = regexp.MustCompile(`^model-\d{5}-of-\d{5}\.safetensors$`)
	binShardRe = regexp.MustCompile(`^pytorch_model-\d{5}-of-\d{5}\.bin$`)
)

// RemoveStale removes from dir the files of a checkpoint an earlier write
// left there — model.safetensors, pytorch_model.bin, their indexes, the
// shards those list and Hugging Face shard names — except those in keep:
// a directory holds one checkpoint, or readers (weightops included) would
// open the old one. Only plain file names in dir are touched.
func RemoveStale(dir string, keep map[string]bool) error {
	stale := map[string]bool{}
	for _, idx := range []string{IndexName, "pytorch_model.bin.index.json"} {
		stale[idx] = true
		raw, err := ReadFile(filepath.Join(dir, idx), MaxIndexSize, "shard index")
		if err != nil {
			continue
		}
		if wm, _, err := parseIndex(raw); err == nil {
			for _, e := range wm {
				if e.file == filepath.Base(e.file) && e.file != "." && e.file != ".." {
					stale[e.file] = true
				}
			}
		}
	}
	stale["model.safetensors"], stale["pytorch_model.bin"] = true, true
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if stShardRe.MatchString(e.Name()) || binShardRe.MatchString(e.Name()) {
			stale[e.Name()] = true
		}
	}
	for name := range stale {
		if keep[name] {
			continue
		}
		p := filepath.Join(dir, name)
		if st, err := os.Lstat(p); err == nil && !st.IsDir() {
			if err := os.Remove(p); err != nil {
				return fmt.Errorf("%s: removing a stale checkpoint file: %w", p, err)
			}
		}
	}
	return nil
}

// Abort discards every uncommitted shard.
func (s *ShardedWriter) Abort() {
	for _, w := range s.shards {
		w.Abort()
	}
	if s.made {
		os.Remove(s.dir) // only if empty: nothing else is touched
	}
}

// IsSafetensorsPath reports whether an output path names a single file.
func IsSafetensorsPath(p string) bool { return strings.HasSuffix(p, ".safetensors") }

// WriteSafetensors writes in-memory tensors to a .safetensors file in one
// call, for small outputs and tests; large outputs stream through
// CreateSafetensors.
func WriteSafetensors(path string, tensors []Tensor, metadata map[string]string) error {
	infos := make([]TensorInfo, len(tensors))
	for i, t := range tensors {
		infos[i] = t.TensorInfo
	}
	w, err := CreateSafetensors(path, infos, metadata)
	if err != nil {
		return err
	}
	for _, t := range tensors {
		if err := w.WriteTensor(t.Name, t.Data); err != nil {
			w.Abort()
			return err
		}
	}
	return w.Commit()
}

// RewriteMetadata replaces the file's metadata before Commit. The new
// header must encode to exactly the old length, which is how values known
// only at the end (input hashes computed while tensors stream) are filled
// into fixed-width placeholders without moving any tensor data.
func (w *SafetensorsWriter) RewriteMetadata(md map[string]string) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done {
		return fmt.Errorf("%s: writer already closed", w.path)
	}
	infos := make([]TensorInfo, 0, len(w.entries))
	for _, e := range w.entries {
		infos = append(infos, e.TensorInfo)
	}
	hdr, _, err := EncodeSafetensorsHeader(infos, md)
	if err != nil {
		return fmt.Errorf("%s: %w", w.path, err)
	}
	if int64(len(hdr)) != w.dataStart {
		return fmt.Errorf("%s: rewritten header is %d bytes, was %d", w.path, len(hdr), w.dataStart)
	}
	if _, err := w.f.WriteAt(hdr, 0); err != nil {
		return fmt.Errorf("%s: %w", w.path, err)
	}
	return nil
}

// Flush sends what is written so far to disk: a caller with work left
// before Commit (a merge waiting for its inputs' hashes) overlaps the
// disk's flush with it, and Commit's fsync then waits only for what
// changed since, such as a rewritten header.
func (w *SafetensorsWriter) Flush() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done {
		return fmt.Errorf("%s: writer already closed", w.path)
	}
	if err := w.f.Sync(); err != nil {
		return fmt.Errorf("%s: %w", w.path, err)
	}
	return nil
}

// Flush flushes every shard (see SafetensorsWriter.Flush).
func (s *ShardedWriter) Flush() error {
	for _, w := range s.shards {
		if err := w.Flush(); err != nil {
			return err
		}
	}
	return nil
}

// RewriteMetadata rewrites every shard's metadata (see
// SafetensorsWriter.RewriteMetadata).
func (s *ShardedWriter) RewriteMetadata(md map[string]string) error {
	for _, w := range s.shards {
		if err := w.RewriteMetadata(md); err != nil {
			return err
		}
	}
	return nil
}

// CreateOutput opens the writer every command uses for a checkpoint
// output: a single file when path ends in .safetensors and no shard size is
// given, else a directory holding model.safetensors or, past shardSize,
// Hugging Face shards and an index. It returns the files it will write.
func CreateOutput(path string, infos []TensorInfo, metadata map[string]string, shardSize int64) (TensorWriter, []string, error) {
	if strings.HasSuffix(strings.ToLower(path), ".gguf") {
		// Else it would become a directory named .gguf.
		return nil, nil, fmt.Errorf("%s: this command writes safetensors; GGUF is written by convert, merge, patch apply and quantize", path)
	}
	if shardSize == 0 && filepath.Base(path) == "model.safetensors" {
		// The canonical name makes it a model directory's checkpoint:
		// written as a directory output, so a stale one is replaced.
		path = filepath.Dir(path)
	}
	if shardSize > 0 || !IsSafetensorsPath(path) {
		w, err := CreateSharded(path, infos, metadata, shardSize)
		if err != nil {
			return nil, nil, err
		}
		return w, w.Files(), nil
	}
	w, err := CreateSafetensors(path, infos, metadata)
	if err != nil {
		return nil, nil, err
	}
	return w, []string{path}, nil
}
