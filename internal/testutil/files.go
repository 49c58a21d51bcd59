package testutil

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"testing"
)

// CopyFile copies the file src to dst, failing the test on an error.
func CopyFile(t testing.TB, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// SHA256File is the hex SHA-256 of the file at path.
func SHA256File(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
