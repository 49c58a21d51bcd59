package weights

// Unpickling a checkpoint: the class and persistent-id hooks that turn
// torch's rebuild calls and storages into our references, running nothing.

import (
	"archive/zip"
	"errors"
	"fmt"
	"math"
	"strings"

	"github.com/nlpodyssey/gopickle/types"

	"github.com/weightops/weightops/internal/pickle"
)

// elemType is a torch storage class (torch.FloatStorage, ...) or dtype
// object (torch.float32, ...), as found by FindClass.
type elemType struct {
	name  string // torch's name, for messages
	dtype DType
	ok    bool // dtype is one we read
	size  int  // bytes per element
}

var storageClasses = map[string]*elemType{}
var torchDTypes = map[string]*elemType{}

func init() {
	for _, s := range []struct {
		name  string
		dtype DType
		ok    bool
		size  int
	}{
		{"DoubleStorage", F64, true, 8},
		{"FloatStorage", F32, true, 4},
		{"HalfStorage", F16, true, 2},
		{"BFloat16Storage", BF16, true, 2},
		{"LongStorage", I64, true, 8},
		{"IntStorage", I32, true, 4},
		{"ShortStorage", I16, true, 2},
		{"CharStorage", I8, true, 1},
		{"ByteStorage", U8, true, 1},
		{"BoolStorage", Bool, true, 1},
		{"UntypedStorage", U8, true, 1},
		{"_UntypedStorage", U8, true, 1},
		{"ComplexDoubleStorage", 0, false, 16},
		{"ComplexFloatStorage", 0, false, 8},
		{"QInt8Storage", 0, false, 1},
		{"QUInt8Storage", 0, false, 1},
		{"QInt32Storage", 0, false, 4},
		{"QUInt4x2Storage", 0, false, 1},
		{"QUInt2x4Storage", 0, false, 1},
	} {
		storageClasses[s.name] = &elemType{"torch." + s.name, s.dtype, s.ok, s.size}
	}
	for _, d := range []struct {
		names []string
		dtype DType
		ok    bool
		size  int
	}{
		{[]string{"float64", "double"}, F64, true, 8},
		{[]string{"float32", "float"}, F32, true, 4},
		{[]string{"float16", "half"}, F16, true, 2},
		{[]string{"bfloat16"}, BF16, true, 2},
		{[]string{"int64", "long"}, I64, true, 8},
		{[]string{"int32", "int"}, I32, true, 4},
		{[]string{"int16", "short"}, I16, true, 2},
		{[]string{"int8"}, I8, true, 1},
		{[]string{"uint8"}, U8, true, 1},
		{[]string{"bool"}, Bool, true, 1},
		{[]string{"uint16"}, U16, true, 2},
		{[]string{"uint32"}, U32, true, 4},
		{[]string{"uint64"}, U64, true, 8},
		{[]string{"float8_e4m3fn"}, F8E4M3, true, 1},
		{[]string{"float8_e5m2"}, F8E5M2, true, 1},
		{[]string{"float8_e4m3fnuz", "float8_e5m2fnuz", "float8_e8m0fnu", "qint8", "quint8", "quint4x2", "quint2x4", "bits8"}, 0, false, 1},
		{[]string{"bits16", "complex32", "chalf"}, 0, false, 2},
		{[]string{"qint32"}, 0, false, 4},
		{[]string{"complex64", "cfloat"}, 0, false, 8},
		{[]string{"complex128", "cdouble"}, 0, false, 16},
	} {
		for _, n := range d.names {
			torchDTypes[n] = &elemType{"torch." + n, d.dtype, d.ok, d.size}
		}
	}
}

// torchStorage is one stored storage: a zip entry data/<key>, or a span of the
// legacy file.
type torchStorage struct {
	key      string
	elem     *elemType // of the first reference; the legacy size counts these
	off      int64     // file offset of byte 0 (stored data)
	size     int64     // bytes
	zf       *zip.File // set when the zip entry is compressed
	resolved bool      // legacy: data located
}

// storageRef is what a persistent id unpickles to: a typed window on a
// root storage.
type storageRef struct {
	root *torchStorage
	elem *elemType
	off  int64 // bytes into root
	size int64 // bytes, as the pickle declares
}

// tensorRef is what a _rebuild_tensor call unpickles to.
type tensorRef struct {
	storage *storageRef
	dtype   *elemType
	offset  int64 // elements of dtype
	shape   []int64
	stride  []int64
}

