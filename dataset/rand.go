package dataset

import "math"

// Rand is a small deterministic pseudo-random generator (xoshiro256**
// seeded through SplitMix64). Its output for a given seed is fixed by this
// package, not by the Go release, so fixtures made from a seed (training
// shuffles, initial weights, corruption noise) regenerate bit for bit.
// A Rand is not safe for concurrent use; give each goroutine its own.
type Rand struct {
	s        [4]uint64
	spare    float64
	hasSpare bool
}

// NewRand returns a generator whose state is derived from all the seeds
// given, in order: NewRand(seed, i) gives each sample i of a data set its
// own stream, independent of how the work is split between goroutines.
func NewRand(seeds ...uint64) *Rand {
	x := uint64(0x6a09e667f3bcc908)
	for _, s := range seeds {
		x ^= s
		x = splitmix(&x)
	}
	r := &Rand{}
	for i := range r.s {
		r.s[i] = splitmix(&x)
	}
	if r.s == [4]uint64{} {
		r.s[0] = 1
	}
	return r
}

func splitmix(x *uint64) uint64 {
	*x += 0x9e3779b97f4a7c15
	z := *x
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

func rotl(x uint64, k uint) uint64 { return x<<k | x>>(64-k) }

// Uint64 returns 64 uniformly distributed random bits.
func (r *Rand) Uint64() uint64 {
	s := &r.s
	result := rotl(s[1]*5, 7) * 9
	t := s[1] << 17
	s[2] ^= s[0]
	s[3] ^= s[1]
	s[1] ^= s[2]
	s[0] ^= s[3]
	s[2] ^= t
	s[3] = rotl(s[3], 45)
	return result
}

// Float64 returns a uniform value in [0, 1) with 53 random bits.
func (r *Rand) Float64() float64 { return float64(r.Uint64()>>11) / (1 << 53) }

// Uniform returns a uniform value in [lo, hi).
func (r *Rand) Uniform(lo, hi float64) float64 { return lo + (hi-lo)*r.Float64() }

// Intn returns a uniform integer in [0, n); n must be positive (Intn
// returns 0 otherwise). It rejects the biased tail, so every value is
// exactly equally likely.
func (r *Rand) Intn(n int) int {
	if n <= 1 {
		return 0
	}
	un := uint64(n)
	limit := -un % un // 2^64 mod n
	for {
		v := r.Uint64()
		if v >= limit {
			return int(v % un)
		}
	}
}

// NormFloat64 returns a standard normal value (Box–Muller; the second value
// of each pair is kept for the next call).
func (r *Rand) NormFloat64() float64 {
	if r.hasSpare {
		r.hasSpare = false
		return r.spare
	}
	u1 := r.Float64()
	for u1 == 0 {
		u1 = r.Float64()
	}
	u2 := r.Float64()
	rad := math.Sqrt(-2 * math.Log(u1))
	s, c := math.Sincos(2 * math.Pi * u2)
	r.spare, r.hasSpare = rad*s, true
	return rad * c
}

// Perm returns a uniformly random permutation of 0..n-1 (Fisher–Yates).
func (r *Rand) Perm(n int) []int {
	p := make([]int, n)
	for i := range p {
		p[i] = i
	}
	r.Shuffle(n, func(i, j int) { p[i], p[j] = p[j], p[i] })
	return p
}

// Shuffle permutes n elements uniformly at random through swap.
func (r *Rand) Shuffle(n int, swap func(i, j int)) {
	for i := n - 1; i > 0; i-- {
		j := r.Intn(i + 1)
		swap(i, j)
	}
}
