package quantize

import "encoding/binary"

// Bit packing: code i of a k-bit stream occupies stream bits i·k..i·k+k−1,
// least significant bit first, and stream bit j is bit j%8 of byte j/8. So a
// code may straddle two bytes (k = 3, 5, 6, 7), n codes take ceil(n·k/8)
// bytes, and the unused high bits of the last byte are zero. Any run of 8
// codes fills exactly k bytes, which is why work is split at multiples of 8
// elements: each piece then packs into its own bytes.

// packedLen is ceil(n·k/8), written so that n·k cannot overflow.
func packedLen(n, k int) int {
	return n/8*k + (n%8*k+7)/8
}

// Eight codes in a uint64 (one per byte) fold into 8k contiguous bits in
// three steps, each moving the upper half of every 16-, 32- and then
// 64-bit lane down next to its lower half: bytes into 2k-bit pairs, pairs
// into 4k-bit quads, quads into 8k bits. unpack runs the steps backwards.
// The halves are masked before they are combined so that for k > 4 the
// shifted half cannot overlap the one it joins.

// pack writes codes (each < 2^k) into dst[:packedLen(len(codes), k)],
// overwriting those bytes completely and no others.
func pack(dst []byte, codes []uint8, k int) {
	n := len(codes)
	dst = dst[:packedLen(n, k)]
	if k == 8 {
		copy(dst, codes)
		return
	}
	full := n &^ 7
	s1, s2, s3 := uint(8-k), uint(16-2*k), uint(32-4*k)
	o := 0
	for i := 0; i < full; i, o = i+8, o+k {
		u := binary.LittleEndian.Uint64(codes[i:])
		u = u&0x00FF00FF00FF00FF | u&0xFF00FF00FF00FF00>>s1
		u = u&0x0000FFFF0000FFFF | u&0xFFFF0000FFFF0000>>s2
		u = u&0x00000000FFFFFFFF | u&0xFFFFFFFF00000000>>s3
		if o+8 <= len(dst) {
			// The bytes past o+k are rewritten by the next group.
			binary.LittleEndian.PutUint64(dst[o:], u)
		} else {
			for j := range k {
				dst[o+j] = byte(u >> (8 * j))
			}
		}
	}
	// Tail of fewer than 8 codes: at most 49 bits, one accumulator.
	var acc uint64
	for j, c := range codes[full:] {
		acc |= uint64(c) << (uint(j) * uint(k))
	}
	for j := 0; o < len(dst); j, o = j+1, o+1 {
		dst[o] = byte(acc >> (8 * j))
	}
}

// unpack is the inverse of pack: it fills all of codes from
// src[:packedLen(len(codes), k)].
func unpack(codes []uint8, src []byte, k int) {
	n := len(codes)
	if k == 8 {
		copy(codes, src[:n])
		return
	}
	src = src[:packedLen(n, k)]
	full := n &^ 7
	s1, s2, s3 := uint(8-k), uint(16-2*k), uint(32-4*k)
	m8k := uint64(1)<<(8*k) - 1
	m4k := uint64(1)<<(4*k) - 1
	m2k := (uint64(1)<<(2*k) - 1) * 0x0000000100000001 // low 2k bits of each 32-bit lane
	m1k := (uint64(1)<<k - 1) * 0x0001000100010001     // low k bits of each 16-bit lane
	o := 0
	for i := 0; i < full; i, o = i+8, o+k {
		var u uint64
		if o+8 <= len(src) {
			u = binary.LittleEndian.Uint64(src[o:]) & m8k // drop the next group's bytes
		} else {
			for j := range k {
				u |= uint64(src[o+j]) << (8 * j)
			}
		}
		u = u&m4k | u<<s3&(m4k<<32)
		u = u&m2k | u<<s2&(m2k<<16)
		u = u&m1k | u<<s1&(m1k<<8)
		binary.LittleEndian.PutUint64(codes[i:], u)
	}
	var acc uint64
	for j := 0; o < len(src); j, o = j+1, o+1 {
		acc |= uint64(src[o]) << (8 * j)
	}
	mask := uint64(1)<<k - 1
	for j := range codes[full:] {
		codes[full+j] = uint8(acc >> (uint(j) * uint(k)) & mask)
	}
}

// paddingClear reports whether the bits after the last code in a packed
// stream of n codes are zero, as pack leaves them: a reader that insists on
// it keeps one byte string per tensor.
func paddingClear(src []byte, n, k int) bool {
	used := n % 8 * k % 8
	if used == 0 || len(src) == 0 {
		return true
	}
	return src[len(src)-1]>>used == 0
}
