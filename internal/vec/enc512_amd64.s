#include "textflag.h"

// func encodeBF16AVX512(dst []uint16, src []float64) int
//
// encodeBF16Asm eight lanes to a register, sixteen entries a step, the
// range checks in mask registers: r = b + (2^44 − 1) + bit 45 of b; the
// result is the sign, then r's exponent rebiased and its top seven
// mantissa bits, down-converted to words; zeros give their sign. A step
// with a nonzero lane whose exponent is below bfloat16's normals or whose
// rounding overflows is left to the caller.
TEXT ·encodeBF16AVX512(SB), NOSPLIT, $0-56
	MOVQ dst_base+0(FP), DI
	MOVQ src_base+24(FP), SI
	MOVQ src_len+32(FP), CX
	SHRQ $4, CX
	XORQ AX, AX
	TESTQ CX, CX
	JZ   e5done
	MOVQ $0x7ff, DX
	VPBROADCASTQ DX, Z20
	MOVQ $1, DX
	VPBROADCASTQ DX, Z21
	MOVQ $0xfffffffffff, DX
	VPBROADCASTQ DX, Z22
	MOVQ $0x381, DX
	VPBROADCASTQ DX, Z23
	MOVQ $0x47e, DX
	VPBROADCASTQ DX, Z24
	MOVQ $0x3ffff, DX
	VPBROADCASTQ DX, Z25
	MOVQ $0x1c000, DX
	VPBROADCASTQ DX, Z26
	MOVQ $0x8000, DX
	VPBROADCASTQ DX, Z27

e5loop:
	VMOVDQU64 (SI), Z0
	VMOVDQU64 64(SI), Z10
	// e, r, r's exponent; lanes 0–7
	VPSRLQ   $52, Z0, Z1
	VPANDQ   Z20, Z1, Z1
	VPSRLQ   $45, Z0, Z2
	VPANDQ   Z21, Z2, Z2
	VPADDQ   Z2, Z0, Z3
	VPADDQ   Z22, Z3, Z3
	VPSRLQ   $52, Z3, Z4
	VPANDQ   Z20, Z4, Z4
	VPCMPUQ  $1, Z23, Z1, K1
	VPCMPUQ  $6, Z24, Z4, K2
	KORB     K1, K2, K1
	VPSLLQ   $1, Z0, Z6
	VPTESTMQ Z6, Z6, K3
	KANDB    K3, K1, K1
	// lanes 8–15
	VPSRLQ   $52, Z10, Z11
	VPANDQ   Z20, Z11, Z11
	VPSRLQ   $45, Z10, Z12
	VPANDQ   Z21, Z12, Z12
	VPADDQ   Z12, Z10, Z13
	VPADDQ   Z22, Z13, Z13
	VPSRLQ   $52, Z13, Z14
	VPANDQ   Z20, Z14, Z14
	VPCMPUQ  $1, Z23, Z11, K4
	VPCMPUQ  $6, Z24, Z14, K5
	KORB     K4, K5, K4
	VPSLLQ   $1, Z10, Z16
	VPTESTMQ Z16, Z16, K6
	KANDB    K6, K4, K4
	KORB     K1, K4, K1
	KORTESTB K1, K1
	JNZ      e5stop
	// the words
	VPSRLQ    $45, Z3, Z8
	VPANDQ    Z25, Z8, Z8
	VPSUBQ    Z26, Z8, Z8
	VMOVDQA64.Z Z8, K3, Z8
	VPSRLQ    $48, Z0, Z2
	VPANDQ    Z27, Z2, Z2
	VPORQ     Z2, Z8, Z8
	VPMOVQW   Z8, X8
	VPSRLQ    $45, Z13, Z18
	VPANDQ    Z25, Z18, Z18
	VPSUBQ    Z26, Z18, Z18
	VMOVDQA64.Z Z18, K6, Z18
	VPSRLQ    $48, Z10, Z12
	VPANDQ    Z27, Z12, Z12
	VPORQ     Z12, Z18, Z18
	VPMOVQW   Z18, X18
	VMOVDQU   X8, (DI)
	VMOVDQU64 X18, 16(DI)
	ADDQ $128, SI
	ADDQ $32, DI
	ADDQ $16, AX
	DECQ CX
	JNZ  e5loop

e5stop:
	VZEROUPPER

e5done:
	MOVQ AX, ret+48(FP)
	RET
