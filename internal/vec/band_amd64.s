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

// func bandKeepAsm(keys []uint32, draws []uint64, bounds []uint64, base uint32, keep []bool, undec []int32) (done, n int)
//
// Sixteen keys a step: their buckets, each bucket's packed (lo, hi)
// gathered, the draws compared with them; keep written as 0/1 bytes, the
// undecided lanes' indices compressed into undec.
TEXT ·bandKeepAsm(SB), NOSPLIT, $0-144
	MOVQ keys_base+0(FP), SI
	MOVQ keys_len+8(FP), CX
	MOVQ draws_base+24(FP), R9
	MOVQ bounds_base+48(FP), DX
	MOVQ bounds_len+56(FP), R12
	MOVQ keep_base+80(FP), DI
	MOVQ undec_base+104(FP), R10
	XORQ BX, BX
	XORQ R11, R11
	CMPQ CX, $16
	JLT  bkdone
	SUBQ $16, CX // the last start of a whole group
	MOVL         base+72(FP), AX
	VPBROADCASTD AX, Z30
	DECQ         R12
	VPBROADCASTD R12, Z31 // the last bucket
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
	VPMINUD   Z31, Z0, Z0
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
	MOVQ BX, done+128(FP)
	MOVQ R11, n+136(FP)
	RET

// func bucketCountAsm(keys []uint32, base uint32, counts []int32) int
//
// Sixteen keys a step: counts[bucket] += 1 by gather, add, scatter.
// Lanes of one bucket all gather the same count; each adds one plus the
// number of earlier lanes of its bucket (VPCONFLICTD's bits, counted), and
// of the colliding stores the scatter keeps the highest lane's: the count
// plus all of them.
TEXT ·bucketCountAsm(SB), NOSPLIT, $0-64
	MOVQ keys_base+0(FP), SI
	MOVQ keys_len+8(FP), CX
	MOVQ counts_base+32(FP), DX
	MOVQ counts_len+40(FP), R12
	XORQ BX, BX
	CMPQ CX, $16
	JLT  bcdone
	SUBQ $16, CX
	MOVL         base+24(FP), AX
	VPBROADCASTD AX, Z30
	MOVL         $1, AX
	VPBROADCASTD AX, Z29
	DECQ         R12
	VPBROADCASTD R12, Z31 // the last bucket

bcloop:
	VMOVDQU32   (SI)(BX*4), Z0
	VPSRLD      $16, Z0, Z0
	VPMAXUD     Z30, Z0, Z0
	VPSUBD      Z30, Z0, Z0
	VPMINUD     Z31, Z0, Z0
	VPCONFLICTD Z0, Z1
	VPOPCNTD    Z1, Z1
	VPADDD      Z29, Z1, Z1
	KXNORW      K1, K1, K1
	VPGATHERDD  (DX)(Z0*4), K1, Z2
	VPADDD      Z1, Z2, Z2
	KXNORW      K1, K1, K1
	VPSCATTERDD Z2, K1, (DX)(Z0*4)
	ADDQ        $16, BX
	CMPQ        BX, CX
	JLE         bcloop
	VZEROUPPER

bcdone:
	MOVQ BX, ret+56(FP)
	RET

// RANKRANGES turns the next sixteen bucket counts at 4(DI)(BX*4) into
// rank ends, stored back (a prefix sum in four shifted adds, plus the
// total so far in Z29, which it advances), and leaves the clamped starts
// in Z2 (halves Y2, Y4) and the clamped ends less one in Z3 (Y3, Y7).
// Needs Z31 = the last rank, Z30 = 0, Z28 = 15 in each lane, Z26 = 1.
#define RANKRANGES \
	VMOVDQU32 4(DI)(BX*4), Z0 \
	VALIGND   $15, Z30, Z0, Z1 \
	VPADDD    Z1, Z0, Z0 \
	VALIGND   $14, Z30, Z0, Z1 \
	VPADDD    Z1, Z0, Z0 \
	VALIGND   $12, Z30, Z0, Z1 \
	VPADDD    Z1, Z0, Z0 \
	VALIGND   $8, Z30, Z0, Z1 \
	VPADDD    Z1, Z0, Z0 \
	VPADDD    Z29, Z0, Z0 \
	VMOVDQU32 Z0, 4(DI)(BX*4) \
	VALIGND   $15, Z29, Z0, Z2 \
	VPERMD    Z0, Z28, Z29 \
	VPMINUD   Z31, Z2, Z2 \
	VPSUBD    Z26, Z0, Z3 \
	VPMAXSD   Z30, Z3, Z3 \
	VPMINUD   Z31, Z3, Z3 \
	VEXTRACTI32X8 $1, Z2, Y4 \
	VEXTRACTI32X8 $1, Z3, Y7

