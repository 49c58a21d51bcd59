// Package weightops holds what the weightops binary carries with it: the
// demo's data, embedded so that `weightops demo` and `weightops report` run
// from any directory. The toolkit itself is in the subpackages (weights,
// stream, merge, wpatch, signature, ...).
package weightops

import "embed"

// DemoData holds testdata/demo (the trained Fashion-MNIST CNNs and their
// manifest), testdata/recipes (the demo's merge recipes) and the
// Fashion-MNIST subset they were trained on, at those paths, so the
// manifest's and recipes' relative paths resolve inside it.
//
//go:embed testdata/demo testdata/recipes testdata/engine/data/fashion-mnist
var DemoData embed.FS
