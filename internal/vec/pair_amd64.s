#include "textflag.h"

// func deltaPairBF16Asm(dst []float32, src, base []uint16) int
//
// Sixteen entries a step: both bfloat16 operands widened to float32 (a
// shift of the zero-extended halves), one float32 subtraction.
TEXT ·deltaPairBF16Asm(SB), NOSPLIT, $0-80
	MOVQ dst_base+0(FP), DI
	MOVQ src_base+24(FP), SI
	MOVQ base_base+48(FP), BX
	MOVQ dst_len+8(FP), CX
	SHRQ $4, CX
	MOVQ CX, AX
	SHLQ $4, AX
	TESTQ CX, CX
	JZ   pairdone

pairloop:
	VPMOVZXWD (SI), Z0
	VPMOVZXWD (BX), Z1
	VPSLLD    $16, Z0, Z0
	VPSLLD    $16, Z1, Z1
	VSUBPS    Z1, Z0, Z0
	VMOVUPS   Z0, (DI)
	ADDQ $32, SI
	ADDQ $32, BX
	ADDQ $64, DI
	DECQ CX
	JNZ  pairloop
	VZEROUPPER

pairdone:
	MOVQ AX, ret+72(FP)
	RET

// func deltaPairBF16AVX2(dst []float32, src, base []uint16) int
//
// deltaPairBF16Asm eight entries a step, for AVX2 alone.
TEXT ·deltaPairBF16AVX2(SB), NOSPLIT, $0-80
	MOVQ dst_base+0(FP), DI
	MOVQ src_base+24(FP), SI
	MOVQ base_base+48(FP), BX
	MOVQ dst_len+8(FP), CX
	SHRQ $3, CX
	MOVQ CX, AX
	SHLQ $3, AX
	TESTQ CX, CX
	JZ   p2done

p2loop:
	VPMOVZXWD (SI), Y0
	VPMOVZXWD (BX), Y1
	VPSLLD    $16, Y0, Y0
	VPSLLD    $16, Y1, Y1
	VSUBPS    Y1, Y0, Y0
	VMOVUPS   Y0, (DI)
	ADDQ $16, SI
	ADDQ $16, BX
	ADDQ $32, DI
	DECQ CX
	JNZ  p2loop
	VZEROUPPER

p2done:
	MOVQ AX, ret+72(FP)
	RET

// func linear2BF16Asm(o []float64, a, b []uint16, w0, w1, div float64, recip bool) int
//
// Linear2BF16 eight entries a step: both inputs widened, s = (0 + w0·a)
// + w1·b, o = s/div — or s·div when recip (div is then the caller's exact
// reciprocal of a power of two).
TEXT ·linear2BF16Asm(SB), NOSPLIT, $0-112
	MOVQ o_base+0(FP), DI
	MOVQ a_base+24(FP), SI
	MOVQ b_base+48(FP), BX
	VBROADCASTSD w0+72(FP), Z8
	VBROADCASTSD w1+80(FP), Z9
	VBROADCASTSD div+88(FP), Z10
	MOVBLZX recip+96(FP), DX
	VXORPD Z12, Z12, Z12
	MOVQ o_len+8(FP), CX
	SHRQ $3, CX
	MOVQ CX, AX
	SHLQ $3, AX
	TESTQ CX, CX
	JZ   lindone

linloop:
	VPMOVZXWD (SI), Y0
	VPSLLD    $16, Y0, Y0
	VCVTPS2PD Y0, Z0
	VPMOVZXWD (BX), Y1
	VPSLLD    $16, Y1, Y1
	VCVTPS2PD Y1, Z1
	VMULPD    Z8, Z0, Z0
	VADDPD    Z0, Z12, Z0
	VMULPD    Z9, Z1, Z1
	VADDPD    Z1, Z0, Z0
	TESTQ DX, DX
	JZ    lindiv
	VMULPD    Z10, Z0, Z0
	JMP       linstore

lindiv:
	VDIVPD    Z10, Z0, Z0

linstore:
	VMOVUPD Z0, (DI)
	ADDQ $16, SI
	ADDQ $16, BX
	ADDQ $64, DI
	DECQ CX
	JNZ  linloop
	VZEROUPPER

lindone:
	MOVQ AX, ret+104(FP)
	RET

// func mix2BF16Asm(o []float64, base []uint16, t0, t1 []float32, c0, c1 float64) int
//
// Mix2 eight entries a step with the base read as bfloat16: o = (b +
// c0·t0) + c1·t1.
TEXT ·mix2BF16Asm(SB), NOSPLIT, $0-120
	MOVQ o_base+0(FP), DI
	MOVQ base_base+24(FP), SI
	MOVQ t0_base+48(FP), R8
	MOVQ t1_base+72(FP), R9
	VBROADCASTSD c0+96(FP), Z6
	VBROADCASTSD c1+104(FP), Z7
	MOVQ o_len+8(FP), CX
	SHRQ $3, CX
	MOVQ CX, AX
	SHLQ $3, AX
	TESTQ CX, CX
	JZ   m5done

m5loop:
	VPMOVZXWD (SI), Y2
	VPSLLD    $16, Y2, Y2
	VCVTPS2PD Y2, Z2
	VCVTPS2PD (R8), Z0
	VMULPD    Z6, Z0, Z0
	VADDPD    Z0, Z2, Z0
	VCVTPS2PD (R9), Z1
	VMULPD    Z7, Z1, Z1
	VADDPD    Z1, Z0, Z0
	VMOVUPD   Z0, (DI)
	ADDQ $16, SI
	ADDQ $32, R8
	ADDQ $32, R9
	ADDQ $64, DI
	DECQ CX
	JNZ  m5loop
	VZEROUPPER

m5done:
	MOVQ AX, ret+112(FP)
	RET

// func scale2BF16Asm(o []float64, a, b []uint16, s0, s1 float64) int
//
// Scale2BF16 eight entries a step: both inputs widened, o = s0·a + s1·b.
TEXT ·scale2BF16Asm(SB), NOSPLIT, $0-96
	MOVQ o_base+0(FP), DI
	MOVQ a_base+24(FP), SI
	MOVQ b_base+48(FP), BX
	VBROADCASTSD s0+72(FP), Z8
	VBROADCASTSD s1+80(FP), Z9
	MOVQ o_len+8(FP), CX
	SHRQ $3, CX
	MOVQ CX, AX
	SHLQ $3, AX
	TESTQ CX, CX
	JZ   s5done

s5loop:
	VPMOVZXWD (SI), Y0
	VPSLLD    $16, Y0, Y0
	VCVTPS2PD Y0, Z0
	VPMOVZXWD (BX), Y1
	VPSLLD    $16, Y1, Y1
	VCVTPS2PD Y1, Z1
	VMULPD    Z8, Z0, Z0
	VMULPD    Z9, Z1, Z1
	VADDPD    Z1, Z0, Z0
	VMOVUPD   Z0, (DI)
	ADDQ $16, SI
	ADDQ $16, BX
	ADDQ $64, DI
	DECQ CX
	JNZ  s5loop
	VZEROUPPER

s5done:
	MOVQ AX, ret+88(FP)
	RET
