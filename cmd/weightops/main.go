// Command weightops reads, inspects, converts and (in later commands)
// merges and patches model checkpoints. This file holds flags and wiring
// only; the work is in the weights, signature, merge, quantize and engine
// packages.
package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/urfave/cli/v2"
)

// version is stamped into provenance metadata.
var version = "0.1.0-dev"

func main() {
	if err := newApp().Run(os.Args); err != nil {
		fmt.Fprintf(os.Stderr, "weightops: %s\n", oneLine(err))
		var ee cli.ExitCoder
		if errors.As(err, &ee) && ee.ExitCode() != 0 {
			os.Exit(ee.ExitCode())
		}
		os.Exit(1)
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
