#include "textflag.h"

// Constants of encodeBF16Asm, four lanes each: the exponent mask 0x7ff, 1,
// half an ulp of bfloat16 less one (2^44 − 1), the lowest and highest
// float64 exponents of a bfloat16 normal (897, 1150), the exponent and
// mantissa bits kept (0x3ffff), the exponent rebias (896 << 7), the sign
// (0x8000); then VPERMD's indices of the low halves of four quadwords.
DATA enc<>+0x0(SB)/8, $0x7ff
DATA enc<>+0x8(SB)/8, $0x7ff
DATA enc<>+0x10(SB)/8, $0x7ff
DATA enc<>+0x18(SB)/8, $0x7ff
DATA enc<>+0x20(SB)/8, $0x1
DATA enc<>+0x28(SB)/8, $0x1
DATA enc<>+0x30(SB)/8, $0x1
DATA enc<>+0x38(SB)/8, $0x1
DATA enc<>+0x40(SB)/8, $0xfffffffffff
DATA enc<>+0x48(SB)/8, $0xfffffffffff
DATA enc<>+0x50(SB)/8, $0xfffffffffff
DATA enc<>+0x58(SB)/8, $0xfffffffffff
DATA enc<>+0x60(SB)/8, $0x381
DATA enc<>+0x68(SB)/8, $0x381
DATA enc<>+0x70(SB)/8, $0x381
DATA enc<>+0x78(SB)/8, $0x381
DATA enc<>+0x80(SB)/8, $0x47e
DATA enc<>+0x88(SB)/8, $0x47e
DATA enc<>+0x90(SB)/8, $0x47e
DATA enc<>+0x98(SB)/8, $0x47e
DATA enc<>+0xa0(SB)/8, $0x3ffff
DATA enc<>+0xa8(SB)/8, $0x3ffff
DATA enc<>+0xb0(SB)/8, $0x3ffff
DATA enc<>+0xb8(SB)/8, $0x3ffff
DATA enc<>+0xc0(SB)/8, $0x1c000
DATA enc<>+0xc8(SB)/8, $0x1c000
DATA enc<>+0xd0(SB)/8, $0x1c000
DATA enc<>+0xd8(SB)/8, $0x1c000
DATA enc<>+0xe0(SB)/8, $0x8000
DATA enc<>+0xe8(SB)/8, $0x8000
DATA enc<>+0xf0(SB)/8, $0x8000
DATA enc<>+0xf8(SB)/8, $0x8000
DATA enc<>+0x100(SB)/4, $0
DATA enc<>+0x104(SB)/4, $2
DATA enc<>+0x108(SB)/4, $4
DATA enc<>+0x10c(SB)/4, $6
DATA enc<>+0x110(SB)/4, $0
DATA enc<>+0x114(SB)/4, $0
DATA enc<>+0x118(SB)/4, $0
DATA enc<>+0x11c(SB)/4, $0
GLOBL enc<>(SB), RODATA|NOPTR, $288

// func decodeBF16Asm(dst []float64, src []uint16) int
TEXT ·decodeBF16Asm(SB), NOSPLIT, $0-56
	MOVQ dst_base+0(FP), DI
	MOVQ src_base+24(FP), SI
	MOVQ dst_len+8(FP), CX
	SHRQ $3, CX
	MOVQ CX, AX
	SHLQ $3, AX
	TESTQ CX, CX
	JZ   decdone

decloop:
	VPMOVZXWD (SI), Y0
	VPSLLD    $16, Y0, Y0
	VCVTPS2PD X0, Y1
	VEXTRACTI128 $1, Y0, X2
	VCVTPS2PD X2, Y2
	VMOVUPD   Y1, (DI)
	VMOVUPD   Y2, 32(DI)
	ADDQ $16, SI
	ADDQ $64, DI
	DECQ CX
	JNZ  decloop
	VZEROUPPER

decdone:
	MOVQ AX, ret+48(FP)
	RET

// func deltaBF16Asm(dst []float32, src []uint16, base []float64) int
TEXT ·deltaBF16Asm(SB), NOSPLIT, $0-80
	MOVQ dst_base+0(FP), DI
	MOVQ src_base+24(FP), SI
	MOVQ base_base+48(FP), BX
	MOVQ dst_len+8(FP), CX
	SHRQ $3, CX
	MOVQ CX, AX
	SHLQ $3, AX
	TESTQ CX, CX
	JZ   deldone

