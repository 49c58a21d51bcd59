package quantize

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/weightops/weightops/gguf"
)

// Scheme selects how a group's value range maps onto integer codes.
type Scheme uint8

const (
	// Asymmetric is min-max quantization: scale = (max−min)/(2^k−1), a
	// stored min per group, codes 0..2^k−1, x̂ = min + code·scale. It uses
	// every code on skewed data at the cost of one extra value per group.
	Asymmetric Scheme = iota
	// Symmetric is absmax quantization: scale = absmax/(2^(k−1)−1), signed
	// codes −(2^(k−1)−1)..2^(k−1)−1 stored offset-binary (code+2^(k−1)−1),
	// x̂ = signed code·scale. Zero is exact and no min is stored; code
	// 2^k−1 is unused, so it needs k ≥ 2.
	Symmetric
	// GGML stores ggml's own block format for Config.Type (llama.cpp's
	// Q8_0, Q4_0, Q4_K, Q6_K, …): Codes holds the blocks exactly as a GGUF
	// file does, made by ports of ggml's reference quantizers, and there
	// are no separate scales or mins. Build it with GGMLConfig or
	// ParseConfig("q8_0").
	GGML
	// Log is sign + (k−1)-bit log2 magnitude codes relative to the group's
	// absmax: levels M, M/2, …, M/2^(2^(k−1)−2) and zero (see domain.go).
	Log
	// Tanh is k-bit symmetric codes of the companded tanh(α·x/M)/tanh(α),
	// finer than linear near zero and coarser near ±M (see domain.go).
	Tanh
)

// String returns "asym" or "sym", the spelling ParseConfig reads.
func (s Scheme) String() string {
	switch s {
	case Asymmetric:
		return "asym"
	case Symmetric:
		return "sym"
	case GGML:
		return "ggml"
	case Log:
		return "log"
	case Tanh:
		return "tanh"
	}
	return fmt.Sprintf("Scheme(%d)", uint8(s))
}

// Granularity selects which elements share one scale (and min).
type Granularity uint8

const (
	// PerTensor uses one scale for the whole tensor.
	PerTensor Granularity = iota
	// PerChannel uses one scale per output channel: per slice along the
	// first dimension (a row of a 2-D weight). 0-D and 1-D tensors have no
	// channels and fall back to PerTensor.
	PerChannel
	// PerBlock uses one scale per run of Config.BlockSize consecutive
	// elements in row-major order, like llama.cpp's Q4_0/Q8_0; the last
	// block may be shorter.
	PerBlock
)

// String returns "tensor", "channel" or "block".
func (g Granularity) String() string {
	switch g {
	case PerTensor:
		return "tensor"
	case PerChannel:
		return "channel"
	case PerBlock:
		return "block"
	}
	return fmt.Sprintf("Granularity(%d)", uint8(g))
}

// MaxBlockSize is the largest PerBlock block size; the on-disk header
// stores it in 32 bits.
const MaxBlockSize = math.MaxInt32

// Config chooses a quantization codec.
//
// Storage cost in bits per element, for large tensors (the 20 + 8·ndim
// header bytes and the 4-byte checksum aside):
//
//	PerBlock, G elements per block:
//	  Symmetric,  F32 scales: k + 32/G     F16 scales: k + 16/G
//	  Asymmetric, F32 scales: k + 64/G     F16 scales: k + 32/G
//	PerChannel, rows of R elements: the same with G = R
//	PerTensor: k (plus 4 or 8 bytes once)
//
// For example 4bit-sym-block64 costs 4.5 bits (7.1× smaller than F32, 3.6×
// than F16), 4bit-sym-block64-f16 4.25 bits (7.5×), 4bit-asym-block64 5
// bits (6.4×), 8bit-sym-block32 9 bits (3.6×), 2bit-sym-block64-f16 2.25
// bits (14.2×). Config.BitsPerElement computes the PerBlock figure.
type Config struct {
	// Bits is k, the code width: 1..8 (Symmetric needs at least 2).
	Bits int
	// Scheme is Asymmetric (min-max) or Symmetric (absmax).
	Scheme Scheme
	// Granularity is PerTensor, PerChannel or PerBlock.
	Granularity Granularity
	// BlockSize is the elements per block for PerBlock (1..MaxBlockSize);
	// ignored otherwise, and Quantize stores it as 0 then.
	BlockSize int
	// F16Scales stores scales and mins as IEEE half floats instead of
	// float32: it saves 16 (Symmetric) or 32 (Asymmetric) bits per group,
	// 0.25 or 0.5 bits per element at block 64. The price: scales are
	// rounded up and mins down to the F16 grid (so the half-step error
	// bound still holds against the stored scale, which may be up to
	// 2^−10 larger relatively, and tiny scales bottom out at 2^−24);
	// values beyond ±65504 cannot be quantized; a constant block
	// reconstructs exactly only when its value is an F16 number.
	F16Scales bool
	// MSE searches, per group, a clipping of the range (shrink factors
	// 1, 0.95, …, 0.6) that minimises the group's squared error, instead of
	// taking the full min-max/absmax range: outliers are clipped to the
	// extreme code so the many small values get a finer step. Never worse
	// than without (the full range is a candidate); quantizing is ~9×
	// slower. Only the choice of scales changes, not the stored format.
	// Elements beyond a clipped range exceed the half-step bound.
	MSE bool
	// Type is the ggml block type of the GGML scheme (and zero otherwise).
	Type gguf.Type
}

