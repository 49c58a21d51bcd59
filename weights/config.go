package weights

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/weightops/weightops/tensorname"
)

// OutputDir is the model directory an output path of CreateOutput writes
// into, or "" when it writes a lone .safetensors file (which takes no side
// files: they would land in whatever directory holds it).
func OutputDir(path string, shardSize int64) string {
	switch {
	case shardSize > 0 || !IsSafetensorsPath(path):
		return path
	case filepath.Base(path) == "model.safetensors":
		return filepath.Dir(path)
	}
	return ""
}

// UpdateConfig brings config.json among s in line with a checkpoint written
// from source's tensors: written are its tensors with the dtypes written.
//
//   - torch_dtype (and dtype, the key newer transformers write) becomes the
//     dtype holding most of the written floating values, as
//     save_pretrained records the model's dtype;
//   - num_hidden_layers becomes the number of numbered blocks written, when
//     it counted the source's blocks and the two counts differ (a
//     passthrough merge that stacks or drops layers).
//
// The file is rewritten only when a value changes, and then in place:
// key order and layout stay. It returns one line per change
// ("config.json: torch_dtype bfloat16 → float16").
func (s *SideFiles) UpdateConfig(source, written []TensorInfo) ([]string, error) {
	i := -1
	for j, f := range s.Files {
		if f.Name == "config.json" {
			i = j
		}
	}
	if i < 0 {
		return nil, nil
	}
	data := s.Files[i].Data
	cur, err := topLevel(data)
	if err != nil {
		return nil, fmt.Errorf("config.json: %w", err)
	}
	set := map[string]any{}
	if d, ok := dominantFloat(written); ok && d.TorchName() != "" {
		keys := []string{"torch_dtype", "dtype"}
		if _, has := cur["dtype"]; !has {
			keys = keys[:1]
		} else if _, has := cur["torch_dtype"]; !has {
			keys = keys[1:]
		}
		for _, k := range keys {
			set[k] = d.TorchName()
		}
	}
	if raw, ok := cur["num_hidden_layers"]; ok {
		var n int
		from, to := tensorname.Layers(names(source)), tensorname.Layers(names(written))
		if json.Unmarshal(raw, &n) == nil && n == from && to > 0 && to != from {
			set["num_hidden_layers"] = to
		}
	}
	var changes []string
	for _, k := range []string{"torch_dtype", "dtype", "num_hidden_layers"} {
		v, ok := set[k]
		if !ok {
			continue
		}
		enc, _ := json.Marshal(v)
		old, had := cur[k]
		if had && bytes.Equal(old, enc) {
			continue
		}
		if data, err = SetJSONKey(data, k, enc); err != nil {
			return nil, fmt.Errorf("config.json: %w", err)
		}
		was := "absent"
		if had {
			was = string(old)
		}
		changes = append(changes, fmt.Sprintf("config.json: %s %s → %s", k, was, enc))
	}
	s.Files[i].Data = data
	return changes, nil
}

func names(ts []TensorInfo) []string {
	out := make([]string, len(ts))
	for i, t := range ts {
		out[i] = t.Name
	}
	return out
}

// dominantFloat is the floating dtype holding the most values.
func dominantFloat(ts []TensorInfo) (DType, bool) {
	var count [numDTypes]int64
	for _, t := range ts {
		if n, err := t.NumElements(); err == nil && t.DType.IsFloat() && t.DType < numDTypes {
			count[t.DType] += n
		}
	}
	best, ok := DType(0), false
	for d, n := range count {
		if n > 0 && (!ok || n > count[best]) {
			best, ok = DType(d), true
		}
	}
	return best, ok
}

// topLevel is the raw value of each top-level key of a JSON object.
func topLevel(data []byte) (map[string]json.RawMessage, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, err
	}
	if m == nil {
		return nil, errors.New("not a JSON object")
	}
	return m, nil
}

// SetJSONKey sets a top-level key of a JSON object to the JSON value v,
// editing the text in place: the value is replaced where the key stands,
// or the key is added after the last one, indented like the first. The
// rest of the bytes stay as they were.
func SetJSONKey(data []byte, key string, v json.RawMessage) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, errors.New("not a JSON object")
	}
	open := int(dec.InputOffset())
	last := -1           // end of the last member's value
	start, end := -1, -1 // the key's value; the last one counts, as in every JSON reader
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, err
		}
		last = int(dec.InputOffset())
		if tok == key {
			start, end = last-len(raw), last
		}
	}
	if start >= 0 {
		return concat(data[:start], v, data[end:]), nil
	}
	k, _ := json.Marshal(key)
	member := concat(k, []byte(": "), v)
	if last < 0 {
		return concat(data[:open], member, data[open:]), nil
	}
	indent := data[open:open]
	for j := open; j < len(data) && (data[j] == ' ' || data[j] == '\t' || data[j] == '\n' || data[j] == '\r'); j++ {
		indent = data[open : j+1]
	}
	if len(indent) == 0 {
		indent = []byte(" ")
	}
	return concat(data[:last], []byte(","), indent, member, data[last:]), nil
}

func concat(parts ...[]byte) []byte {
	return bytes.Join(parts, nil)
}