delloop:
	VPMOVZXWD (SI), Y0
	VPSLLD    $16, Y0, Y0
	VCVTPS2PD X0, Y1
	VEXTRACTI128 $1, Y0, X2
	VCVTPS2PD X2, Y2
	VSUBPD    (BX), Y1, Y1
	VSUBPD    32(BX), Y2, Y2
	VCVTPD2PSY Y1, X1
	VCVTPD2PSY Y2, X2
	VMOVUPS   X1, (DI)
	VMOVUPS   X2, 16(DI)
	ADDQ $16, SI
	ADDQ $64, BX
	ADDQ $32, DI
	DECQ CX
	JNZ  delloop
	VZEROUPPER

deldone:
	MOVQ AX, ret+72(FP)
	RET

// func mix2Asm(o, base []float64, t0, t1 []float32, c0, c1 float64) int
TEXT ·mix2Asm(SB), NOSPLIT, $0-120
	MOVQ o_base+0(FP), DI
	MOVQ base_base+24(FP), SI
	MOVQ t0_base+48(FP), R8
	MOVQ t1_base+72(FP), R9
	VBROADCASTSD c0+96(FP), Y6
	VBROADCASTSD c1+104(FP), Y7
	MOVQ o_len+8(FP), CX
	SHRQ $2, CX
	MOVQ CX, AX
	SHLQ $2, AX
	TESTQ CX, CX
	JZ   mixdone

mixloop:
	VCVTPS2PD (R8), Y0
	VMULPD    Y6, Y0, Y0
	VMOVUPD   (SI), Y2
	VADDPD    Y0, Y2, Y0
	VCVTPS2PD (R9), Y1
	VMULPD    Y7, Y1, Y1
	VADDPD    Y1, Y0, Y0
	VMOVUPD   Y0, (DI)
	ADDQ $16, R8
	ADDQ $16, R9
	ADDQ $32, SI
	ADDQ $32, DI
	DECQ CX
	JNZ  mixloop

mixdone:
	VZEROUPPER
	MOVQ AX, ret+112(FP)
	RET

// func encodeBF16Asm(dst []uint16, src []float64) int
//
// Per lane, as bf16FromFloat64's fast path: r = b + (2^44 − 1) + bit 45
// of b; the result is the sign, then r's exponent rebiased and its top
// seven mantissa bits. Zeros give their sign. A group of eight with a lane
// whose exponent is below bfloat16's normals or whose rounding overflows
// (subnormals, Inf, NaN, too large) is left to the caller.
TEXT ·encodeBF16Asm(SB), NOSPLIT, $0-56
	MOVQ dst_base+0(FP), DI
	MOVQ src_base+24(FP), SI
	MOVQ src_len+32(FP), CX
	SHRQ $3, CX
	XORQ AX, AX
	TESTQ CX, CX
	JZ   encdone

encloop:
	VMOVDQU 0(SI), Y0
	VPSRLQ $52, Y0, Y1
	VPAND enc<>+0(SB), Y1, Y1
	VPSRLQ $45, Y0, Y2
	VPAND enc<>+32(SB), Y2, Y2
	VPADDQ Y2, Y0, Y3
	VPADDQ enc<>+64(SB), Y3, Y3
	VPSRLQ $52, Y3, Y4
	VPAND enc<>+0(SB), Y4, Y4
	VMOVDQU enc<>+96(SB), Y5
	VPCMPGTQ Y1, Y5, Y5
	VPCMPGTQ enc<>+128(SB), Y4, Y4
	VPOR Y4, Y5, Y5
	VPSLLQ $1, Y0, Y6
	VPXOR Y1, Y1, Y1
	VPCMPEQQ Y1, Y6, Y6
	VPANDN Y5, Y6, Y5
	VPSRLQ $45, Y3, Y8
	VPAND enc<>+160(SB), Y8, Y8
	VPSUBQ enc<>+192(SB), Y8, Y8
	VPANDN Y8, Y6, Y8
	VPSRLQ $48, Y0, Y2
	VPAND enc<>+224(SB), Y2, Y2
	VPOR Y2, Y8, Y8
	VMOVDQU 32(SI), Y0
	VPSRLQ $52, Y0, Y1
	VPAND enc<>+0(SB), Y1, Y1
	VPSRLQ $45, Y0, Y2
	VPAND enc<>+32(SB), Y2, Y2
	VPADDQ Y2, Y0, Y3
	VPADDQ enc<>+64(SB), Y3, Y3
	VPSRLQ $52, Y3, Y4
	VPAND enc<>+0(SB), Y4, Y4
	VMOVDQU enc<>+96(SB), Y10
	VPCMPGTQ Y1, Y10, Y10
	VPCMPGTQ enc<>+128(SB), Y4, Y4
	VPOR Y4, Y10, Y10
	VPSLLQ $1, Y0, Y6
	VPXOR Y1, Y1, Y1
	VPCMPEQQ Y1, Y6, Y6
	VPANDN Y10, Y6, Y10
	VPSRLQ $45, Y3, Y11
	VPAND enc<>+160(SB), Y11, Y11
	VPSUBQ enc<>+192(SB), Y11, Y11
	VPANDN Y11, Y6, Y11
	VPSRLQ $48, Y0, Y2
	VPAND enc<>+224(SB), Y2, Y2
	VPOR Y2, Y11, Y11
	VPOR   Y10, Y5, Y5
	VPTEST Y5, Y5
	JNZ    encstop
	VMOVDQU enc<>+256(SB), Y1
	VPERMD Y8, Y1, Y8
	VPERMD Y11, Y1, Y11
	VPACKUSDW X11, X8, X8
	VMOVDQU X8, (DI)
	ADDQ $64, SI
	ADDQ $16, DI
	ADDQ $8, AX
	DECQ CX
	JNZ  encloop

