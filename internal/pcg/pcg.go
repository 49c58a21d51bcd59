// Package pcg is math/rand/v2's PCG generator (a 128-bit linear
// congruential state with the DXSM output permutation), its outputs bit for
// bit, with bulk draws that make many outputs at once: on amd64 with
// AVX-512 sixteen lanes step together, each lane jumped sixteen states
// ahead, instead of one 128-bit multiply chain per output.
//
// DARE's and DELLA's masks are defined by math/rand/v2's PCG stream;
// drawing them faster must not change one bit of them.
package pcg

import "math/bits"

// PCG is a generator state. Its zero value is a valid (if unremarkable)
// state; New gives the state of rand.NewPCG.
type PCG struct {
	Hi, Lo uint64
}

// New is the state rand.NewPCG(seed1, seed2) starts from.
func New(seed1, seed2 uint64) PCG { return PCG{seed1, seed2} }

// The LCG's multiplier and increment, and DXSM's multiplier: math/rand/v2's.
const (
	mulHi    = 2549297995355413924
	mulLo    = 4865540595714422341
	incHi    = 6364136223846793005
	incLo    = 1442695040888963407
	cheapMul = 0xda942042e4dd58b5
)

// step advances the state once: state = state·mul + inc (mod 2^128).
func (p *PCG) step() {
	hi, lo := mul128(mulHi, mulLo, p.Hi, p.Lo)
	lo, c := bits.Add64(lo, incLo, 0)
	hi, _ = bits.Add64(hi, incHi, c)
	p.Hi, p.Lo = hi, lo
}

// output is DXSM of a state.
func output(hi, lo uint64) uint64 {
	hi ^= hi >> 32
	hi *= cheapMul
	hi ^= hi >> 48
	return hi * (lo | 1)
}

// Uint64 advances the state and returns the next output: rand.PCG's
// Uint64.
func (p *PCG) Uint64() uint64 {
	p.step()
	return output(p.Hi, p.Lo)
}

// Advance moves the state n steps on, as n outputs would, in O(log n)
// multiplications: the map s ↦ mul·s + inc composed with itself by
// squaring (Brown's jump-ahead for LCGs).
func (p *PCG) Advance(n uint64) {
	accA, accC := PCG{0, 1}, PCG{} // the identity map
	curA, curC := PCG{mulHi, mulLo}, PCG{incHi, incLo}
	for ; n > 0; n >>= 1 {
		if n&1 == 1 {
			// acc = cur ∘ acc: s ↦ curA·(accA·s + accC) + curC.
			accA.Hi, accA.Lo = mul128(curA.Hi, curA.Lo, accA.Hi, accA.Lo)
			accC = affine(curA, accC, curC)
		}
		// cur = cur ∘ cur.
		curC = affine(curA, curC, curC)
		curA.Hi, curA.Lo = mul128(curA.Hi, curA.Lo, curA.Hi, curA.Lo)
	}
	*p = affine(accA, *p, accC)
}

// affine is a·s + c (mod 2^128).
func affine(a, s, c PCG) PCG {
	hi, lo := mul128(a.Hi, a.Lo, s.Hi, s.Lo)
	lo, carry := bits.Add64(lo, c.Lo, 0)
	hi, _ = bits.Add64(hi, c.Hi, carry)
	return PCG{hi, lo}
}

// Fill sets dst to the next len(dst) outputs, in order.
func (p *PCG) Fill(dst []uint64) {
	i := 0
	if useAsm && len(dst) >= lanes {
		var st laneStates
		p.spread(&st)
		i = fillAsm(dst, &st, &jumpLanes)
		p.Hi, p.Lo = st.last()
	}
	for ; i < len(dst); i++ {
		dst[i] = p.Uint64()
	}
}

// Below sets keep[i] to whether the low 53 bits of the next output are
// below thr, for each i in order: rand.Float64() < d compared in integers
// when thr = ⌈d·2^53⌉ (Float64 is those bits over 2^53, exactly).
func (p *PCG) Below(keep []bool, thr uint64) {
	i := 0
	if useAsm && len(keep) >= lanes {
		var st laneStates
		p.spread(&st)
		i = belowAsm(keep, thr, &st, &jumpLanes)
		p.Hi, p.Lo = st.last()
	}
	for ; i < len(keep); i++ {
		keep[i] = p.Uint64()&(1<<53-1) < thr
	}
}

// lanes is how many outputs the assembly makes per step.
const lanes = 16

// laneStates holds sixteen consecutive states, as two groups of eight:
// the high words of the first group, its low words, then the second's.
// The assembly leaves in it the states of the last outputs it made.
type laneStates [4 * 8]uint64

// spread fills st with the next sixteen states after p.
func (p PCG) spread(st *laneStates) {
	for j := range lanes {
		p.step()
		g, k := j/8, j%8
		st[16*g+k], st[16*g+8+k] = p.Hi, p.Lo
	}
}

// last is the state of the sixteenth lane: the generator's state after
// the outputs made.
func (st *laneStates) last() (hi, lo uint64) { return st[16+7], st[16+8+7] }

// jump is an affine map of states, s ↦ a·s + c (mod 2^128), as its words
// aHi, aLo, cHi, cLo: the assembly's layout.
type jump [4]uint64

// jumpLanes moves a state sixteen steps on.
var jumpLanes = func() jump {
	// Compose s ↦ mul·s + inc with itself: (a, c) ∘ step = (mul·a,
	// mul·c + inc), and mul·c + inc is c stepped.
	a, c := PCG{0, 1}, PCG{}
	for range lanes {
		a.Hi, a.Lo = mul128(mulHi, mulLo, a.Hi, a.Lo)
		c.step()
	}
	return jump{a.Hi, a.Lo, c.Hi, c.Lo}
}()

// mul128 is x·y mod 2^128.
func mul128(xHi, xLo, yHi, yLo uint64) (hi, lo uint64) {
	hi, lo = bits.Mul64(xLo, yLo)
	hi += xHi*yLo + xLo*yHi
	return hi, lo
}
