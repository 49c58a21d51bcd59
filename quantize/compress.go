package quantize

import (
	"fmt"
	"io"

	"github.com/klauspost/compress/zstd"
)

// DefaultMaxDecompressed is Decompress's size limit when the caller passes
// none: 4 GiB, more than any single tensor this package is meant for.
const DefaultMaxDecompressed = 4 << 30

// encoderWindow is the zstd window Compress uses.
const encoderWindow = 8 << 20

// Compress writes q's MarshalBinary encoding to w as one zstd frame. On
// Gaussian-like weights packed codes of 3 bits and more are nearly
// incompressible (zstd stores them raw, measured ±0%); symmetric 2-bit,
// which uses only 3 of its 4 codes, shrinks to about 60%. It exists so a
// stored patch needs no other container and gains where codes are skewed.
func Compress(w io.Writer, q *Quantized) error {
	enc, err := zstd.NewWriter(w, zstd.WithEncoderConcurrency(1), zstd.WithWindowSize(encoderWindow))
	if err != nil {
		return fmt.Errorf("quantize: zstd: %w", err)
	}
	if _, err := q.WriteTo(enc); err != nil {
		enc.Close()
		return err
	}
	if err := enc.Close(); err != nil {
		return fmt.Errorf("quantize: zstd: %w", err)
	}
	return nil
}

// Decompress reads a zstd stream written by Compress and decodes it.
// maxBytes caps the decompressed size (DefaultMaxDecompressed if ≤ 0); a
// stream that would expand beyond it is rejected after reading at most
// maxBytes+1 bytes, which defeats zip bombs.
func Decompress(r io.Reader, maxBytes int64) (*Quantized, error) {
	if maxBytes <= 0 {
		maxBytes = DefaultMaxDecompressed
	}
	// The window must admit what Compress writes (the encoder's 8 MiB
	// default) even under a small limit; output is capped separately.
	window := min(max(maxBytes, encoderWindow), zstd.MaxWindowSize)
	dec, err := zstd.NewReader(r,
		zstd.WithDecoderConcurrency(1),
		zstd.WithDecoderMaxMemory(uint64(window)),
		zstd.WithDecoderMaxWindow(uint64(window)))
	if err != nil {
		return nil, fmt.Errorf("quantize: zstd: %w", err)
	}
	defer dec.Close()
	data, err := io.ReadAll(io.LimitReader(dec, maxBytes+1))
	if err != nil {
		return nil, fmt.Errorf("quantize: zstd: %w", err)
	}
	if int64(len(data)) > maxBytes {
		return nil, fmt.Errorf("quantize: decompressed data exceeds the %d-byte limit", maxBytes)
	}
	q := new(Quantized)
	if err := q.UnmarshalBinary(data); err != nil {
		return nil, err
	}
	return q, nil
}
