package merge

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/weightops/weightops/signature"
	"github.com/weightops/weightops/weights"
)

// Options control a merge run.
type Options struct {
	Workers   int
	MaxMemory int64
	ShardSize int64
	Progress  func(int64)
	// NoHash skips hashing the inputs for provenance.
	NoHash bool
	// Version is recorded in the output metadata.
	Version string
	// Shard, when set, computes only this worker's balanced share of the
	// tensors into out/model-i-of-n.safetensors (see weights.ShardSpec);
	// `weightops index` stitches the shards together.
	Shard *weights.ShardSpec
}

// InputRecord is the provenance of one input checkpoint.
type InputRecord struct {
	Role  string       `json:"role"` // "base" or "model"
	Ref   string       `json:"ref"`
	Files []FileRecord `json:"files"`
}

// FileRecord is one file of an input with its SHA-256.
type FileRecord struct {
	Name   string `json:"name"`
	SHA256 string `json:"sha256"`
}

// placeholder has the width of a hex SHA-256 so the header can be
// rewritten in place once the hashes are known.
var placeholder = strings.Repeat("0", 64)

// Files lists the files behind a checkpoint (shards and index included).
func Files(c weights.Checkpoint) []string {
	if f, ok := c.(interface{ Files() []string }); ok {
		return f.Files()
	}
	return []string{c.Path()}
}

// Merge runs a validated plan and writes out (a directory, or a
// .safetensors file). The output metadata records the recipe, the method
// and each input's SHA-256 per file; config.json and tokenizer files of the
// base (or first) model directory are copied beside the weights.
func (p *Plan) Merge(out string, o Options) ([]string, error) {
	if p.strParam("trim_scope", "tensor") == "model" {
		g, err := p.globalCuts(o.Workers)
		if err != nil {
			return nil, err
		}
		p.global = g
	}
	records := p.inputRecords()
	md := func(recs []InputRecord) map[string]string {
		j, _ := json.Marshal(recs)
		return map[string]string{
			"weightops.recipe":  canonicalYAML(p.Recipe.Source),
			"weightops.method":  p.Recipe.Method,
			"weightops.inputs":  string(j),
			"weightops.version": o.Version,
		}
	}
	// Hash the inputs on the side while the merge streams: the page cache
	// serves both, and the header gets the real digests before commit.
	var hashErr error
	var wg sync.WaitGroup
	if !o.NoHash {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range records {
				for j := range records[i].Files {
					sum, err := signature.FileSHA256(records[i].Files[j].Name)
					if err != nil {
						hashErr = err
						return
					}
					records[i].Files[j].SHA256 = sum
				}
			}
		}()
	}
	tensors, path := p.Tensors, out
	if o.Shard != nil {
		if weights.IsSafetensorsPath(out) {
			return nil, fmt.Errorf("%s: a sharded run writes into a directory", out)
		}
		if err := os.MkdirAll(out, 0o755); err != nil {
			return nil, err
		}
		tensors, path = o.Shard.Select(p.Tensors), filepath.Join(out, o.Shard.FileName())
	}
	job := &Job{
		Inputs:  p.Inputs(),
		Tensors: tensors,
		Outputs: []Output{{Path: path, Metadata: md(records), DType: p.OutDType}},
		Kernel:  p.Kernel,
		PassThrough: func(t weights.TensorInfo) int {
			if t.DType.IsFloat() {
				return -1
			}
			return 0
		},
		Workers: o.Workers, MaxMemory: o.MaxMemory, ShardSize: o.ShardSize, Progress: o.Progress,
		Finalize: func() ([]map[string]string, error) {
			wg.Wait()
			if hashErr != nil {
				return nil, hashErr
			}
			if o.NoHash {
				return nil, nil
			}
			return []map[string]string{md(records)}, nil
		},
	}
	files, err := job.Run()
	if err != nil {
		wg.Wait()
		return nil, err
	}
	written := files[0]
	if !weights.IsSafetensorsPath(path) || o.Shard != nil {
		src := p.Recipe.BaseModel
		if src == "" {
			src = p.entries[0].Model
		}
		copied, err := CopyModelFiles(p.Recipe.resolve(src), out)
		if err != nil {
			return nil, err
		}
		written = append(written, copied...)
	}
	return written, nil
}

func (p *Plan) inputRecords() []InputRecord {
	var recs []InputRecord
	add := func(role, ref string, c weights.Checkpoint) {
		r := InputRecord{Role: role, Ref: ref}
		for _, f := range Files(c) {
			r.Files = append(r.Files, FileRecord{Name: f, SHA256: placeholder})
		}
		recs = append(recs, r)
	}
	if p.Base != nil {
		add("base", p.Recipe.BaseModel, p.Base)
	}
	for i, m := range p.Models {
		add("model", p.entries[i].Model, m)
	}
	return recs
}

// modelFiles are the files of a Hugging Face model directory that describe
// the model rather than hold weights; they go beside a merged output so
// transformers can load it.
var modelFiles = []string{
	"config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
	"special_tokens_map.json", "tokenizer.model", "vocab.json", "merges.txt", "added_tokens.json",
	"arch.yaml", "arch.json",
}

// CopyModelFiles copies config and tokenizer files from the directory of a
// model reference (a directory, or a file inside one) into dir.
func CopyModelFiles(ref, dir string) ([]string, error) {
	src := ref
	if st, err := os.Stat(ref); err == nil && !st.IsDir() {
		src = filepath.Dir(ref)
	}
	var out []string
	for _, name := range modelFiles {
		data, err := os.ReadFile(filepath.Join(src, name))
		if err != nil {
			continue
		}
		dst := filepath.Join(dir, name)
		if err := weights.WriteFileAtomic(dst, data); err != nil {
			return out, err
		}
		out = append(out, dst)
	}
	return out, nil
}
