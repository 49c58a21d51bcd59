package dataset

import "math"

// ---- digital ----

func (x *hwc) contrastSev(s int) {
	c := []float64{.75, .5, .4, .3, 0.15}[s-1]
	for ch := 0; ch < 3; ch++ {
		var m float64
		for p := 0; p < x.h*x.w; p++ {
			m += x.v[p*3+ch]
		}
		m /= float64(x.h * x.w)
		for p := 0; p < x.h*x.w; p++ {
			x.v[p*3+ch] = (x.v[p*3+ch]-m)*c + m
		}
	}
	x.clip()
}

// rgb2hsv and hsv2rgb are skimage's conversions.
func rgb2hsv(r, g, b float64) (h, s, v float64) {
	v = math.Max(r, math.Max(g, b))
	delta := v - math.Min(r, math.Min(g, b))
	if delta == 0 {
		return 0, 0, v
	}
	s = delta / v
	// skimage assigns red, green, blue in turn, so on ties the last wins.
	switch {
	case b == v:
		h = 4 + (r-g)/delta
	case g == v:
		h = 2 + (b-r)/delta
	default:
		h = (g - b) / delta
	}
	h = math.Mod(h/6, 1)
	if h < 0 {
		h++
	}
	return h, s, v
}

func hsv2rgb(h, s, v float64) (r, g, b float64) {
	hi := math.Floor(h * 6)
	f := h*6 - hi
	p := v * (1 - s)
	q := v * (1 - f*s)
	t := v * (1 - (1-f)*s)
	switch int(math.Mod(hi, 6)) {
	case 0:
		return v, t, p
	case 1:
		return q, v, p
	case 2:
		return p, v, t
	case 3:
		return p, q, v
	case 4:
		return t, p, v
	}
	return v, p, q
}

func (x *hwc) hsvMap(f func(h, s, v float64) (float64, float64, float64)) {
	for p := 0; p < x.h*x.w; p++ {
		q := x.v[p*3 : p*3+3]
		h, s, v := f(rgb2hsv(q[0], q[1], q[2]))
		q[0], q[1], q[2] = hsv2rgb(h, s, v)
	}
	x.clip()
}

func (x *hwc) brightnessSev(s int) {
	c := []float64{.05, .1, .15, .2, .3}[s-1]
	x.hsvMap(func(h, s, v float64) (float64, float64, float64) { return h, s, min(max(v+c, 0), 1) })
}

func (x *hwc) saturate(s int) {
	c := [][2]float64{{0.3, 0}, {0.1, 0}, {1.5, 0}, {2, 0.1}, {2.5, 0.2}}[s-1]
	x.hsvMap(func(h, s, v float64) (float64, float64, float64) { return h, min(max(s*c[0]+c[1], 0), 1), v })
}

// boxResize is PIL's Image.resize with the BOX filter on 8-bit channels:
// the horizontal pass, rounded to 8 bits, then the vertical pass, with
// PIL's fixed-point coefficients (22 fractional bits).
func boxResize(v []float64, h, w, c, oh, ow int) []float64 {
	coeffs := func(in, out int) ([]int, [][]int32) {
		scale := float64(in) / float64(out)
		filterscale := math.Max(scale, 1)
		support := 0.5 * filterscale
		ss := 1 / filterscale
		bounds := make([]int, 2*out)
		ks := make([][]int32, out)
		for xx := 0; xx < out; xx++ {
			center := (float64(xx) + 0.5) * scale
			xmin := max(int(center-support+0.5), 0)
			xmax := min(int(center+support+0.5), in) - xmin
			wts := make([]float64, xmax)
			var ww float64
			for i := range wts {
				t := (float64(i+xmin) - center + 0.5) * ss
				if t >= -0.5 && t < 0.5 {
					wts[i] = 1
				}
				ww += wts[i]
			}
			k := make([]int32, xmax)
			for i := range wts {
				if ww != 0 {
					wts[i] /= ww
				}
				f := wts[i] * (1 << 22)
				if f < 0 {
					k[i] = int32(-0.5 + f)
				} else {
					k[i] = int32(0.5 + f)
				}
			}
			bounds[2*xx], bounds[2*xx+1] = xmin, xmax
			ks[xx] = k
		}
		return bounds, ks
	}
	clip8 := func(ss int64) float64 {
		v := ss >> 22
		return float64(min(max(v, 0), 255))
	}
	hb, hk := coeffs(w, ow)
	tmp := make([]float64, h*ow*c)
	for y := 0; y < h; y++ {
		for xx := 0; xx < ow; xx++ {
			for ch := 0; ch < c; ch++ {
				ss := int64(1 << 21)
				for i, k := range hk[xx] {
					ss += int64(v[(y*w+hb[2*xx]+i)*c+ch]) * int64(k)
				}
				tmp[(y*ow+xx)*c+ch] = clip8(ss)
			}
		}
	}
	vb, vk := coeffs(h, oh)
	out := make([]float64, oh*ow*c)
	for yy := 0; yy < oh; yy++ {
		for xx := 0; xx < ow; xx++ {
			for ch := 0; ch < c; ch++ {
				ss := int64(1 << 21)
				for i, k := range vk[yy] {
					ss += int64(tmp[((vb[2*yy]+i)*ow+xx)*c+ch]) * int64(k)
				}
				out[(yy*ow+xx)*c+ch] = clip8(ss)
			}
		}
	}
	return out
}

