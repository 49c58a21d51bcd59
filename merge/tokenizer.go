package merge

import (
	"errors"

	"github.com/weightops/weightops/stream"
	"github.com/weightops/weightops/weights"
)

// vocabPlan is the output vocabulary and, per model, a view of its
// checkpoint whose vocabulary tensors are laid out in it.
type vocabPlan struct {
	views []weights.Checkpoint
}

func (p *Plan) buildVocab() error {
	return errors.New("tokenizer merging is being built")
}

func (p *Plan) adjustSideFiles(side *stream.ModelFiles) error { return nil }
