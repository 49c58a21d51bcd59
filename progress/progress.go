// Package progress shows a byte-count progress bar for long operations on
// a terminal, and nothing at all when stderr is not a terminal or the user
// asked for quiet, so logs and pipelines stay clean.
package progress

import (
	"io"
	"os"
	"sync"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// Bar counts bytes towards a total. A nil *Bar is valid and does nothing.
type Bar struct {
	mu  sync.Mutex
	bar *progressbar.ProgressBar
}

// New returns a bar on stderr, or nil when quiet or stderr is not a TTY.
func New(total int64, description string, quiet bool) *Bar {
	if quiet || !term.IsTerminal(int(os.Stderr.Fd())) {
		return nil
	}
	return NewTo(os.Stderr, total, description)
}

// NewTo returns a bar drawing to w regardless of whether w is a terminal.
func NewTo(w io.Writer, total int64, description string) *Bar {
	return &Bar{bar: progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetDescription(description),
		progressbar.OptionShowBytes(true),
		progressbar.OptionSetWidth(30),
		progressbar.OptionThrottle(100_000_000),
		progressbar.OptionClearOnFinish(),
	)}
}

// Add records n more bytes done; safe for concurrent use.
func (b *Bar) Add(n int64) {
	if b == nil {
		return
	}
	b.mu.Lock()
	_ = b.bar.Add64(n)
	b.mu.Unlock()
}

// Func returns Add as a callback, or nil for a nil bar.
func (b *Bar) Func() func(int64) {
	if b == nil {
		return nil
	}
	return b.Add
}

// Done finishes and clears the bar.
func (b *Bar) Done() {
	if b == nil {
		return
	}
	b.mu.Lock()
	_ = b.bar.Finish()
	b.mu.Unlock()
}

// NewCount returns a bar counting items rather than bytes.
func NewCount(total int64, description string, quiet bool) *Bar {
	if quiet || !term.IsTerminal(int(os.Stderr.Fd())) {
		return nil
	}
	return &Bar{bar: progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(os.Stderr),
		progressbar.OptionSetDescription(description),
		progressbar.OptionSetWidth(30),
		progressbar.OptionShowCount(),
		progressbar.OptionClearOnFinish(),
	)}
}