// badTensor stands for a tensor we cannot read; it becomes an error only
// if it is part of the state dict.
type badTensor struct{ err error }

// PySetState implements types.PyStateSettable, ignoring the state.
func (t *tensorRef) PySetState(any) error { return nil }

// PySetState implements types.PyStateSettable, ignoring the state.
func (t *badTensor) PySetState(any) error { return nil }

// torchLoader holds the state of one checkpoint's unpickling.
type torchLoader struct {
	roots map[string]*torchStorage
	order []*torchStorage
	views map[string]*storageRef // legacy storage views by view key
	depth int                    // nesting of rebuild calls
}

// unpickle runs gopickle over a pickle Scan accepted, with our hooks.
func (l *torchLoader) unpickle(data []byte) (any, error) {
	return pickle.Unpickle(data, l.findClass, l.persistentLoad)
}

// findClass resolves the globals a checkpoint pickle names. Nothing is
// imported or run: tensor rebuilders and storage classes map to our types,
// everything else to an inert pickle.Opaque.
func (l *torchLoader) findClass(module, name string) (any, error) {
	switch module {
	case "torch._utils":
		switch name {
		case "_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3":
			return pickle.Func(func(args ...any) (any, error) { return l.rebuildTensor(name, args), nil }), nil
		case "_rebuild_parameter", "_rebuild_parameter_with_state":
			return pickle.Func(rebuildParameter), nil
		case "_rebuild_qtensor":
			return unsupported("quantized tensors are"), nil
		case "_rebuild_sparse_tensor", "_rebuild_sparse_csr_tensor":
			return unsupported("sparse tensors are"), nil
		case "_rebuild_meta_tensor_no_storage":
			return unsupported("meta tensors (which hold no data) are"), nil
		}
		if strings.HasPrefix(name, "_rebuild_") {
			return unsupported("tensors rebuilt by torch._utils." + name + " are"), nil
		}
	case "torch._tensor":
		switch name {
		case "_rebuild_from_type_v2", "_rebuild_from_type":
			return pickle.Func(l.rebuildFromType), nil
		}
	case "torch", "torch.cuda", "torch.storage":
		if et, ok := storageClasses[name]; ok {
			return et, nil
		}
		if module == "torch" {
			if et, ok := torchDTypes[name]; ok {
				return et, nil
			}
			if name == "Size" {
				return pickle.Func(torchSize), nil
			}
		}
	}
	return &pickle.Opaque{Name: module + "." + name}, nil
}

func unsupported(what string) pickle.Func {
	return func(...any) (any, error) {
		return &badTensor{fmt.Errorf("%s unsupported", what)}, nil
	}
}

// torchSize is torch.Size(seq): keep the tuple.
func torchSize(args ...any) (any, error) {
	if len(args) == 1 {
		return args[0], nil
	}
	return &pickle.Opaque{Name: "torch.Size"}, nil
}

// persistentLoad resolves a storage reference:
// ('storage', storage_type, key, location, numel) in the zip format, plus a
// sixth view_metadata element (None or (view_key, offset, size)) in the
// legacy format.
func (l *torchLoader) persistentLoad(pid any) (any, error) {
	t, ok := pid.(*types.Tuple)
	if !ok || len(*t) == 0 {
		return nil, fmt.Errorf("persistent id is a %s, not a tuple", pickle.TypeName(pid))
	}
	items := *t
	typename, _ := pickle.String(items[0])
	switch typename {
	case "storage":
	case "module":
		return &pickle.Opaque{Name: "module"}, nil
	default:
		return nil, fmt.Errorf("unknown persistent id type %q", typename)
	}
	if len(items) < 5 {
		return nil, fmt.Errorf("storage persistent id has %d elements, want 5 or 6", len(items))
	}
	et, ok := items[1].(*elemType)
	if !ok {
		return nil, fmt.Errorf("storage type is a %s, not a torch storage class", pickle.TypeName(items[1]))
	}
	key, ok := pickle.String(items[2])
	if !ok {
		return nil, fmt.Errorf("storage key is a %s, not a string", pickle.TypeName(items[2]))
	}
	numel, ok := pickle.Int(items[4])
	if !ok || numel < 0 || numel > math.MaxInt64/16 {
		return nil, fmt.Errorf("storage %.40q: bad element count %s", key, pickle.Short(items[4]))
	}
	es := int64(et.size)
	root := l.roots[key]
	if root == nil {
		root = &torchStorage{key: key, elem: et}
		l.roots[key] = root
		l.order = append(l.order, root)
	}
	ref := &storageRef{root: root, elem: et, size: numel * es}
	if len(items) >= 6 && items[5] != nil {
		vm, ok := pickle.Items(items[5])
		if !ok || len(vm) != 3 {
			return nil, fmt.Errorf("storage %.40q: bad view metadata", key)
		}
		viewKey, ok1 := pickle.String(vm[0])
		off, ok2 := pickle.Int(vm[1])
		size, ok3 := pickle.Int(vm[2])
		if !ok1 || !ok2 || !ok3 || off < 0 || size < 0 || off > math.MaxInt64/16 || size > math.MaxInt64/16 {
			return nil, fmt.Errorf("storage %.40q: bad view metadata", key)
		}
		if v, ok := l.views[viewKey]; ok {
			return v, nil
		}
		ref.off, ref.size = off*es, size*es
		l.views[viewKey] = ref
	}
	return ref, nil
}