// func bucketBoundsAsm(pos []int32, thr []uint64, bounds []uint64) int
//
// Sixteen buckets a step: their counts summed into rank ends (a prefix
// sum in four shifted adds, plus the total so far), the starts the ends
// shifted by a lane, both clamped to thr, thr gathered at the starts and
// the ends less one, packed as BandBounds.
TEXT ·bucketBoundsAsm(SB), NOSPLIT, $0-80
	MOVQ pos_base+0(FP), DI
	MOVQ thr_base+24(FP), SI
	MOVQ thr_len+32(FP), R8
	MOVQ bounds_base+48(FP), DX
	MOVQ bounds_len+56(FP), CX
	XORQ BX, BX
	CMPQ CX, $16
	JLT  bbdone
	SUBQ $16, CX
	DECQ R8
	VPBROADCASTD R8, Z31 // the last rank
	VPXORD       Z30, Z30, Z30
	VPBROADCASTD (DI), Z29 // the total so far: pos[0]
	MOVL         $15, AX
	VPBROADCASTD AX, Z28
	MOVQ         $0x3fffff, AX
	VPBROADCASTQ AX, Z27
	MOVL         $1, AX
	VPBROADCASTD AX, Z26

bbloop:
	// the rank ranges; the starts are the previous total, then the ends
	RANKRANGES
	KXNORB     K1, K1, K1
	VPGATHERDQ (SI)(Y2*8), K1, Z5
	KXNORB     K1, K1, K1
	VPGATHERDQ (SI)(Y4*8), K1, Z6
	KXNORB     K1, K1, K1
	VPGATHERDQ (SI)(Y3*8), K1, Z8
	KXNORB     K1, K1, K1
	VPGATHERDQ (SI)(Y7*8), K1, Z9
	VPADDQ     Z27, Z8, Z8
	VPSRLQ     $22, Z8, Z8
	VPSLLQ     $32, Z8, Z8
	VPSRLQ     $22, Z5, Z5
	VPORQ      Z5, Z8, Z8
	VMOVDQU64  Z8, (DX)(BX*8)
	VPADDQ     Z27, Z9, Z9
	VPSRLQ     $22, Z9, Z9
	VPSLLQ     $32, Z9, Z9
	VPSRLQ     $22, Z6, Z6
	VPORQ      Z6, Z9, Z9
	VMOVDQU64  Z9, 64(DX)(BX*8)
	ADDQ       $16, BX
	CMPQ       BX, CX
	JLE        bbloop
	VZEROUPPER

bbdone:
	MOVQ BX, ret+72(FP)
	RET

// func packBoolsAsm(bits []uint64, keep []bool) int
//
// Sixty-four 0/1 bytes a step tested into a mask and ORed into a word.
TEXT ·packBoolsAsm(SB), NOSPLIT, $0-56
	MOVQ bits_base+0(FP), DI
	MOVQ bits_len+8(FP), CX
	MOVQ keep_base+24(FP), SI
	MOVQ keep_len+32(FP), DX
	SHRQ $6, DX
	CMPQ DX, CX
	CMOVQLT DX, CX // whole words of both
	XORQ BX, BX
	TESTQ CX, CX
	JZ   pbdone

pbloop:
	VMOVDQU8 (SI), Z0
	VPTESTMB Z0, Z0, K1
	KMOVQ    K1, AX
	ORQ      AX, (DI)(BX*8)
	ADDQ     $64, SI
	INCQ     BX
	CMPQ     BX, CX
	JLT      pbloop
	VZEROUPPER

pbdone:
	MOVQ BX, ret+48(FP)
	RET

// func unpackBoolsAsm(keep []bool, bits []uint64) int
//
// A word a step spread into sixty-four 0/1 bytes.
TEXT ·unpackBoolsAsm(SB), NOSPLIT, $0-56
	MOVQ keep_base+0(FP), DI
	MOVQ keep_len+8(FP), CX
	MOVQ bits_base+24(FP), SI
	MOVQ bits_len+32(FP), DX
	SHRQ $6, CX
	CMPQ DX, CX
	CMOVQLT DX, CX
	XORQ BX, BX
	TESTQ CX, CX
	JZ   ubdone
	MOVL         $0x01010101, AX
	VPBROADCASTD AX, Z1

