package lowrank

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/weightops/weightops/weights"
)

// spool collects tensors whose header entries are not known until every
// tensor has been processed (an adapter's ranks come out of the SVDs) in a
// temp file beside the output, so they need not be held in memory; finish
// then writes the real safetensors file from it.
type spool struct {
	mu      sync.Mutex
	f       *os.File
	at      int64
	entries []spoolEntry
}

type spoolEntry struct {
	info      weights.TensorInfo
	off, size int64
}

func newSpool(dir string) (*spool, error) {
	f, err := weights.CreateTemp(filepath.Join(dir, ".weightops-spool"))
	if err != nil {
		return nil, err
	}
	return &spool{f: f}, nil
}

// put appends one tensor; safe for concurrent use.
func (s *spool) put(info weights.TensorInfo, data []byte) error {
	n, err := info.ByteSize()
	if err != nil {
		return fmt.Errorf("tensor %q: %w", info.Name, err)
	}
	if n != int64(len(data)) {
		return fmt.Errorf("tensor %q: %d bytes for %d declared", info.Name, len(data), n)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := s.f.WriteAt(data, s.at); err != nil {
		return fmt.Errorf("%s: %w", s.f.Name(), err)
	}
	s.entries = append(s.entries, spoolEntry{info: info, off: s.at, size: n})
	s.at += n
	return nil
}

// finish writes every spooled tensor to a new safetensors file at path
// (atomically, through weights.CreateSafetensors).
func (s *spool) finish(path string, md map[string]string) error {
	infos := make([]weights.TensorInfo, len(s.entries))
	var largest int64
	for i, e := range s.entries {
		infos[i] = e.info
		largest = max(largest, e.size)
	}
	w, err := weights.CreateSafetensors(path, infos, md)
	if err != nil {
		return err
	}
	buf := make([]byte, largest)
	for _, e := range s.entries {
		b := buf[:e.size]
		if _, err := s.f.ReadAt(b, e.off); err != nil {
			w.Abort()
			return fmt.Errorf("%s: %w", filepath.Base(s.f.Name()), err)
		}
		if err := w.WriteTensor(e.info.Name, b); err != nil {
			w.Abort()
			return err
		}
	}
	return w.Commit()
}

// remove deletes the spool file.
func (s *spool) remove() { weights.DiscardTemp(s.f) }
