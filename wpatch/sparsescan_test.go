package wpatch

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"slices"
	"strings"
	"testing"
)

// scanOver is a sparse stream whose index reader holds the given gaps,
// then enough padding that scan sees whole varints.
func scanOver(n, nnz int64, gaps ...uint64) *sparseStream {
	var b []byte
	for _, g := range gaps {
		b = binary.AppendUvarint(b, g)
	}
	b = append(b, make([]byte, 2*binary.MaxVarintLen64)...)
	r := bufio.NewReaderSize(bytes.NewReader(b), 1<<10)
	_, _ = r.Peek(len(b)) // fill the buffer: scan reads what is buffered
	return &sparseStream{p: &Patch{Path: "p.wpatch"}, t: Entry{Name: "w", NNZ: nnz}, n: n, ir: r, last: -1}
}

// TestSparseScan holds scan, the buffered path of at's index loop, to
// peek's rules: indices below hi appended in order, the first at or
// above it left pending, and peek's errors for a repeated index, a gap
// past the tensor and an index beyond it, naming the file and tensor.
func TestSparseScan(t *testing.T) {
	s := scanOver(100, 4, 3, 1, 300, 5)
	if err := s.scan(10); err == nil || !strings.Contains(err.Error(), "bad sparse index") {
		t.Fatalf("a gap past the tensor: %v", err)
	}
	s = scanOver(100, 4, 3, 1, 10, 5)
	if err := s.scan(10); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(s.idx, []int64{3, 4}) || !s.pend || s.next != 14 || s.read != 2 || s.last != 4 {
		t.Fatalf("idx %v pend %v next %d read %d last %d", s.idx, s.pend, s.next, s.read, s.last)
	}
	for _, c := range []struct {
		gaps []uint64
		want string
	}{
		{[]uint64{3, 0}, "repeated sparse index"},
		{[]uint64{60, 60}, "sparse index 120 beyond 100 elements"},
	} {
		s := scanOver(100, 2, c.gaps...)
		err := s.scan(100)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), `p.wpatch: tensor "w"`) {
			t.Errorf("gaps %v: %v, want %q", c.gaps, err, c.want)
		}
	}
	// A first gap of 0 is index 0, not a repeat.
	s = scanOver(100, 2, 0, 1)
	if err := s.scan(100); err != nil || !slices.Equal(s.idx, []int64{0, 1}) {
		t.Fatalf("first index 0: %v %v", s.idx, err)
	}
}