ubloop:
	KMOVQ     (SI)(BX*8), K1
	VPMOVM2B  K1, Z0
	VPANDD    Z1, Z0, Z0
	VMOVDQU8  Z0, (DI)
	ADDQ      $64, DI
	INCQ      BX
	CMPQ      BX, CX
	JLT       ubloop
	VZEROUPPER

ubdone:
	MOVQ BX, ret+48(FP)
	RET

// func bucketBoundsAffineAsm(pos []int32, last uint32, a, b, m float64, bounds []uint64) int
//
// bucketBoundsAsm for thresholds within m of a + b·rank: the rank ranges
// as there, then per bucket lo = a − m + b·start and hi = a + m + b·(end
// − 1), clamped to [0, 2^53], lo truncated and hi truncated plus one to
// integers, packed as BandBounds — arithmetic instead of four gathers.
TEXT ·bucketBoundsAffineAsm(SB), NOSPLIT, $0-88
	MOVQ pos_base+0(FP), DI
	MOVQ bounds_base+56(FP), DX
	MOVQ bounds_len+64(FP), CX
	XORQ BX, BX
	CMPQ CX, $16
	JLT  badone
	SUBQ $16, CX
	MOVL         last+24(FP), AX
	VPBROADCASTD AX, Z31
	VPXORD       Z30, Z30, Z30
	VPBROADCASTD (DI), Z29
	MOVL         $15, AX
	VPBROADCASTD AX, Z28
	MOVQ         $0x3fffff, AX
	VPBROADCASTQ AX, Z27
	MOVL         $1, AX
	VPBROADCASTD AX, Z26
	MOVQ         $1, AX
	VPBROADCASTQ AX, Z25
	VBROADCASTSD a+32(FP), Z20
	VBROADCASTSD b+40(FP), Z21
	VBROADCASTSD m+48(FP), Z22
	VSUBPD       Z22, Z20, Z23 // a − m
	VADDPD       Z22, Z20, Z24 // a + m
	MOVQ         $0x4340000000000000, AX
	VPBROADCASTQ AX, Z22 // 2^53
	VXORPD       Z19, Z19, Z19

baloop:
	RANKRANGES
	VCVTUDQ2PD Y2, Z5
	VCVTUDQ2PD Y4, Z6
	VCVTUDQ2PD Y3, Z8
	VCVTUDQ2PD Y7, Z9
	VMULPD     Z21, Z5, Z5
	VADDPD     Z23, Z5, Z5
	VMULPD     Z21, Z6, Z6
	VADDPD     Z23, Z6, Z6
	VMULPD     Z21, Z8, Z8
	VADDPD     Z24, Z8, Z8
	VMULPD     Z21, Z9, Z9
	VADDPD     Z24, Z9, Z9
	VMAXPD     Z19, Z5, Z5
	VMINPD     Z22, Z5, Z5
	VMAXPD     Z19, Z6, Z6
	VMINPD     Z22, Z6, Z6
	VMAXPD     Z19, Z8, Z8
	VMINPD     Z22, Z8, Z8
	VMAXPD     Z19, Z9, Z9
	VMINPD     Z22, Z9, Z9
	VCVTTPD2UQQ Z5, Z5
	VCVTTPD2UQQ Z6, Z6
	VCVTTPD2UQQ Z8, Z8
	VCVTTPD2UQQ Z9, Z9
	VPADDQ     Z25, Z8, Z8
	VPADDQ     Z25, Z9, Z9
	VPADDQ     Z27, Z8, Z8
	VPSRLQ     $22, Z8, Z8
	VPSLLQ     $32, Z8, Z8
	VPSRLQ     $22, Z5, Z5
	VPORQ      Z5, Z8, Z8
	VMOVDQU64  Z8, (DX)(BX*8)
	VPADDQ     Z27, Z9, Z9
	VPSRLQ     $22, Z9, Z9
	VPSLLQ     $32, Z9, Z9
	VPSRLQ     $22, Z6, Z6
	VPORQ      Z6, Z9, Z9
	VMOVDQU64  Z9, 64(DX)(BX*8)
	ADDQ       $16, BX
	CMPQ       BX, CX
	JLE        baloop
	VZEROUPPER

badone:
	MOVQ BX, ret+80(FP)
	RET

