package signature

import (
	"fmt"
	"strings"
)

// How a signature treats batchnorm running statistics (running_mean,
// running_var).
const (
	// StatsDifference: the signature of a running statistic is
	// θ_robust − θ_clean, so one signature at scale 1 gives the clean
	// model exactly the robust model's statistics, and k signatures at
	// scales summing to at most 1 give a convex combination of them — a
	// variance stays positive. (The statistics are estimates of the
	// feature distribution, not learned weights: there is no clean-task
	// direction to project out.)
	StatsDifference = "difference"
	// StatsProject: the plain RWS formula, as for weights. The patched
	// variance is θ_robust + (1 − coef)·δ_0, which goes negative when the
	// corruption shrinks a feature's variance (low contrast does): the
	// engine then refuses the model.
	StatsProject = "project"
	// StatsSkip: running statistics stay out of the signature.
	StatsSkip = "skip"
)

// IsRunningStat reports whether a tensor is a batchnorm running statistic.
func IsRunningStat(name string) bool {
	return strings.HasSuffix(name, ".running_mean") || strings.HasSuffix(name, ".running_var")
}

// AdjustRunningStats adapts signature statistics and a selection to a
// running-statistics mode: StatsDifference sets the projection coefficient
// of running statistics to 1 (signature = θ_robust − θ_clean), StatsSkip
// drops them from the selection, StatsProject changes nothing. The
// returned statistics are for Extract only (their RWS2 no longer means
// ‖RWS‖² for the adjusted tensors). The inputs are not modified.
func AdjustRunningStats(mode string, stats []TensorStat, selected []string) ([]TensorStat, []string, error) {
	switch mode {
	case StatsProject:
		return stats, selected, nil
	case StatsDifference:
		out := append([]TensorStat(nil), stats...)
		for i := range out {
			if IsRunningStat(out[i].Name) {
				out[i].Dot = out[i].D02 // Coef() = 1 (0 when δ_0 = 0: δ_c is θ_robust − θ_clean already)
			}
		}
		return out, selected, nil
	case StatsSkip:
		var sel []string
		for _, n := range selected {
			if !IsRunningStat(n) {
				sel = append(sel, n)
			}
		}
		return stats, sel, nil
	}
	return nil, nil, fmt.Errorf("running statistics mode %q: want %s, %s or %s", mode, StatsDifference, StatsProject, StatsSkip)
}
