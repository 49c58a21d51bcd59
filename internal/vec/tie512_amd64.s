#include "textflag.h"

// func consensus2AVX512(o, base []float64, braw []uint16, t0, t1 []float32, w0, w1, lambda float64, normalize, pow2 bool) int
//
// consensus2Asm eight entries a step with the selections in mask
// registers: x_i = w_i·t_i; neg = (0 + x_0) + x_1 < 0; x_i agrees when
// x_i < 0 under neg, x_i > 0 otherwise (so never a zero or a NaN);
// mixed = (0 + x_0 or +0) + (x_1 or +0); with normalize, div = (0 + w_0
// or +0) + (w_1 or +0), 1 where it is ±0, and mixed/div; o = base +
// lambda·that. With pow2 (the caller's promise that every divisor this
// can form is ±2^k, normal) the division is a multiplication by the
// reciprocal, whose bits are 2046 − k in the exponent: the same real
// number, so the same rounding. With braw nonempty the base is read from
// it, bfloat16, instead of from base.
TEXT ·consensus2AVX512(SB), NOSPLIT, $0-160
	MOVQ o_base+0(FP), DI
	MOVQ base_base+24(FP), SI
	MOVQ braw_base+48(FP), R10
	MOVQ braw_len+56(FP), R11
	MOVQ t0_base+72(FP), R8
	MOVQ t1_base+96(FP), R9
	VBROADCASTSD w0+120(FP), Z8
	VBROADCASTSD w1+128(FP), Z9
	VBROADCASTSD lambda+136(FP), Z10
	MOVQ $0x3ff0000000000000, AX
	VPBROADCASTQ AX, Z11
	MOVQ $0x7fe0000000000000, AX
	VPBROADCASTQ AX, Z13
	MOVQ $0x7fffffffffffffff, AX
	VPBROADCASTQ AX, Z14
	VXORPD Z12, Z12, Z12
	MOVQ o_len+8(FP), CX
	SHRQ $3, CX
	MOVQ CX, AX
	SHLQ $3, AX
	TESTQ CX, CX
	JZ   t5done
	MOVBLZX normalize+144(FP), DX
	MOVBLZX pow2+145(FP), BX

t5loop:
	VCVTPS2PD (R8), Z0
	VMULPD    Z8, Z0, Z0
	VCVTPS2PD (R9), Z1
	VMULPD    Z9, Z1, Z1
	VADDPD    Z0, Z12, Z2
	VADDPD    Z1, Z2, Z2
	VCMPPD    $0x11, Z12, Z2, K1
	// m0 in K4: neg ∧ x0 < 0, or ¬neg ∧ x0 > 0
	VCMPPD    $0x11, Z12, Z0, K2
	VCMPPD    $0x1e, Z12, Z0, K3
	KANDW     K1, K2, K2
	KANDNW    K3, K1, K3
	KORW      K2, K3, K4
	// m1 in K5
	VCMPPD    $0x11, Z12, Z1, K2
	VCMPPD    $0x1e, Z12, Z1, K3
	KANDW     K1, K2, K2
	KANDNW    K3, K1, K3
	KORW      K2, K3, K5
	// mixed in Z3
	VADDPD.Z  Z0, Z12, K4, Z3
	VMOVAPD.Z Z1, K5, Z1
	VADDPD    Z1, Z3, Z3
	TESTQ DX, DX
	JZ    t5mix
	// div in Z5, 1 where ±0
	VMOVAPD.Z Z8, K4, Z5
	VADDPD    Z5, Z12, Z5
	VMOVAPD.Z Z9, K5, Z6
	VADDPD    Z6, Z5, Z5
	VCMPPD    $0, Z12, Z5, K6
	VMOVAPD   Z11, K6, Z5
	TESTQ BX, BX
	JZ    t5div
	// 1/±2^k: the exponent 2046 − k, the sign kept
	VPANDQ    Z14, Z5, Z6
	VPSUBQ    Z6, Z13, Z6
	VPANDNQ   Z5, Z14, Z7
	VPORQ     Z7, Z6, Z6
	VMULPD    Z6, Z3, Z3
	JMP       t5mix

t5div:
	VDIVPD    Z5, Z3, Z3

t5mix:
	VMULPD  Z10, Z3, Z3
	TESTQ   R11, R11
	JNZ     t5raw
	VADDPD  (SI), Z3, Z3
	ADDQ $64, SI
	JMP  t5store

t5raw:
	VPMOVZXWD (R10), Y4
	VPSLLD    $16, Y4, Y4
	VCVTPS2PD Y4, Z4
	VADDPD    Z4, Z3, Z3
	ADDQ $16, R10

t5store:
	VMOVUPD Z3, (DI)
	ADDQ $32, R8
	ADDQ $32, R9
	ADDQ $64, DI
	DECQ CX
	JNZ  t5loop

t5done:
	VZEROUPPER
	MOVQ AX, ret+152(FP)
	RET
