package stream

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

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

// normPos is a Forker for the tests: a pre-pass sums the squares (an
// order-dependent float64 sum), the final pass writes v/‖v‖ + pos/1e6 with
// each entry's index, so a part computed at the wrong place or with the
// wrong state shows.
type normPos struct {
	job     *Job
	ss      float64
	done    bool
	pos     int64
	failAt  int64 // the final pass fails at this entry (-1: never)
	waitFor bool  // the pre-pass waits for a spare core
	waitIn  bool  // the final pass's first chunk waits for one
	// started is set when the final pass has begun (waitIn), and awaited
	// before computing when awaitStart.
	started    *atomic.Bool
	awaitStart bool
}

func (k *normPos) NextPass() (int, bool) { return 0, !k.done }
func (k *normPos) Observe(_ int, in [][]float64) error {
	for k.waitFor && k.job.spare.Load() == 0 {
		runtime.Gosched()
	}
	for _, v := range in[0] {
		k.ss += v * v
	}
	return nil
}
func (k *normPos) EndPass(int) error { k.done = true; return nil }
func (k *normPos) Compute(in, out [][]float64) error {
	for k.awaitStart && !k.started.Load() {
		runtime.Gosched()
	}
	if k.waitIn && k.pos == 0 {
		k.started.Store(true)
		for k.job.spare.Load() == 0 {
			runtime.Gosched()
		}
	}
	for e, v := range in[0] {
		if k.pos == k.failAt {
			return errors.New("boom")
		}
		out[0][e] = v/math.Sqrt(k.ss) + float64(k.pos)/1e6
		k.pos++
	}
	return nil
}
func (k *normPos) Fork(first int64) (PassKernel, bool) {
	return &normPos{job: k.job, ss: k.ss, done: true, pos: first, failAt: k.failAt}, true
}

