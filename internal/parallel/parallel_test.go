package parallel

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
)

func TestRangesCoverOnce(t *testing.T) {
	for _, n := range []int{0, 1, 7, 1000} {
		seen := make([]int32, n)
		Ranges(n, 3, func(lo, hi int) {
			for i := lo; i < hi; i++ {
				atomic.AddInt32(&seen[i], 1)
			}
		})
		for i, c := range seen {
			if c != 1 {
				t.Fatalf("n=%d: index %d visited %d times", n, i, c)
			}
		}
	}
}

func TestItemsStopsAtFirstErrorAndOnCancel(t *testing.T) {
	boom := errors.New("boom")
	var ran atomic.Int32
	err := Items(context.Background(), 100, 2, func(_, i int) error {
		ran.Add(1)
		if i == 3 {
			return boom
		}
		return nil
	})
	if !errors.Is(err, boom) || ran.Load() >= 100 {
		t.Errorf("err %v after %d items", err, ran.Load())
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Items(ctx, 10, 2, func(int, int) error { t.Error("ran after cancel"); return nil }); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
	var workers [2]atomic.Int32
	if err := Items(context.Background(), 50, 2, func(w, _ int) error { workers[w].Add(1); return nil }); err != nil {
		t.Fatal(err)
	}
	if workers[0].Load()+workers[1].Load() != 50 {
		t.Error("items lost")
	}
}
