package stream

import "github.com/weightops/weightops/weights"

// ModelFiles are the side files (config.json, tokenizer, …) a model
// directory output carries, taken from a source model: read and checked
// before the work so a bad one fails first, written after it.
type ModelFiles struct {
	dir  string
	side *weights.SideFiles
}

// ReadModelFiles reads the side files of the model at ref for an output at
// out, warning about each one skipped (weights.ReadModelFiles). An output
// that is a lone .safetensors file takes none (weights.OutputDir).
func (o Options) ReadModelFiles(out, ref string) (*ModelFiles, error) {
	dir := weights.OutputDir(out, o.ShardSize)
	if o.Shard != nil {
		dir = out
	}
	if dir == "" {
		return &ModelFiles{}, nil
	}
	sf, err := weights.ReadModelFiles(ref)
	if err != nil {
		return nil, err
	}
	for _, s := range sf.Skipped {
		o.Warnf("%s", s)
	}
	return &ModelFiles{dir: dir, side: sf}, nil
}

// Write writes the files beside a checkpoint written from source's tensors
// (written: its tensors with the dtypes written), config.json brought in
// line with it (weights.SideFiles.UpdateConfig, each change said through
// Options.Warn), and returns the paths written.
func (m *ModelFiles) Write(source, written []weights.TensorInfo) ([]string, error) {
	if m == nil || m.side == nil {
		return nil, nil
	}
	if _, err := m.side.UpdateConfig(source, written); err != nil {
		return nil, err
	}
	return m.side.Write(m.dir)
}

// Dir is the model directory of the output, "" for a lone .safetensors
// file.
func (m *ModelFiles) Dir() string { return m.dir }

// Files are the side files to be written, for a caller to edit before
// Write (nil for a lone .safetensors output).
func (m *ModelFiles) Files() *weights.SideFiles {
	if m == nil {
		return nil
	}
	return m.side
}
