// Command weightops reads, inspects, converts and (in later commands)
// merges and patches model checkpoints. This file holds flags and wiring
// only; the work is in the weights, signature, merge, quantize and engine
// packages.
package main

import (
	"errors"
	"fmt"
	"os"
	"runtime/pprof"
	"sort"
	"strings"

	"github.com/urfave/cli/v2"
)

// version is stamped into provenance metadata.
var version = "0.1.0-dev"

func runApp(app *cli.App, args []string) error { return app.Run(interspersed(app, args)) }

func main() {
	app := newApp()
	// WEIGHTOPS_CPUPROFILE=file profiles a whole command, for performance work.
	if p := os.Getenv("WEIGHTOPS_CPUPROFILE"); p != "" {
		if f, err := os.Create(p); err == nil {
			_ = pprof.StartCPUProfile(f)
			defer pprof.StopCPUProfile()
		}
	}
	if err := runApp(app, os.Args); err != nil {
		fmt.Fprintf(os.Stderr, "weightops: %s\n", oneLine(err))
		code := 1
		var ee cli.ExitCoder
		if errors.As(err, &ee) && ee.ExitCode() != 0 {
			code = ee.ExitCode()
		}
		pprof.StopCPUProfile()
		os.Exit(code)
	}
}

// oneLine keeps an error to one line, as a CI log reader expects.
func oneLine(err error) string { return strings.ReplaceAll(err.Error(), "\n", "; ") }

// commands is filled by each command file's init, one file per command
// group, so adding a command touches no shared list.
var commands []*cli.Command

func register(c ...*cli.Command) { commands = append(commands, c...) }

var quietFlag = &cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "no progress bar"}

func newApp() *cli.App {
	sort.Slice(commands, func(i, j int) bool { return commands[i].Name < commands[j].Name })
	app := &cli.App{
		Name:            "weightops",
		Usage:           "model-weight arithmetic: inspect, convert, diff, merge, patch checkpoints",
		Version:         version,
		HideHelpCommand: true,
		ExitErrHandler:  func(*cli.Context, error) {}, // main prints the one error line
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
