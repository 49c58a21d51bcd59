package main

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/weightops/weightops"
	"github.com/weightops/weightops/signature"

	"github.com/urfave/cli/v2"

	"github.com/weightops/weightops/demo"
)

func init() { register(demoCommand()) }

func demoCommand() *cli.Command {
	return &cli.Command{
		Name: "demo",
		Usage: "the main job end to end on the embedded Fashion-MNIST models: robust weight signatures (F32 and 4-bit), " +
			"patching, composing, unpatching byte for byte, and merges, in one table",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "data", Usage: "demo models (default: the ones embedded in the binary; made by: go run ./cmd/weightops-fixtures -demo DIR)"},
			&cli.StringFlag{Name: "recipes", Usage: "merge recipes directory (default: recipes/ beside --data)"},
			&cli.StringFlag{Name: "output", Aliases: []string{"o", "out"}, Usage: "output directory (default: a new temporary directory)"},
			&cli.IntFlag{Name: "layers", Value: 2, Usage: "signatures cover the first N weight layers with their batchnorms"},
			&cli.StringFlag{Name: "quantize", Value: "4bit-asym-block64", Usage: "quantization of the small signatures"},
			&cli.StringFlag{Name: "running-stats", Value: signature.StatsDifference, Usage: "batchnorm running statistics in signatures: difference (robust − clean), project (plain RWS) or skip"},
			&cli.Float64Flag{Name: "max-clean-drop", Value: 3, Usage: "each signature's scale is the largest costing at most this many points of clean accuracy on held-out images (negative: scale 1)"},
			&cli.Float64Flag{Name: "budget-confidence", Value: 0.95, Usage: "how sure the scale choice must be that the clean cost stays within --max-clean-drop on new images: held-out cost + z·SE (negative: the held-out cost alone)"},
			&cli.Uint64Flag{Name: "seed", Value: 1, Usage: "seed of the test-time corruptions"},
			&cli.BoolFlag{Name: "strict", Usage: "exit with an error when a claim does not hold"},
			workersFlag, jsonFlag, quietFlag,
		},
		Action: demoAction,
	}
}

func demoAction(c *cli.Context) error {
	if c.NArg() != 0 {
		return usagef(c, "unexpected arguments %q: the demo takes flags only", c.Args().Slice())
	}
	out := c.String("output")
	if out == "" {
		d, err := os.MkdirTemp("", "weightops-demo-")
		if err != nil {
			return fmt.Errorf("demo: %w", err)
		}
		out = d
	}
	var log io.Writer = os.Stderr
	if c.Bool("quiet") {
		log = nil
	}
	res, err := demo.Run(c.Context, demo.Options{Data: c.String("data"), Embedded: weightops.DemoData, Recipes: c.String("recipes"), Out: out, Layers: c.Int("layers"),
		Quant: c.String("quantize"), RunningStats: c.String("running-stats"), EvalSeed: c.Uint64("seed"), Workers: c.Int("workers"), Version: version, Log: log,
		SignatureBudget: signatureBudget(c.Float64("max-clean-drop")), BudgetConfidence: c.Float64("budget-confidence")})
	if err != nil {
		return err
	}
	if c.Bool("json") {
		if err := printJSON(res); err != nil {
			return err
		}
	} else {
		fmt.Printf("\nAccuracy (%%) on %d Fashion-MNIST test images, clean and corrupted (bold: the patch's own corruption):\n\n%s", res.TestSamples, res.Table())
		fmt.Printf("\nSignature sizes:\n\n%s", res.SignatureTable())
		fmt.Printf("\nSignature quantization domains (same bits and groups):\n\n%s", res.CodecTable())
		fmt.Printf("\nClaims:\n\n%s", res.ClaimsList())
		fmt.Printf("\nResults, patches and models in %s (%s, %s); %.1f s\n", out, demo.ResultsMarkdown, demo.ResultsJSON, res.Seconds)
	}
	if c.Bool("strict") {
		var failed []string
		for _, cl := range res.Claims {
			if !cl.Held {
				failed = append(failed, cl.ID)
			}
		}
		if len(failed) > 0 {
			return fmt.Errorf("demo: %d claims did not hold: %s", len(failed), strings.Join(failed, ", "))
		}
	}
	return nil
}

// signatureBudget maps --max-clean-drop (points; negative: off) to the
// demo's budget (a fraction; negative: off).
func signatureBudget(points float64) float64 {
	if points < 0 {
		return -1
	}
	return max(points/100, 1e-9) // 0 points: the strictest budget, not the default
}
