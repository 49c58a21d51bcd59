package merge

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/weightops/weightops/stream"
	"github.com/weightops/weightops/weights"
)

// TestOutputsUnchanged: every method writes the same tensors, bit for bit,
// as weightops did before the merge-speed work of issue 17 — the digests
// in testdata/outputs-cae5245.txt were computed by commit cae5245 on the
// same synthetic models and recipes — with the tensors read whole or
// streamed chunk by chunk from the files (several chunks per tensor,
// multi-pass sparsifiers reading them again on each pass) or, for the
// methods that compute entry by entry, in parts on several workers at
// once, with one worker or two.
func TestOutputsUnchanged(t *testing.T) {
	want := map[string]string{}
	src, err := os.ReadFile(filepath.Join("testdata", "outputs-cae5245.txt"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(src)), "\n") {
		name, sum, _ := strings.Cut(line, " ")
		want[name] = sum
	}
	d, recipes := everyMethodFixture(t)
	if len(recipes) != len(want) {
		t.Fatalf("%d recipes, %d digests", len(recipes), len(want))
	}
	defer func(v int64) { stream.StreamAbove = v }(stream.StreamAbove)
	defer func(v int64) { stream.PartElems = v }(stream.PartElems)
	for name, y := range recipes {
		t.Run(name, func(t *testing.T) {
			for _, mode := range []struct {
				what         string
				above, parts int64
			}{{"read whole", 1 << 62, 1 << 24}, {"streamed", -1, 1 << 24}, {"streamed in parts of a few rows", -1, 100}} {
				stream.StreamAbove, stream.PartElems = mode.above, mode.parts
				if mode.above < 0 {
					// Every input must stream, or the streamed path is not
					// what this tests.
					plan := openRecipe(t, d, y)
					for _, ti := range plan.Tensors {
						for k, in := range plan.Inputs() {
							if _, ok := in.Info(ti.Name); !ok {
								continue
							}
							if _, ok := weights.TensorSection(in, ti.Name); !ok {
								t.Fatalf("input %d cannot stream %s", k, ti.Name)
							}
						}
					}
				}
				for _, w := range []int{1, 2} {
					out := runRecipe(t, d, y, w)
					if got := tensorDigest(t, filepath.Join(out, "model.safetensors")); got != want[name] {
						t.Errorf("%s, %d workers: tensors digest %s, want %s", mode.what, w, got, want[name])
					}
					os.RemoveAll(out)
				}
			}
		})
	}
}
