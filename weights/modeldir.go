package weights

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// ModelFiles are the files of a Hugging Face model directory that describe
// the model rather than hold weights (config, generation config,
// tokenizer, weightops' arch files); they go beside a written checkpoint
// so that transformers (or weightops eval) can load it.
var ModelFiles = []string{
	"config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
	"special_tokens_map.json", "tokenizer.model", "vocab.json", "merges.txt", "added_tokens.json",
	"chat_template.jinja", "chat_template.json", "arch.yaml", "arch.json",
}

// ModelDir is the directory a checkpoint reference lives in: the
// reference itself when it is a directory, else the directory of the file.
func ModelDir(ref string) string {
	if st, err := os.Stat(ref); err == nil && !st.IsDir() {
		return filepath.Dir(ref)
	}
	return ref
}

// SideFile is one model-directory file, read.
type SideFile struct {
	Name string
	Data []byte
}

// SideFiles are the ModelFiles of a model directory, read and checked up
// front (before any heavy work) so that a bad one fails at once and what is
// later written beside an output is exactly what was checked.
type SideFiles struct {
	Files []SideFile
	// Skipped says, per file left out, why: a link that leaves the
	// model's directory is never followed.
	Skipped []string
}

// ReadModelFiles reads the ModelFiles present in the directory of a model
// reference. Only regular files inside that directory are taken: a link
// resolving outside it is skipped (and said so in Skipped), so a release
// artifact never carries /etc/passwd as tokenizer.json. A file that is not
// regular (a FIFO, a device), over MaxSideFileSize, or a .json file that is
// not valid JSON is an error naming it.
func ReadModelFiles(ref string) (*SideFiles, error) {
	src := ModelDir(ref)
	root, err := filepath.EvalSymlinks(src)
	if err != nil {
		return nil, err
	}
	sf := &SideFiles{}
	for _, name := range ModelFiles {
		p := filepath.Join(src, name)
		if _, err := os.Lstat(p); errors.Is(err, fs.ErrNotExist) {
			continue
		}
		real, err := filepath.EvalSymlinks(p)
		if err != nil {
			sf.Skipped = append(sf.Skipped, fmt.Sprintf("%s: a link that does not resolve; not copied", p))
			continue
		}
		if rel, err := filepath.Rel(root, real); err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
			sf.Skipped = append(sf.Skipped, fmt.Sprintf("%s: a link to outside the model directory; not copied", p))
			continue
		}
		data, err := ReadFile(p, MaxSideFileSize, "model file")
		if err != nil {
			return nil, err
		}
		if strings.HasSuffix(name, ".json") && !json.Valid(data) {
			return nil, fmt.Errorf("%s: not valid JSON", p)
		}
		sf.Files = append(sf.Files, SideFile{Name: name, Data: data})
	}
	return sf, nil
}

// Get returns a file's bytes.
func (s *SideFiles) Get(name string) ([]byte, bool) {
	for _, f := range s.Files {
		if f.Name == name {
			return f.Data, true
		}
	}
	return nil, false
}

// Set replaces a file's bytes, or adds the file.
func (s *SideFiles) Set(name string, data []byte) {
	for i, f := range s.Files {
		if f.Name == name {
			s.Files[i].Data = data
			return
		}
	}
	s.Files = append(s.Files, SideFile{Name: name, Data: data})
}

// Remove leaves a file out; it reports whether it was there.
func (s *SideFiles) Remove(name string) bool {
	for i, f := range s.Files {
		if f.Name == name {
			s.Files = append(s.Files[:i], s.Files[i+1:]...)
			return true
		}
	}
	return false
}

// Write writes the files into dir, each atomically, and returns the paths
// written.
func (s *SideFiles) Write(dir string) ([]string, error) {
	var out []string
	for _, f := range s.Files {
		dst := filepath.Join(dir, f.Name)
		if err := WriteFileAtomic(dst, f.Data); err != nil {
			return out, err
		}
		out = append(out, dst)
	}
	return out, nil
}

// CopyModelFiles reads the model files of a reference (ReadModelFiles) and
// writes them into dir, returning the files written and the ones skipped.
func CopyModelFiles(ref, dir string) (written, skipped []string, err error) {
	sf, err := ReadModelFiles(ref)
	if err != nil {
		return nil, nil, err
	}
	written, err = sf.Write(dir)
	return written, sf.Skipped, err
}
