package dataset

import "math"

// jpeg is a baseline JPEG round trip at the severity's quality as
// libjpeg makes and reads it (PIL's save and open): RGB to YCbCr and back
// in libjpeg's 16-bit fixed point, 4:2:0 chroma (2×2 means with
// alternating rounding; triangle-filter "fancy" upsampling), the slow
// integer DCT and inverse DCT, quantisation with libjpeg's quality-scaled
// tables. The entropy coding is lossless, so it is left out.
func (x *hwc) jpeg(s int) {
	q := []int{80, 65, 58, 50, 40}[s-1]
	h, w := x.h, x.w
	H, W := (h+15)/16*16, (w+15)/16*16
	const one, half = 1 << 16, 1 << 15
	fix := func(f float64) int64 { return int64(f*one + 0.5) }
	Y, Cb, Cr := make([]int64, H*W), make([]int64, H*W), make([]int64, H*W)
	for yy := 0; yy < H; yy++ {
		for xx := 0; xx < W; xx++ {
			p := x.v[(min(yy, h-1)*w+min(xx, w-1))*3:] // edges replicated
			r, g, b := int64(math.Round(p[0]*255)), int64(math.Round(p[1]*255)), int64(math.Round(p[2]*255))
			i := yy*W + xx
			Y[i] = (fix(0.29900)*r + fix(0.58700)*g + fix(0.11400)*b + half) >> 16
			Cb[i] = (-fix(0.16874)*r - fix(0.33126)*g + fix(0.5)*b + 128<<16 + half - 1) >> 16
			Cr[i] = (fix(0.5)*r - fix(0.41869)*g - fix(0.08131)*b + 128<<16 + half - 1) >> 16
		}
	}
	down := func(c []int64) []int64 {
		out := make([]int64, H/2*W/2)
		for yy := 0; yy < H/2; yy++ {
			bias := int64(1)
			for xx := 0; xx < W/2; xx++ {
				a := c[2*yy*W+2*xx] + c[2*yy*W+2*xx+1] + c[(2*yy+1)*W+2*xx] + c[(2*yy+1)*W+2*xx+1]
				out[yy*W/2+xx] = (a + bias) >> 2
				bias ^= 3
			}
		}
		return out
	}
	cb, cr := down(Cb), down(Cr)
	lq, cq := jpegTable(jpegLuma, q), jpegTable(jpegChroma, q)
	jpegPlane(Y, H, W, lq)
	jpegPlane(cb, H/2, W/2, cq)
	jpegPlane(cr, H/2, W/2, cq)
	ch, cw := (h+1)/2, (w+1)/2
	ucb, ucr := fancyUp(cb, W/2, ch, cw, h, w), fancyUp(cr, W/2, ch, cw, h, w)
	clamp := func(v int64) float64 { return float64(min(max(v, 0), 255)) }
	for yy := 0; yy < h; yy++ {
		for xx := 0; xx < w; xx++ {
			yv := Y[yy*W+xx]
			b, r := ucb[yy*w+xx]-128, ucr[yy*w+xx]-128
			p := x.v[(yy*w+xx)*3:]
			p[0] = clamp(yv + (fix(1.40200)*r+half)>>16)
			p[1] = clamp(yv + (-fix(0.34414)*b+half-fix(0.71414)*r)>>16)
			p[2] = clamp(yv + (fix(1.77200)*b+half)>>16)
		}
	}
	x.bytes = true
}

var jpegLuma = [64]int64{16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
	14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
	49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99}

var jpegChroma = [64]int64{17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99,
	47, 66, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99,
	99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99}

// jpegTable is libjpeg's jpeg_set_quality scaling (baseline: 1..255).
func jpegTable(base [64]int64, quality int) [64]int64 {
	scale := int64(200 - 2*quality)
	if quality < 50 {
		scale = int64(5000 / quality)
	}
	var t [64]int64
	for i, b := range base {
		t[i] = min(max((b*scale+50)/100, 1), 255)
	}
	return t
}

