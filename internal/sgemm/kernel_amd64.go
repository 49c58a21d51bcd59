package sgemm

import "golang.org/x/sys/cpu"

func init() { useAsm = cpu.X86.HasAVX2 && cpu.X86.HasFMA }

// kern6x16 is the AVX2/FMA micro-kernel: c[i·ldc+j] += Σ_p a[p·6+i]·b[p·16+j]
// for i < 6, j < 16, over kb steps.
//
//go:noescape
func kern6x16(kb int, a, b, c *float32, ldc int)

// kern1x64 is the one-row micro-kernel over four packed panels (stride
// floats apart): c[16q+j] += Σ_p a[p]·b[q·stride+16p+j].
//
//go:noescape
func kern1x64(kb int, a, b *float32, stride int, c *float32)

// row4 runs kern1x64 (or its Go form) on four whole panels.
func row4(kb int, a, b []float32, stride int, c []float32) {
	if useAsm {
		_ = a[kb-1]
		_ = b[3*stride+kb*nr-1]
		_ = c[4*nr-1]
		kern1x64(kb, &a[0], &b[0], stride, &c[0])
		return
	}
	row4Go(kb, a, b, stride, c)
}

func kernel(kb int, a, b, c []float32, ldc int) {
	if kb == 0 {
		return
	}
	if useAsm {
		_ = a[kb*mr-1]
		_ = b[kb*nr-1]
		_ = c[(mr-1)*ldc+nr-1]
		kern6x16(kb, &a[0], &b[0], &c[0], ldc)
		return
	}
	kernelGo(kb, a, b, c, ldc)
}
