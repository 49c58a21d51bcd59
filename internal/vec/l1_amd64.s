#include "textflag.h"

// Constants of l1SumsAsm: |x|'s mask, the float32 mantissa, one, +Inf in
// float32; +Inf and 2^53 in float64.
DATA l1c<>+0x00(SB)/4, $0x7fffffff
DATA l1c<>+0x04(SB)/4, $0x007fffff
DATA l1c<>+0x08(SB)/4, $0x00000001
DATA l1c<>+0x0c(SB)/4, $0x7f800000
DATA l1c<>+0x10(SB)/8, $0x7ff0000000000000
DATA l1c<>+0x18(SB)/8, $0x4340000000000000
GLOBL l1c<>(SB), RODATA|NOPTR, $32

// LOWBIT64(s, q) sets q to the value of s's lowest set bit (s ≥ 0
// float64; +Inf for 0). Clobbers R8, R9, X3.
#define LOWBIT64(s, q, lbl) \
	VMOVQ s, R8 \
	VMOVSD l1c<>+0x10(SB), q \
	TESTQ R8, R8 \
	JZ    lbl \
	VMOVAPD s, q \
	MOVQ  $0x000fffffffffffff, R9 \
	ANDQ  R8, R9 \
	JZ    lbl \
	LEAQ  -1(R8), R9 \
	ANDQ  R8, R9 \
	VMOVQ R9, X3 \
	VSUBSD X3, s, q \
lbl:

// func l1SumsAsm(x []float32, keep []bool, before, after float64) (done int, b, a float64)
//
// L1Sums in blocks of 64: per block the sums of |x| and of the kept |x|
// in any order (eight float64 lanes, two accumulators each) and the least
// lowest set bit q of the block's nonzero |x|. A block is taken when, for
// each sum s, s + block < 2^53·min(q, lowest bit of s): then every value
// and every partial sum, in any order, is a multiple of that power of two
// below 2^53 times it, so exactly representable — the block's sum is the
// exact one, which is what adding it one entry at a time gives. Else
// (small entries against a large sum, NaN, Inf) it stops there and the
// caller adds that block one entry at a time.
TEXT ·l1SumsAsm(SB), NOSPLIT, $0-88
	MOVQ x_base+0(FP), SI
	MOVQ x_len+8(FP), CX
	MOVQ keep_base+24(FP), DX
	VMOVSD before+48(FP), X14
	VMOVSD after+56(FP), X15
	SHRQ $6, CX
	XORQ AX, AX
	TESTQ CX, CX
	JZ   l1done
	VPBROADCASTD l1c<>+0x00(SB), Z31
	VPBROADCASTD l1c<>+0x04(SB), Z30
	VPBROADCASTD l1c<>+0x08(SB), Z27
	VPBROADCASTD l1c<>+0x0c(SB), Z29

l1block:
	VXORPD Z8, Z8, Z8
	VXORPD Z9, Z9, Z9
	VXORPD Z11, Z11, Z11
	VXORPD Z12, Z12, Z12
	VMOVAPS Z29, Z5
	MOVQ $4, BX

l1step:
	VPANDD    (SI), Z31, Z0
	VPANDD    Z0, Z30, Z1
	VPTESTMD  Z1, Z1, K1
	VPTESTMD  Z0, Z0, K2
	VPSUBD    Z27, Z0, Z2
	VPANDD    Z0, Z2, Z2
	VSUBPS    Z2, Z0, Z3
	VMOVAPS   Z29, Z4
	VMOVAPS   Z0, K2, Z4
	VMOVAPS   Z3, K1, Z4
	VMINPS    Z4, Z5, Z5
	VCVTPS2PD Y0, Z6
	VEXTRACTF32X8 $1, Z0, Y7
	VCVTPS2PD Y7, Z7
	VADDPD    Z6, Z8, Z8
	VADDPD    Z7, Z9, Z9
	VPMOVZXBD (DX), Z10
	VPTESTMD  Z10, Z10, K3
	KSHIFTRW  $8, K3, K4
	VADDPD    Z6, Z11, K3, Z11
	VADDPD    Z7, Z12, K4, Z12
	ADDQ $64, SI
	ADDQ $16, DX
	DECQ BX
	JNZ  l1step

	// The block's sums (exact, so in any order) and least lowest bit.
	VADDPD Z9, Z8, Z8
	VEXTRACTF64X4 $1, Z8, Y1
	VADDPD Y1, Y8, Y8
	VEXTRACTF128 $1, Y8, X1
	VADDPD X1, X8, X8
	VPERMILPD $1, X8, X1
	VADDSD X1, X8, X8
	VADDPD Z12, Z11, Z11
	VEXTRACTF64X4 $1, Z11, Y1
	VADDPD Y1, Y11, Y11
	VEXTRACTF128 $1, Y11, X1
	VADDPD X1, X11, X11
	VPERMILPD $1, X11, X1
	VADDSD X1, X11, X11
	VEXTRACTF32X8 $1, Z5, Y1
	VMINPS Y1, Y5, Y5
	VEXTRACTF128 $1, Y5, X1
	VMINPS X1, X5, X5
	VPERMILPS $0x4e, X5, X1
	VMINPS X1, X5, X5
	VPERMILPS $0xb1, X5, X1
	VMINSS X1, X5, X5
	VCVTSS2SD X5, X5, X5

	// before: take the block if before + sum < 2^53·min(q, lowbit(before)).
	LOWBIT64(X14, X2, l1lbb)
	VMINSD X2, X5, X6
	VMULSD l1c<>+0x18(SB), X6, X6
	VADDSD X8, X14, X7
	VUCOMISD X7, X6
	JBE  l1stop
	// after, likewise.
	LOWBIT64(X15, X2, l1lba)
	VMINSD X2, X5, X6
	VMULSD l1c<>+0x18(SB), X6, X6
	VADDSD X11, X15, X10
	VUCOMISD X10, X6
	JBE  l1stop
	VMOVAPD X7, X14
	VMOVAPD X10, X15
	ADDQ $64, AX
	DECQ CX
	JNZ  l1block
	JMP  l1done

l1stop:
	VZEROUPPER
	MOVQ AX, done+64(FP)
	VMOVSD X14, b+72(FP)
	VMOVSD X15, a+80(FP)
	RET

l1done:
	VZEROUPPER
	MOVQ AX, done+64(FP)
	VMOVSD X14, b+72(FP)
	VMOVSD X15, a+80(FP)
	RET
