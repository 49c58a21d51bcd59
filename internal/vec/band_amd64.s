#include "textflag.h"

// Lane numbers 0–15, the start of bandKeepAsm's index vector.
DATA iota16<>+0x00(SB)/8, $0x0000000100000000
DATA iota16<>+0x08(SB)/8, $0x0000000300000002
DATA iota16<>+0x10(SB)/8, $0x0000000500000004
DATA iota16<>+0x18(SB)/8, $0x0000000700000006
DATA iota16<>+0x20(SB)/8, $0x0000000900000008
DATA iota16<>+0x28(SB)/8, $0x0000000b0000000a
DATA iota16<>+0x30(SB)/8, $0x0000000d0000000c
DATA iota16<>+0x38(SB)/8, $0x0000000f0000000e
GLOBL iota16<>(SB), RODATA|NOPTR, $64

// func bandKeepAsm(keys []uint32, draws []uint64, bounds *uint64, base uint32, keep []bool, undec []int32) (done, n int)
//
// Sixteen keys a step: their buckets, each bucket's packed (lo, hi)
// gathered, the draws compared with them; keep written as 0/1 bytes, the
// undecided lanes' indices compressed into undec.
TEXT ·bandKeepAsm(SB), NOSPLIT, $0-128
	MOVQ keys_base+0(FP), SI
	MOVQ keys_len+8(FP), CX
	MOVQ draws_base+24(FP), R9
	MOVQ bounds+48(FP), DX
	MOVQ keep_base+64(FP), DI
	MOVQ undec_base+88(FP), R10
	XORQ BX, BX
	XORQ R11, R11
	CMPQ CX, $16
	JLT  bkdone
	SUBQ $16, CX // the last start of a whole group
	MOVL         base+56(FP), AX
	VPBROADCASTD AX, Z30
	MOVQ         $0x1fffffffffffff, AX
	VPBROADCASTQ AX, Z29
	MOVL         $0xffffffff, AX
	VPBROADCASTQ AX, Z28
	VMOVDQU32    iota16<>(SB), Z26
	MOVL         $16, AX
	VPBROADCASTD AX, Z27
	MOVQ         $0x0101010101010101, R8

bkloop:
	VMOVDQU32 (SI)(BX*4), Z0
	VPSRLD    $16, Z0, Z0
	VPMAXUD   Z30, Z0, Z0
	VPSUBD    Z30, Z0, Z0
	VEXTRACTI32X8 $1, Z0, Y1
	KXNORB     K1, K1, K1
	VPGATHERDQ (DX)(Y0*8), K1, Z2
	KXNORB     K1, K1, K1
	VPGATHERDQ (DX)(Y1*8), K1, Z4
	// Each bucket's (lo, hi) split: lo in Z2/Z4, hi in Z3/Z5.
	VPSRLQ     $32, Z2, Z3
	VPSRLQ     $32, Z4, Z5
	VPANDQ     Z28, Z2, Z2
	VPANDQ     Z28, Z4, Z4
	// The draws' low 53 bits without their low 22.
	VPANDQ     (R9)(BX*8), Z29, Z6
	VPANDQ     64(R9)(BX*8), Z29, Z7
	VPSRLQ     $22, Z6, Z6
	VPSRLQ     $22, Z7, Z7
	VPCMPUQ    $1, Z2, Z6, K2
	VPCMPUQ    $1, Z4, Z7, K3
	KMOVB      K2, AX
	PDEPQ      R8, AX, AX
	MOVQ       AX, (DI)(BX*1)
	KMOVB      K3, AX
	PDEPQ      R8, AX, AX
	MOVQ       AX, 8(DI)(BX*1)
	// lo ≤ u < hi as u − lo < hi − lo, unsigned.
	VPSUBQ     Z2, Z6, Z6
	VPSUBQ     Z2, Z3, Z3
	VPSUBQ     Z4, Z7, Z7
	VPSUBQ     Z4, Z5, Z5
	VPCMPUQ    $1, Z3, Z6, K4
	VPCMPUQ    $1, Z5, Z7, K5
	KUNPCKBW   K4, K5, K6
	KORTESTW   K6, K6
	JZ         bknext
	VPCOMPRESSD Z26, K6, (R10)(R11*4)
	KMOVW      K6, AX
	POPCNTL    AX, AX
	ADDQ       AX, R11

bknext:
	VPADDD Z27, Z26, Z26
	ADDQ   $16, BX
	CMPQ   BX, CX
	JLE    bkloop
	VZEROUPPER

bkdone:
	MOVQ BX, done+112(FP)
	MOVQ R11, n+120(FP)
	RET
