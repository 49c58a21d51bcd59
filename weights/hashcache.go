package weights

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// HashCache remembers the SHA-256 of files by what identifies their
// content without reading it: device, inode, size, and modification and
// change times to the nanosecond, as git's index does. Merging the same
// inputs again (the way a recipe is tuned) then records their provenance
// without hashing them again. The change time cannot be set by a user
// (any write, truncation, rename over or metadata change moves it to
// now), so an entry can only be stale if the clock is set back. An entry
// is stored only for a file unchanged while it was hashed whose times lie
// over two seconds before the hashing began (a write in the same clock
// tick as the times, on a filesystem with coarse timestamps, would not
// move them). Only recording uses the cache: checks (check's provenance,
// a patch's base) always hash.
type HashCache struct {
	dir string
}

// HashCacheEnv names the environment variable that places the cache: an
// absolute directory, or "off"; unset, the user's cache directory's
// weightops/sha256.
const HashCacheEnv = "WEIGHTOPS_HASH_CACHE"

// DefaultHashCache is the cache HashCacheEnv chooses, nil when it is off
// or there is no user cache directory. Any other value than "off" or an
// absolute directory is an error: "0" or "false" would otherwise become a
// directory of that name wherever the command runs.
func DefaultHashCache() (*HashCache, error) {
	dir := os.Getenv(HashCacheEnv)
	switch {
	case dir == "off":
		return nil, nil
	case dir == "":
		base, err := os.UserCacheDir()
		if err != nil {
			return nil, nil
		}
		dir = filepath.Join(base, "weightops", "sha256")
	case !filepath.IsAbs(dir):
		return nil, fmt.Errorf("%s=%q: want an absolute directory, or off", HashCacheEnv, dir)
	}
	return &HashCache{dir: dir}, nil
}

// NewHashCache is a cache kept in dir (made when first stored to).
func NewHashCache(dir string) *HashCache { return &HashCache{dir: dir} }

// hashSettle is how long before the hashing a file's times must lie for
// its digest to be stored (a variable for tests).
var hashSettle = 2 * time.Second

// hashEntryMagic starts every entry: the format, versioned.
const hashEntryMagic = "weightops-sha256 v1"

// entry is the file holding st's digest, and the line it holds.
func (c *HashCache) entry(st fileStamp) (path, line string) {
	return filepath.Join(c.dir, fmt.Sprintf("%x-%x", st.dev, st.ino)),
		fmt.Sprintf("%s %d %d %d ", hashEntryMagic, st.size, st.mtime, st.ctime)
}

// lookup returns the digest stored for a file of stamp st, if any.
func (c *HashCache) lookup(st fileStamp) (string, bool) {
	path, want := c.entry(st)
	f, err := OpenFile(path)
	if err != nil {
		return "", false
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 256))
	if err != nil {
		return "", false
	}
	line, ok := strings.CutSuffix(string(b), "\n")
	sum, ok2 := strings.CutPrefix(line, want)
	if !ok || !ok2 || len(sum) != 64 || strings.Trim(sum, "0123456789abcdef") != "" {
		return "", false
	}
	return sum, true
}

// store records sum for a file stamped st before and after it was hashed
// from began on; failures are ignored (it is a cache).
func (c *HashCache) store(before, after fileStamp, began time.Time, sum string) {
	settled := began.Add(-hashSettle).UnixNano()
	if before != after || before.mtime >= settled || before.ctime >= settled {
		return
	}
	if err := os.MkdirAll(c.dir, 0o700); err != nil {
		return
	}
	path, line := c.entry(before)
	_ = WriteFileAtomic(path, []byte(line+sum+"\n"))
}

// FileSHA256Cached hashes one file a 1 MiB block per turn of t (if set),
// through cache c (nil: none). A digest found in the cache counts as one
// turn of the file's size.
func FileSHA256Cached(path string, t Turns, c *HashCache) (string, error) {
	f, err := OpenFile(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	before, stamped := stampOf(f)
	if c != nil && stamped {
		if sum, ok := c.lookup(before); ok {
			if t != nil {
				if err := t.Take(); err != nil {
					return "", err
				}
				t.Done(before.size)
			}
			return sum, nil
		}
	}
	began := time.Now()
	sum, err := readerSHA256(f, t)
	if err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	if c != nil && stamped {
		if after, ok := stampOf(f); ok {
			c.store(before, after, began, sum)
		}
	}
	return sum, nil
}
