package dataset

import "math"

// ---- spatter and JPEG ----

var spatterParams = [][6]float64{
	{0.62, 0.1, 0.7, 0.7, 0.5, 0},
	{0.65, 0.1, 0.8, 0.7, 0.5, 0},
	{0.65, 0.3, 1, 0.69, 0.5, 0},
	{0.65, 0.1, 0.7, 0.69, 0.6, 1},
	{0.65, 0.1, 0.5, 0.68, 0.6, 1},
}

// spatter: a thresholded, smoothed Gaussian "liquid" layer; at
// severities 1–3 water (edges of the liquid found by OpenCV's Canny,
// their distance transform, equalised and embossed) tinted pale
// turquoise is added, at 4–5 mud darkens the image where the layer is.
func (x *hwc) spatter(s int, n []float64) {
	c := spatterParams[s-1]
	h, w := x.h, x.w
	liquid := make([]float64, h*w)
	for i := range liquid {
		liquid[i] = c[0] + c[1]*n[i]
	}
	gaussianFilter(liquid, h, w, 1, c[2], 4, "nearest")
	for i, v := range liquid {
		if v < c[3] {
			liquid[i] = 0
		}
	}
	if c[5] == 0 {
		u8 := make([]uint8, h*w)
		for i, v := range liquid {
			// (liquid·255).astype(uint8) without a clip: numpy wraps the few
			// values past 1 around modulo 256, and so do the published images.
			u8[i] = uint8(int64(v * 255))
		}
		edges := canny(u8, h, w, 50, 150)
		for i, e := range edges {
			edges[i] = 255 - e
		}
		dist := distance5(edges, h, w)
		for i, v := range dist {
			dist[i] = float32(math.Min(float64(v), 20))
		}
		b := boxBlur3(dist, h, w)
		d8 := make([]uint8, h*w)
		for i, v := range b {
			d8[i] = uint8(v)
		}
		d8 = equalizeHist(d8)
		d8 = emboss(d8, h, w)
		bb := boxBlur3u8(d8, h, w)
		// float32 from here, as numpy: the 8-bit liquid (it replaced the
		// float layer) times the distance layer, normalised, tinted.
		m := make([]float32, h*w)
		var mx float32
		for i := range m {
			m[i] = float32(u8[i]) * float32(bb[i])
			mx = max(mx, m[i])
		}
		color := [3]float32{float32(175 / 255.), float32(238 / 255.), float32(238 / 255.)}
		for p := 0; p < h*w; p++ {
			var mv float32
			if mx > 0 {
				mv = m[p] / mx * float32(c[4])
			}
			for ch := 0; ch < 3; ch++ {
				xv := float32(math.Round(x.v[p*3+ch]*255)) / 255 // np.float32 image / 255.
				x.v[p*3+ch] = float64(xv + mv*color[ch])
			}
		}
		x.clip()
		x.f32 = true
		return
	}
	m := make([]float64, h*w)
	for i, v := range liquid {
		if v > c[3] {
			m[i] = 1
		}
	}
	gaussianFilter(m, h, w, 1, c[4], 4, "nearest")
	for i := range m {
		m[i] = float64(float32(m[i]))
		if m[i] < 0.8 {
			m[i] = 0
		}
	}
	mud := [3]float64{63 / 255., 42 / 255., 20 / 255.}
	for p := 0; p < h*w; p++ {
		for ch := 0; ch < 3; ch++ {
			x.v[p*3+ch] = x.v[p*3+ch]*(1-m[p]) + mud[ch]*m[p]
		}
	}
	x.clip()
}

// canny is OpenCV's Canny (3×3 Sobel with replicated borders, L1
// magnitude, non-maximum suppression by the 22.5°/67.5° sectors,
// hysteresis over 8-neighbours): 255 on edges, 0 elsewhere.
func canny(src []uint8, h, w int, low, high int) []uint8 {
	at := func(y, x int) int { return int(src[min(max(y, 0), h-1)*w+min(max(x, 0), w-1)]) }
	dx, dy, mag := make([]int, h*w), make([]int, h*w), make([]int, h*w)
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			gx := (at(y-1, x+1) + 2*at(y, x+1) + at(y+1, x+1)) - (at(y-1, x-1) + 2*at(y, x-1) + at(y+1, x-1))
			gy := (at(y+1, x-1) + 2*at(y+1, x) + at(y+1, x+1)) - (at(y-1, x-1) + 2*at(y-1, x) + at(y-1, x+1))
			dx[y*w+x], dy[y*w+x] = gx, gy
			mag[y*w+x] = abs(gx) + abs(gy)
		}
	}
	m := func(y, x int) int {
		if y < 0 || y >= h || x < 0 || x >= w {
			return 0
		}
		return mag[y*w+x]
	}
	const shift = 15
	tg22 := 13573               // (int)(tan(22.5°)·2^15 + 0.5), as OpenCV
	state := make([]uint8, h*w) // 0 none, 1 weak, 2 strong
	var stack []int
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			v := mag[y*w+x]
			if v <= low {
				continue
			}
			xs, ys := abs(dx[y*w+x]), abs(dy[y*w+x])<<shift
			tg22x := xs * tg22
			keep := false
			if ys < tg22x {
				keep = v > m(y, x-1) && v >= m(y, x+1)
			} else if tg67x := tg22x + xs<<(shift+1); ys > tg67x {
				keep = v > m(y-1, x) && v >= m(y+1, x)
			} else {
				s := 1
				if (dx[y*w+x] ^ dy[y*w+x]) < 0 {
					s = -1
				}
				keep = v > m(y-1, x-s) && v > m(y+1, x+s)
			}
			if !keep {
				continue
			}
			if v > high {
				state[y*w+x] = 2
				stack = append(stack, y*w+x)
			} else {
				state[y*w+x] = 1
			}
		}
	}
	for len(stack) > 0 {
		p := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		y, x := p/w, p%w
		for dy := -1; dy <= 1; dy++ {
			for dx := -1; dx <= 1; dx++ {
				yy, xx := y+dy, x+dx
				if yy >= 0 && yy < h && xx >= 0 && xx < w && state[yy*w+xx] == 1 {
					state[yy*w+xx] = 2
					stack = append(stack, yy*w+xx)
				}
			}
		}
	}
	out := make([]uint8, h*w)
	for i, s := range state {
		if s == 2 {
			out[i] = 255
		}
	}
	return out
}

