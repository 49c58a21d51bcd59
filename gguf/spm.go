package gguf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// piece is one SentencePiece vocabulary entry.
type piece struct {
	text  string
	score float32
	kind  int32 // SentencePiece's type: 1 normal, 2 unknown, 3 control, 4 user defined, 5 unused, 6 byte
}

// parseSentencePiece reads the vocabulary of a SentencePiece model
// (tokenizer.model, a ModelProto): field 1, the pieces (each a message of
// piece = 1, score = 2, type = 3), and the model type from the trainer
// spec (field 2, its field 3: 1 unigram, 2 BPE). Every length is checked
// against the data.
func parseSentencePiece(data []byte) ([]piece, int, error) {
	var pieces []piece
	modelType := 1
	err := walkProto(data, func(field int, wire int, v uint64, b []byte) error {
		switch {
		case field == 1 && wire == 2:
			p := piece{kind: 1}
			if err := walkProto(b, func(f, w int, v uint64, b []byte) error {
				switch {
				case f == 1 && w == 2:
					p.text = string(b)
				case f == 2 && w == 5:
					p.score = math.Float32frombits(uint32(v))
				case f == 3 && w == 0:
					p.kind = int32(v)
				}
				return nil
			}); err != nil {
				return fmt.Errorf("piece %d: %w", len(pieces), err)
			}
			if p.kind < 1 || p.kind > 6 {
				return fmt.Errorf("piece %d %q: type %d", len(pieces), p.text, p.kind)
			}
			pieces = append(pieces, p)
		case field == 2 && wire == 2:
			return walkProto(b, func(f, w int, v uint64, _ []byte) error {
				if f == 3 && w == 0 {
					modelType = int(v)
				}
				return nil
			})
		}
		return nil
	})
	if err != nil {
		return nil, 0, fmt.Errorf("not a SentencePiece model: %w", err)
	}
	if len(pieces) == 0 {
		return nil, 0, errors.New("not a SentencePiece model: no pieces")
	}
	return pieces, modelType, nil
}

// walkProto calls fn for each field of a protobuf message: the varint or
// fixed value, or the bytes of a length-delimited field.
func walkProto(data []byte, fn func(field, wire int, v uint64, b []byte) error) error {
	for len(data) > 0 {
		key, n := binary.Uvarint(data)
		if n <= 0 {
			return errors.New("bad field key")
		}
		data = data[n:]
		field, wire := int(key>>3), int(key&7)
		var v uint64
		var b []byte
		switch wire {
		case 0:
			v, n = binary.Uvarint(data)
			if n <= 0 {
				return errors.New("bad varint")
			}
			data = data[n:]
		case 1:
			if len(data) < 8 {
				return errors.New("truncated")
			}
			v, data = binary.LittleEndian.Uint64(data), data[8:]
		case 5:
			if len(data) < 4 {
				return errors.New("truncated")
			}
			v, data = uint64(binary.LittleEndian.Uint32(data)), data[4:]
		case 2:
			l, n := binary.Uvarint(data)
			if n <= 0 || l > uint64(len(data)-n) {
				return errors.New("a length past the data")
			}
			b, data = data[n:n+int(l)], data[n+int(l):]
		default:
			return fmt.Errorf("wire type %d", wire)
		}
		if err := fn(field, wire, v, b); err != nil {
			return err
		}
	}
	return nil
}