encstop:
	VZEROUPPER

encdone:
	MOVQ AX, ret+48(FP)
	RET

// Constants of consensus2Asm: |x|'s mask, +Inf's bits plus one, 1.0.
DATA tie<>+0x00(SB)/8, $0x7fffffffffffffff
DATA tie<>+0x08(SB)/8, $0x7ff0000000000001
DATA tie<>+0x10(SB)/8, $0x3ff0000000000000
GLOBL tie<>(SB), RODATA|NOPTR, $24

// func consensus2Asm(o, base []float64, t0, t1 []float32, w0, w1, lambda float64, normalize bool) int
//
// Four entries at a time, Consensus2's operations in its order: x_i =
// w_i·t_i; neg = (0 + x_0) + x_1 < 0; m_i = all ones when x_i is nonzero,
// not NaN, and its sign bit equals neg; mixed = (0 + x_0&m_0) + x_1&m_1;
// with normalize, div = (0 + w_0&m_0) + w_1&m_1, 1 where it is ±0, and
// mixed/div; o = base + lambda·that.
TEXT ·consensus2Asm(SB), NOSPLIT, $0-136
	MOVQ o_base+0(FP), DI
	MOVQ base_base+24(FP), SI
	MOVQ t0_base+48(FP), R8
	MOVQ t1_base+72(FP), R9
	VBROADCASTSD w0+96(FP), Y8
	VBROADCASTSD w1+104(FP), Y9
	VBROADCASTSD lambda+112(FP), Y10
	VBROADCASTSD tie<>+0x10(SB), Y11
	VXORPD Y12, Y12, Y12
	VBROADCASTSD tie<>+0x08(SB), Y13
	VBROADCASTSD tie<>+0x00(SB), Y14
	MOVQ o_len+8(FP), CX
	SHRQ $2, CX
	MOVQ CX, AX
	SHLQ $2, AX
	TESTQ CX, CX
	JZ   tiedone
	MOVBLZX normalize+120(FP), DX

tieloop:
	VCVTPS2PD (R8), Y0
	VMULPD    Y8, Y0, Y0
	VCVTPS2PD (R9), Y1
	VMULPD    Y9, Y1, Y1
	VADDPD    Y0, Y12, Y2
	VADDPD    Y1, Y2, Y2
	VCMPPD    $1, Y12, Y2, Y3
	// m0 in Y4
	VPCMPGTQ Y0, Y12, Y4
	VPXOR    Y3, Y4, Y4
	VPAND    Y14, Y0, Y5
	VPCMPGTQ Y12, Y5, Y6
	VPCMPGTQ Y5, Y13, Y7
	VPAND    Y7, Y6, Y6
	VPANDN   Y6, Y4, Y4
	// m1 in Y5
	VPCMPGTQ Y1, Y12, Y5
	VPXOR    Y3, Y5, Y5
	VPAND    Y14, Y1, Y6
	VPCMPGTQ Y12, Y6, Y7
	VPCMPGTQ Y6, Y13, Y6
	VPAND    Y6, Y7, Y7
	VPANDN   Y7, Y5, Y5
	// mixed in Y0
	VANDPD Y4, Y0, Y0
	VANDPD Y5, Y1, Y1
	VADDPD Y0, Y12, Y0
	VADDPD Y1, Y0, Y0
	TESTQ DX, DX
	JZ    tiemix
	// div in Y4, 1 where ±0
	VANDPD   Y8, Y4, Y4
	VANDPD   Y9, Y5, Y5
	VADDPD   Y4, Y12, Y4
	VADDPD   Y5, Y4, Y4
	VCMPPD   $0, Y12, Y4, Y6
	VANDNPD  Y4, Y6, Y7
	VANDPD   Y11, Y6, Y6
	VORPD    Y6, Y7, Y4
	VDIVPD   Y4, Y0, Y0