// Validate reports whether the config describes a codec this package
// implements.
func (c Config) Validate() error {
	if c.Scheme == GGML {
		return c.validateGGML()
	}
	if c.Type != 0 {
		return fmt.Errorf("quantize: a ggml type (%s) belongs to the ggml scheme only", c.Type)
	}
	if c.Bits < 1 || c.Bits > 8 {
		return fmt.Errorf("quantize: bits must be 1..8, got %d", c.Bits)
	}
	switch c.Scheme {
	case Asymmetric:
	case Symmetric, Log, Tanh:
		if c.Bits < 2 {
			return fmt.Errorf("quantize: %s needs at least 2 bits: 1 bit has no nonzero signed code", c.Scheme)
		}
	default:
		return fmt.Errorf("quantize: unknown scheme %d", uint8(c.Scheme))
	}
	switch c.Granularity {
	case PerTensor, PerChannel:
	case PerBlock:
		if c.BlockSize < 1 || c.BlockSize > MaxBlockSize {
			return fmt.Errorf("quantize: block size must be 1..%d, got %d", MaxBlockSize, c.BlockSize)
		}
	default:
		return fmt.Errorf("quantize: unknown granularity %d", uint8(c.Granularity))
	}
	if c.MSE && c.Scheme.nonlinear() {
		return fmt.Errorf("quantize: the -mse clipping search is for the linear schemes (asym, sym), not %s", c.Scheme)
	}
	if c.MSE && c.Granularity == PerTensor {
		return fmt.Errorf("quantize: the -mse clipping search works per block or channel, not per tensor")
	}
	return nil
}

// canonical zeroes the fields the codec ignores, so equal codecs marshal to
// equal bytes.
func (c Config) canonical() Config {
	if c.Granularity != PerBlock {
		c.BlockSize = 0
	}
	return c
}

// levels is 2^k−1 for Asymmetric (the top code) and 2^(k−1)−1 for
// Symmetric (the largest signed code, also the offset of stored codes).
func (c Config) levels() int32 {
	if c.Scheme == Symmetric || c.Scheme.nonlinear() {
		return 1<<(c.Bits-1) - 1
	}
	return 1<<c.Bits - 1
}

// scaleBytes is the stored width of one scale or min.
func (c Config) scaleBytes() int {
	if c.F16Scales {
		return 2
	}
	return 4
}

// valuesPerGroup is how many float values a group stores: scale, plus min
// for Asymmetric.
func (c Config) valuesPerGroup() int {
	if c.Scheme == GGML {
		return 0
	}
	if c.Scheme == Asymmetric {
		return 2
	}
	return 1
}

// BitsPerElement is the storage cost per element of a large PerBlock
// tensor: Bits plus the group's scale (and min) spread over BlockSize
// elements. For PerTensor and PerChannel it returns Bits: their overhead
// depends on the shape (Quantized.Size gives the exact total).
func (c Config) BitsPerElement() float64 {
	if c.Scheme == GGML {
		return 8 * float64(c.blockBytes()) / float64(c.BlockSize)
	}
	b := float64(c.Bits)
	if c.Granularity == PerBlock && c.BlockSize > 0 {
		b += float64(8*c.scaleBytes()*c.valuesPerGroup()) / float64(c.BlockSize)
	}
	return b
}

