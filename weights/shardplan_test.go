package weights

import (
	"fmt"
	"testing"
)

func TestPlanBalanced(t *testing.T) {
	var infos []TensorInfo
	for i := 0; i < 40; i++ {
		infos = append(infos, TensorInfo{Name: fmt.Sprintf("layers.%d.w", i), DType: F32, Shape: []int64{int64(1 + (i*7)%13), 10}})
	}
	for _, n := range []int{1, 3, 7} {
		groups := PlanBalanced(infos, n)
		seen := map[string]bool{}
		var lo, hi, largest int64 = 1 << 62, 0, 0
		for _, g := range groups {
			var b int64
			for _, ti := range g {
				if seen[ti.Name] {
					t.Fatalf("%s in two groups", ti.Name)
				}
				seen[ti.Name] = true
				s, _ := ti.ByteSize()
				b += s
				largest = max(largest, s)
			}
			lo, hi = min(lo, b), max(hi, b)
		}
		if len(seen) != len(infos) {
			t.Fatalf("n=%d: %d of %d tensors placed", n, len(seen), len(infos))
		}
		// Greedy largest-first keeps groups within one tensor of each other.
		if hi-lo > largest {
			t.Errorf("n=%d: group bytes %d..%d differ by more than the largest tensor %d", n, lo, hi, largest)
		}
	}
	if _, err := ParseShardSpec("0/3"); err == nil {
		t.Error("0/3 accepted")
	}
	if s, err := ParseShardSpec("2/3"); err != nil || s.FileName() != "model-00002-of-00003.safetensors" {
		t.Errorf("2/3: %v %v", s, err)
	}
}
