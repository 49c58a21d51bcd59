package weights

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Checkpoint is a read-only collection of named tensors. Opening one reads
// only its header or index; tensor bytes are read when asked for, one
// tensor at a time, so memory stays O(largest tensor).
type Checkpoint interface {
	// Path names the file or directory the checkpoint was opened from.
	Path() string
	// Tensors lists every tensor, sorted by NaturalLess on the name.
	Tensors() []TensorInfo
	// Info returns one tensor's description.
	Info(name string) (TensorInfo, bool)
	// Metadata is the free-form string map (safetensors __metadata__);
	// nil when the file has none.
	Metadata() map[string]string
	// ReadTensor reads one tensor's bytes, contiguous, row-major and
	// little-endian, reusing buf when its capacity suffices. The returned
	// Data belongs to the caller.
	ReadTensor(name string, buf []byte) (Tensor, error)
	// Close releases the files behind the checkpoint.
	Close() error
}

// TensorSectioner is a Checkpoint that stores a tensor's bytes as they
// are read (contiguous, little-endian, uncompressed) in one file and can
// hand them out as a section of that file, so a streaming job reads a
// chunk of a large tensor when it needs it instead of holding the whole.
type TensorSectioner interface {
	// TensorSection returns the tensor's bytes as a reader over exactly
	// its data, or false when this tensor is not stored that way.
	TensorSection(name string) (*io.SectionReader, bool)
}

// TensorSection is c's TensorSectioner answer, false when c has none.
func TensorSection(c Checkpoint, name string) (*io.SectionReader, bool) {
	if s, ok := c.(TensorSectioner); ok {
		return s.TensorSection(name)
	}
	return nil, false
}

// TensorError ties an error to the file and tensor it came from, so a user
// sees one line naming both.
type TensorError struct {
	File   string
	Tensor string
	Err    error
}

func (e *TensorError) Error() string {
	if e.Tensor == "" {
		return fmt.Sprintf("%s: %v", e.File, e.Err)
	}
	return fmt.Sprintf("%s: tensor %q: %v", e.File, e.Tensor, e.Err)
}

func (e *TensorError) Unwrap() error { return e.Err }

// ErrNotFound is returned (wrapped) when a tensor name is not in a checkpoint.
var ErrNotFound = errors.New("no such tensor")

// Open opens a checkpoint of any supported format:
//   - a directory holding model.safetensors.index.json, a single
//     *.safetensors file, pytorch_model.bin.index.json or a single .bin/.pt;
//   - a *.safetensors.index.json or *.bin.index.json shard index;
//   - a file of any registered format (see RegisterFormat): safetensors,
//     PyTorch zip or legacy pickle, and whatever other packages add.
//
// The format of a file is sniffed from its first bytes, not its name. Only
// directories and regular files are opened (links followed): a FIFO or a
// device is an error, not a hang.
func Open(path string) (Checkpoint, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if st.IsDir() {
		return openDir(path)
	}
	if strings.HasSuffix(path, ".json") {
		return OpenIndex(path)
	}
	return openFile(path)
}

// openFile opens a checkpoint file (never a directory or an index) of a
// registered format: how a shard is opened, so an index cannot lead to
// itself.
func openFile(path string) (Checkpoint, error) {
	f, err := OpenFile(path)
	if err != nil {
		return nil, err
	}
	head := make([]byte, sniffLen)
	n, _ := io.ReadFull(f, head)
	f.Close()
	return formatOf(head[:n]).Open(path)
}

func openDir(dir string) (Checkpoint, error) {
	for _, idx := range []string{"model.safetensors.index.json", "pytorch_model.bin.index.json"} {
		p := filepath.Join(dir, idx)
		if _, err := os.Lstat(p); err == nil {
			return OpenIndex(p)
		}
	}
	for _, pat := range []string{"*.safetensors.index.json", "*.safetensors", "*.bin.index.json", "*.bin", "*.pt", "*.pth"} {
		m, _ := filepath.Glob(filepath.Join(dir, pat))
		sort.Strings(m)
		switch {
		case len(m) == 1 && strings.HasSuffix(pat, ".json"):
			return OpenIndex(m[0])
		case len(m) == 1:
			return openFile(m[0])
		case len(m) > 1 && pat == "*.safetensors":
			return openShardSet(dir, m)
		case len(m) > 1:
			return nil, fmt.Errorf("%s: %d %s files and no index; open one of them or add an index", dir, len(m), pat)
		}
	}
	return nil, fmt.Errorf("%s: no checkpoint found (looked for *.safetensors, an index, *.bin, *.pt)", dir)
}

// OpenAll opens checkpoints, closing the ones already open on failure.
func OpenAll(paths ...string) ([]Checkpoint, error) {
	var out []Checkpoint
	for _, p := range paths {
		c, err := Open(p)
		if err != nil {
			CloseAll(out)
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

// CloseAll closes checkpoints.
func CloseAll(cks []Checkpoint) {
	for _, c := range cks {
		c.Close()
	}
}
