package weights

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"syscall"
)

// Every output is written to a temp file beside its destination and
// renamed into place when complete. The temp files in flight are
// registered here, so that a command interrupted by a signal can remove
// them even if the goroutine writing one never gets to run its cleanup.
var temps struct {
	sync.Mutex
	names map[string]struct{}
}

// fileMode is the mode an output gets: 0666 less the process umask, as
// os.Create gives (a temp file starts private, 0600). Read once at start,
// before anything runs concurrently, since reading it means setting it.
var fileMode = func() os.FileMode {
	m := syscall.Umask(0)
	syscall.Umask(m)
	return 0o666 &^ os.FileMode(m)
}()

// CreateTemp creates the temp file for an output at dst: a hidden file in
// dst's directory (so the final rename stays on one file system).
func CreateTemp(dst string) (*os.File, error) {
	f, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".tmp-*")
	if err != nil {
		return nil, err
	}
	temps.Lock()
	if temps.names == nil {
		temps.names = map[string]struct{}{}
	}
	temps.names[f.Name()] = struct{}{}
	temps.Unlock()
	return f, nil
}

func forgetTemp(name string) {
	temps.Lock()
	delete(temps.names, name)
	temps.Unlock()
}

// DiscardTemp closes and removes a temp file from CreateTemp.
func DiscardTemp(f *os.File) {
	f.Close()
	os.Remove(f.Name())
	forgetTemp(f.Name())
}

// CommitTemp finishes a temp file from CreateTemp: sync, close, give it the
// mode a new file gets under the umask, and rename it over dst. On any failure the
// temp file is removed, so no half-written output is left.
func CommitTemp(f *os.File, dst string) error {
	tmp := f.Name()
	defer forgetTemp(tmp)
	err := f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp, fileMode)
	}
	if err == nil {
		err = os.Rename(tmp, dst)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("%s: %w", dst, err)
	}
	return nil
}

// CreateTempDir creates a hidden working directory beside dst, for an
// output made in two steps (a checkpoint, then its conversion); it is
// removed by RemoveTempDir, or by RemoveTemps after a signal.
func CreateTempDir(dst string) (string, error) {
	d, err := os.MkdirTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".tmp-*")
	if err != nil {
		return "", err
	}
	temps.Lock()
	if temps.names == nil {
		temps.names = map[string]struct{}{}
	}
	temps.names[d] = struct{}{}
	temps.Unlock()
	return d, nil
}

// RemoveTempDir removes a directory from CreateTempDir and what it holds.
func RemoveTempDir(d string) {
	os.RemoveAll(d)
	forgetTemp(d)
}

// RemoveTemps removes every temp file still in flight and returns their
// names: the last step of a command stopped by a signal.
func RemoveTemps() []string {
	temps.Lock()
	defer temps.Unlock()
	var out []string
	for name := range temps.names {
		os.RemoveAll(name) // a file, or a directory from CreateTempDir
		out = append(out, name)
	}
	clear(temps.names)
	sort.Strings(out)
	return out
}

// WriteFileAtomic writes data to a temp file beside path and renames it
// into place, so readers see the old file or the whole new one.
func WriteFileAtomic(path string, data []byte) error {
	f, err := CreateTemp(path)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		DiscardTemp(f)
		return fmt.Errorf("%s: %w", path, err)
	}
	return CommitTemp(f, path)
}
