package lowrank

import (
	"errors"
	"fmt"
	"math"

	"gonum.org/v1/gonum/mat"
)

// Rule chooses the rank r of each factorised m×n matrix. Exactly one field
// is set.
type Rule struct {
	// Rank is a fixed r, capped at min(m, n).
	Rank int
	// Energy picks the smallest r whose retained spectral energy
	// Σ_{i≤r} σ_i² / Σ_i σ_i² is at least Energy (0 < Energy ≤ 1).
	Energy float64
	// Ratio is PELA's compression ratio c: r = ⌊mn / (c(m+n))⌋, so the
	// factors hold 1/c of the matrix's parameters; clamped to [1, min(m, n)].
	Ratio float64
}

// Validate checks that exactly one criterion is set and in range.
func (r Rule) Validate() error {
	set := 0
	if r.Rank != 0 {
		set++
		if r.Rank < 1 {
			return fmt.Errorf("rank %d: must be at least 1", r.Rank)
		}
	}
	if r.Energy != 0 {
		set++
		if !(r.Energy > 0 && r.Energy <= 1) {
			return fmt.Errorf("energy %g: must be in (0, 1]", r.Energy)
		}
	}
	if r.Ratio != 0 {
		set++
		if !(r.Ratio > 0) || math.IsInf(r.Ratio, 0) {
			return fmt.Errorf("ratio %g: must be a positive number", r.Ratio)
		}
	}
	switch set {
	case 0:
		return errors.New("give one of rank, energy or ratio")
	case 1:
		return nil
	}
	return errors.New("give only one of rank, energy or ratio")
}

// String describes the rule as the command line spells it.
func (r Rule) String() string {
	switch {
	case r.Rank != 0:
		return fmt.Sprintf("rank=%d", r.Rank)
	case r.Energy != 0:
		return fmt.Sprintf("energy=%g", r.Energy)
	case r.Ratio != 0:
		return fmt.Sprintf("ratio=%g", r.Ratio)
	}
	return "none"
}

// RatioRank is PELA's rank ⌊mn / (c(m+n))⌋ for compression ratio c,
// clamped to [1, min(m, n)].
func RatioRank(m, n int, c float64) int {
	r := math.Floor(float64(m) * float64(n) / (c * float64(m+n)))
	return int(max(1, min(r, float64(min(m, n)))))
}

// energyRank is the smallest r ≤ len(s.S) with retained energy ≥ e, and
// whether one exists among the computed values.
func energyRank(s *SVD, e float64) (int, bool) {
	if s.Total == 0 {
		return 0, true
	}
	for r := 0; r <= len(s.S); r++ {
		// Tail form: 1 − tail/total ≥ e, so e = 1 asks for a zero tail.
		if s.TailEnergy(r) <= (1-e)*s.Total {
			return r, true
		}
	}
	return len(s.S), false
}

// Method selects how Factorize computes the SVD.
type Method struct {
	// Randomized uses Randomized (with Rand) instead of Exact.
	Randomized bool
	// Auto chooses per tensor: randomized for matrices whose smaller side
	// is at least AutoRandomized (an exact SVD of those takes tens of
	// seconds to minutes), exact below.
	Auto bool
	Rand RandOptions
}

// AutoRandomized is the smaller matrix side from which Method.Auto uses
// the randomized SVD: 1024 (a 1024×2816 exact SVD takes about 15 s on two
// cores; 4096×11008, 17 minutes).
const AutoRandomized = 1024

// For resolves Auto for an m×n matrix.
func (h Method) For(m, n int) Method {
	if h.Auto {
		h.Randomized = min(m, n) >= AutoRandomized
	}
	return h
}

// Result is a truncated SVD: the decomposition and the chosen rank.
type Result struct {
	*SVD
	// Rank is the chosen r (0 for an all-zero matrix).
	Rank int
	// Method is "exact" or "randomized" (randomized requests fall back to
	// exact when the sketch would cover min(m, n)).
	Method string
}