// TestFinalPassInParts: with a core spare, a Forker's final pass is split
// into parts that two goroutines compute, each with a fork: the output is
// the bytes of the pass run in order (and of a float64 reference), and a
// part's error fails the job with no output left.
func TestFinalPassInParts(t *testing.T) {
	defer func(a, p int64) { StreamAbove, PartElems = a, p }(StreamAbove, PartElems)
	StreamAbove, PartElems = -1, 1000
	dir := t.TempDir()
	const rows, cols = 400, 300 // two chunks of 218 rows, so two parts
	v := make([]float64, rows*cols)
	for i := range v {
		v[i] = math.Sin(float64(i)) * float64(i%97)
	}
	in := testutil.Open(t, testutil.Write(t, filepath.Join(dir, "in.safetensors"), nil, testutil.Tensor{Name: "w", Shape: []int64{rows, cols}, Values: v}))[0]
	var ss float64
	for _, x := range v {
		ss += float32x(x) * float32x(x)
	}
	run := func(workers int, failAt int64) (string, *Job, error) {
		out := filepath.Join(dir, fmt.Sprintf("out-%d-%d.safetensors", workers, failAt))
		job := &Job{Inputs: []weights.Checkpoint{in}, Tensors: in.Tensors(),
			Outputs: []Output{CheckpointOutput(out, nil, func(weights.TensorInfo) weights.DType { return weights.F64 }, 0)},
			Options: Options{Workers: workers}}
		job.Kernel = func(weights.TensorInfo) (Kernel, error) {
			return Passes(&normPos{job: job, failAt: failAt, waitFor: workers > 1}), nil
		}
		_, err := job.Run(context.Background())
		return out, job, err
	}
	seq, _, err := run(1, -1)
	if err != nil {
		t.Fatal(err)
	}
	par, job, err := run(2, -1)
	if err != nil {
		t.Fatal(err)
	}
	if job.forked.Load() < 2 {
		t.Fatalf("%d parts computed apart, want 2", job.forked.Load())
	}
	a, _ := os.ReadFile(seq)
	b, _ := os.ReadFile(par)
	if !bytes.Equal(a, b) {
		t.Fatal("the final pass in parts wrote other bytes than in order")
	}
	got := testutil.Open(t, par)[0]
	x, _ := got.ReadTensor("w", nil)
	vals, _ := x.Float64s()
	for i, y := range vals {
		if want := float32x(v[i])/math.Sqrt(ss) + float64(i)/1e6; y != want {
			t.Fatalf("entry %d = %v, want %v", i, y, want)
		}
	}
	// A core that becomes spare during the final pass (the other worker
	// done with a second tensor) takes the rest of it from the next chunk.
	small := filepath.Join(dir, "small.safetensors")
	testutil.Write(t, small, nil, testutil.Tensor{Name: "w", Shape: []int64{rows, cols}, Values: v}, testutil.Tensor{Name: "z", Shape: []int64{4}, Values: []float64{1, 2, 3, 4}})
	two := testutil.Open(t, small)[0]
	out2 := filepath.Join(dir, "two.safetensors")
	job2 := &Job{Inputs: []weights.Checkpoint{two}, Tensors: two.Tensors(),
		Outputs: []Output{CheckpointOutput(out2, nil, func(weights.TensorInfo) weights.DType { return weights.F64 }, 0)},
		Options: Options{Workers: 2}}
	// z is computed only once w's final pass has begun (past its check
	// for a spare core at the start), so the core is taken midway.
	var started atomic.Bool
	job2.Kernel = func(ti weights.TensorInfo) (Kernel, error) {
		return Passes(&normPos{job: job2, failAt: -1, waitIn: ti.Name == "w", started: &started, awaitStart: ti.Name == "z"}), nil
	}
	if _, err := job2.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if job2.forked.Load() < 1 {
		t.Fatal("no part computed apart once a core was spare")
	}
	y, _ := testutil.Open(t, out2)[0].ReadTensor("w", nil)
	if !bytes.Equal(y.Data, x.Data) {
		t.Fatal("the final pass taken to parts midway wrote other bytes")
	}
	// A failure in the second part (entry 70,000) fails the job.
	out, _, err := run(2, 70000)
	if err == nil || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("error %v, want boom", err)
	}
	if _, serr := os.Stat(out); serr == nil || len(leftovers(t, dir)) > 0 {
		t.Errorf("a failed job left output: %v", leftovers(t, dir))
	}
}

// float32x is x as the F32 the test file stores.
func float32x(x float64) float64 { return float64(float32(x)) }

// tiedPos is a BackForker for the tests, order-dependent as a cut's ties
// are: a pre-pass counts the positive entries, the final pass writes
// v + (positive entries before it)/1024; Fork refuses, ForkBack counts
// from the end. failBack fails the back fork.
type tiedPos struct {
	job         *Job
	total       int64
	done, back  bool
	seen, after int64
	failBack    bool
	// backRan is set by the back fork's first chunk, which the kernel
	// in order waits for before its own, so the helper takes a part.
	backRan *atomic.Bool
}

