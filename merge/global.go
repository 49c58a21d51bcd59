package merge

import (
	"fmt"
	"sync"

	"github.com/weightops/weightops/signature"
	"github.com/weightops/weightops/weights"
)

// globalCuts computes, per model, the magnitude cuts of its task vector
// over every floating tensor of the model at once (the TIES paper's
// model-wide top-k), with two streaming histogram passes over the model.
func (p *Plan) globalCuts(workers int) ([][2]signature.Cut, error) {
	var floats []weights.TensorInfo
	var total int64
	for _, t := range p.Tensors {
		if t.DType.IsFloat() {
			floats = append(floats, t)
			n, _ := t.NumElements()
			total += n
		}
	}
	def := p.Recipe.methodDef
	out := make([][2]signature.Cut, len(p.Models))
	for i, m := range p.Models {
		sp := signature.Sparsify{
			Method:  def.sparsify,
			Density: p.param(i, "density").Float("", 0, 1),
			Gamma:   p.param(i, "gamma").Float("", 0, 0.01),
		}
		nTop, nKeep := sp.Counts(total)
		h := signature.NewHistogram(nTop, nTop+nKeep)
		pass := func(fine bool) error {
			var mu sync.Mutex
			return weights.ForEach(floats, workers, func(_ int, t weights.TensorInfo) error {
				var local *signature.Histogram
				if fine {
					local = h.FineCopy()
				} else {
					local = signature.NewHistogram(nTop, nTop+nKeep)
				}
				err := taskVectorChunks(p.Base, m, t, func(tau []float32) {
					if fine {
						local.AddFineValues(tau)
					} else {
						local.AddCoarseValues(tau)
					}
				})
				if err != nil {
					return err
				}
				mu.Lock()
				h.Merge(local)
				mu.Unlock()
				return nil
			})
		}
		if err := pass(false); err != nil {
			return nil, err
		}
		if h.EndCoarse() {
			if err := pass(true); err != nil {
				return nil, err
			}
		}
		c := h.Cuts()
		out[i] = [2]signature.Cut{signature.GlobalCut(c[0]), signature.GlobalCut(c[1])}
	}
	return out, nil
}

// taskVectorChunks streams τ = model − base for one tensor in chunks.
func taskVectorChunks(base, model weights.Checkpoint, t weights.TensorInfo, fn func([]float32)) error {
	b, err := base.ReadTensor(t.Name, nil)
	if err != nil {
		return err
	}
	m, err := model.ReadTensor(t.Name, nil)
	if err != nil {
		return err
	}
	n, _ := t.NumElements()
	bs, ms := int64(b.DType.Size()), int64(m.DType.Size())
	bv := make([]float64, min(n, chunkElems))
	mv := make([]float64, min(n, chunkElems))
	tau := make([]float32, min(n, chunkElems))
	for s := int64(0); s < n; s += chunkElems {
		e := min(n, s+chunkElems)
		if err := weights.Decode(b.DType, b.Data[s*bs:e*bs], bv[:e-s]); err != nil {
			return fmt.Errorf("%s: %w", t.Name, err)
		}
		if err := weights.Decode(m.DType, m.Data[s*ms:e*ms], mv[:e-s]); err != nil {
			return fmt.Errorf("%s: %w", t.Name, err)
		}
		for k := range tau[:e-s] {
			tau[k] = float32(mv[k] - bv[k])
		}
		fn(tau[:e-s])
	}
	return nil
}
