package weights

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
)

// Stats summarises a tensor's values. Min, Max, Mean and Std (population,
// as numpy's std) are over the finite values; NaN and Inf are counted.
type Stats struct {
	Count int64   `json:"count"`
	Min   float64 `json:"min"`
	Max   float64 `json:"max"`
	Mean  float64 `json:"mean"`
	Std   float64 `json:"std"`
	NaN   int64   `json:"nan"`
	Inf   int64   `json:"inf"`
}

// ComputeStats decodes the tensor in chunks (no full float64 copy) and
// accumulates with Chan et al.'s pairwise update, which stays accurate for
// large tensors where a naive sum of squares cancels.
func ComputeStats(t Tensor) (Stats, error) {
	if t.DType.Size() == 0 {
		return Stats{Min: math.NaN(), Max: math.NaN()}, nil
	}
	var a statsAcc
	if err := a.add(t.DType, t.Data); err != nil {
		return a.s, err
	}
	return a.result(), nil
}

// statsBlock is the elements combined at a time; the result depends on
// it, so a tensor fed in parts gets the same numbers only when each part
// but the last holds a multiple of it.
const statsBlock = 4096

// statsAcc accumulates Stats over a tensor's bytes given in order.
type statsAcc struct {
	s       Stats
	m2      float64
	finite  int64 // values combined into Mean and m2
	started bool
	// bufs hold a block and the one before it, whose squared deviations
	// are summed in the loop that sums the next block: two independent
	// chains of float64 additions, each in its own order, at the cost of
	// one.
	bufs [2][statsBlock]float64
}

// add accumulates data, a part of the tensor whose element count is a
// multiple of statsBlock unless it is the last.
func (a *statsAcc) add(dt DType, data []byte) error {
	if !a.started {
		a.s, a.started = Stats{Min: math.NaN(), Max: math.NaN()}, true
	}
	es := dt.Size()
	if es == 0 {
		return nil
	}
	s := &a.s
	n := len(data) / es
	// prev is a finite block whose mean is known and whose squared
	// deviations are still to sum and combine.
	var prev []float64
	var prevMean float64
	seen := a.finite // finite values whose extremes are taken
	cur := 0
	for i := 0; i < n; i += statsBlock {
		k := min(statsBlock, n-i)
		buf := a.bufs[cur][:k]
		if err := Decode(dt, data[i*es:(i+k)*es], buf); err != nil {
			return err
		}
		if !HasNonFinite(dt, data[i*es:(i+k)*es]) {
			// Every value finite (the usual block): the same sums and
			// extremes without the per-value class tests.
			mn, mx := s.Min, s.Max
			if seen == 0 {
				mn, mx = buf[0], buf[0]
			}
			var sum float64
			if len(prev) == k {
				var cm2 float64
				for j, v := range buf {
					// Compares, not min/max: ties keep the first (−0 vs +0).
					if v < mn {
						mn = v
					}
					if v > mx {
						mx = v
					}
					sum += v
					d := prev[j] - prevMean
					cm2 += d * d
				}
				a.combine(int64(k), prevMean, cm2)
			} else {
				if prev != nil {
					a.combine(int64(len(prev)), prevMean, deviations(prev, prevMean))
				}
				mn, mx, sum = extremesSum(buf, mn, mx)
			}
			s.Min, s.Max = mn, mx
			seen += int64(k)
			prev, prevMean = buf, sum/float64(k)
			cur ^= 1
			continue
		}
		if prev != nil {
			a.combine(int64(len(prev)), prevMean, deviations(prev, prevMean))
			prev = nil
		}
		cnt, sum := a.scan(buf)
		seen += cnt
		if cnt == 0 {
			continue
		}
		mean := sum / float64(cnt)
		var cm2 float64
		for _, v := range buf {
			if !math.IsNaN(v) && !math.IsInf(v, 0) {
				d := v - mean
				cm2 += d * d
			}
		}
		a.combine(cnt, mean, cm2)
	}
	if prev != nil {
		a.combine(int64(len(prev)), prevMean, deviations(prev, prevMean))
	}
	s.Count += int64(n)
	return nil
}

