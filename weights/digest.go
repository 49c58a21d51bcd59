package weights

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"path/filepath"
	"sort"
)

// Files lists the files behind a checkpoint: the file itself, or a
// sharded checkpoint's shards and index.
func Files(c Checkpoint) []string {
	if f, ok := c.(interface{ Files() []string }); ok {
		return f.Files()
	}
	return []string{c.Path()}
}

// FileSHA256 hashes one file.
func FileSHA256(path string) (string, error) {
	f, err := OpenFile(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// CheckpointDigest is the SHA-256 of a single-file checkpoint, or for a
// sharded one the SHA-256 of its "name sha256" lines in name order: the
// identity a patch records for the model it applies to.
func CheckpointDigest(c Checkpoint) (string, error) {
	files := Files(c)
	if len(files) == 1 {
		return FileSHA256(files[0])
	}
	files = append([]string(nil), files...)
	sort.Strings(files)
	h := sha256.New()
	for _, f := range files {
		s, err := FileSHA256(f)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "%s %s\n", filepath.Base(f), s)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
