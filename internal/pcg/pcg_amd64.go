package pcg

import "golang.org/x/sys/cpu"

// useAsm chooses the assembly (AVX-512 F and DQ for the 64-bit lane
// multiplies; tests turn it off to check the fallback).
var useAsm = cpu.X86.HasAVX512F && cpu.X86.HasAVX512DQ && cpu.X86.HasBMI2

// fillAsm makes outputs in groups of sixteen from the states in st,
// stepping them by j, and returns how many it made.
//
//go:noescape
func fillAsm(dst []uint64, st *laneStates, j *jump) int

// belowAsm is fillAsm comparing each output's low 53 bits with thr.
//
//go:noescape
func belowAsm(keep []bool, thr uint64, st *laneStates, j *jump) int
