package gguf

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
)

// Header is what a GGUF file says before its data: metadata and tensor
// infos (offsets are laid out by Layout).
type Header struct {
	KV        []KV
	Tensors   []TensorInfo
	Alignment uint64
}

// Add appends a metadata entry of the value's type (uint8 … float64,
// bool, string, Array).
func (h *Header) Add(key string, v any) {
	h.KV = append(h.KV, KV{Key: key, Type: typeOf(v), Value: v})
}

func typeOf(v any) ValueType {
	switch v.(type) {
	case uint8:
		return TypeUint8
	case int8:
		return TypeInt8
	case uint16:
		return TypeUint16
	case int16:
		return TypeInt16
	case uint32:
		return TypeUint32
	case int32:
		return TypeInt32
	case float32:
		return TypeFloat32
	case bool:
		return TypeBool
	case string:
		return TypeString
	case Array:
		return TypeArray
	case uint64:
		return TypeUint64
	case int64:
		return TypeInt64
	case float64:
		return TypeFloat64
	}
	panic(fmt.Sprintf("gguf: no GGUF type for %T", v))
}

// Layout sets every tensor's size and offset (in info order, each aligned)
// and returns the data section's length.
func (h *Header) Layout() uint64 {
	if h.Alignment == 0 {
		h.Alignment = DefaultAlignment
	}
	var off uint64
	for i := range h.Tensors {
		t := &h.Tensors[i]
		t.Size = uint64(t.Type.RowSize(int(t.Elements())))
		t.Offset = off
		off = align(off+t.Size, h.Alignment)
	}
	return off
}

func align(n, a uint64) uint64 { return (n + a - 1) / a * a }

// Write writes the header (version 3) and the padding up to the data
// section; it returns the bytes written. Call Layout first.
func (h *Header) Write(w io.Writer) (int64, error) {
	bw := bufio.NewWriter(w)
	cw := &countWriter{w: bw}
	le := binary.LittleEndian
	put := func(v any) { _ = binary.Write(cw, le, v) }
	cw.Write([]byte(Magic))
	put(uint32(3))
	put(uint64(len(h.Tensors)))
	put(uint64(len(h.KV)))
	str := func(s string) {
		put(uint64(len(s)))
		cw.Write([]byte(s))
	}
	var value func(t ValueType, v any)
	value = func(t ValueType, v any) {
		switch t {
		case TypeString:
			str(v.(string))
		case TypeArray:
			a := v.(Array)
			put(uint32(a.Elem))
			put(uint64(len(a.Values)))
			for _, e := range a.Values {
				value(a.Elem, e)
			}
		case TypeBool:
			b := uint8(0)
			if v.(bool) {
				b = 1
			}
			put(b)
		default:
			put(v)
		}
	}
	for _, kv := range h.KV {
		str(kv.Key)
		put(uint32(kv.Type))
		value(kv.Type, kv.Value)
	}
	for _, t := range h.Tensors {
		str(t.Name)
		put(uint32(len(t.Dims)))
		for _, d := range t.Dims {
			put(d)
		}
		put(uint32(t.Type))
		put(t.Offset)
	}
	pad := align(uint64(cw.n), h.Alignment) - uint64(cw.n)
	cw.Write(make([]byte, pad))
	if cw.err != nil {
		return cw.n, cw.err
	}
	return cw.n, bw.Flush()
}

type countWriter struct {
	w   io.Writer
	n   int64
	err error
}

func (c *countWriter) Write(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	n, err := c.w.Write(p)
	c.n += int64(n)
	c.err = err
	return n, err
}

// Strings makes a string array.
func Strings(s []string) Array {
	a := Array{Elem: TypeString, Values: make([]any, len(s))}
	for i, v := range s {
		a.Values[i] = v
	}
	return a
}

// Float32s makes a float32 array.
func Float32s(s []float32) Array {
	a := Array{Elem: TypeFloat32, Values: make([]any, len(s))}
	for i, v := range s {
		a.Values[i] = v
	}
	return a
}

// Int32s makes an int32 array.
func Int32s(s []int32) Array {
	a := Array{Elem: TypeInt32, Values: make([]any, len(s))}
	for i, v := range s {
		a.Values[i] = v
	}
	return a
}
