package wpatch

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"testing"
)

// TestVarintReaders: readUvarint and skipUvarints, through a 16-byte
// buffer so varints straddle refills, end where binary.ReadUvarint does
// and fail where it fails — on valid streams, too-long varints, a tenth
// byte above 1 and streams cut short.
func TestVarintReaders(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	for trial := range 2000 {
		var s []byte
		n := r.IntN(40)
		for range n {
			switch r.IntN(20) {
			case 0: // too long
				s = append(s, bytes.Repeat([]byte{0x80 | byte(r.IntN(128))}, 10+r.IntN(3))...)
			case 1: // tenth byte above 1
				s = append(s, bytes.Repeat([]byte{0xff}, 9)...)
				s = append(s, byte(2+r.IntN(126)))
			case 2: // the largest value
				s = binary.AppendUvarint(s, ^uint64(0))
			default:
				s = binary.AppendUvarint(s, r.Uint64()>>r.IntN(64))
			}
		}
		if r.IntN(4) == 0 && len(s) > 0 {
			s = s[:r.IntN(len(s))] // cut short
		}
		s = append(s, 0x42, 0x43) // what follows
		k := int64(r.IntN(n + 2))
		// The reference: k ReadUvarint calls.
		ref := bufio.NewReaderSize(bytes.NewReader(s), 16)
		var refErr error
		var refVals []uint64
		for range k {
			v, err := binary.ReadUvarint(ref)
			if err != nil {
				refErr = err
				break
			}
			refVals = append(refVals, v)
		}
		refNext, _ := ref.ReadByte()

		skip := bufio.NewReaderSize(bytes.NewReader(s), 16)
		err := skipUvarints(skip, k)
		if (err != nil) != (refErr != nil) {
			t.Fatalf("trial %d: skip %d: error %v, ReadUvarint's %v", trial, k, err, refErr)
		}
		if next, _ := skip.ReadByte(); err == nil && next != refNext {
			t.Fatalf("trial %d: skip %d: next byte %#x, want %#x", trial, k, next, refNext)
		}

		rd := bufio.NewReaderSize(bytes.NewReader(s), 16)
		var rdErr error
		for i := range k {
			v, err := readUvarint(rd)
			if err != nil {
				rdErr = err
				break
			}
			if i >= int64(len(refVals)) || v != refVals[i] {
				t.Fatalf("trial %d: varint %d = %d, want %d", trial, i, v, refVals[i])
			}
		}
		if (rdErr != nil) != (refErr != nil) {
			t.Fatalf("trial %d: read %d: error %v, ReadUvarint's %v", trial, k, rdErr, refErr)
		}
		if next, _ := rd.ReadByte(); rdErr == nil && next != refNext {
			t.Fatalf("trial %d: read %d: next byte %#x, want %#x", trial, k, next, refNext)
		}
	}
}
