package pickle

import (
	"bytes"
	"fmt"

	gopickle "github.com/nlpodyssey/gopickle/pickle"
)

// Opaque stands for any other Python class or object: it can be called,
// instantiated and given state, and is then skipped.
type Opaque struct{ Name string }

// Func is a Python callable implemented here.
type Func func(args ...any) (any, error)

// Call implements types.Callable.
func (f Func) Call(args ...any) (any, error) { return f(args...) }

// Call implements types.Callable.
func (o *Opaque) Call(args ...any) (any, error) { return &Opaque{Name: o.Name}, nil }

// PyNew implements types.PyNewable.
func (o *Opaque) PyNew(args ...any) (any, error) { return &Opaque{Name: o.Name}, nil }

// PySetState implements types.PyStateSettable, ignoring the state.
func (o *Opaque) PySetState(any) error { return nil }

// TypeName implements Named.
func (o *Opaque) TypeName() string { return o.Name }

// Unpickle runs gopickle over a pickle Scan accepted, resolving globals
// with findClass and persistent ids with persistentLoad, and turns a panic
// inside gopickle into an error.
func Unpickle(data []byte, findClass func(module, name string) (any, error), persistentLoad func(pid any) (any, error)) (obj any, err error) {
	defer func() {
		if r := recover(); r != nil {
			msg := fmt.Sprint(r)
			if len(msg) > 300 {
				msg = msg[:300] + "..."
			}
			obj, err = nil, fmt.Errorf("malformed pickle: %s", msg)
		}
	}()
	u := gopickle.NewUnpickler(bytes.NewReader(data))
	u.FindClass = findClass
	u.PersistentLoad = persistentLoad
	obj, err = u.Load()
	if err != nil {
		if msg := err.Error(); len(msg) > 300 { // gopickle may %#v a big object
			return nil, fmt.Errorf("malformed pickle: %s (cut at 300 bytes)", msg[:300])
		}
		return nil, fmt.Errorf("malformed pickle: %w", err)
	}
	return obj, nil
}
