// Package report writes a self-contained HTML page, a Markdown file and
// a JSON file, with charts made by gonum.org/v1/plot, about checkpoints.
//
// BuildCompare describes any base checkpoint and models fine-tuned from
// it, streamed tensor by tensor (taskvec.Compare): where each model
// differs from the base, how alike the task vectors are, how much a
// sparsifying merge will conflict (sign agreement, overlap of the top-k
// masks), and which tensors are unchanged.
//
// BuildDemo describes the demo models of testdata/demo (see package
// demo): the per-layer relative norms of the fine-tunes and of their
// Robust Weight Signatures, the task vectors' similarity, the sparsity of
// signature and Breadcrumbs patches, accuracy along an interpolation from
// the clean to each robust model, and the clean model's weight-noise
// sensitivity; with a demo output directory, the demo's results too.
//
// In every chart of a report a model keeps its colour.
package report