func abs(v int) int {
	if v < 0 {
		return -v
	}
	return v
}

// distance5 is OpenCV's distanceTransform(DIST_L2, 5): the 5×5 chamfer
// distance to the nearest zero pixel (weights 1, 1.4, 2.1969 in 16-bit
// fixed point), pixels outside the image never zero.
func distance5(src []uint8, h, w int) []float32 {
	const (
		a   = 65536
		b   = 91750
		c   = 143976
		inf = math.MaxInt32 / 2
	)
	d := make([]int, h*w)
	get := func(y, x int) int {
		if y < 0 || y >= h || x < 0 || x >= w {
			return inf
		}
		return d[y*w+x]
	}
	for i, v := range src {
		if v == 0 {
			d[i] = 0
		} else {
			d[i] = inf
		}
	}
	fwd := [][3]int{{-2, -1, c}, {-2, 1, c}, {-1, -2, c}, {-1, -1, b}, {-1, 0, a}, {-1, 1, b}, {-1, 2, c}, {0, -1, a}}
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			if d[y*w+x] == 0 {
				continue
			}
			best := d[y*w+x]
			for _, o := range fwd {
				best = min(best, get(y+o[0], x+o[1])+o[2])
			}
			d[y*w+x] = best
		}
	}
	for y := h - 1; y >= 0; y-- {
		for x := w - 1; x >= 0; x-- {
			if d[y*w+x] == 0 {
				continue
			}
			best := d[y*w+x]
			for _, o := range fwd {
				best = min(best, get(y-o[0], x-o[1])+o[2])
			}
			d[y*w+x] = best
		}
	}
	out := make([]float32, h*w)
	for i, v := range d {
		out[i] = float32(v) * (1.0 / 65536)
	}
	return out
}

// boxBlur3 is cv2.blur(·, (3, 3)) on float32 (BORDER_REFLECT_101).
func boxBlur3(v []float32, h, w int) []float32 {
	out := make([]float32, h*w)
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			var s float32
			for dy := -1; dy <= 1; dy++ {
				for dx := -1; dx <= 1; dx++ {
					s += v[reflect101(y+dy, h)*w+reflect101(x+dx, w)]
				}
			}
			out[y*w+x] = s * (1.0 / 9)
		}
	}
	return out
}

// boxBlur3u8 is cv2.blur(·, (3, 3)) on 8 bits: the mean, rounded.
func boxBlur3u8(v []uint8, h, w int) []uint8 {
	out := make([]uint8, h*w)
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			s := 0
			for dy := -1; dy <= 1; dy++ {
				for dx := -1; dx <= 1; dx++ {
					s += int(v[reflect101(y+dy, h)*w+reflect101(x+dx, w)])
				}
			}
			out[y*w+x] = uint8(math.RoundToEven(float64(s) / 9))
		}
	}
	return out
}

// equalizeHist is OpenCV's equalizeHist.
func equalizeHist(v []uint8) []uint8 {
	var hist [256]int
	for _, p := range v {
		hist[p]++
	}
	i := 0
	for hist[i] == 0 {
		i++
	}
	out := make([]uint8, len(v))
	if hist[i] == len(v) {
		for j := range out {
			out[j] = uint8(i)
		}
		return out
	}
	var lut [256]uint8
	scale := float32(255) / float32(len(v)-hist[i])
	sum := 0
	for i++; i < 256; i++ {
		sum += hist[i]
		lut[i] = uint8(min(max(math.RoundToEven(float64(float32(sum)*scale)), 0), 255))
	}
	for j, p := range v {
		out[j] = lut[p]
	}
	return out
}

// emboss is the published filter2D with [[-2,-1,0],[-1,1,1],[0,1,2]] to
// 8 bits (rounded, saturated; BORDER_REFLECT_101).
func emboss(v []uint8, h, w int) []uint8 {
	k := [3][3]int{{-2, -1, 0}, {-1, 1, 1}, {0, 1, 2}}
	out := make([]uint8, h*w)
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			s := 0
			for dy := -1; dy <= 1; dy++ {
				for dx := -1; dx <= 1; dx++ {
					s += k[dy+1][dx+1] * int(v[reflect101(y+dy, h)*w+reflect101(x+dx, w)])
				}
			}
			out[y*w+x] = uint8(min(max(s, 0), 255))
		}
	}
	return out
}
