package quantize

import (
	"fmt"
	"math"
	"strings"

	"github.com/weightops/weightops/gguf"
)

// ggmlCodecs are the ggml block types the GGML scheme stores, with the
// nominal code width each reports as Bits.
var ggmlCodecs = map[gguf.Type]int{
	gguf.Q8_0: 8, gguf.Q4_0: 4, gguf.Q4_1: 4, gguf.Q5_0: 5, gguf.Q5_1: 5,
	gguf.Q4_K: 4, gguf.Q6_K: 6,
}

// GGMLConfig is the codec that stores t's blocks exactly as ggml lays them
// out, quantized by ports of ggml's reference functions (the bytes
// llama-quantize writes without an importance matrix).
func GGMLConfig(t gguf.Type) (Config, error) {
	bits, ok := ggmlCodecs[t]
	if !ok {
		return Config{}, fmt.Errorf("quantize: %s is not a ggml block codec (q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q6_k)", t)
	}
	return Config{Bits: bits, Scheme: GGML, Granularity: PerBlock, BlockSize: t.BlockSize(), Type: t}, nil
}

// validateGGML checks a GGML config: every field but Type follows from
// the type.
func (c Config) validateGGML() error {
	want, err := GGMLConfig(c.Type)
	if err != nil {
		return err
	}
	if c != want {
		return fmt.Errorf("quantize: %s codec: bits, granularity, block size and scale options are fixed by the type", c.typeName())
	}
	return nil
}

// typeName is the codec's lower-case ggml name, as ParseConfig reads it.
func (c Config) typeName() string { return strings.ToLower(c.Type.String()) }

// blockBytes is the bytes of one ggml block.
func (c Config) blockBytes() int { return c.Type.RowSize(c.Type.BlockSize()) }

// ggmlBlocks is the number of blocks n elements take: the last one is
// padded with zeros when n is not a multiple of the block size.
func (c Config) ggmlBlocks(n int) int {
	if n == 0 {
		return 0
	}
	return (n-1)/c.BlockSize + 1
}

// quantizeGGML fills q.Codes with ggml blocks of values. A partial last
// block is quantized as ggml would quantize it padded with zeros (zeros
// change neither a block's absmax nor, for the K-quants, its sub-block
// fits beyond their own positions), so whole blocks match ggml byte for
// byte.
func quantizeGGML(q *Quantized, values []float32, workers int) error {
	for i, v := range values {
		if !isFinite(v) {
			return fmt.Errorf("quantize: element %d is %v; only finite values can be quantized", i, v)
		}
	}
	c := q.Config
	blocks := c.ggmlBlocks(q.N)
	q.Codes = make([]byte, blocks*c.blockBytes())
	per := max(1, unitTarget/c.BlockSize)
	units := (blocks + per - 1) / per
	workers = min(max(workers, 1), max(units, 1))
	return runUnits(units, workers, func(_, u int) error {
		b0, b1 := u*per, min((u+1)*per, blocks)
		lo, hi := b0*c.BlockSize, b1*c.BlockSize
		x := values[lo:min(hi, q.N)]
		if hi > q.N {
			x = append(make([]float32, 0, hi-lo), x...)
			x = x[:hi-lo]
		}
		return gguf.Quantize(c.Type, x, q.Codes[b0*c.blockBytes():b1*c.blockBytes()])
	})
}

// dequantizeGGML decodes q's blocks into dst (N elements).
func dequantizeGGML(q *Quantized, dst []float32, workers int) error {
	c := q.Config
	blocks := c.ggmlBlocks(q.N)
	per := max(1, unitTarget/c.BlockSize)
	units := (blocks + per - 1) / per
	workers = min(max(workers, 1), max(units, 1))
	return runUnits(units, workers, func(_, u int) error {
		b0, b1 := u*per, min((u+1)*per, blocks)
		lo, hi := b0*c.BlockSize, b1*c.BlockSize
		src := q.Codes[b0*c.blockBytes() : b1*c.blockBytes()]
		if hi <= q.N {
			return gguf.Dequantize(c.Type, src, dst[lo:hi])
		}
		tmp := make([]float32, hi-lo)
		if err := gguf.Dequantize(c.Type, src, tmp); err != nil {
			return err
		}
		copy(dst[lo:], tmp)
		return nil
	})
}

// checkGGMLValues reports the first block of q that decodes to a
// non-finite value (its F16 scales are not finite): such a container was
// not written by Quantize.
func checkGGMLValues(q *Quantized) error {
	c := q.Config
	tmp := make([]float32, c.BlockSize)
	bb := c.blockBytes()
	for b := range c.ggmlBlocks(q.N) {
		if err := gguf.Dequantize(c.Type, q.Codes[b*bb:(b+1)*bb], tmp); err != nil {
			return err
		}
		for _, v := range tmp {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				return fmt.Errorf("quantize: %s block %d decodes to %v", c.typeName(), b, v)
			}
		}
	}
	return nil
}