func (x *hwc) pixelateSev(s int) {
	c := []float64{0.95, 0.9, 0.85, 0.75, 0.65}[s-1]
	u8 := make([]float64, len(x.v))
	for i, v := range x.v {
		u8[i] = math.Round(v * 255)
	}
	sh, sw := int(float64(x.h)*c), int(float64(x.w)*c)
	small := boxResize(u8, x.h, x.w, 3, sh, sw)
	x.v = boxResize(small, sh, sw, 3, x.h, x.w)
	x.bytes = true
}

// ---- geometric ----

// elastic: a random affine warp of three points (OpenCV warpAffine,
// bilinear on a 1/32 grid, BORDER_REFLECT_101), then a smooth random
// displacement field (Gaussian-filtered uniforms, scipy map_coordinates,
// order 1, "reflect").
func (x *hwc) elastic(s int, ua, udx, udy []float64) {
	size := float64(min(x.h, x.w))
	p := [][3]float64{{0, 0, 0.08}, {0.05, 0.2, 0.07}, {0.08, 0.06, 0.06}, {0.1, 0.04, 0.05}, {0.1, 0.03, 0.03}}[s-1]
	alpha, sigma, aff := size*p[0], size*p[1], size*p[2]
	// float32 arithmetic for the points, as the published code.
	cy, cx := float32(math.Floor(float64(x.h)/2)), float32(math.Floor(float64(x.w)/2))
	sq := float32(min(x.h, x.w) / 3)
	pts1 := [3][2]float32{{cy + sq, cx + sq}, {cy + sq, cx - sq}, {cy - sq, cx - sq}}
	var pts2 [3][2]float32
	for i := 0; i < 3; i++ {
		for j := 0; j < 2; j++ {
			d := float32(-aff + 2*aff*ua[i*2+j])
			pts2[i][j] = pts1[i][j] + d
		}
	}
	M := affineFrom(pts1, pts2)
	img := make([]float64, len(x.v))
	for i, v := range x.v {
		img[i] = float64(float32(math.Round(v*255)) / 255) // np.float32 image / 255.
	}
	warped := warpAffine(img, x.h, x.w, 3, M)
	field := func(u []float64) []float64 {
		f := make([]float64, len(u))
		for i, v := range u {
			f[i] = -1 + 2*v
		}
		gaussianFilter(f, x.h, x.w, 1, sigma, 3, "reflect")
		for i := range f {
			f[i] = float64(float32(f[i] * alpha))
		}
		return f
	}
	dx, dy := field(udx), field(udy)
	out := make([]float64, len(x.v))
	for y := 0; y < x.h; y++ {
		for i := 0; i < x.w; i++ {
			// int + float32 arrays promote to float64 in numpy.
			fy := float64(y) + dy[y*x.w+i]
			fx := float64(i) + dx[y*x.w+i]
			for ch := 0; ch < 3; ch++ {
				// map_coordinates keeps the float32 image's dtype.
				out[(y*x.w+i)*3+ch] = float64(float32(mapLinearReflect(warped, x.h, x.w, 3, ch, fy, fx)))
			}
		}
	}
	x.v = out
	x.clip()
	x.f32 = true
}