// rebuildTensor implements torch._utils._rebuild_tensor(storage, offset,
// size, stride), _rebuild_tensor_v2(..., requires_grad, backward_hooks[,
// metadata]) and _rebuild_tensor_v3(..., requires_grad, backward_hooks,
// dtype[, metadata]).
func (l *torchLoader) rebuildTensor(fn string, args []any) any {
	bad := func(format string, a ...any) any {
		return &badTensor{fmt.Errorf("torch._utils.%s: "+format, append([]any{fn}, a...)...)}
	}
	lo, hi := 4, 4
	switch fn {
	case "_rebuild_tensor_v2":
		lo, hi = 6, 7
	case "_rebuild_tensor_v3":
		lo, hi = 7, 8
	}
	if len(args) < lo || len(args) > hi {
		return bad("%d arguments", len(args))
	}
	st, ok := args[0].(*storageRef)
	if !ok {
		return bad("storage is a %s", pickle.TypeName(args[0]))
	}
	offset, ok := pickle.Int(args[1])
	if !ok || offset < 0 {
		return bad("bad storage offset %s", pickle.Short(args[1]))
	}
	shape, ok := pickle.Ints(args[2])
	if !ok {
		return bad("size is not a tuple of ints")
	}
	stride, ok := pickle.Ints(args[3])
	if !ok {
		return bad("stride is not a tuple of ints")
	}
	dt := st.elem
	if fn == "_rebuild_tensor_v3" {
		if dt, ok = args[6].(*elemType); !ok {
			return bad("dtype is a %s", pickle.TypeName(args[6]))
		}
	}
	return &tensorRef{storage: st, dtype: dt, offset: offset, shape: shape, stride: stride}
}

// rebuildParameter implements torch._utils._rebuild_parameter(data,
// requires_grad, backward_hooks) and _rebuild_parameter_with_state: a
// Parameter is its data.
func rebuildParameter(args ...any) (any, error) {
	if len(args) >= 1 {
		switch args[0].(type) {
		case *tensorRef, *badTensor:
			return args[0], nil
		}
	}
	return &badTensor{errors.New("torch._utils._rebuild_parameter: data is not a tensor")}, nil
}

// rebuildFromType implements torch._tensor._rebuild_from_type_v2(func,
// type, args, state), used for tensors with Python state: call func(*args)
// and drop the type and state.
func (l *torchLoader) rebuildFromType(args ...any) (any, error) {
	if len(args) < 3 {
		return &badTensor{errors.New("torch._tensor._rebuild_from_type: too few arguments")}, nil
	}
	fn, ok := args[0].(types.Callable)
	fargs, ok2 := args[2].(*types.Tuple)
	if !ok || !ok2 {
		return &badTensor{errors.New("torch._tensor._rebuild_from_type: bad arguments")}, nil
	}
	if l.depth >= maxDepth {
		return nil, errors.New("torch._tensor._rebuild_from_type nested too deep")
	}
	l.depth++
	defer func() { l.depth-- }()
	return fn.Call(*fargs...)
}

// TypeName implements pickle.Named.
func (*tensorRef) TypeName() string { return "tensor" }

// TypeName implements pickle.Named.
func (*badTensor) TypeName() string { return "tensor" }

// TypeName implements pickle.Named.
func (*storageRef) TypeName() string { return "storage" }

// TypeName implements pickle.Named.
func (e *elemType) TypeName() string { return e.name }