// jpegPlane runs every 8×8 block of a plane through libjpeg's slow
// integer forward DCT, quantisation, dequantisation and inverse DCT.
func jpegPlane(p []int64, h, w int, qt [64]int64) {
	var blk [64]int64
	for by := 0; by < h; by += 8 {
		for bx := 0; bx < w; bx += 8 {
			for i := 0; i < 64; i++ {
				blk[i] = p[(by+i/8)*w+bx+i%8] - 128
			}
			fdctIslow(&blk)
			for i := range blk {
				d := qt[i] << 3
				v := blk[i]
				if v < 0 {
					v = -((-v + d>>1) / d)
				} else {
					v = (v + d>>1) / d
				}
				blk[i] = v * qt[i]
			}
			idctIslow(&blk)
			for i := 0; i < 64; i++ {
				p[(by+i/8)*w+bx+i%8] = blk[i]
			}
		}
	}
}

const (
	fix0298 = 2446
	fix0390 = 3196
	fix0541 = 4433
	fix0765 = 6270
	fix0899 = 7373
	fix1175 = 9633
	fix1501 = 12299
	fix1847 = 15137
	fix1961 = 16069
	fix2053 = 16819
	fix2562 = 20995
	fix3072 = 25172
)

func descale(x int64, n uint) int64 { return (x + 1<<(n-1)) >> n }

// fdctIslow is libjpeg's jpeg_fdct_islow (CONST_BITS 13, PASS1_BITS 2):
// rows, then columns; the result is 8 times the true DCT.
func fdctIslow(b *[64]int64) {
	for pass := 0; pass < 2; pass++ {
		for k := 0; k < 8; k++ {
			at := func(i int) *int64 {
				if pass == 0 {
					return &b[k*8+i]
				}
				return &b[i*8+k]
			}
			d := [8]int64{*at(0), *at(1), *at(2), *at(3), *at(4), *at(5), *at(6), *at(7)}
			tmp0, tmp7 := d[0]+d[7], d[0]-d[7]
			tmp1, tmp6 := d[1]+d[6], d[1]-d[6]
			tmp2, tmp5 := d[2]+d[5], d[2]-d[5]
			tmp3, tmp4 := d[3]+d[4], d[3]-d[4]
			tmp10, tmp13 := tmp0+tmp3, tmp0-tmp3
			tmp11, tmp12 := tmp1+tmp2, tmp1-tmp2
			var sh uint = 13 - 2
			if pass == 0 {
				*at(0) = (tmp10 + tmp11) << 2
				*at(4) = (tmp10 - tmp11) << 2
			} else {
				*at(0) = descale(tmp10+tmp11, 2)
				*at(4) = descale(tmp10-tmp11, 2)
				sh = 13 + 2
			}
			z1 := (tmp12 + tmp13) * fix0541
			*at(2) = descale(z1+tmp13*fix0765, sh)
			*at(6) = descale(z1+tmp12*-fix1847, sh)
			z1 = tmp4 + tmp7
			z2 := tmp5 + tmp6
			z3 := tmp4 + tmp6
			z4 := tmp5 + tmp7
			z5 := (z3 + z4) * fix1175
			tmp4 *= fix0298
			tmp5 *= fix2053
			tmp6 *= fix3072
			tmp7 *= fix1501
			z1 *= -fix0899
			z2 *= -fix2562
			z3 *= -fix1961
			z4 *= -fix0390
			z3 += z5
			z4 += z5
			*at(7) = descale(tmp4+z1+z3, sh)
			*at(5) = descale(tmp5+z2+z4, sh)
			*at(3) = descale(tmp6+z2+z3, sh)
			*at(1) = descale(tmp7+z1+z4, sh)
		}
	}
}

