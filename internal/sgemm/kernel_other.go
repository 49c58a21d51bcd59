//go:build !amd64

package sgemm

func kernel(kb int, a, b, c []float32, ldc int) { kernelGo(kb, a, b, c, ldc) }

func row4(kb int, a, b []float32, stride int, c []float32) { row4Go(kb, a, b, stride, c) }
