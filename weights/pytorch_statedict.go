package weights

// Flattening the unpickled object into named tensors: finding the state
// dict, unwrapping training checkpoints, and validating every view
// against its storage.

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
	"strconv"

	"github.com/nlpodyssey/gopickle/types"

	"github.com/weightops/weightops/internal/pickle"
)

// collect finds the state dict in obj, flattens it and validates every
// tensor against its storage.
func (c *torchCheckpoint) collect(obj any) error {
	budget := 0 // nodes visited looking for tensors, across all unwraps
	d, ok := pickle.Dict(obj)
	if !ok {
		hint := ""
		if _, isOpaque := obj.(*pickle.Opaque); isOpaque {
			hint = " (a pickled nn.Module? save model.state_dict() instead)"
		}
		return c.errorf("top-level object is a %s, not a dict of tensors%s", pickle.TypeName(obj), hint)
	}
	c.meta = map[string]string{}
	c.addScalars(d)
	for range 4 {
		inner := c.unwrap(d, &budget)
		if inner == nil {
			break
		}
		d = inner
		c.addScalars(d)
	}
	w := &stateWalker{c: c, onPath: map[any]bool{}}
	for _, kv := range d {
		if err := w.walk(kv.Key, kv.Val, 1); err != nil {
			return err
		}
	}
	SortNatural(c.infos)
	return nil
}

// unwrap returns the state dict inside a training checkpoint's dict d, or
// nil if d is the state dict.
func (c *torchCheckpoint) unwrap(d []pickle.KV, budget *int) []pickle.KV {
	for _, kv := range d {
		switch kv.Val.(type) {
		case *tensorRef, *badTensor:
			return nil // d holds tensors: it is the state dict
		}
	}
	for _, key := range wrapperKeys {
		for _, kv := range d {
			if kv.Key != key {
				continue
			}
			if inner, ok := pickle.Dict(kv.Val); ok && hasTensor(kv.Val, 0, budget) {
				return inner
			}
		}
	}
	return nil
}

// hasTensor reports whether a tensor is reachable from v.
func hasTensor(v any, depth int, budget *int) bool {
	if *budget++; *budget > maxNodes || depth > maxDepth {
		return false
	}
	switch x := v.(type) {
	case *tensorRef, *badTensor:
		return true
	case *types.Tuple, *types.List:
		items, _ := pickle.Items(x)
		for _, it := range items {
			if hasTensor(it, depth+1, budget) {
				return true
			}
		}
	case *types.Dict, *types.OrderedDict:
		kvs, _ := pickle.Dict(x)
		for _, kv := range kvs {
			if hasTensor(kv.Val, depth+1, budget) {
				return true
			}
		}
	}
	return false
}

func (c *torchCheckpoint) addScalars(d []pickle.KV) {
	for _, kv := range d {
		if len(c.meta) >= maxMeta {
			return
		}
		if s, ok := pickle.Scalar(kv.Val); ok && len(s) <= maxMetaValue && len(kv.Key) <= maxMetaValue {
			c.meta[kv.Key] = s
		}
	}
}

// stateWalker flattens nested containers into dotted tensor names.
type stateWalker struct {
	c      *torchCheckpoint
	nodes  int
	onPath map[any]bool // containers being walked, to break cycles
	names  int          // bytes of names built
}

func (w *stateWalker) walk(name string, v any, depth int) error {
	if w.nodes++; w.nodes > maxNodes {
		return w.c.errorf("over %d values in the pickle", maxNodes)
	}
	if len(name) > maxName {
		return w.c.errorf("tensor name of over %d bytes (%.40q...)", maxName, name)
	}
	if w.names += len(name); w.names > maxNameBytes {
		return w.c.errorf("tensor names total over %d bytes", maxNameBytes)
	}
	switch x := v.(type) {
	case *tensorRef:
		return w.c.addTensor(name, x)
	case *badTensor:
		return w.c.tensorErr(name, x.err)
	case *types.Dict, *types.OrderedDict, *types.List, *types.Tuple:
		if w.onPath[x] {
			return nil // a cycle
		}
		if depth >= maxDepth {
			return w.c.errorf("%q: containers nested deeper than %d", name, maxDepth)
		}
		w.onPath[x] = true
		defer delete(w.onPath, x)
		if items, ok := pickle.Items(x); ok {
			for i, it := range items {
				if err := w.walk(name+"."+strconv.Itoa(i), it, depth+1); err != nil {
					return err
				}
			}
			return nil
		}
		kvs, _ := pickle.Dict(x)
		for _, kv := range kvs {
			if err := w.walk(name+"."+kv.Key, kv.Val, depth+1); err != nil {
				return err
			}
		}
	}
	return nil
}

// addTensor validates a tensor's view against its storage and records it.
func (c *torchCheckpoint) addTensor(name string, t *tensorRef) error {
	if c.byName == nil {
		c.byName = map[string]*torchTensor{}
	}
	if _, dup := c.byName[name]; dup {
		return c.tensorErr(name, errors.New("two tensors have this name"))
	}
	fail := func(format string, a ...any) error {
		return c.tensorErr(name, fmt.Errorf(format, a...))
	}
	if !t.dtype.ok {
		return fail("dtype %s is unsupported", t.dtype.name)
	}
	if len(t.shape) != len(t.stride) {
		return fail("shape %v and stride %v differ in rank", t.shape, t.stride)
	}
	info := TensorInfo{Name: name, DType: t.dtype.dtype, Shape: t.shape}
	n, err := info.NumElements()
	if err != nil {
		return c.tensorErr(name, err)
	}
	nbytes, err := info.ByteSize()
	if err != nil {
		return c.tensorErr(name, err)
	}
	es := int64(t.dtype.size)
	ref, root := t.storage, t.storage.root
	if ref.off > root.size || ref.size > root.size-ref.off {
		return fail("storage %.40q: a view of %d bytes at byte %d of a %d-byte storage", root.key, ref.size, ref.off, root.size)
	}
	// last is the highest element index the view reaches.
	last := t.offset
	overflow := false
	for i, d := range t.shape {
		if t.stride[i] < 0 {
			return fail("negative stride %v", t.stride)
		}
		if d > 1 {
			hi, lo := bits.Mul64(uint64(d-1), uint64(t.stride[i]))
			s, carry := bits.Add64(uint64(last), lo, 0)
			if hi != 0 || carry != 0 || s > math.MaxInt64/16 {
				overflow = true
				break
			}
			last = int64(s)
		}
	}
	if n > 0 {
		if overflow || last >= (ref.size/es) {
			return fail("offset %d, shape %v and stride %v reach past the %d elements of storage %.40q", t.offset, t.shape, t.stride, ref.size/es, root.key)
		}
	}
	// The tensor's bytes come from the storage, but a stride-0 broadcast
	// can make it larger: still never allocate beyond the file's size (or
	// a compressed entry's).
	limit := c.size
	if root.zf != nil && root.size > limit {
		limit = root.size
	}
	if nbytes > limit {
		return fail("%d bytes, more than the file holds", nbytes)
	}
	base := ref.off
	if n > 0 {
		base += t.offset * es // t.offset <= last < ref.size/es: no overflow
	}
	c.byName[name] = &torchTensor{info: info, root: root, base: base, stride: t.stride}
	c.infos = append(c.infos, info)
	return nil
}