// extremesSum takes vals' extremes into mn and mx by compares (ties keep
// the first: −0 vs +0) and sums them in order; the loop above does the
// same beside the previous block's deviations.
func extremesSum(vals []float64, mn, mx float64) (float64, float64, float64) {
	var sum float64
	for _, v := range vals {
		if v < mn {
			mn = v
		}
		if v > mx {
			mx = v
		}
		sum += v
	}
	return mn, mx, sum
}

// deviations is Σ (v − mean)² over vals, in order.
func deviations(vals []float64, mean float64) float64 {
	var cm2 float64
	for _, v := range vals {
		d := v - mean
		cm2 += d * d
	}
	return cm2
}

// combine adds a block of cnt finite values with the given mean and sum
// of squared deviations to Mean and m2 (Chan et al.'s update).
func (a *statsAcc) combine(cnt int64, mean, cm2 float64) {
	s := &a.s
	tot := a.finite + cnt
	delta := mean - s.Mean
	s.Mean += delta * float64(cnt) / float64(tot)
	a.m2 += cm2 + delta*delta*float64(a.finite)*float64(cnt)/float64(tot)
	a.finite = tot
}

// scan is one block's counts, extremes and sum with NaN and Inf counted
// apart.
func (a *statsAcc) scan(vals []float64) (cnt int64, sum float64) {
	s := &a.s
	for _, v := range vals {
		switch {
		case math.IsNaN(v):
			s.NaN++
			continue
		case math.IsInf(v, 0):
			s.Inf++
			continue
		}
		if a.finite+cnt == 0 || v < s.Min {
			s.Min = v
		}
		if a.finite+cnt == 0 || v > s.Max {
			s.Max = v
		}
		cnt++
		sum += v
	}
	return cnt, sum
}

// result finishes the statistics.
func (a *statsAcc) result() Stats {
	s := a.s
	if !a.started {
		s = Stats{Min: math.NaN(), Max: math.NaN()}
	}
	if a.finite > 0 {
		s.Std = math.Sqrt(a.m2 / float64(a.finite))
	} else {
		s.Mean, s.Std = math.NaN(), math.NaN()
	}
	return s
}

// sectionStats computes a tensor's Stats from its bytes in a file, a
// part at a time into buf (grown as needed): what the whole tensor gives.
func sectionStats(dt DType, sec *io.SectionReader, buf *[]byte) (Stats, error) {
	var a statsAcc
	step := int64(64*statsBlock) * int64(dt.Size())
	if cap(*buf) < int(step) {
		*buf = make([]byte, step)
	}
	for off := int64(0); off < sec.Size(); off += step {
		b := (*buf)[:min(step, sec.Size()-off)]
		if _, err := sec.ReadAt(b, off); err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return a.s, fmt.Errorf("reading data: %w", err)
		}
		if err := a.add(dt, b); err != nil {
			return a.s, err
		}
	}
	return a.result(), nil
}

// MarshalJSON writes non-finite statistics (an all-NaN tensor's mean) as
// null, which JSON can carry, instead of failing.
func (s Stats) MarshalJSON() ([]byte, error) {
	f := func(v float64) *float64 {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return nil
		}
		return &v
	}
	return json.Marshal(struct {
		Count int64    `json:"count"`
		Min   *float64 `json:"min"`
		Max   *float64 `json:"max"`
		Mean  *float64 `json:"mean"`
		Std   *float64 `json:"std"`
		NaN   int64    `json:"nan"`
		Inf   int64    `json:"inf"`
	}{s.Count, f(s.Min), f(s.Max), f(s.Mean), f(s.Std), s.NaN, s.Inf})
}
