// Package parallel holds the one parallel-for of weightops, in the two
// shapes its callers need: contiguous ranges of an index space for
// data-parallel loops (batches, images, rows), and a pool of workers taking
// items one at a time for tensor-level work, where items differ in cost and
// the first error must stop the rest.
package parallel

import (
	"context"
	"fmt"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
)

// DefaultWorkers is the number of tensors a streaming job processes at once
// when none is asked for: one per core, at most 2, since each worker holds
// a tensor in memory and the jobs are memory- and I/O-bound beyond that.
func DefaultWorkers() int { return min(runtime.GOMAXPROCS(0), 2) }

// Workers resolves a requested worker count: n > 0 as given, else
// DefaultWorkers.
func Workers(n int) int {
	if n > 0 {
		return n
	}
	return DefaultWorkers()
}

// Ranges calls fn on contiguous ranges [lo, hi) covering [0, n), one per
// core, when n is at least 2·grain; otherwise once with [0, n) (and not at
// all when n is 0). fn must write only state owned by its range, so the
// result does not depend on the number of cores.
func Ranges(n, grain int, fn func(lo, hi int)) {
	grain = max(grain, 1)
	workers := min(runtime.GOMAXPROCS(0), n/grain)
	if workers <= 1 {
		if n > 0 {
			fn(0, n)
		}
		return
	}
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		lo, hi := w*n/workers, (w+1)*n/workers
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn(lo, hi)
		}()
	}
	wg.Wait()
}

// Each calls fn(i) for every i in [0, n), spread over the cores in
// contiguous ranges. fn must touch only state owned by i.
func Each(n int, fn func(i int)) {
	Ranges(n, 1, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			fn(i)
		}
	})
}

// PanicError is a panic inside a worker, returned as an error so the
// command can report one line and exit instead of crashing the process.
type PanicError struct {
	Value any
	Stack []byte
}

func (e *PanicError) Error() string { return fmt.Sprintf("internal error: %v", e.Value) }

// Recover turns a panic into a *PanicError stored in *err; call it
// deferred.
func Recover(err *error) {
	if r := recover(); r != nil {
		*err = &PanicError{Value: r, Stack: debug.Stack()}
	}
}

// Items runs fn(worker, i) for i in [0, n) on a pool of workers (see
// Workers), each taking the next index when it is free, so uneven items
// balance. worker is in [0, workers) and lets fn reuse per-worker buffers.
// The first error, or ctx being cancelled, stops the remaining items; that
// error (or ctx's) is returned once the running calls have returned.
func Items(ctx context.Context, n, workers int, fn func(worker, i int) error) error {
	return ItemsIdle(ctx, n, workers, fn, nil)
}

// ItemsIdle is Items that also calls idle, if set, each time a worker
// finds no item left to take while others may still run theirs: its core
// is free from then on, for them to use.
func ItemsIdle(ctx context.Context, n, workers int, fn func(worker, i int) error, idle func()) error {
	workers = max(1, min(Workers(workers), n))
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var next atomic.Int64
	var once sync.Once
	var firstErr error
	fail := func(err error) { once.Do(func() { firstErr = err; cancel() }) }
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for {
				if err := ctx.Err(); err != nil {
					fail(context.Cause(ctx))
					return
				}
				i := int(next.Add(1) - 1)
				if i >= n {
					if idle != nil {
						idle()
					}
					return
				}
				if err := call(fn, w, i); err != nil {
					fail(err)
					return
				}
			}
		}(w)
	}
	wg.Wait()
	return firstErr
}

// call runs fn, a panic in it becoming a *PanicError.
func call(fn func(worker, i int) error, w, i int) (err error) {
	defer Recover(&err)
	return fn(w, i)
}
