package pickle

import (
	"fmt"
	"math/big"
	"strconv"

	"github.com/nlpodyssey/gopickle/types"
)

// Named is a value the hooks built that names its own type in messages.
type Named interface{ TypeName() string }

// String is a str or bytes value as a string.
func String(v any) (string, bool) {
	switch s := v.(type) {
	case string:
		return s, true
	case []byte:
		return string(s), true
	}
	return "", false
}

// Int is an int value that fits in an int64.
func Int(v any) (int64, bool) {
	switch i := v.(type) {
	case int:
		return int64(i), true
	case *big.Int:
		if i.IsInt64() {
			return i.Int64(), true
		}
	}
	return 0, false
}

// Items returns the elements of a tuple or list.
func Items(v any) ([]any, bool) {
	switch s := v.(type) {
	case *types.Tuple:
		return *s, true
	case *types.List:
		return *s, true
	}
	return nil, false
}

// Ints is a tuple or list of ints.
func Ints(v any) ([]int64, bool) {
	items, ok := Items(v)
	if !ok {
		return nil, false
	}
	out := make([]int64, len(items))
	for i, x := range items {
		if out[i], ok = Int(x); !ok {
			return nil, false
		}
	}
	return out, true
}

// KV is one dict entry.
type KV struct {
	Key string
	Val any
}

// Dict returns the entries of a dict or OrderedDict whose keys are
// strings or ints, in order, the last value winning for a repeated key as
// in Python. Other keys are skipped.
func Dict(v any) ([]KV, bool) {
	var out []KV
	seen := map[string]int{}
	add := func(k, val any) {
		var key string
		switch kk := k.(type) {
		case string:
			key = kk
		case []byte:
			key = string(kk)
		case int:
			key = strconv.Itoa(kk)
		case *big.Int:
			key = kk.String()
		default:
			return
		}
		if i, ok := seen[key]; ok {
			out[i].Val = val
			return
		}
		seen[key] = len(out)
		out = append(out, KV{key, val})
	}
	switch d := v.(type) {
	case *types.Dict:
		for _, e := range *d {
			add(e.Key, e.Value)
		}
	case *types.OrderedDict:
		for e := d.List.Front(); e != nil; e = e.Next() {
			if oe, ok := e.Value.(*types.OrderedDictEntry); ok {
				add(oe.Key, oe.Value)
			}
		}
	default:
		return nil, false
	}
	return out, true
}

// Lookup finds a string key in a dict.
func Lookup(v any, key string) (any, bool) {
	kvs, _ := Dict(v)
	for _, kv := range kvs {
		if kv.Key == key {
			return kv.Val, true
		}
	}
	return nil, false
}

// Scalar formats an int, float, bool or string the way Python prints it.
func Scalar(v any) (string, bool) {
	switch x := v.(type) {
	case int:
		return strconv.Itoa(x), true
	case *big.Int:
		return x.String(), true
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64), true
	case bool:
		if x {
			return "True", true
		}
		return "False", true
	case string:
		return x, true
	}
	return "", false
}

// Short formats a value for a message: a scalar (cut short) or its type.
func Short(v any) string {
	if s, ok := Scalar(v); ok {
		if len(s) > 40 {
			s = s[:40] + "..."
		}
		if _, isStr := v.(string); isStr {
			return strconv.Quote(s)
		}
		return s
	}
	return "a " + TypeName(v)
}

// TypeName names a value's type for messages.
func TypeName(v any) string {
	switch x := v.(type) {
	case nil:
		return "None"
	case *types.Dict:
		return "dict"
	case *types.OrderedDict:
		return "OrderedDict"
	case *types.List:
		return "list"
	case *types.Tuple:
		return "tuple"
	case string:
		return "str"
	case []byte:
		return "bytes"
	case int, *big.Int:
		return "int"
	case float64:
		return "float"
	case bool:
		return "bool"
	case Named:
		return x.TypeName()
	}
	return fmt.Sprintf("%T", v)
}
