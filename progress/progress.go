// Package progress shows a byte-count progress bar for long operations on
// a terminal, naming the phase it is in, and nothing at all when stderr is
// not a terminal or the user asked for quiet, so logs and pipelines stay
// clean.
package progress

import (
	"io"
	"os"
	"sync"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// Bar counts bytes towards a total, phase by phase. A nil *Bar is valid
// and does nothing; its Phase and Add make a stream.Progress.
type Bar struct {
	mu    sync.Mutex
	w     io.Writer
	count bool // items rather than bytes
	bar   *progressbar.ProgressBar
}

// Quiet reports whether progress should be off: asked for, or stderr is
// not a terminal.
func Quiet(quiet bool) bool { return quiet || !term.IsTerminal(int(os.Stderr.Fd())) }

// New returns a bar on stderr with a first phase, or nil when Quiet.
func New(total int64, phase string, quiet bool) *Bar {
	if Quiet(quiet) {
		return nil
	}
	return NewTo(os.Stderr, total, phase)
}

// Phases returns a bar on stderr that shows nothing until its first
// Phase, or nil when Quiet: for jobs that name their own phases.
func Phases(quiet bool) *Bar {
	if Quiet(quiet) {
		return nil
	}
	return &Bar{w: os.Stderr}
}

// NewTo returns a bar drawing to w regardless of whether w is a terminal.
func NewTo(w io.Writer, total int64, phase string) *Bar {
	b := &Bar{w: w}
	b.Phase(phase, total)
	return b
}

// Phase starts a named phase of total bytes, replacing the previous one.
func (b *Bar) Phase(name string, total int64) {
	if b == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.bar != nil {
		_ = b.bar.Finish()
	}
	opts := []progressbar.Option{
		progressbar.OptionSetWriter(b.w),
		progressbar.OptionSetDescription(name),
		progressbar.OptionSetWidth(30),
		progressbar.OptionThrottle(100_000_000),
		progressbar.OptionClearOnFinish(),
		// Drawn at once, which also starts its clock: a first Add much
		// later then gives a true rate, not "6% (40 TB/s)".
		progressbar.OptionSetRenderBlankState(true),
	}
	if b.count {
		opts = append(opts, progressbar.OptionShowCount())
	} else {
		opts = append(opts, progressbar.OptionShowBytes(true))
	}
	b.bar = progressbar.NewOptions64(total, opts...)
}

// Add records n more bytes done; safe for concurrent use.
func (b *Bar) Add(n int64) {
	if b == nil {
		return
	}
	b.mu.Lock()
	if b.bar != nil {
		_ = b.bar.Add64(n)
	}
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
	if b.bar != nil {
		_ = b.bar.Finish()
	}
	b.mu.Unlock()
}

// NewCount returns a bar counting items rather than bytes.
func NewCount(total int64, phase string, quiet bool) *Bar {
	if Quiet(quiet) {
		return nil
	}
	b := &Bar{w: os.Stderr, count: true}
	b.Phase(phase, total)
	return b
}
