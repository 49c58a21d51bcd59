package parallel

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
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

// A gate never lets more than its limit in, lets more in once the limit
// is raised, and turns away waiters whose context ended.
func TestGateLimitAndCancel(t *testing.T) {
	g := NewGate(1)
	var in, most atomic.Int32
	var wg sync.WaitGroup
	release := make(chan struct{})
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 50 {
				if err := g.Enter(context.Background()); err != nil {
					t.Error(err)
					return
				}
				n := in.Add(1)
				for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
				}
				<-release
				in.Add(-1)
				g.Leave()
			}
		}()
	}
	for range 100 {
		release <- struct{}{}
	}
	if m := most.Load(); m != 1 {
		t.Fatalf("limit 1: %d in at once", m)
	}
	g.SetLimit(2)
	// Two goroutines still have turns (each takes 50 of the 200): both
	// come in before any is released.
	for deadline := time.Now().Add(10 * time.Second); in.Load() < 2; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("limit raised to 2: %d in", in.Load())
		}
	}
	for range 100 {
		release <- struct{}{}
	}
	wg.Wait()
	if m := most.Load(); m != 2 {
		t.Fatalf("limit raised to 2: at most %d in at once, want 2", m)
	}

	ctx, cancel := context.WithCancelCause(context.Background())
	g = NewGate(0)
	errc := make(chan error)
	go func() { errc <- g.Enter(ctx) }()
	cancel(errors.New("stopped"))
	g.SetLimit(0) // wakes the waiter, which sees its context
	if err := <-errc; err == nil || err.Error() != "stopped" {
		t.Fatalf("Enter after cancel: %v, want the cause", err)
	}
}