// String formats the config as ParseConfig reads it:
// "<k>bit-<asym|sym|log|tanh>-<tensor|channel|block<G>>[-f16]", e.g.
// "4bit-sym-block64", "8bit-asym-channel", "4bit-sym-block32-f16".
func (c Config) String() string {
	if c.Scheme == GGML {
		return c.typeName()
	}
	g := c.Granularity.String()
	if c.Granularity == PerBlock {
		g += strconv.Itoa(c.BlockSize)
	}
	s := fmt.Sprintf("%dbit-%s-%s", c.Bits, c.Scheme, g)
	if c.F16Scales {
		s += "-f16"
	}
	if c.MSE {
		s += "-mse"
	}
	return s
}

// ParseConfig reads the String form, case-insensitively, as one CLI flag
// value: "4bit-sym-block64", "3bit-asym-channel", "8bit-sym-tensor",
// "4bit-asym-block32-f16", "4bit-asym-block64-mse", or a ggml block type
// stored in ggml's own format: "q8_0", "q4_0", "q4_1", "q5_0", "q5_1",
// "q4_k", "q6_k". The result is validated.
func ParseConfig(s string) (Config, error) {
	if t, err := gguf.ParseType(strings.TrimSpace(s)); err == nil {
		if _, ok := ggmlCodecs[t]; ok {
			return GGMLConfig(t)
		}
		return Config{}, fmt.Errorf("quantize: config %q: %s is not a block codec; ggml block codecs are q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q6_k", s, t)
	}
	bad := func(why string) (Config, error) {
		return Config{}, fmt.Errorf("quantize: config %q: %s, e.g. 4bit-sym-block64, 8bit-asym-channel, 4bit-sym-block32-f16, or ggml's q8_0, q4_0, q4_k, q6_k", s, why)
	}
	parts := strings.Split(strings.ToLower(strings.TrimSpace(s)), "-")
	var c Config
	if n := len(parts); n > 3 && parts[n-1] == "mse" {
		c.MSE = true
		parts = parts[:n-1]
	}
	if n := len(parts); n == 4 && parts[3] == "f16" {
		c.F16Scales = true
		parts = parts[:3]
	}
	if len(parts) != 3 {
		return bad("want <k>bit-<scheme>-<granularity>[-f16][-mse]")
	}
	bits, ok := strings.CutSuffix(parts[0], "bit")
	k, err := strconv.Atoi(bits)
	if !ok || err != nil {
		return bad("first part must be <k>bit")
	}
	c.Bits = k
	if c.Scheme, err = ParseScheme(parts[1]); err != nil {
		return bad("scheme must be asym, sym, log or tanh")
	}
	g := parts[2]
	if strings.HasPrefix(g, "block") {
		n, err := strconv.Atoi(g[len("block"):])
		if err != nil {
			return bad("block needs a size, e.g. block64")
		}
		c.Granularity, c.BlockSize = PerBlock, n
	} else if c.Granularity, err = ParseGranularity(g); err != nil || c.Granularity == PerBlock {
		return bad("granularity must be tensor, channel or block<G>")
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// ParseScheme reads "asym", "sym", "log" or "tanh".
func ParseScheme(s string) (Scheme, error) {
	switch strings.ToLower(s) {
	case "asym":
		return Asymmetric, nil
	case "sym":
		return Symmetric, nil
	case "log":
		return Log, nil
	case "tanh":
		return Tanh, nil
	}
	return 0, fmt.Errorf("quantize: scheme %q: use asym, sym, log or tanh", s)
}

// ParseGranularity reads "tensor", "channel" or "block".
func ParseGranularity(s string) (Granularity, error) {
	switch strings.ToLower(s) {
	case "tensor":
		return PerTensor, nil
	case "channel":
		return PerChannel, nil
	case "block":
		return PerBlock, nil
	}
	return 0, fmt.Errorf("quantize: granularity %q: use block, channel or tensor", s)
}