// affineFrom is OpenCV's getAffineTransform: the 2×3 matrix taking the
// three (row, col) points of src to dst, solved in float64 on (x, y).
func affineFrom(src, dst [3][2]float32) [6]float64 {
	// OpenCV takes points as (x, y); the published code passes
	// (row-ish, col-ish) pairs in its own order, used as (x, y) as given.
	var a [6][6]float64
	var b [6]float64
	for i := 0; i < 3; i++ {
		sx, sy := float64(src[i][0]), float64(src[i][1])
		a[2*i] = [6]float64{sx, sy, 1, 0, 0, 0}
		a[2*i+1] = [6]float64{0, 0, 0, sx, sy, 1}
		b[2*i], b[2*i+1] = float64(dst[i][0]), float64(dst[i][1])
	}
	// Gaussian elimination with partial pivoting (OpenCV: DECOMP_LU).
	for col := 0; col < 6; col++ {
		piv := col
		for r := col + 1; r < 6; r++ {
			if math.Abs(a[r][col]) > math.Abs(a[piv][col]) {
				piv = r
			}
		}
		a[col], a[piv] = a[piv], a[col]
		b[col], b[piv] = b[piv], b[col]
		for r := col + 1; r < 6; r++ {
			f := a[r][col] / a[col][col]
			for k := col; k < 6; k++ {
				a[r][k] -= f * a[col][k]
			}
			b[r] -= f * b[col]
		}
	}
	var m [6]float64
	for r := 5; r >= 0; r-- {
		s := b[r]
		for k := r + 1; k < 6; k++ {
			s -= a[r][k] * m[k]
		}
		m[r] = s / a[r][r]
	}
	return m
}

// warpAffine is OpenCV's warpAffine (INTER_LINEAR, BORDER_REFLECT_101):
// output (x, y) samples the input at M⁻¹… — OpenCV inverts M and maps
// each output pixel through it, with coordinates in 10-bit fixed point
// cut to a 1/32 grid for the bilinear weights.
func warpAffine(v []float64, h, w, c int, M [6]float64) []float64 {
	// Invert the 2×3 matrix.
	d := M[0]*M[4] - M[1]*M[3]
	if d != 0 {
		d = 1 / d
	}
	a11, a22 := M[4]*d, M[0]*d
	a12, a21 := -M[1]*d, -M[3]*d
	b1 := -a11*M[2] - a12*M[5]
	b2 := -a21*M[2] - a22*M[5]
	const abBits, abScale, interBits, tab = 10, 1 << 10, 5, 32
	round := func(f float64) int { return int(math.RoundToEven(f)) }
	out := make([]float64, len(v))
	for y := 0; y < h; y++ {
		const roundDelta = abScale / tab / 2
		X0 := round((a12*float64(y)+b1)*abScale) + roundDelta
		Y0 := round((a22*float64(y)+b2)*abScale) + roundDelta
		for i := 0; i < w; i++ {
			adx, ady := round(a11*float64(i)*abScale), round(a21*float64(i)*abScale)
			X := (X0 + adx) >> (abBits - interBits)
			Y := (Y0 + ady) >> (abBits - interBits)
			ix, iy := X>>interBits, Y>>interBits
			fx := float64(X&(tab-1)) / tab
			fy := float64(Y&(tab-1)) / tab
			for ch := 0; ch < c; ch++ {
				px := func(yy, xx int) float64 {
					return v[(reflect101(yy, h)*w+reflect101(xx, w))*c+ch]
				}
				w00, w01 := float32((1-fy)*(1-fx)), float32((1-fy)*fx)
				w10, w11 := float32(fy*(1-fx)), float32(fy*fx)
				// float32 arithmetic, as OpenCV's remap of a float image.
				t0 := float32(float32(px(iy, ix))*w00) + float32(float32(px(iy, ix+1))*w01)
				t1 := float32(float32(px(iy+1, ix))*w10) + float32(float32(px(iy+1, ix+1))*w11)
				out[(y*w+i)*c+ch] = float64(t0 + t1)
			}
		}
	}
	return out
}

// mapLinearReflect is scipy's map_coordinates, order 1, mode "reflect",
// at (y, x) of one channel.
func mapLinearReflect(v []float64, h, w, c, ch int, y, x float64) float64 {
	y0, x0 := math.Floor(y), math.Floor(x)
	fy, fx := y-y0, x-x0
	iy, ix := int(y0), int(x0)
	px := func(yy, xx int) float64 { return v[(reflectIndex(yy, h)*w+reflectIndex(xx, w))*c+ch] }
	return (1-fy)*((1-fx)*px(iy, ix)+fx*px(iy, ix+1)) + fy*((1-fx)*px(iy+1, ix)+fx*px(iy+1, ix+1))
}
