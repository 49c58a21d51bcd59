package weights

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"
)

// Size caps of the small files weightops reads whole. A file over its cap
// is refused with a message naming the cap: a real one is far smaller, and
// a link to /dev/zero or a multi-gigabyte file where a config belongs must
// not exhaust memory.
const (
	// MaxIndexSize caps a shard index (*.index.json): the largest real
	// ones, for models of 100k tensors, are about 10 MB.
	MaxIndexSize = 64 << 20
	// MaxConfigSize caps JSON side files read or validated (config.json,
	// tokenizer_config.json, adapter_config.json, manifests).
	MaxConfigSize = 16 << 20
	// MaxSideFileSize caps the model-directory files copied beside an
	// output (tokenizer.json of large vocabularies is about 30 MB).
	MaxSideFileSize = 64 << 20
	// MaxRecipeSize caps a merge recipe and an architecture file.
	MaxRecipeSize = 4 << 20
	// MaxTokensFileSize caps a file of token ids (eval-lm --tokens).
	MaxTokensFileSize = 256 << 20
)

// ErrNotRegular is returned (wrapped) for a path that is not a regular
// file once links are followed: a directory, FIFO, device or socket.
var ErrNotRegular = errors.New("not a regular file")

// OpenFile opens path for reading if it is a regular file (symbolic links
// are followed). The open does not block on a FIFO, and the type is read
// from the opened file, so a path swapped between check and open cannot
// slip through.
func OpenFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%s: %w (%s)", path, ErrNotRegular, fileKind(st.Mode()))
	}
	// Regular files ignore O_NONBLOCK; clear it anyway so nothing reads
	// the flag and expects EAGAIN.
	_ = syscall.SetNonblock(int(f.Fd()), false)
	return f, nil
}

func fileKind(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&fs.ModeNamedPipe != 0:
		return "a FIFO"
	case m&fs.ModeCharDevice != 0:
		return "a character device"
	case m&fs.ModeDevice != 0:
		return "a device"
	case m&fs.ModeSocket != 0:
		return "a socket"
	}
	return "mode " + m.String()
}

// ReadFile reads a small regular file whole, refusing one over limit bytes;
// what names the kind of file in the error ("recipe", "config").
func ReadFile(path string, limit int64, what string) ([]byte, error) {
	f, err := OpenFile(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st.Size() > limit {
		return nil, fmt.Errorf("%s: %d bytes, over the %d-byte limit for a %s", path, st.Size(), limit, what)
	}
	// The size was checked; the limit guards a file growing meanwhile.
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s: over the %d-byte limit for a %s", path, limit, what)
	}
	return b, nil
}