// idctIslow is libjpeg's jpeg_idct_islow on dequantised coefficients:
// columns, then rows, output samples level-shifted and clamped to 0..255.
func idctIslow(b *[64]int64) {
	var ws [64]int64
	for pass := 0; pass < 2; pass++ {
		for k := 0; k < 8; k++ {
			in := func(i int) int64 {
				if pass == 0 {
					return b[i*8+k]
				}
				return ws[k*8+i]
			}
			out := func(i int, v int64) {
				if pass == 0 {
					ws[i*8+k] = v
				} else {
					b[k*8+i] = min(max(v+128, 0), 255)
				}
			}
			sh := uint(13 - 2)
			if pass == 1 {
				sh = 13 + 2 + 3
			}
			z2, z3 := in(2), in(6)
			z1 := (z2 + z3) * fix0541
			tmp2 := z1 + z3*-fix1847
			tmp3 := z1 + z2*fix0765
			tmp0 := (in(0) + in(4)) << 13
			tmp1 := (in(0) - in(4)) << 13
			tmp10, tmp13 := tmp0+tmp3, tmp0-tmp3
			tmp11, tmp12 := tmp1+tmp2, tmp1-tmp2
			tmp0, tmp1, tmp2, tmp3 = in(7), in(5), in(3), in(1)
			z1, z2, z3 = tmp0+tmp3, tmp1+tmp2, tmp0+tmp2
			z4 := tmp1 + tmp3
			z5 := (z3 + z4) * fix1175
			tmp0 *= fix0298
			tmp1 *= fix2053
			tmp2 *= fix3072
			tmp3 *= fix1501
			z1 *= -fix0899
			z2 *= -fix2562
			z3 = z3*-fix1961 + z5
			z4 = z4*-fix0390 + z5
			tmp0 += z1 + z3
			tmp1 += z2 + z4
			tmp2 += z2 + z3
			tmp3 += z1 + z4
			if pass == 0 {
				sh = 13 - 2
			}
			out(0, descale(tmp10+tmp3, sh))
			out(7, descale(tmp10-tmp3, sh))
			out(1, descale(tmp11+tmp2, sh))
			out(6, descale(tmp11-tmp2, sh))
			out(2, descale(tmp12+tmp1, sh))
			out(5, descale(tmp12-tmp1, sh))
			out(3, descale(tmp13+tmp0, sh))
			out(4, descale(tmp13-tmp0, sh))
		}
	}
}

// fancyUp is libjpeg's h2v2_fancy_upsample: each output sample weighs the
// nearest input 9/16, the two next 3/16 each and the diagonal 1/16, with
// libjpeg's rounding; rows and columns past the edge repeat the edge.
// c is a ch×cw plane (row stride stride), out is h×w.
func fancyUp(c []int64, stride, ch, cw, h, w int) []int64 {
	out := make([]int64, h*w)
	at := func(y, x int) int64 { return c[min(max(y, 0), ch-1)*stride+x] }
	for y := 0; y < ch; y++ {
		for v := 0; v < 2; v++ {
			oy := 2*y + v
			if oy >= h {
				continue
			}
			ny := y - 1
			if v == 1 {
				ny = y + 1
			}
			col := func(x int) int64 { return at(y, x)*3 + at(ny, x) }
			row := make([]int64, 2*cw)
			if cw == 1 {
				t := col(0)
				row[0], row[1] = (t*4+8)>>4, (t*4+7)>>4
			} else {
				this, next := col(0), col(1)
				row[0] = (this*4 + 8) >> 4
				row[1] = (this*3 + next + 7) >> 4
				last := this
				this = next
				for x := 1; x < cw-1; x++ {
					next = col(x + 1)
					row[2*x] = (this*3 + last + 8) >> 4
					row[2*x+1] = (this*3 + next + 7) >> 4
					last, this = this, next
				}
				row[2*(cw-1)] = (this*3 + last + 8) >> 4
				row[2*(cw-1)+1] = (this*4 + 7) >> 4
			}
			copy(out[oy*w:(oy+1)*w], row[:w])
		}
	}
	return out
}
