package engine_test

import (
	"strings"
	"testing"

	"github.com/weightops/weightops/engine"
)

// TestBlockErrors: a block's errors name the whole path once.
func TestBlockErrors(t *testing.T) {
	for spec, want := range map[string]string{
		"input: {shape: [2, 6, 6]}\nlayers:\n- type: residual\n  name: r\n  body: [{type: conv2d, name: c, out: 3, kernel: 3, stride: 2}]\n- {type: flatten}\n- {type: linear, name: l, out: 2}\n": `layer 0 (residual "r"): the body's output has shape [3 2 2] but the shortcut's [2 6 6]`,
		"input: {shape: [2, 6, 6]}\nlayers:\n- type: concat\n  branches: [[{type: maxpool2d, kernel: 2}], []]\n- {type: flatten}\n- {type: linear, name: l, out: 2}\n":                             `layer 0 (concat): branch 1's output has shape [2 6 6]`,
		"input: {shape: [2, 6, 6]}\nlayers:\n- type: residual\n  name: r\n  body: [{type: linear, name: c, out: 3}]\n- {type: flatten}\n- {type: linear, name: l, out: 2}\n":                       `layer 0 (residual "r") body layer 0 (linear "c"): input has shape [2 6 6]`,
	} {
		a, err := engine.ParseArch([]byte(spec))
		if err != nil {
			t.Fatal(err)
		}
		_, err = engine.New(a)
		if err == nil || !strings.HasPrefix(err.Error(), want) || strings.Count(err.Error(), "layer 0 (") != strings.Count(want, "layer 0 (") {
			t.Errorf("error %v, want it to start %q", err, want)
		}
	}
}
