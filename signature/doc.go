// Package signature holds weight differences and what is done to them:
// task vectors (θ_ft − θ_base) and their arithmetic, magnitude ranks and
// masks, and the sparsifications used by merges — Model Breadcrumbs, TIES
// trimming and DARE — all on float32 slices so callers can stream a tensor
// in chunks.
//
// Magnitude order. Entries are ranked by |x| descending; entries of equal
// magnitude are ranked by flat index, lower first. So "the top k" is always
// exactly k entries and the same k on every run and machine. Ranks compare
// the IEEE bit patterns of |x| as unsigned integers, which orders all
// non-negative floats correctly and puts NaN above +Inf (a NaN delta is
// treated as the largest outlier).
package signature
