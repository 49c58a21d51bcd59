package weights

import "unsafe"

// Tensor bytes are little-endian on disk; the fast decode paths view them
// in place as machine words, which is right only on a little-endian host.
// Refuse to run elsewhere rather than silently byte-swap values.
func init() {
	x := uint16(1)
	if *(*byte)(unsafe.Pointer(&x)) != 1 {
		panic("weights: big-endian hosts are not supported")
	}
}
