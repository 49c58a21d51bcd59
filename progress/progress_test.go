package progress

import (
	"bytes"
	"regexp"
	"strconv"
	"testing"
	"time"
)

// TestRateFromPhaseStart: the rate counts from the phase's start, so a
// first tensor done after a while shows a true rate (it showed "6% (40
// TB/s)" when the clock started at the first Add).
func TestRateFromPhaseStart(t *testing.T) {
	var buf bytes.Buffer
	b := NewTo(&buf, 100<<20, "merging")
	if !bytes.Contains(buf.Bytes(), []byte("merging")) {
		t.Errorf("the phase is not drawn at once: %q", buf.String())
	}
	time.Sleep(300 * time.Millisecond)
	b.Add(6 << 20) // 6 MiB after at least 0.3 s: at most 20 MB/s
	b.Done()
	m := regexp.MustCompile(`\(([0-9.]+) (B|kB|MB|GB|TB)/s\)`).FindAllStringSubmatch(buf.String(), -1)
	if len(m) == 0 {
		t.Fatalf("no rate drawn: %q", buf.String())
	}
	v, _ := strconv.ParseFloat(m[len(m)-1][1], 64)
	scale := map[string]float64{"B": 1, "kB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12}[m[len(m)-1][2]]
	if rate := v * scale; rate > 25e6 {
		t.Errorf("rate %.3g B/s for 6 MiB in ≥ 0.3 s", rate)
	}
}
