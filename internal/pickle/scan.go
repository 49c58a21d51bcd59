// Package pickle reads Python pickles defensively, for checkpoint readers:
// Scan checks a pickle opcode by opcode before anything unpickles it, so no
// length in it can make the unpickler allocate more than the pickle holds;
// Unpickle runs gopickle with the caller's class and persistent-id hooks,
// never executing anything and turning its panics into errors; and the
// value helpers read the Python objects it builds.
package pickle

import (
	"encoding/binary"
	"fmt"
	"io"
	"math"
)

// Limits that keep a hostile pickle from exhausting memory.
const (
	// MaxSize bounds the size of one pickle stream. Real checkpoint
	// pickles hold only metadata: a few MB.
	MaxSize = 1 << 30
	// MaxCost bounds the memory the unpickler is estimated to allocate for
	// a pickle (see Scan).
	MaxCost = 1 << 30
	// MaxLong bounds integers in a pickle (bytes, or decimal digits) and
	// the module and class names of a global.
	MaxLong = 4096
)

func le64(b []byte) uint64 { return binary.LittleEndian.Uint64(b) }

// Source is what Scan reads: a bufio.Reader or bytes.Reader.
type Source interface {
	io.Reader
	io.ByteReader
}

// Scan reads one pickle from r, up to and including its STOP opcode,
// with limit bytes available, and returns how many bytes it took (and, if
// keep, those bytes). It knows the argument layout of every opcode gopickle
// knows, and checks each length argument against the bytes left before
// anything is allocated for it: gopickle allocates a string or frame from
// its declared length before reading it. It also estimates what unpickling
// will allocate (a MARK costs a fresh stack; every opcode a stack slot or
// an object) and refuses beyond MaxCost.
func Scan(r Source, limit int64, keep bool) (int64, []byte, error) {
	var (
		n    int64
		body []byte
		cost int64
		op   byte // the opcode being scanned
	)
	if limit > MaxSize {
		limit = MaxSize
	}
	truncated := func() error {
		return fmt.Errorf("pickle truncated or malformed at byte %d", n)
	}
	readByte := func() (byte, error) {
		if n >= limit {
			return 0, truncated()
		}
		b, err := r.ReadByte()
		if err != nil {
			return 0, truncated()
		}
		n++
		if keep {
			body = append(body, b)
		}
		return b, nil
	}
	readN := func(k int64) ([]byte, error) {
		if k < 0 || k > limit-n {
			return nil, fmt.Errorf("pickle opcode at byte %d wants %d bytes, only %d left", n, k, limit-n)
		}
		cost += k
		if cost > MaxCost {
			return nil, fmt.Errorf("pickle too large to unpickle (over %d bytes)", int64(MaxCost))
		}
		start := len(body)
		if keep {
			body = append(body, make([]byte, k)...)
			if _, err := io.ReadFull(r, body[start:]); err != nil {
				return nil, truncated()
			}
			n += k
			return body[start:], nil
		}
		if k <= 8 {
			var tmp [8]byte
			if _, err := io.ReadFull(r, tmp[:k]); err != nil {
				return nil, truncated()
			}
			n += k
			return tmp[:k], nil
		}
		if _, err := io.CopyN(io.Discard, r, k); err != nil {
			return nil, truncated()
		}
		n += k
		return nil, nil
	}
	// readLine reads a newline-terminated argument of at most max bytes.
	readLine := func(max int64) (int64, error) {
		start := n
		for {
			b, err := readByte()
			if err != nil {
				return 0, err
			}
			cost++
			if b == '\n' {
				return n - start, nil
			}
			if n-start > max {
				return 0, fmt.Errorf("pickle argument at byte %d longer than %d bytes", start, max)
			}
		}
	}
	// Decoding a long integer takes time quadratic in its length (gopickle
	// shifts a big.Int byte by byte): bound the work.
	longWork := func(k int64) error {
		if k > MaxLong {
			return fmt.Errorf("integer of %d bytes in pickle at byte %d", k, n)
		}
		cost += k * k / 8
		return nil
	}
	lenPrefixed := func(width int, signed bool) error {
		b, err := readN(int64(width))
		if err != nil {
			return err
		}
		var k uint64
		for i := width - 1; i >= 0; i-- {
			k = k<<8 | uint64(b[i])
		}
		if signed && width == 4 && k >= 1<<31 {
			return fmt.Errorf("negative length in pickle at byte %d", n)
		}
		if k > math.MaxInt64 {
			return fmt.Errorf("huge length in pickle at byte %d", n)
		}
		if op == 0x8a || op == 0x8b { // LONG1, LONG4
			if err := longWork(int64(k)); err != nil {
				return err
			}
		}
		_, err = readN(int64(k))
		return err
	}
	for {
		var err error
		op, err = readByte()
		if err != nil {
			return n, body, err
		}
		cost += 64
		if cost > MaxCost {
			return n, body, fmt.Errorf("pickle too large to unpickle (over %d bytes)", int64(MaxCost))
		}
		switch op {
		case '.': // STOP
			return n, body, nil
		case '(': // MARK: the unpickler starts a new stack
			cost += 512
		case '0', '1', '2', 'N', 'Q', 'R', 'a', 'b', 'd', '}', 'e', 'l', ']', 'o',
			's', 't', ')', 'u', 0x81, 0x85, 0x86, 0x87, 0x88, 0x89,
			0x8f, 0x90, 0x91, 0x92, 0x93, 0x94, 0x97, 0x98:
			// no argument
		case 'F', 'I', 'g', 'p': // decimal numbers
			_, err = readLine(MaxLong)
		case 'L': // decimal long integer
			var k int64
			if k, err = readLine(MaxLong); err == nil {
				err = longWork(k)
			}
		case 'P', 'S', 'V': // strings
			_, err = readLine(MaxSize)
		case 'c', 'i': // module and name
			if _, err = readLine(MaxLong); err == nil {
				_, err = readLine(MaxLong)
			}
		case 'K', 'h', 'q', 0x80, 0x82:
			_, err = readN(1)
		case 'M', 0x83:
			_, err = readN(2)
		case 'J', 'j', 'r', 0x84:
			_, err = readN(4)
		case 'G':
			_, err = readN(8)
		case 'U', 'C', 0x8c, 0x8a: // 1-byte length
			err = lenPrefixed(1, false)
		case 'T', 0x8b: // signed 4-byte length
			err = lenPrefixed(4, true)
		case 'B', 'X': // unsigned 4-byte length
			err = lenPrefixed(4, false)
		case 0x8d, 0x8e, 0x96: // 8-byte length
			err = lenPrefixed(8, false)
		case 0x95: // FRAME: the frame's bytes are opcodes, scanned next
			var b []byte
			if b, err = readN(8); err == nil {
				k := le64(b)
				if k > uint64(limit-n) {
					err = fmt.Errorf("pickle frame of %d bytes at byte %d, only %d left", k, n, limit-n)
				} else if cost += int64(k); cost > MaxCost {
					err = fmt.Errorf("pickle too large to unpickle (over %d bytes)", int64(MaxCost))
				}
			}
		default:
			return n, body, fmt.Errorf("unknown pickle opcode 0x%02x at byte %d", op, n-1)
		}
		if err != nil {
			return n, body, err
		}
	}
}
