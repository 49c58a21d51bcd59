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
	"regexp"
	"runtime/pprof"
	"runtime/trace"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/weightops/weightops/internal/parallel"
	"github.com/weightops/weightops/internal/suggest"
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
	// WEIGHTOPS_TRACE=file records an execution trace (go tool trace): when
	// the cores sit idle, which a profile does not show.
	if p := os.Getenv("WEIGHTOPS_TRACE"); p != "" {
		if f, err := os.Create(p); err == nil {
			_ = trace.Start(f)
			defer trace.Stop()
		}
	}
	// SIGINT, SIGTERM (a CI timeout) and SIGHUP cancel the command: jobs
	// stop between tensors and chunks, writers remove their temp files.
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	// `weightops help [COMMAND...]` is --help.
	if len(args) > 1 && args[1] == "help" {
		args = append(append([]string{args[0]}, args[2:]...), "--help")
	}
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
		Usage:           "model-weight arithmetic: inspect, convert, diff, merge, patch, quantize, check and evaluate checkpoints",
		Version:         version,
		HideHelpCommand: true,                         // `weightops help [COMMAND]` is handled in execute
		ExitErrHandler:  func(*cli.Context, error) {}, // execute prints the one error line
		Commands:        commands,
	}
	// A usage error is one line with a pointer to help, not a help dump,
	// and exit code 2; a mistyped flag gets a did-you-mean.
	app.OnUsageError = func(c *cli.Context, err error, _ bool) error {
		return usageError{fmt.Sprintf("weightops: %v (see 'weightops --help')", err)}
	}
	var names []string
	for _, cmd := range app.Commands {
		if !cmd.Hidden {
			names = append(names, cmd.Name)
		}
	}
	prepare(app.Commands)
	app.CommandNotFound = func(c *cli.Context, name string) {
		// The context is the parent's: the app's, or a command's for an
		// unknown subcommand ("patch aply").
		known, parent := names, commandPath(c)
		if c.Command != nil && len(c.Command.Subcommands) > 0 {
			known = nil
			for _, s := range c.Command.Subcommands {
				known = append(known, s.Name)
			}
		}
		full := strings.TrimSpace("weightops " + parent)
		fmt.Fprintf(os.Stderr, "weightops: unknown command %q%s (see '%s --help')\n", strings.TrimSpace(parent+" "+name), suggest.Hint(name, known), full)
		os.Exit(2)
	}
	return app
}

// usageError is a mistake in how a command was called: exit code 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// ExitCode implements cli.ExitCoder.
func (e usageError) ExitCode() int { return 2 }

// commandPath is the running command's full name ("patch apply"), from
// the context's lineage.
func commandPath(c *cli.Context) string {
	var parts []string
	for _, x := range c.Lineage() {
		if x.Command != nil && x.Command.Name != "" && x.Command.Name != c.App.Name {
			parts = append([]string{x.Command.Name}, parts...)
		}
	}
	return strings.Join(parts, " ")
}

// usagef is a usage error of the running command, with the help hint.
func usagef(c *cli.Context, format string, a ...any) error {
	name := commandPath(c)
	return usageError{fmt.Sprintf("%s: %s (see 'weightops %s --help')", name, fmt.Sprintf(format, a...), name)}
}

var undefinedFlag = regexp.MustCompile(`flag provided but not defined: -+([^ ]+)`)

// prepare gives every command (subcommands included) the CLI's usage
// handling: mistyped flags get a did-you-mean, and required flags are
// checked by the command itself, so that a missing one says so (urfave's
// own check reports it as an unknown command once flags and arguments
// are reordered).
func prepare(cmds []*cli.Command) {
	for _, cmd := range cmds {
		cmd := cmd
		var flagNames, required []string
		for _, f := range cmd.Flags {
			flagNames = append(flagNames, f.Names()...)
			if unrequire(f) {
				required = append(required, f.Names()[0])
			}
		}
		cmd.OnUsageError = func(c *cli.Context, err error, _ bool) error {
			msg := err.Error()
			if m := undefinedFlag.FindStringSubmatch(msg); m != nil {
				msg = "unknown flag --" + m[1]
				if near := suggest.Closest(m[1], flagNames); near != "" {
					msg += fmt.Sprintf(" (did you mean --%s?)", near)
				}
			}
			return usagef(c, "%s", msg)
		}
		if len(required) > 0 {
			before := cmd.Before
			cmd.Before = func(c *cli.Context) error {
				for _, name := range required {
					if !c.IsSet(name) {
						return usagef(c, "missing %s", flagLabel(cmd, name))
					}
				}
				if before != nil {
					return before(c)
				}
				return nil
			}
		}
		prepare(cmd.Subcommands)
	}
}

// requiredFlags remembers the flags unrequire cleared: a flag variable
// shared by several commands (the output flag of add, diff, scale, …) is
// cleared at the first, and must still count as required at the rest.
var requiredFlags = map[cli.Flag]bool{}

// unrequire clears a flag's Required and reports whether it was set.
func unrequire(f cli.Flag) bool {
	if requiredFlags[f] {
		return true
	}
	r := clearRequired(f)
	if r {
		requiredFlags[f] = true
	}
	return r
}

func clearRequired(f cli.Flag) bool {
	switch f := f.(type) {
	case *cli.StringFlag:
		r := f.Required
		f.Required = false
		return r
	case *cli.Float64Flag:
		r := f.Required
		f.Required = false
		return r
	case *cli.IntFlag:
		r := f.Required
		f.Required = false
		return r
	}
	return false
}

// flagLabel names a flag as a user types it, with its usage: "-o/--output
// (output directory)".
func flagLabel(cmd *cli.Command, name string) string {
	for _, f := range cmd.Flags {
		ns := f.Names()
		if ns[0] != name {
			continue
		}
		var spell []string
		for i := len(ns) - 1; i >= 0; i-- {
			if len(ns[i]) == 1 {
				spell = append(spell, "-"+ns[i])
			} else {
				spell = append(spell, "--"+ns[i])
			}
		}
		label := strings.Join(spell, "/")
		if u, ok := f.(cli.DocGenerationFlag); ok && u.GetUsage() != "" {
			label += " (" + u.GetUsage() + ")"
		}
		return label
	}
	return "--" + name
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