// func splitBandsAVX512(x []float32, lo0, hi0, lo1, hi1 uint32, idx []uint32) (done, n, above0, above1 int)
//
// splitBandsAsm sixteen keys a step, unbiased: the keys (|x|'s bits)
// compared unsigned with each band's ends into mask registers, the lanes
// above each band counted, the positions of the lanes in either band
// written in order.
TEXT ·splitBandsAVX512(SB), NOSPLIT, $0-96
	MOVQ x_base+0(FP), SI
	MOVQ x_len+8(FP), CX
	MOVQ idx_base+40(FP), DI
	SHRQ $4, CX
	XORQ AX, AX
	XORQ DX, DX
	XORQ R10, R10
	XORQ R11, R11
	TESTQ CX, CX
	JZ   s6done
	MOVL lo0+24(FP), R8
	VPBROADCASTD R8, Z8
	MOVL hi0+28(FP), R8
	VPBROADCASTD R8, Z9
	MOVL lo1+32(FP), R8
	VPBROADCASTD R8, Z10
	MOVL hi1+36(FP), R8
	VPBROADCASTD R8, Z11
	MOVL $0x7fffffff, R8
	VPBROADCASTD R8, Z12

s6loop:
	VPANDD    (SI), Z12, Z1
	VPCMPUD   $6, Z9, Z1, K1  // key > hi0
	VPCMPUD   $1, Z8, Z1, K2  // key < lo0
	VPCMPUD   $6, Z11, Z1, K3 // key > hi1
	VPCMPUD   $1, Z10, Z1, K4 // key < lo1
	KMOVW     K1, R8
	POPCNTL   R8, R8
	ADDQ      R8, R10
	KMOVW     K3, R9
	POPCNTL   R9, R9
	ADDQ      R9, R11
	KORW      K1, K2, K2      // outside band 0
	KORW      K3, K4, K4      // outside band 1
	KANDW     K2, K4, K4      // outside both
	KMOVW     K4, BX
	XORL      $0xffff, BX     // lanes in a band
	JNZ       s6record

s6next:
	ADDQ $64, SI
	ADDQ $16, AX
	DECQ CX
	JNZ  s6loop
	JMP  s6end

s6record:
	BSFL BX, R8
	ADDL AX, R8
	MOVL R8, (DI)(DX*4)
	INCQ DX
	LEAL -1(BX), R9
	ANDL R9, BX
	JNZ  s6record
	JMP  s6next

s6end:
	VZEROUPPER

s6done:
	MOVQ AX, done+64(FP)
	MOVQ DX, n+72(FP)
	MOVQ R10, above0+80(FP)
	MOVQ R11, above1+88(FP)
	RET

// func keepBandAVX512(x []float32, low, top uint32) (done, kept int)
//
// keepBandAsm sixteen entries a step, unbiased: it stops before a step
// with a key equal to low or top; else it keeps the entries with low <
// key < top (unsigned) and zeroes the rest.
TEXT ·keepBandAVX512(SB), NOSPLIT, $0-48
	MOVQ x_base+0(FP), SI
	MOVQ x_len+8(FP), CX
	SHRQ $4, CX
	XORQ AX, AX
	XORQ DX, DX
	TESTQ CX, CX
	JZ   k6done
	MOVL low+24(FP), R8
	VPBROADCASTD R8, Z8
	MOVL top+28(FP), R8
	VPBROADCASTD R8, Z9
	MOVL $0x7fffffff, R8
	VPBROADCASTD R8, Z10

k6loop:
	VMOVDQU32 (SI), Z0
	VPANDD    Z10, Z0, Z1
	VPCMPEQD  Z8, Z1, K1
	VPCMPEQD  Z9, Z1, K2
	KORTESTW  K1, K2
	JNZ       k6stop
	VPCMPUD   $6, Z8, Z1, K3 // key > low
	VPCMPUD   $1, Z9, Z1, K4 // key < top
	KANDW     K3, K4, K3
	VMOVDQU32.Z Z0, K3, Z0
	VMOVDQU32 Z0, (SI)
	KMOVW     K3, BX
	POPCNTL   BX, BX
	ADDQ      BX, DX
	ADDQ      $64, SI
	ADDQ      $16, AX
	DECQ      CX
	JNZ       k6loop

k6stop:
	VZEROUPPER

k6done:
	MOVQ AX, done+32(FP)
	MOVQ DX, kept+40(FP)
	RET
