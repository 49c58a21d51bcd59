package quantize

import (
	"fmt"
	"math"
)

// ErrorReport compares a tensor with its reconstruction and its encoded
// size with dense storage.
type ErrorReport struct {
	// N is the number of elements compared.
	N int64
	// RelL2 is ‖x−x̂‖/‖x‖: 0 for an exact copy, +Inf when x is all zeros
	// and x̂ is not.
	RelL2 float64
	// MaxAbs is max |x−x̂|.
	MaxAbs float64
	// SNRdB is 10·log10(‖x‖²/‖x−x̂‖²): +Inf for an exact copy, −Inf when x
	// is all zeros and x̂ is not.
	SNRdB float64
	// Bytes is the encoded size (Quantized.Size); 0 when only values were
	// measured.
	Bytes int64
	// DenseF32Bytes is 4·N, the size of a dense float32 copy.
	DenseF32Bytes int64
	// DenseF16Bytes is 2·N, the size of a dense F16 copy.
	DenseF16Bytes int64
}

// Measure computes the error fields of orig against its reconstruction deq,
// accumulating in float64; Bytes is left 0. NaN in either input yields NaN
// results. The slices must have equal length: unequal ones are a
// programming error and panic.
func Measure(orig, deq []float32) ErrorReport {
	if len(orig) != len(deq) {
		panic(fmt.Sprintf("quantize.Measure: %d original values, %d reconstructed", len(orig), len(deq)))
	}
	var sx, se, maxAbs float64
	for i, v := range orig {
		x := float64(v)
		e := x - float64(deq[i])
		sx += x * x
		se += e * e
		maxAbs = max(maxAbs, math.Abs(e))
	}
	n := int64(len(orig))
	r := ErrorReport{N: n, MaxAbs: maxAbs, DenseF32Bytes: 4 * n, DenseF16Bytes: 2 * n}
	switch {
	case se == 0:
		r.RelL2, r.SNRdB = 0, math.Inf(1)
	case sx == 0:
		r.RelL2, r.SNRdB = math.Inf(1), math.Inf(-1)
	default:
		r.RelL2 = math.Sqrt(se / sx)
		r.SNRdB = 10 * math.Log10(sx/se)
	}
	return r
}

// Evaluate dequantizes q and measures it against orig, the values it was
// quantized from, with Bytes set to q.Size().
func (q *Quantized) Evaluate(orig []float32) (ErrorReport, error) {
	if len(orig) != q.N {
		return ErrorReport{}, fmt.Errorf("quantize: evaluate %d original values against %d quantized", len(orig), q.N)
	}
	deq := make([]float32, q.N)
	if err := q.Dequantize(deq); err != nil {
		return ErrorReport{}, err
	}
	r := Measure(orig, deq)
	r.Bytes = q.Size()
	return r, nil
}

// RatioF32 is how many times smaller the encoding is than dense float32.
func (r ErrorReport) RatioF32() float64 { return float64(r.DenseF32Bytes) / float64(r.Bytes) }

// RatioF16 is how many times smaller the encoding is than dense F16.
func (r ErrorReport) RatioF16() float64 { return float64(r.DenseF16Bytes) / float64(r.Bytes) }

// String summarizes the report on one line.
func (r ErrorReport) String() string {
	s := fmt.Sprintf("n=%d relL2=%.4g maxAbs=%.4g snr=%.2fdB", r.N, r.RelL2, r.MaxAbs, r.SNRdB)
	if r.Bytes > 0 {
		s += fmt.Sprintf(" bytes=%d (%.2f bits/elem, %.2fx vs F32, %.2fx vs F16)",
			r.Bytes, 8*float64(r.Bytes)/float64(r.N), r.RatioF32(), r.RatioF16())
	}
	return s
}
