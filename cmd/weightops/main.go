// Command weightops reads, inspects, converts, diffs, merges, patches,
// quantizes and evaluates model checkpoints. This package maps flags to
// the library's options, makes one library call per command and prints the
// result; the work is in the weights, stream, taskvec, merge, wpatch,
// signature, quantize, lowrank and engine packages.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime/pprof"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/weightops/weightops/internal/parallel"
	"github.com/weightops/weightops/weights"
)

// version is stamped into provenance metadata.
var version = "0.1.0-dev"

func runApp(ctx context.Context, app *cli.App, args []string) error {
	return app.RunContext(ctx, interspersed(app, args))
}

// signalled records the signal that cancelled the command, for its exit
// code (128 + the signal number, as a shell reports it).
type signalled struct{ sig syscall.Signal }

func (s signalled) Error() string { return "interrupted by " + s.sig.String() }

func main() {
	os.Exit(execute(os.Args))
}

// execute runs the command line and returns the exit code: 0, 1 for an
// error, 2 for a usage error, 128+n when signal n stopped it.
func execute(args []string) int {
	app := newApp()
	// WEIGHTOPS_CPUPROFILE=file profiles a whole command, for performance work.
	if p := os.Getenv("WEIGHTOPS_CPUPROFILE"); p != "" {
		if f, err := os.Create(p); err == nil {
			_ = pprof.StartCPUProfile(f)
			defer pprof.StopCPUProfile()
		}
	}
	// SIGINT, SIGTERM (a CI timeout) and SIGHUP cancel the command: jobs
	// stop between tensors and chunks, writers remove their temp files.
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	done := make(chan error, 1)
	go func() {
		var err error
		defer func() { done <- err }()
		defer parallel.Recover(&err)
		err = runApp(ctx, app, args)
	}()
	var err error
	select {
	case err = <-done:
	case s := <-sigs:
		sig := s.(syscall.Signal)
		cancel(signalled{sig})
		// Give the command a moment to stop cleanly; a second signal or
		// the deadline ends it regardless. Either way no temp file stays.
		select {
		case <-done:
		case <-sigs:
		case <-time.After(5 * time.Second):
		}
		weights.RemoveTemps()
		fmt.Fprintf(os.Stderr, "weightops: interrupted by %s; no output written\n", sigName(sig))
		return 128 + int(sig)
	}
	if err == nil {
		return 0
	}
	var pe *parallel.PanicError
	if errors.As(err, &pe) {
		// A bug, not bad input: one line, no output left, exit 3 (2 stays
		// "usage"); WEIGHTOPS_TRACEBACK=1 adds the stack.
		weights.RemoveTemps()
		fmt.Fprintf(os.Stderr, "weightops: %s (a bug: please report it)\n", oneLine(err))
		if os.Getenv("WEIGHTOPS_TRACEBACK") != "" {
			os.Stderr.Write(pe.Stack)
		}
		return 3
	}
	fmt.Fprintf(os.Stderr, "weightops: %s\n", oneLine(err))
	var ee cli.ExitCoder
	if errors.As(err, &ee) && ee.ExitCode() != 0 {
		return ee.ExitCode()
	}
	return 1
}

func sigName(s syscall.Signal) string {
	switch s {
	case syscall.SIGINT:
		return "SIGINT"
	case syscall.SIGTERM:
		return "SIGTERM"
	case syscall.SIGHUP:
		return "SIGHUP"
	}
	return s.String()
}

// oneLine keeps an error to one line, as a CI log reader expects.
func oneLine(err error) string { return strings.ReplaceAll(err.Error(), "\n", "; ") }

// commands is filled by each command file's init, one file per command
// group, so adding a command touches no shared list.
var commands []*cli.Command

func register(c ...*cli.Command) { commands = append(commands, c...) }

func newApp() *cli.App {
	sort.Slice(commands, func(i, j int) bool { return commands[i].Name < commands[j].Name })
	app := &cli.App{
		Name:            "weightops",
		Usage:           "model-weight arithmetic: inspect, convert, diff, merge, patch checkpoints",
		Version:         version,
		HideHelpCommand: true,
		ExitErrHandler:  func(*cli.Context, error) {}, // run prints the one error line
		Commands:        commands,
	}
	// A usage error is one line with a pointer to help, not a help dump.
	usage := func(c *cli.Context, err error, _ bool) error {
		return fmt.Errorf("%s: %w (see 'weightops %s --help')", c.Command.Name, err, c.Command.Name)
	}
	app.OnUsageError = usage
	for _, cmd := range app.Commands {
		cmd.OnUsageError = usage
	}
	app.CommandNotFound = func(c *cli.Context, name string) {
		fmt.Fprintf(os.Stderr, "weightops: unknown command %q (see 'weightops --help')\n", name)
		os.Exit(2)
	}
	return app
}

// interspersed moves a command's flags ahead of its positional arguments,
// so `weightops merge recipe.yaml -o out` works: urfave/cli v2 stops
// parsing flags at the first positional argument.
func interspersed(app *cli.App, args []string) []string {
	if len(args) < 2 {
		return args
	}
	var cmd *cli.Command
	depth := 1
	for list := app.Commands; depth < len(args); depth++ {
		var next *cli.Command
		for _, c := range list {
			if c.HasName(args[depth]) {
				next = c
			}
		}
		if next == nil {
			break
		}
		cmd, list = next, next.Subcommands
	}
	if cmd == nil {
		return args
	}
	takesValue := map[string]bool{}
	for _, f := range cmd.Flags {
		_, isBool := f.(*cli.BoolFlag)
		for _, n := range f.Names() {
			takesValue[n] = !isBool
		}
	}
	flags, pos := []string{}, []string{}
	rest := args[depth:]
	for i := 0; i < len(rest); i++ {
		a := rest[i]
		if a == "--" {
			pos = append(pos, rest[i+1:]...)
			break
		}
		if len(a) > 1 && a[0] == '-' {
			flags = append(flags, a)
			name := strings.TrimLeft(a, "-")
			if takesValue[name] && !strings.Contains(name, "=") && i+1 < len(rest) {
				flags = append(flags, rest[i+1])
				i++
			}
			continue
		}
		pos = append(pos, a)
	}
	out := append(append([]string{}, args[:depth]...), flags...)
	if len(pos) > 0 {
		out = append(out, "--")
		out = append(out, pos...)
	}
	return out
}
