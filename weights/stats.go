package weights

import (
	"encoding/json"
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
	s := Stats{Min: math.NaN(), Max: math.NaN()}
	es := t.DType.Size()
	if es == 0 {
		return s, nil
	}
	n := len(t.Data) / es
	var buf [4096]float64
	var m2 float64
	var finite int64
	for i := 0; i < n; i += len(buf) {
		k := min(len(buf), n-i)
		if err := Decode(t.DType, t.Data[i*es:(i+k)*es], buf[:k]); err != nil {
			return s, err
		}
		var cnt int64
		var sum float64
		for _, v := range buf[:k] {
			switch {
			case math.IsNaN(v):
				s.NaN++
				continue
			case math.IsInf(v, 0):
				s.Inf++
				continue
			}
			if finite+cnt == 0 || v < s.Min {
				s.Min = v
			}
			if finite+cnt == 0 || v > s.Max {
				s.Max = v
			}
			cnt++
			sum += v
		}
		if cnt == 0 {
			continue
		}
		mean := sum / float64(cnt)
		var cm2 float64
		for _, v := range buf[:k] {
			if !math.IsNaN(v) && !math.IsInf(v, 0) {
				d := v - mean
				cm2 += d * d
			}
		}
		tot := finite + cnt
		delta := mean - s.Mean
		s.Mean += delta * float64(cnt) / float64(tot)
		m2 += cm2 + delta*delta*float64(finite)*float64(cnt)/float64(tot)
		finite = tot
	}
	s.Count = int64(n)
	if finite > 0 {
		s.Std = math.Sqrt(m2 / float64(finite))
	} else {
		s.Mean, s.Std = math.NaN(), math.NaN()
	}
	return s, nil
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
