package stream

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/weightops/weightops/internal/testutil"
	"github.com/weightops/weightops/weights"
)

// model writes n 2-D F32 tensors of 8×300 and returns the open checkpoint.
func model(t *testing.T, dir string, n int, scale float64) weights.Checkpoint {
	t.Helper()
	var ts []testutil.Tensor
	for i := range n {
		v := make([]float64, 8*300)
		for j := range v {
			v[j] = scale * float64(i*len(v)+j)
		}
		ts = append(ts, testutil.Tensor{Name: "layers." + string(rune('a'+i)) + ".weight", Shape: []int64{8, 300}, Values: v})
	}
	return testutil.Open(t, testutil.Write(t, filepath.Join(dir, "in.safetensors"), nil, ts...))[0]
}

func leftovers(t *testing.T, dir string) []string {
	t.Helper()
	ents, _ := os.ReadDir(dir)
	var out []string
	for _, e := range ents {
		if strings.Contains(e.Name(), ".tmp-") {
			out = append(out, e.Name())
		}
	}
	return out
}

// TestJobStopsAndDiscards: a kernel error or a cancelled context stops the
// job, no output appears and no temp file is left.
func TestJobStopsAndDiscards(t *testing.T) {
	dir := t.TempDir()
	in := model(t, dir, 6, 1)
	boom := errors.New("boom")
	for _, c := range []struct {
		name string
		fail func(cancel context.CancelFunc, i int) error
		want error
	}{
		{"kernel error", func(_ context.CancelFunc, i int) error {
			if i == 2 {
				return boom
			}
			return nil
		}, boom},
		{"cancelled", func(cancel context.CancelFunc, i int) error {
			if i == 2 {
				cancel()
			}
			return nil
		}, context.Canceled},
	} {
		ctx, cancel := context.WithCancel(context.Background())
		out := filepath.Join(dir, c.name+".safetensors")
		var seen int
		job := &Job{
			Inputs: []weights.Checkpoint{in}, Tensors: in.Tensors(),
			Outputs: []Output{CheckpointOutput(out, nil, func(t weights.TensorInfo) weights.DType { return t.DType }, 0)},
			Kernel: func(weights.TensorInfo) (Kernel, error) {
				return KernelFunc(func(_ context.Context, t *Tensor) error {
					seen++
					copy(t.Out[0], t.In[0].Data)
					return c.fail(cancel, seen)
				}), nil
			},
			Options: Options{Workers: 1},
		}
		_, err := job.Run(ctx)
		cancel()
		if !errors.Is(err, c.want) {
			t.Errorf("%s: error %v, want %v", c.name, err, c.want)
		}
		if seen >= 6 {
			t.Errorf("%s: every tensor ran (%d)", c.name, seen)
		}
		if _, err := os.Stat(out); !os.IsNotExist(err) {
			t.Errorf("%s: output exists", c.name)
		}
		if l := leftovers(t, dir); len(l) > 0 {
			t.Errorf("%s: temp files left: %v", c.name, l)
		}
	}
}

// TestPassesMatchWholeTensor: a chunked elementwise kernel gives the bytes
// of the same arithmetic on whole tensors, for any worker count and memory
// bound (tensors larger than the bound run alone).
func TestPassesMatchWholeTensor(t *testing.T) {
	dir := t.TempDir()
	a := model(t, filepath.Join(dir, "a"), 5, 0.001)
	b := model(t, filepath.Join(dir, "b"), 5, -0.0007)
	var outs [][]byte
	for _, o := range []Options{{Workers: 1}, {Workers: 2}, {Workers: 2, MaxMemory: 10_000}} {
		out := filepath.Join(dir, "o.safetensors")
		bf16 := weights.BF16
		o.DType = &bf16
		job := &Job{
			Inputs: []weights.Checkpoint{a, b}, Tensors: a.Tensors(),
			Outputs: []Output{CheckpointOutput(out, nil, o.OutputDType, 0)},
			Kernel: func(weights.TensorInfo) (Kernel, error) {
				return Passes(ElementwiseFunc(func(in, out [][]float64) {
					for i := range out[0] {
						out[0][i] = 3*in[0][i] - in[1][i]
					}
				})), nil
			},
			Options: o,
		}
		if _, err := job.Run(context.Background()); err != nil {
			t.Fatal(err)
		}
		got, _ := os.ReadFile(out)
		outs = append(outs, got)
		want := testutil.ReadAll(t, out)
		av, bv := testutil.ReadAll(t, a.Path()), testutil.ReadAll(t, b.Path())
		for name, x := range av {
			ref := make([]float64, len(x))
			for i := range x {
				ref[i] = 3*x[i] - bv[name][i]
			}
			enc := make([]byte, 2*len(ref))
			_ = weights.Encode(weights.BF16, ref, enc)
			dec := make([]float64, len(ref))
			_ = weights.Decode(weights.BF16, enc, dec)
			testutil.Near(t, name, want[name], dec, 0)
		}
	}
	for i := 1; i < len(outs); i++ {
		if !bytes.Equal(outs[0], outs[i]) {
			t.Errorf("options %d give other bytes", i)
		}
	}
}
