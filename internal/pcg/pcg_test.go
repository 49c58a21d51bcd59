package pcg

import (
	"math/rand/v2"
	"testing"
)

// Every length around the lane groups, from several seeds, against
// math/rand/v2's PCG itself: the outputs and the state after them.
func TestFillMatchesRandPCG(t *testing.T) {
	for _, asm := range []bool{false, true} {
		if asm && !useAsm {
			continue
		}
		defer func(u bool) { useAsm = u }(useAsm)
		useAsm = asm
		for seed := uint64(0); seed < 4; seed++ {
			for _, n := range []int{0, 1, 15, 16, 17, 31, 32, 33, 47, 48, 100, 1000, 4099} {
				ref := rand.NewPCG(seed*0x9e3779b97f4a7c15, ^seed)
				g := New(seed*0x9e3779b97f4a7c15, ^seed)
				got := make([]uint64, n)
				g.Fill(got)
				for i := range got {
					if want := ref.Uint64(); got[i] != want {
						t.Fatalf("asm=%v seed %d n %d: output %d is %#x, rand.PCG's %#x", asm, seed, n, i, got[i], want)
					}
				}
				if a, b := g.Uint64(), ref.Uint64(); a != b {
					t.Fatalf("asm=%v seed %d n %d: state after Fill differs: next %#x, rand.PCG's %#x", asm, seed, n, a, b)
				}
			}
		}
	}
}

func TestBelowMatchesRandPCG(t *testing.T) {
	for _, asm := range []bool{false, true} {
		if asm && !useAsm {
			continue
		}
		defer func(u bool) { useAsm = u }(useAsm)
		useAsm = asm
		for _, thr := range []uint64{0, 1, 1 << 52, 3 << 51, 1<<53 - 1, 1 << 53} {
			for _, n := range []int{0, 7, 16, 17, 40, 1001} {
				ref := rand.NewPCG(7, thr)
				g := New(7, thr)
				got := make([]bool, n)
				g.Below(got, thr)
				for i := range got {
					if want := ref.Uint64()&(1<<53-1) < thr; got[i] != want {
						t.Fatalf("asm=%v thr %#x n %d: keep[%d] = %v, want %v", asm, thr, n, i, got[i], want)
					}
				}
				if a, b := g.Uint64(), ref.Uint64(); a != b {
					t.Fatalf("asm=%v thr %#x n %d: state after Below differs", asm, thr, n)
				}
			}
		}
	}
}

// The jump is sixteen single steps: checked on its own so that a wrong
// jump is told apart from a wrong lane computation.
func TestJumpIsSixteenSteps(t *testing.T) {
	p := New(123, 456)
	q := p
	for range lanes {
		q.step()
	}
	j := jumpLanes
	hi, lo := mul128(j[0], j[1], p.Hi, p.Lo)
	lo2 := lo + j[3]
	c := uint64(0)
	if lo2 < lo {
		c = 1
	}
	hi += j[2] + c
	if hi != q.Hi || lo2 != q.Lo {
		t.Fatalf("jump gives %#x %#x, sixteen steps %#x %#x", hi, lo2, q.Hi, q.Lo)
	}
}

func BenchmarkFill(b *testing.B) {
	buf := make([]uint64, 4096)
	g := New(1, 2)
	b.SetBytes(int64(len(buf)) * 8)
	for b.Loop() {
		g.Fill(buf)
	}
}

func BenchmarkRandPCG(b *testing.B) {
	buf := make([]uint64, 4096)
	g := rand.NewPCG(1, 2)
	b.SetBytes(int64(len(buf)) * 8)
	for b.Loop() {
		for i := range buf {
			buf[i] = g.Uint64()
		}
	}
}

func BenchmarkBelow(b *testing.B) {
	buf := make([]bool, 4096)
	g := New(1, 2)
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		g.Below(buf, 1<<52)
	}
}

// TestAdvanceIsSteps: Advance(n) leaves the state n outputs would, and
// the outputs after it are rand.PCG's from there.
func TestAdvanceIsSteps(t *testing.T) {
	for _, n := range []uint64{0, 1, 2, 15, 16, 17, 255, 1000, 65537, 1 << 20} {
		want := New(11, 22)
		for range n {
			want.Uint64()
		}
		got := New(11, 22)
		got.Advance(n)
		if got != want {
			t.Fatalf("Advance(%d) = %+v, %d steps %+v", n, got, n, want)
		}
		if a, b := got.Uint64(), want.Uint64(); a != b {
			t.Fatalf("after Advance(%d): output %d, want %d", n, a, b)
		}
	}
}
