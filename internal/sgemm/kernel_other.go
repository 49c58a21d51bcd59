//go:build !amd64

package sgemm

func kernel(kb int, a, b, c []float32, ldc int) { kernelGo(kb, a, b, c, ldc) }
