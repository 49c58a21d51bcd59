package report

import "testing"

func TestNiceStep(t *testing.T) {
	for _, c := range []struct{ x, want float64 }{{0.3, 0.25}, {0.25, 0.25}, {1.2 / 4, 0.25}, {0.0031, 0.0025}, {0.004, 0.005}, {7, 5}, {8, 10}, {0, 1}} {
		if got := niceStep(c.x); got != c.want {
			t.Errorf("niceStep(%g) = %g, want %g", c.x, got, c.want)
		}
	}
}
