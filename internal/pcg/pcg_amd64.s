#include "textflag.h"

// Registers: Z0/Z1 the high/low words of lanes 0–7, Z2/Z3 of lanes 8–15;
// Z20–Z23 the jump's aHi, aLo, cHi, cLo; Z24 aLo's high half; Z25 DXSM's
// multiplier; Z26 ones; Z27 the low-half mask.

// OUT puts DXSM of the states (hi, lo) in o (t is scratch).
#define OUT(hi, lo, o, t) \
	VPSRLQ  $32, hi, o; \
	VPXORQ  hi, o, o; \
	VPMULLQ Z25, o, o; \
	VPSRLQ  $48, o, t; \
	VPXORQ  o, t, o; \
	VPORQ   Z26, lo, t; \
	VPMULLQ t, o, o

// ADV steps the states (hi, lo) by the jump: (hi, lo)·(aHi, aLo) + (cHi,
// cLo) mod 2^128, the high word of lo·aLo built from 32-bit products.
#define ADV(hi, lo, p00, p01, p10, p11, t, u) \
	VPMULUDQ Z21, lo, p00; \
	VPMULUDQ Z24, lo, p01; \
	VPSRLQ   $32, lo, t; \
	VPMULUDQ Z21, t, p10; \
	VPMULUDQ Z24, t, p11; \
	VPSRLQ   $32, p00, t; \
	VPANDQ   Z27, p01, u; \
	VPADDQ   u, t, t; \
	VPANDQ   Z27, p10, u; \
	VPADDQ   u, t, t; \
	VPSRLQ   $32, t, t; \
	VPADDQ   t, p11, p11; \
	VPSRLQ   $32, p01, p01; \
	VPADDQ   p01, p11, p11; \
	VPSRLQ   $32, p10, p10; \
	VPADDQ   p10, p11, p11; \
	VPMULLQ  Z21, hi, hi; \
	VPADDQ   p11, hi, hi; \
	VPMULLQ  Z20, lo, t; \
	VPADDQ   t, hi, hi; \
	VPMULLQ  Z21, lo, lo; \
	VPADDQ   Z23, lo, lo; \
	VPCMPUQ  $1, Z23, lo, K1; \
	VPADDQ   Z22, hi, hi; \
	VPADDQ   Z26, hi, K1, hi

// SETUP loads the lanes from SI and the constants from DX.
#define SETUP \
	VMOVDQU64    0(SI), Z0; \
	VMOVDQU64    64(SI), Z1; \
	VMOVDQU64    128(SI), Z2; \
	VMOVDQU64    192(SI), Z3; \
	VPBROADCASTQ 0(DX), Z20; \
	VPBROADCASTQ 8(DX), Z21; \
	VPBROADCASTQ 16(DX), Z22; \
	VPBROADCASTQ 24(DX), Z23; \
	VPSRLQ       $32, Z21, Z24; \
	MOVQ         $0xda942042e4dd58b5, AX; \
	VPBROADCASTQ AX, Z25; \
	MOVQ         $1, AX; \
	VPBROADCASTQ AX, Z26; \
	MOVQ         $0xffffffff, AX; \
	VPBROADCASTQ AX, Z27

// STORE saves the lanes to SI.
#define STORE \
	VMOVDQU64 Z0, 0(SI); \
	VMOVDQU64 Z1, 64(SI); \
	VMOVDQU64 Z2, 128(SI); \
	VMOVDQU64 Z3, 192(SI)

// func fillAsm(dst []uint64, st *laneStates, j *jump) int
TEXT ·fillAsm(SB), NOSPLIT, $0-48
	MOVQ dst_base+0(FP), DI
	MOVQ dst_len+8(FP), CX
	MOVQ st+24(FP), SI
	MOVQ j+32(FP), DX
	XORQ BX, BX
	CMPQ CX, $16
	JLT  fdone
	SETUP

floop:
	OUT(Z0, Z1, Z4, Z6)
	OUT(Z2, Z3, Z5, Z7)
	VMOVDQU64 Z4, (DI)(BX*8)
	VMOVDQU64 Z5, 64(DI)(BX*8)
	ADDQ $16, BX
	LEAQ 16(BX), AX
	CMPQ AX, CX
	JGT  fend
	ADV(Z0, Z1, Z8, Z9, Z10, Z11, Z12, Z13)
	ADV(Z2, Z3, Z14, Z15, Z16, Z17, Z18, Z19)
	JMP  floop

fend:
	STORE
	VZEROUPPER

fdone:
	MOVQ BX, ret+40(FP)
	RET

// func belowAsm(keep []bool, thr uint64, st *laneStates, j *jump) int
TEXT ·belowAsm(SB), NOSPLIT, $0-56
	MOVQ keep_base+0(FP), DI
	MOVQ keep_len+8(FP), CX
	MOVQ st+32(FP), SI
	MOVQ j+40(FP), DX
	XORQ BX, BX
	CMPQ CX, $16
	JLT  bdone
	SETUP
	VPBROADCASTQ thr+24(FP), Z28
	MOVQ         $0x1fffffffffffff, AX
	VPBROADCASTQ AX, Z29
	MOVQ         $0x0101010101010101, R8

bloop:
	OUT(Z0, Z1, Z4, Z6)
	OUT(Z2, Z3, Z5, Z7)
	VPANDQ  Z29, Z4, Z4
	VPANDQ  Z29, Z5, Z5
	VPCMPUQ $1, Z28, Z4, K2
	VPCMPUQ $1, Z28, Z5, K3
	// Eight mask bits spread into eight 0/1 bytes.
	KMOVB   K2, AX
	PDEPQ   R8, AX, AX
	MOVQ    AX, (DI)(BX*1)
	KMOVB   K3, AX
	PDEPQ   R8, AX, AX
	MOVQ    AX, 8(DI)(BX*1)
	ADDQ $16, BX
	LEAQ 16(BX), AX
	CMPQ AX, CX
	JGT  bend
	ADV(Z0, Z1, Z8, Z9, Z10, Z11, Z12, Z13)
	ADV(Z2, Z3, Z14, Z15, Z16, Z17, Z18, Z19)
	JMP  bloop

bend:
	STORE
	VZEROUPPER

bdone:
	MOVQ BX, ret+48(FP)
	RET