func (k *tiedPos) NextPass() (int, bool) { return 0, !k.done }
func (k *tiedPos) Observe(_ int, in [][]float64) error {
	for k.job.spare.Load() == 0 {
		runtime.Gosched() // a core is spare when the final pass begins
	}
	for _, v := range in[0] {
		k.total += int64(b2i(v > 0))
	}
	return nil
}
func (k *tiedPos) EndPass(int) error { k.done = true; return nil }
func (k *tiedPos) Compute(in, out [][]float64) error {
	if !k.back {
		for !k.backRan.Load() {
			runtime.Gosched()
		}
	}
	if k.back {
		defer k.backRan.Store(true)
		if k.failBack {
			return errors.New("boom")
		}
		var c int64
		for _, v := range in[0] {
			c += int64(b2i(v > 0))
		}
		k.seen = k.total - k.after - c
		k.after += c
	}
	for e, v := range in[0] {
		out[0][e] = v + float64(k.seen)/1024
		k.seen += int64(b2i(v > 0))
	}
	return nil
}
func (k *tiedPos) Fork(int64) (PassKernel, bool) { return nil, false }
func (k *tiedPos) ForkBack() (PassKernel, bool) {
	return &tiedPos{job: k.job, total: k.total, done: true, back: true, failBack: k.failBack, backRan: k.backRan}, true
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestFinalPassFromBothEnds: a BackForker's final pass, with a core
// spare, is computed in order from the start by the worker and from the
// end down by a helper, and the output is a reference's; a helper's error
// fails the job with no output left.
func TestFinalPassFromBothEnds(t *testing.T) {
	defer func(a, p int64) { StreamAbove, PartElems = a, p }(StreamAbove, PartElems)
	// Four chunks of 218 rows; the helper's part is the last two, taken
	// from the end down.
	const rows, cols = 700, 300
	StreamAbove, PartElems = -1, 2*218*cols
	dir := t.TempDir()
	v := make([]float64, rows*cols)
	for i := range v {
		v[i] = float64(float32(math.Sin(float64(i) * 0.7)))
	}
	in := testutil.Open(t, testutil.Write(t, filepath.Join(dir, "in.safetensors"), nil, testutil.Tensor{Name: "w", Shape: []int64{rows, cols}, Values: v}))[0]
	run := func(workers int, failBack bool) (string, *Job, error) {
		out := filepath.Join(dir, fmt.Sprintf("out-%d-%v.safetensors", workers, failBack))
		job := &Job{Inputs: []weights.Checkpoint{in}, Tensors: in.Tensors(),
			Outputs: []Output{CheckpointOutput(out, nil, func(weights.TensorInfo) weights.DType { return weights.F64 }, 0)},
			Options: Options{Workers: workers}}
		job.Kernel = func(weights.TensorInfo) (Kernel, error) {
			return Passes(&tiedPos{job: job, failBack: failBack, backRan: new(atomic.Bool)}), nil
		}
		_, err := job.Run(context.Background())
		return out, job, err
	}
	par, job, err := run(2, false)
	if err != nil {
		t.Fatal(err)
	}
	if job.forked.Load() < 1 {
		t.Fatal("no part computed from the end")
	}
	got := testutil.Open(t, par)[0]
	x, _ := got.ReadTensor("w", nil)
	vals, _ := x.Float64s()
	var before int64
	for i, y := range vals {
		if want := v[i] + float64(before)/1024; y != want {
			t.Fatalf("entry %d = %v, want %v", i, y, want)
		}
		before += int64(b2i(v[i] > 0))
	}
	out, _, err := run(2, true)
	if err == nil || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("error %v, want boom", err)
	}
	if _, serr := os.Stat(out); serr == nil || len(leftovers(t, dir)) > 0 {
		t.Errorf("a failed job left output: %v", leftovers(t, dir))
	}
}

// posCount is a PassSplitter for the tests: pre-pass 0 counts the
// positive entries, pre-pass 1 the negative ones, and the final pass
// writes v + positives/1024 + negatives/4096. A pass splits once the
// kernel in order has seen a chunk of it (as a histogram takes its
// sample first); failPart fails the split's chunks.
type posCount struct {
	job      *Job
	pass     int
	counts   [2]int64
	seen     int // chunks of this pass observed (in order)
	part     bool
	failPart bool
	// partRan[p] is set by a split's first chunk of pass p, which the
	// kernel in order waits for after its second chunk, so the helper
	// surely takes a part.
	partRan *[2]atomic.Bool
}