tiemix:
	VMULPD  Y10, Y0, Y0
	VADDPD  (SI), Y0, Y0
	VMOVUPD Y0, (DI)
	ADDQ $16, R8
	ADDQ $16, R9
	ADDQ $32, SI
	ADDQ $32, DI
	DECQ CX
	JNZ  tieloop

tiedone:
	VZEROUPPER
	MOVQ AX, ret+128(FP)
	RET

// func clearRunAsm(data []byte, exp, one, top uint64) int
// The SWAR test of SkipClear on four 32-byte vectors (128 bytes) at a
// time: (x & exp) + one per 64-bit lane, OR-ed, tested against top.
TEXT ·clearRunAsm(SB), NOSPLIT, $0-56
	MOVQ data_base+0(FP), SI
	MOVQ data_len+8(FP), CX
	SHRQ $7, CX
	XORQ AX, AX
	TESTQ CX, CX
	JZ   clrdone
	VPBROADCASTQ exp+24(FP), Y8
	VPBROADCASTQ one+32(FP), Y9
	VPBROADCASTQ top+40(FP), Y10

clrloop:
	VPAND  (SI), Y8, Y0
	VPAND  32(SI), Y8, Y1
	VPAND  64(SI), Y8, Y2
	VPAND  96(SI), Y8, Y3
	VPADDQ Y9, Y0, Y0
	VPADDQ Y9, Y1, Y1
	VPADDQ Y9, Y2, Y2
	VPADDQ Y9, Y3, Y3
	VPOR   Y1, Y0, Y0
	VPOR   Y3, Y2, Y2
	VPOR   Y2, Y0, Y0
	VPTEST Y10, Y0
	JNZ    clrhit
	ADDQ   $128, SI
	ADDQ   $128, AX
	DECQ   CX
	JNZ    clrloop

clrhit:
	VZEROUPPER

clrdone:
	MOVQ AX, ret+48(FP)
	RET

// func keepBandAsm(x []float32, low, top uint32) (done, kept int)
// Eight keys a group, each |v|'s bits with the sign bit set (the bias that
// makes a signed compare an unsigned one against the biased bounds): a
// group holding a key equal to a bound ends the loop untouched; otherwise
// its entries strictly between the bounds stay, the rest become +0.
TEXT ·keepBandAsm(SB), NOSPLIT, $0-48
	MOVQ x_base+0(FP), SI
	MOVQ x_len+8(FP), CX
	SHRQ $3, CX
	XORQ AX, AX
	XORQ DX, DX
	TESTQ CX, CX
	JZ   kbdone
	MOVL low+24(FP), R8
	MOVQ R8, X8
	VPBROADCASTD X8, Y8
	MOVL top+28(FP), R8
	MOVQ R8, X9
	VPBROADCASTD X9, Y9
	MOVL $0x80000000, R9
	MOVQ R9, X10
	VPBROADCASTD X10, Y10

kbloop:
	VMOVDQU   (SI), Y0
	VPOR      Y10, Y0, Y1
	VPCMPEQD  Y8, Y1, Y2
	VPCMPEQD  Y9, Y1, Y3
	VPOR      Y3, Y2, Y2
	VPTEST    Y2, Y2
	JNZ       kbstop
	VPCMPGTD  Y8, Y1, Y4 // key > low
	VPCMPGTD  Y1, Y9, Y5 // top > key
	VPAND     Y5, Y4, Y4
	VPAND     Y4, Y0, Y0
	VMOVDQU   Y0, (SI)
	VMOVMSKPS Y4, BX
	POPCNTL   BX, BX
	ADDQ      BX, DX
	ADDQ      $32, SI
	ADDQ      $8, AX
	DECQ      CX
	JNZ       kbloop

