//go:build !amd64

package pcg

var useAsm = false

func fillAsm(dst []uint64, st *laneStates, j *jump) int { return 0 }

func belowAsm(keep []bool, thr uint64, st *laneStates, j *jump) int { return 0 }
