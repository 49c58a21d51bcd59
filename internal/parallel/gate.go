package parallel

import (
	"context"
	"sync"
)

// Gate lets at most its limit of callers in at once; the limit can change
// while callers wait. Background work takes its turns through a gate so
// that it can be held to part of the cores while foreground work runs and
// given all of them after.
type Gate struct {
	mu    sync.Mutex
	cond  sync.Cond
	limit int
	in    int
}

// NewGate makes a gate letting limit callers in at once.
func NewGate(limit int) *Gate {
	g := &Gate{limit: limit}
	g.cond.L = &g.mu
	return g
}

// Enter waits until fewer than the limit are in, then goes in. It returns
// ctx's cause, without going in, once ctx is done (checked on entering and
// whenever the gate changes).
func (g *Gate) Enter(ctx context.Context) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	for {
		if err := context.Cause(ctx); err != nil {
			return err
		}
		if g.in < g.limit {
			g.in++
			return nil
		}
		g.cond.Wait()
	}
}

// Leave ends a caller's turn.
func (g *Gate) Leave() {
	g.mu.Lock()
	g.in--
	g.mu.Unlock()
	g.cond.Signal()
}

// SetLimit changes how many may be in at once, waking those waiting.
// Waiters whose context has ended since they started waiting see it here.
func (g *Gate) SetLimit(n int) {
	g.mu.Lock()
	g.limit = n
	g.mu.Unlock()
	g.cond.Broadcast()
}
