package weights

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// The cache answers for a file it stored, and only while the file's
// stamp is unchanged: an entry made to lie proves the answer comes from
// it, a rewrite of the file (same size) makes it hash again; fresh files
// and broken entries are not trusted; a cache that cannot be written
// still gives the digest.
func TestHashCache(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("file stamps are read on Linux only")
	}
	saved := hashSettle
	defer func() { hashSettle = saved }()
	dir := t.TempDir()
	in := filepath.Join(dir, "model.safetensors")
	if err := os.WriteFile(in, []byte("weights, version one"), 0o644); err != nil {
		t.Fatal(err)
	}
	want, err := FileSHA256(in)
	if err != nil {
		t.Fatal(err)
	}
	c := NewHashCache(filepath.Join(dir, "cache"))
	entries := func() []string {
		m, _ := filepath.Glob(filepath.Join(dir, "cache", "*"))
		return m
	}

	// Just written: its times are not two seconds old, nothing stored.
	if got, err := FileSHA256Cached(in, nil, c); err != nil || got != want {
		t.Fatalf("first hash %q, %v; want %q", got, err, want)
	}
	if e := entries(); len(e) != 0 {
		t.Fatalf("a file changed under two seconds ago was cached: %v", e)
	}

	hashSettle = 0
	time.Sleep(20 * time.Millisecond)
	if got, _ := FileSHA256Cached(in, nil, c); got != want {
		t.Fatalf("hash %q, want %q", got, want)
	}
	e := entries()
	if len(e) != 1 {
		t.Fatalf("entries %v, want one", e)
	}
	b, _ := os.ReadFile(e[0])
	if !strings.HasPrefix(string(b), hashEntryMagic+" ") || !strings.HasSuffix(string(b), want+"\n") {
		t.Fatalf("entry %q", b)
	}
	// The answer comes from the entry: make it lie.
	lie := strings.Repeat("ab", 32)
	if err := os.WriteFile(e[0], []byte(strings.Replace(string(b), want, lie, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	var counted int64
	if got, _ := FileSHA256Cached(in, progressTurns(func(n int64) { counted += n }), c); got != lie {
		t.Fatalf("cached answer %q, want the entry's %q", got, lie)
	}
	if counted != int64(len("weights, version one")) {
		t.Fatalf("a cached file counted %d bytes, want its size", counted)
	}
	// Same size, new content: the stamp moved, the file is hashed again.
	if err := os.WriteFile(in, []byte("weights, version two"), 0o644); err != nil {
		t.Fatal(err)
	}
	want2, _ := FileSHA256(in)
	if got, _ := FileSHA256Cached(in, nil, c); got != want2 || want2 == want {
		t.Fatalf("after a rewrite: %q, want %q", got, want2)
	}
	// Broken entries are not answers.
	for _, bad := range []string{"", "garbage\n", strings.Replace(string(b), want, "xyz", 1), strings.TrimSuffix(string(b), "\n")} {
		for _, p := range entries() {
			if err := os.WriteFile(p, []byte(bad), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(5 * time.Millisecond)
		got, err := FileSHA256Cached(in, nil, NewHashCache(filepath.Join(dir, "cache")))
		if err != nil || got != want2 {
			t.Fatalf("entry %q: %q, %v; want %q", bad, got, err, want2)
		}
	}
	// A cache that cannot be made is no cache.
	blocked := filepath.Join(dir, "file-in-the-way")
	os.WriteFile(blocked, nil, 0o644)
	if got, err := FileSHA256Cached(in, nil, NewHashCache(filepath.Join(blocked, "cache"))); err != nil || got != want2 {
		t.Fatalf("unwritable cache: %q, %v", got, err)
	}
}

func TestDefaultHashCache(t *testing.T) {
	t.Setenv(HashCacheEnv, "off")
	if c, err := DefaultHashCache(); c != nil || err != nil {
		t.Fatalf("off: %+v, %v", c, err)
	}
	t.Setenv(HashCacheEnv, "/some/dir")
	if c, err := DefaultHashCache(); c == nil || c.dir != "/some/dir" || err != nil {
		t.Fatalf("a directory: %+v, %v", c, err)
	}
	t.Setenv(HashCacheEnv, "")
	t.Setenv("XDG_CACHE_HOME", "/xdg")
	if c, err := DefaultHashCache(); c == nil || c.dir != "/xdg/weightops/sha256" || err != nil {
		t.Fatalf("default: %+v, %v", c, err)
	}
	for _, bad := range []string{"0", "false", "rel/dir"} {
		t.Setenv(HashCacheEnv, bad)
		if c, err := DefaultHashCache(); c != nil || err == nil || !strings.Contains(err.Error(), HashCacheEnv) {
			t.Fatalf("%q: %+v, %v; want an error naming the variable", bad, c, err)
		}
	}
}