// Factorize computes the SVD of a and picks the rank by rule. a may be
// overwritten (it is for the exact method, which saves a copy). With an
// Energy rule and the randomized method the sketch grows from rank 32,
// doubling until the target energy is reached within the sketch's
// leading (non-oversampled) values; once the sketch would reach half of
// min(m, n) the exact SVD is computed instead.
func Factorize(a *mat.Dense, rule Rule, how Method) (*Result, error) {
	if err := rule.Validate(); err != nil {
		return nil, err
	}
	m, n := a.Dims()
	kmax := min(m, n)
	if kmax == 0 {
		return nil, fmt.Errorf("cannot factorise an empty %d×%d matrix", m, n)
	}
	var s *SVD
	var err error
	if !how.Randomized {
		if s, err = exactInPlace(a); err != nil {
			return nil, err
		}
		return &Result{SVD: s, Rank: pickRank(s, rule, m, n), Method: "exact"}, nil
	}
	switch {
	case rule.Rank != 0:
		s, err = Randomized(a, min(rule.Rank, kmax), how.Rand)
	case rule.Ratio != 0:
		s, err = Randomized(a, RatioRank(m, n, rule.Ratio), how.Rand)
	default:
		for k := min(32, kmax); ; k *= 2 {
			if 2*(k+how.Rand.Oversample) >= kmax {
				// A sketch this wide costs about what the exact SVD does.
				s, err = exactInPlace(a)
				break
			}
			if s, err = Randomized(a, k, how.Rand); err != nil {
				return nil, err
			}
			if r, ok := energyRank(s, rule.Energy); ok && r <= k {
				break
			}
		}
	}
	if err != nil {
		return nil, err
	}
	method := "randomized"
	if s.Exact {
		method = "exact"
	}
	return &Result{SVD: s, Rank: pickRank(s, rule, m, n), Method: method}, nil
}

func pickRank(s *SVD, rule Rule, m, n int) int {
	if s.Total == 0 {
		return 0 // nothing to keep; a zero delta needs no factors
	}
	switch {
	case rule.Rank != 0:
		return min(rule.Rank, len(s.S))
	case rule.Ratio != 0:
		return min(RatioRank(m, n, rule.Ratio), len(s.S))
	}
	r, _ := energyRank(s, rule.Energy)
	return r
}

// RelError is ‖A − A_r‖_F / ‖A‖_F at the chosen rank.
func (r *Result) RelError() float64 { return r.SVD.RelError(r.Rank) }

// Energy is the retained fraction Σ_{i≤r} σ_i² / ‖A‖_F² (1 for A = 0).
func (r *Result) Energy() float64 {
	if r.Total == 0 {
		return 1
	}
	return 1 - r.TailEnergy(r.Rank)/r.Total
}

// Reconstruct returns the rank-r approximation U_r·Σ_r·V_rᵀ.
func (r *Result) Reconstruct() *mat.Dense { return r.SVD.Reconstruct(r.Rank) }

// Split says how the singular values are shared between the two factors
// of Left·Right = U_r·Σ_r·V_rᵀ.
type Split int

const (
	// SplitSqrt gives each factor √σ: Left = U·Σ^½, Right = Σ^½·Vᵀ. Both
	// factors then have the same scale, which suits 16-bit storage and
	// further training.
	SplitSqrt Split = iota
	// SplitLeft puts σ on the left (LoRA B = U·Σ, A = Vᵀ).
	SplitLeft
)

// ParseSplit reads "sqrt" or "b" (σ in LoRA's B factor).
func ParseSplit(s string) (Split, error) {
	switch s {
	case "sqrt", "":
		return SplitSqrt, nil
	case "b", "left", "us":
		return SplitLeft, nil
	}
	return 0, fmt.Errorf("split %q: use sqrt or b", s)
}

// String is the command-line name of the split.
func (s Split) String() string {
	if s == SplitLeft {
		return "b"
	}
	return "sqrt"
}

// Factors returns Left (m×r) and Right (r×n) with Left·Right = A_r. With
// transposed, σ's share is swapped so that SplitLeft still puts σ on the
// factor that becomes LoRA's B once both are transposed (fan_in_fan_out
// and embedding layers store B·A transposed).
func (r *Result) Factors(split Split, transposed bool) (left, right *mat.Dense) {
	pl, pr := 0.5, 0.5
	if split == SplitLeft {
		pl, pr = 1, 0
		if transposed {
			pl, pr = 0, 1
		}
	}
	s := r.S[:r.Rank]
	return scaledColumns(r.U, s, pl), scaledRows(r.Vt, s, pr)
}