kbstop:
	VZEROUPPER

kbdone:
	MOVQ AX, done+32(FP)
	MOVQ DX, kept+40(FP)
	RET

// func scaleKeepAsm(x []float32, keep []bool, s float64) (done, kept int)
// Eight entries a group: widened to float64 (exact), multiplied by s and
// rounded back to float32 as the scalar conversions do, then ANDed with the
// keep bytes widened to all-ones or zero lanes.
TEXT ·scaleKeepAsm(SB), NOSPLIT, $0-72
	MOVQ x_base+0(FP), SI
	MOVQ x_len+8(FP), CX
	MOVQ keep_base+24(FP), DI
	SHRQ $3, CX
	XORQ AX, AX
	XORQ DX, DX
	TESTQ CX, CX
	JZ   skdone
	VBROADCASTSD s+48(FP), Y8
	VPXOR Y9, Y9, Y9

skloop:
	VCVTPS2PD   (SI), Y0
	VCVTPS2PD   16(SI), Y1
	VMULPD      Y8, Y0, Y0
	VMULPD      Y8, Y1, Y1
	VCVTPD2PSY  Y0, X0
	VCVTPD2PSY  Y1, X1
	VINSERTF128 $1, X1, Y0, Y0
	VPMOVZXBD   (DI), Y2
	VPSUBD      Y2, Y9, Y2 // 1 → all ones, 0 → 0
	VPAND       Y2, Y0, Y0
	VMOVDQU     Y0, (SI)
	VMOVMSKPS   Y2, BX
	POPCNTL     BX, BX
	ADDQ        BX, DX
	ADDQ        $32, SI
	ADDQ        $8, DI
	ADDQ        $8, AX
	DECQ        CX
	JNZ         skloop
	VZEROUPPER

skdone:
	MOVQ AX, done+56(FP)
	MOVQ DX, kept+64(FP)
	RET

// func splitBandsAsm(x []float32, lo0, hi0, lo1, hi1 uint32, idx []uint32) (done, n, above0, above1 int)
// The above counts gather in 32-bit lanes (x is shorter than 2^31).
TEXT ·splitBandsAsm(SB), NOSPLIT, $0-96
	MOVQ x_base+0(FP), SI
	MOVQ x_len+8(FP), CX
	MOVQ idx_base+40(FP), DI
	SHRQ $3, CX
	XORQ AX, AX
	XORQ DX, DX
	XORQ R10, R10
	XORQ R11, R11
	TESTQ CX, CX
	JZ   sbdone
	MOVL lo0+24(FP), R8
	MOVQ R8, X8
	VPBROADCASTD X8, Y8
	MOVL hi0+28(FP), R8
	MOVQ R8, X9
	VPBROADCASTD X9, Y9
	MOVL lo1+32(FP), R8
	MOVQ R8, X10
	VPBROADCASTD X10, Y10
	MOVL hi1+36(FP), R8
	MOVQ R8, X11
	VPBROADCASTD X11, Y11
	MOVL $0x80000000, R8
	MOVQ R8, X12
	VPBROADCASTD X12, Y12
	VPXOR Y13, Y13, Y13
	VPXOR Y14, Y14, Y14

sbloop:
	VMOVDQU   (SI), Y0
	VPOR      Y12, Y0, Y1 // biased key
	VPCMPGTD  Y9, Y1, Y3  // key > hi0
	VPCMPGTD  Y1, Y8, Y2  // lo0 > key
	VPSUBD    Y3, Y13, Y13
	VPOR      Y3, Y2, Y2  // outside band 0
	VPCMPGTD  Y11, Y1, Y5 // key > hi1
	VPCMPGTD  Y1, Y10, Y4 // lo1 > key
	VPSUBD    Y5, Y14, Y14
	VPOR      Y5, Y4, Y4  // outside band 1
	VPAND     Y4, Y2, Y2  // outside both
	VMOVMSKPS Y2, BX
	XORL      $0xff, BX   // lanes in a band
	JNZ       sbrecord

sbnext:
	ADDQ $32, SI
	ADDQ $8, AX
	DECQ CX
	JNZ  sbloop
	JMP  sbsum

sbrecord:
	BSFL BX, R8
	ADDL AX, R8
	MOVL R8, (DI)(DX*4)
	INCQ DX
	LEAL -1(BX), R9
	ANDL R9, BX
	JNZ  sbrecord
	JMP  sbnext

