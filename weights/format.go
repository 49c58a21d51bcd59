package weights

import (
	"bytes"
	"sync"
)

// Format is a checkpoint file format, recognised by its first bytes (as
// image.RegisterFormat recognises images), so adding one is one file that
// registers it.
type Format struct {
	// Name is the format's name in messages ("safetensors").
	Name string
	// Match reports whether a file starting with head is in this format;
	// head holds the first sniffLen bytes, fewer for a shorter file.
	Match func(head []byte) bool
	// Open opens a file of this format.
	Open func(path string) (Checkpoint, error)
}

// sniffLen is how many leading bytes Match sees.
const sniffLen = 64

var formats struct {
	sync.RWMutex
	list []Format
}

// RegisterFormat adds a format. Formats are tried in registration order;
// a file no format matches is opened as safetensors, whose header
// validation then says what is wrong with it.
func RegisterFormat(f Format) {
	formats.Lock()
	defer formats.Unlock()
	formats.list = append(formats.list, f)
}

func formatOf(head []byte) Format {
	formats.RLock()
	defer formats.RUnlock()
	for _, f := range formats.list {
		if f.Match(head) {
			return f
		}
	}
	return safetensorsFormat
}

var safetensorsFormat = Format{
	Name: "safetensors",
	// An 8-byte header length, then the JSON header.
	Match: func(h []byte) bool { return len(h) >= 9 && h[8] == '{' },
	Open:  OpenSafetensors,
}

// The built-in formats, in the order they are tried: safetensors first,
// since a header length such as 0x0280 starts with the pickle opcode.
func init() {
	RegisterFormat(safetensorsFormat)
	RegisterFormat(Format{
		Name:  "pytorch-zip",
		Match: func(h []byte) bool { return bytes.HasPrefix(h, []byte("PK\x03\x04")) },
		Open:  OpenPyTorch,
	})
	RegisterFormat(Format{
		Name: "pytorch-legacy",
		// A pickle stream: PyTorch's legacy (pre-1.6) format.
		Match: func(h []byte) bool { return len(h) >= 2 && h[0] == 0x80 && h[1] <= 5 },
		Open:  OpenPyTorch,
	})
}
