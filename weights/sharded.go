package weights

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// shardedCheckpoint presents several checkpoint files as one.
type shardedCheckpoint struct {
	path     string
	shards   []Checkpoint
	owner    map[string]Checkpoint
	infos    []TensorInfo
	metadata map[string]string
}

// OpenIndex opens a sharded checkpoint from its index file
// (model.safetensors.index.json or pytorch_model.bin.index.json): a JSON
// object with "metadata" and a "weight_map" from tensor name to shard file
// name, relative to the index's directory. A missing shard, a tensor listed
// twice, a listed tensor absent from its shard, or a shard tensor missing
// from the map is an error. Shards are plain file names in the index's
// directory, regular checkpoint files (not indexes or directories, so an
// index cannot lead to itself or another index).
func OpenIndex(path string) (Checkpoint, error) {
	raw, err := ReadFile(path, MaxIndexSize, "shard index")
	if err != nil {
		return nil, err
	}
	wm, md, err := parseIndex(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	dir := filepath.Dir(path)
	var files []string
	seen := map[string]bool{}
	for _, e := range wm {
		if !seen[e.file] {
			seen[e.file] = true
			files = append(files, e.file)
		}
	}
	sort.Strings(files)
	sc := &shardedCheckpoint{path: path, owner: make(map[string]Checkpoint, len(wm))}
	byFile := map[string]Checkpoint{}
	for _, name := range files {
		if name == "" || name == "." || name == ".." || strings.ContainsAny(name, `/\`) || filepath.IsAbs(name) || name != filepath.Base(name) {
			sc.Close()
			return nil, fmt.Errorf("%s: shard %q must be a file name beside the index", path, name)
		}
		if strings.HasSuffix(name, ".json") {
			sc.Close()
			return nil, fmt.Errorf("%s: shard %q is an index, not a checkpoint file", path, name)
		}
		p := filepath.Join(dir, name)
		if _, err := os.Stat(p); err != nil {
			sc.Close()
			return nil, fmt.Errorf("%s: missing shard %s", path, name)
		}
		c, err := openFile(p)
		if err != nil {
			sc.Close()
			return nil, err
		}
		sc.shards = append(sc.shards, c)
		byFile[name] = c
	}
	listed := map[string]bool{}
	for _, e := range wm {
		c := byFile[e.file]
		info, ok := c.Info(e.tensor)
		if !ok {
			sc.Close()
			return nil, &TensorError{File: path, Tensor: e.tensor, Err: fmt.Errorf("listed in weight_map but absent from shard %s", e.file)}
		}
		listed[e.tensor] = true
		sc.owner[e.tensor] = c
		sc.infos = append(sc.infos, info)
	}
	for _, c := range sc.shards {
		for _, t := range c.Tensors() {
			if !listed[t.Name] {
				sc.Close()
				return nil, &TensorError{File: c.Path(), Tensor: t.Name, Err: fmt.Errorf("present in the shard but not in the weight_map of %s", filepath.Base(path))}
			}
		}
	}
	SortNatural(sc.infos)
	sc.metadata = md
	if len(sc.shards) > 0 && sc.shards[0].Metadata() != nil {
		merged := map[string]string{}
		for k, v := range sc.shards[0].Metadata() {
			merged[k] = v
		}
		for k, v := range md {
			merged[k] = v
		}
		sc.metadata = merged
	}
	return sc, nil
}

type indexEntry struct{ tensor, file string }

// parseIndex decodes an index file token by token so that a tensor listed
// twice in weight_map is caught (a plain map decode keeps the last silently).
func parseIndex(raw []byte) ([]indexEntry, map[string]string, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(raw, &top); err != nil {
		return nil, nil, fmt.Errorf("invalid index JSON: %w", err)
	}
	wmRaw, ok := top["weight_map"]
	if !ok {
		return nil, nil, errors.New(`index has no "weight_map"`)
	}
	dec := json.NewDecoder(bytes.NewReader(wmRaw))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, nil, errors.New(`"weight_map" is not an object`)
	}
	var out []indexEntry
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, nil, fmt.Errorf("invalid weight_map: %w", err)
		}
		name := tok.(string)
		var file string
		if err := dec.Decode(&file); err != nil {
			return nil, nil, fmt.Errorf("weight_map[%q]: %w", name, err)
		}
		if seen[name] {
			return nil, nil, fmt.Errorf("tensor %q listed twice in weight_map", name)
		}
		seen[name] = true
		out = append(out, indexEntry{name, file})
	}
	md := map[string]string{}
	if mdRaw, ok := top["metadata"]; ok {
		var m map[string]any
		if err := json.Unmarshal(mdRaw, &m); err == nil {
			for k, v := range m {
				md[k] = fmt.Sprint(v)
			}
		}
	}
	return out, md, nil
}

// openShardSet opens a directory of .safetensors files with no index as one
// checkpoint; a tensor present in two files is an error.
func openShardSet(dir string, files []string) (Checkpoint, error) {
	sc := &shardedCheckpoint{path: dir, owner: map[string]Checkpoint{}}
	for _, p := range files {
		c, err := openFile(p)
		if err != nil {
			sc.Close()
			return nil, err
		}
		sc.shards = append(sc.shards, c)
		for _, t := range c.Tensors() {
			if prev, dup := sc.owner[t.Name]; dup {
				sc.Close()
				return nil, &TensorError{File: dir, Tensor: t.Name, Err: fmt.Errorf("present in both %s and %s", filepath.Base(prev.Path()), filepath.Base(p))}
			}
			sc.owner[t.Name] = c
			sc.infos = append(sc.infos, t)
		}
	}
	SortNatural(sc.infos)
	sc.metadata = sc.shards[0].Metadata()
	return sc, nil
}

func (s *shardedCheckpoint) Path() string                { return s.path }
func (s *shardedCheckpoint) Tensors() []TensorInfo       { return s.infos }
func (s *shardedCheckpoint) Metadata() map[string]string { return s.metadata }

func (s *shardedCheckpoint) Info(name string) (TensorInfo, bool) {
	c, ok := s.owner[name]
	if !ok {
		return TensorInfo{}, false
	}
	return c.Info(name)
}

func (s *shardedCheckpoint) ReadTensor(name string, buf []byte) (Tensor, error) {
	c, ok := s.owner[name]
	if !ok {
		return Tensor{}, &TensorError{File: s.path, Tensor: name, Err: ErrNotFound}
	}
	return c.ReadTensor(name, buf)
}

// TensorSection is the owning shard's section of the tensor.
func (s *shardedCheckpoint) TensorSection(name string) (*io.SectionReader, bool) {
	c, ok := s.owner[name]
	if !ok {
		return nil, false
	}
	return TensorSection(c, name)
}

func (s *shardedCheckpoint) Close() error {
	var first error
	for _, c := range s.shards {
		if err := c.Close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// Files lists the index (when there is one) and every shard file.
func (s *shardedCheckpoint) Files() []string {
	var out []string
	if filepath.Ext(s.path) == ".json" {
		out = append(out, s.path)
	}
	for _, c := range s.shards {
		out = append(out, c.Path())
	}
	return out
}