sbsum:
	VEXTRACTI128 $1, Y13, X1
	VPADDD       X1, X13, X0
	VPSHUFD      $0x4e, X0, X1
	VPADDD       X1, X0, X0
	VPSHUFD      $0xb1, X0, X1
	VPADDD       X1, X0, X0
	VMOVD        X0, R10
	VEXTRACTI128 $1, Y14, X1
	VPADDD       X1, X14, X0
	VPSHUFD      $0x4e, X0, X1
	VPADDD       X1, X0, X0
	VPSHUFD      $0xb1, X0, X1
	VPADDD       X1, X0, X0
	VMOVD        X0, R11
	VZEROUPPER

sbdone:
	MOVQ AX, done+64(FP)
	MOVQ DX, n+72(FP)
	MOVQ R10, above0+80(FP)
	MOVQ R11, above1+88(FP)
	RET

// func countBelowAsm(keys []uint32, k uint32) (done, n int)
// Sixteen keys a loop in two accumulators, then eight if left; counts in
// 32-bit lanes (a row is shorter than 2^31).
TEXT ·countBelowAsm(SB), NOSPLIT, $0-48
	MOVQ keys_base+0(FP), SI
	MOVQ keys_len+8(FP), CX
	SHRQ $3, CX
	XORQ AX, AX
	XORQ DX, DX
	TESTQ CX, CX
	JZ   cbdone
	MOVL k+24(FP), R8
	MOVQ R8, X8
	VPBROADCASTD X8, Y8
	MOVL $0x80000000, R8
	MOVQ R8, X9
	VPBROADCASTD X9, Y9
	VPXOR Y10, Y10, Y10
	VPXOR Y11, Y11, Y11
	CMPQ CX, $2
	JB   cbone

cbloop:
	VPXOR    (SI), Y9, Y0
	VPXOR    32(SI), Y9, Y1
	VPCMPGTD Y0, Y8, Y0 // k > key
	VPCMPGTD Y1, Y8, Y1
	VPSUBD   Y0, Y10, Y10
	VPSUBD   Y1, Y11, Y11
	ADDQ     $64, SI
	ADDQ     $16, AX
	SUBQ     $2, CX
	CMPQ     CX, $2
	JAE      cbloop
	TESTQ    CX, CX
	JZ       cbsum

cbone:
	VPXOR    (SI), Y9, Y0
	VPCMPGTD Y0, Y8, Y0
	VPSUBD   Y0, Y10, Y10
	ADDQ     $8, AX

cbsum:
	VPADDD       Y11, Y10, Y10
	VEXTRACTI128 $1, Y10, X1
	VPADDD       X1, X10, X0
	VPSHUFD      $0x4e, X0, X1
	VPADDD       X1, X0, X0
	VPSHUFD      $0xb1, X0, X1
	VPADDD       X1, X0, X0
	VMOVD        X0, DX
	VZEROUPPER

cbdone:
	MOVQ AX, done+32(FP)
	MOVQ DX, n+40(FP)
	RET

// func magKeysAsm(dst []uint32, src []float32) (done int, top uint32)
TEXT ·magKeysAsm(SB), NOSPLIT, $0-60
	MOVQ dst_base+0(FP), DI
	MOVQ dst_len+8(FP), CX
	MOVQ src_base+24(FP), SI
	SHRQ $3, CX
	XORQ AX, AX
	XORQ DX, DX
	TESTQ CX, CX
	JZ   mkdone
	MOVL $0x7fffffff, R8
	MOVQ R8, X8
	VPBROADCASTD X8, Y8
	VPXOR Y9, Y9, Y9

mkloop:
	VPAND   (SI), Y8, Y0
	VMOVDQU Y0, (DI)
	VPMAXUD Y0, Y9, Y9
	ADDQ    $32, SI
	ADDQ    $32, DI
	ADDQ    $8, AX
	DECQ    CX
	JNZ     mkloop
	VEXTRACTI128 $1, Y9, X1
	VPMAXUD      X1, X9, X0
	VPSHUFD      $0x4e, X0, X1
	VPMAXUD      X1, X0, X0
	VPSHUFD      $0xb1, X0, X1
	VPMAXUD      X1, X0, X0
	VMOVD        X0, DX
	VZEROUPPER

mkdone:
	MOVQ AX, done+48(FP)
	MOVL DX, top+56(FP)
	RET
