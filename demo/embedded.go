package demo

import (
	"io/fs"
	"os"
	"path/filepath"

	"github.com/weightops/weightops/weights"
)

// EmbeddedDir is where the demo data sits inside the embedded file system
// (weightops.DemoData) and inside the directory Unpack writes.
const EmbeddedDir = "testdata/demo"

// Unpack copies the files of fsys (the binary's embedded demo data) into
// dir, keeping their paths, and returns the demo data directory in it. The
// checkpoint readers need real files; the manifest's and recipes' relative
// paths hold because the layout is kept.
func Unpack(fsys fs.FS, dir string) (string, error) {
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		dst := filepath.Join(dir, filepath.FromSlash(p))
		if d.IsDir() {
			return os.MkdirAll(dst, 0o755)
		}
		b, err := fs.ReadFile(fsys, p)
		if err != nil {
			return err
		}
		return weights.WriteFileAtomic(dst, b)
	})
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, filepath.FromSlash(EmbeddedDir)), nil
}
