package dataset

import (
	"bytes"
	"testing"
)

// FuzzReadArray feeds arbitrary bytes to the IDX/.npy/gzip reader:
// errors are fine, panics and allocations beyond the input are not.
func FuzzReadArray(f *testing.F) {
	f.Add(idxBytes(0x08, []uint32{2, 2}, []byte{1, 2, 3, 4}))
	f.Add(gz(idxBytes(0x0D, []uint32{1}, []byte{0, 0, 0, 0})))
	f.Add(npyBytes("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1), }", f32le(1)))
	f.Add(gz(npyBytes("{'descr': '|u1', 'fortran_order': False, 'shape': (3,), }", []byte{1, 2, 3})))
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := readArray(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			return
		}
		if len(a.Data) > 1032*len(b)+64 {
			t.Fatalf("%d bytes of data from %d bytes of input", len(a.Data), len(b))
		}
		a.Float32s(true)
		a.Labels()
	})
}

// FuzzCSV feeds arbitrary text to the CSV reader.
func FuzzCSV(f *testing.F) {
	f.Add([]byte("label,a,b\n1,0.5,2\n0,1,1\n"))
	f.Add([]byte("1,2\n3\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, col := range []int{0, -1, 3} {
			s, err := readCSV(bytes.NewReader(b), col)
			if err == nil {
				if err := s.Validate(); err != nil {
					t.Fatal(err)
				}
			}
		}
	})
}