func (k *posCount) NextPass() (int, bool) { return k.pass, k.pass < 2 }
func (k *posCount) Observe(p int, in [][]float64) error {
	if p != k.pass {
		return fmt.Errorf("chunk of pass %d during pass %d", p, k.pass)
	}
	for _, v := range in[0] {
		k.counts[p] += int64(b2i(v > 0 && p == 0 || v < 0 && p == 1))
	}
	if k.part {
		k.partRan[p].Store(true)
		if k.failPart {
			return errors.New("boom")
		}
		return nil
	}
	if k.seen++; k.seen >= 2 {
		for t0 := time.Now(); !k.partRan[p].Load(); runtime.Gosched() {
			if time.Since(t0) > 20*time.Second {
				return errors.New("the split took no part")
			}
		}
	}
	return nil
}
func (k *posCount) EndPass(p int) error {
	if k.part {
		return errors.New("a split's pass ended")
	}
	k.pass, k.seen = p+1, 0
	return nil
}
func (k *posCount) Compute(in, out [][]float64) error {
	for e, v := range in[0] {
		out[0][e] = v + float64(k.counts[0])/1024 + float64(k.counts[1])/4096
	}
	return nil
}
func (k *posCount) SplitPass(p int) (PassKernel, bool) {
	if k.part || k.seen < 1 {
		return nil, false
	}
	return &posCount{job: k.job, pass: p, part: true, failPart: k.failPart, partRan: k.partRan}, true
}
func (k *posCount) JoinPass(part PassKernel) error {
	o := part.(*posCount)
	k.counts[k.pass] += o.counts[k.pass]
	return nil
}

// TestPrePassFromBothEnds: a PassSplitter's pre-passes, with a core
// spare, are observed in order from the start by the worker and from the
// end down by a helper once the kernel splits, the counts joined before
// each pass ends, and the output is a reference's; a helper's error fails
// the job with no output left.
func TestPrePassFromBothEnds(t *testing.T) {
	defer func(a, p int64) { StreamAbove, PartElems = a, p }(StreamAbove, PartElems)
	const rows, cols = 700, 300 // four chunks of 218 rows; parts of two
	StreamAbove, PartElems = -1, 2*218*cols
	dir := t.TempDir()
	v := make([]float64, rows*cols)
	var pos, neg int64
	for i := range v {
		v[i] = float64(float32(math.Sin(float64(i)*0.7) + 0.3))
		pos += int64(b2i(v[i] > 0))
		neg += int64(b2i(v[i] < 0))
	}
	in := testutil.Open(t, testutil.Write(t, filepath.Join(dir, "in.safetensors"), nil, testutil.Tensor{Name: "w", Shape: []int64{rows, cols}, Values: v}))[0]
	run := func(failPart bool) (string, *Job, error) {
		out := filepath.Join(dir, fmt.Sprintf("out-%v.safetensors", failPart))
		job := &Job{Inputs: []weights.Checkpoint{in}, Tensors: in.Tensors(),
			Outputs: []Output{CheckpointOutput(out, nil, func(weights.TensorInfo) weights.DType { return weights.F64 }, 0)},
			Options: Options{Workers: 2}}
		job.Kernel = func(weights.TensorInfo) (Kernel, error) {
			return Passes(&posCount{job: job, failPart: failPart, partRan: new([2]atomic.Bool)}), nil
		}
		_, err := job.Run(context.Background())
		return out, job, err
	}
	par, job, err := run(false)
	if err != nil {
		t.Fatal(err)
	}
	if job.forked.Load() < 2 {
		t.Fatalf("%d parts observed from the end, want one per pass", job.forked.Load())
	}
	got := testutil.Open(t, par)[0]
	x, _ := got.ReadTensor("w", nil)
	vals, _ := x.Float64s()
	for i, y := range vals {
		if want := v[i] + float64(pos)/1024 + float64(neg)/4096; y != want {
			t.Fatalf("entry %d = %v, want %v (%d positive, %d negative)", i, y, want, pos, neg)
		}
	}
	out, _, err := run(true)
	if err == nil || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("error %v, want boom", err)
	}
	if _, serr := os.Stat(out); serr == nil || len(leftovers(t, dir)) > 0 {
		t.Errorf("a failed job left output: %v", leftovers(t, dir))
	}
}
