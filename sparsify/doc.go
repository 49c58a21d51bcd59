// Package sparsify drops entries of task vectors the way the merge methods
// do — Model Breadcrumbs (drop the largest outliers and the small tail),
// TIES trimming (keep the top by magnitude) and DARE (keep at random,
// rescale) — on float32 slices, so a tensor can be streamed in chunks: the
// magnitude cuts come from a two-level histogram of the whole tensor, not a
// sort or a copy of it.
//
// Magnitude order. Entries are ranked by |x| descending; entries of equal
// magnitude are ranked by flat index, lower first. So "the top k" is always
// exactly k entries and the same k on every run and machine. Ranks compare
// the IEEE bit patterns of |x| as unsigned integers, which orders all
// non-negative floats correctly and puts NaN above +Inf (a NaN delta is
// treated as the largest outlier).
package sparsify
