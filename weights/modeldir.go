package weights

import (
	"os"
	"path/filepath"
)

// ModelFiles are the files of a Hugging Face model directory that describe
// the model rather than hold weights (config, generation config,
// tokenizer, weightops' arch files); they go beside a written checkpoint
// so that transformers (or weightops eval) can load it.
var ModelFiles = []string{
	"config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
	"special_tokens_map.json", "tokenizer.model", "vocab.json", "merges.txt", "added_tokens.json",
	"arch.yaml", "arch.json",
}

// ModelDir is the directory a checkpoint reference lives in: the
// reference itself when it is a directory, else the directory of the file.
func ModelDir(ref string) string {
	if st, err := os.Stat(ref); err == nil && !st.IsDir() {
		return filepath.Dir(ref)
	}
	return ref
}

// CopyModelFiles copies the ModelFiles present in the directory of a model
// reference (a directory, or a file inside one) into dir, each atomically,
// and returns the files written.
func CopyModelFiles(ref, dir string) ([]string, error) {
	src := ModelDir(ref)
	var out []string
	for _, name := range ModelFiles {
		data, err := os.ReadFile(filepath.Join(src, name))
		if err != nil {
			continue
		}
		dst := filepath.Join(dir, name)
		if err := WriteFileAtomic(dst, data); err != nil {
			return out, err
		}
		out = append(out, dst)
	}
	return out, nil
}
