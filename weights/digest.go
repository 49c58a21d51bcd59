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
func FileSHA256(path string) (string, error) { return FileSHA256Progress(path, nil) }

// FileSHA256Progress hashes one file, telling progress (if set) the bytes
// hashed as it goes.
func FileSHA256Progress(path string, progress func(int64)) (string, error) {
	var t Turns
	if progress != nil {
		t = progressTurns(progress)
	}
	return FileSHA256Cached(path, t, nil)
}

// Turns paces hashing a block at a time: Take is called before each block
// is read and hashed, and may wait for a turn (an error stops the hashing
// with it); Done after, with the block's size. A merge hashes its inputs
// beside the merge itself and gives the hashing fewer turns until the
// merge's writes are done.
type Turns interface {
	Take() error
	Done(n int64)
}

// progressTurns never waits and tells a progress function the bytes done.
type progressTurns func(int64)

func (progressTurns) Take() error    { return nil }
func (p progressTurns) Done(n int64) { p(n) }

// ReaderSHA256 hashes what r holds, hex-encoded (for a file already open).
func ReaderSHA256(r io.Reader) (string, error) { return readerSHA256(r, nil) }

func readerSHA256(r io.Reader, t Turns) (string, error) {
	h := sha256.New()
	// Blocks of 1 MiB: 32 KiB would cost a syscall per 32 KiB of a
	// multi-GB model.
	buf := make([]byte, 1<<20)
	for {
		if t != nil {
			if err := t.Take(); err != nil {
				return "", err
			}
		}
		n, err := io.ReadFull(r, buf)
		h.Write(buf[:n])
		if t != nil {
			t.Done(int64(n))
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			return "", err
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// CheckpointDigest is the SHA-256 of a single-file checkpoint, or for a
// sharded one the SHA-256 of its "name sha256" lines in name order: the
// identity a patch records for the model it applies to.
func CheckpointDigest(c Checkpoint) (string, error) { return CheckpointDigestProgress(c, nil) }

// DigestLater starts CheckpointDigest of c in the background and returns
// the wait for its result (callable any number of times), so the hashing
// runs beside other work on the same files.
func DigestLater(c Checkpoint) func() (string, error) {
	done := make(chan struct{})
	var sum string
	var err error
	go func() {
		defer close(done)
		sum, err = CheckpointDigest(c)
	}()
	return func() (string, error) {
		<-done
		return sum, err
	}
}

// CheckpointDigestProgress is CheckpointDigest telling progress (if set)
// the bytes hashed.
func CheckpointDigestProgress(c Checkpoint, progress func(int64)) (string, error) {
	files := Files(c)
	if len(files) == 1 {
		return FileSHA256Progress(files[0], progress)
	}
	files = append([]string(nil), files...)
	sort.Strings(files)
	h := sha256.New()
	for _, f := range files {
		s, err := FileSHA256Progress(f, progress)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "%s %s\n", filepath.Base(f), s)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
