#!/usr/bin/python3
"""Reference images for the benchmark corruptions (dataset/suite.go), made
once with the libraries the published CIFAR-10-C generator uses; the tests
need none of them.

    apt-get install python3-numpy python3-scipy python3-skimage python3-opencv python3-wand python3-pil
    /usr/bin/python3 testdata/engine/make_corruptions.py

Each corruption below follows Hendrycks & Dietterich's make_cifar_c.py
(the same parameters, the same library calls) with one change: its random
draws come in as arguments, drawn here from a seeded numpy generator and
saved, so the Go test can feed the very same draws to its implementation
and compare images. Writes testdata/engine/corrupt/ (gzipped .npy files):
input.npy.gz (a 32x32 RGB uint8 test image), and per corruption
NAME-S-out.npy.gz (the float result on the 0..255 scale, before the
benchmark's np.uint8) and NAME-S-K.npy.gz (the draws, in the order the
function takes them).
"""
import ctypes
import gzip
import os
from io import BytesIO

import cv2
import numpy as np
import skimage as sk
from PIL import Image as PILImage
from scipy.ndimage import map_coordinates
from scipy.ndimage import zoom as scizoom
from skimage.filters import gaussian
from wand.api import library as wandlibrary
from wand.image import Image as WandImage

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corrupt")

wandlibrary.MagickMotionBlurImage.argtypes = (ctypes.c_void_p, ctypes.c_double, ctypes.c_double, ctypes.c_double)


class MotionImage(WandImage):
    def motion_blur(self, radius=0.0, sigma=0.0, angle=0.0):
        wandlibrary.MagickMotionBlurImage(self.wand, radius, sigma, angle)


def disk(radius, alias_blur=0.1, dtype=np.float32):
    if radius <= 8:
        L = np.arange(-8, 8 + 1)
        ksize = (3, 3)
    else:
        L = np.arange(-radius, radius + 1)
        ksize = (5, 5)
    X, Y = np.meshgrid(L, L)
    aliased_disk = np.array((X ** 2 + Y ** 2) <= radius ** 2, dtype=dtype)
    aliased_disk /= np.sum(aliased_disk)
    return cv2.GaussianBlur(aliased_disk, ksize=ksize, sigmaX=alias_blur)


def plasma_fractal(u, mapsize=32, wibbledecay=3):
    """The published diamond-square, its np.random.uniform(-w, w, shape)
    replaced by -w + 2w·u with u taken in order from the draws."""
    it = iter(u)
    maparray = np.empty((mapsize, mapsize), dtype=np.float64)
    maparray[0, 0] = 0
    stepsize = mapsize
    wibble = 100

    def wibbledmean(array):
        uu = np.array([next(it) for _ in range(array.size)]).reshape(array.shape)
        return array / 4 + wibble * (-wibble + 2 * wibble * uu)

    def fillsquares():
        cornerref = maparray[0:mapsize:stepsize, 0:mapsize:stepsize]
        squareaccum = cornerref + np.roll(cornerref, shift=-1, axis=0)
        squareaccum += np.roll(squareaccum, shift=-1, axis=1)
        maparray[stepsize // 2:mapsize:stepsize, stepsize // 2:mapsize:stepsize] = wibbledmean(squareaccum)

    def filldiamonds():
        mapsize_ = maparray.shape[0]
        drgrid = maparray[stepsize // 2:mapsize_:stepsize, stepsize // 2:mapsize_:stepsize]
        ulgrid = maparray[0:mapsize_:stepsize, 0:mapsize_:stepsize]
        ldrsum = drgrid + np.roll(drgrid, 1, axis=0)
        lulsum = ulgrid + np.roll(ulgrid, -1, axis=1)
        ltsum = ldrsum + lulsum
        maparray[0:mapsize_:stepsize, stepsize // 2:mapsize_:stepsize] = wibbledmean(ltsum)
        tdrsum = drgrid + np.roll(drgrid, 1, axis=1)
        tulsum = ulgrid + np.roll(ulgrid, -1, axis=0)
        ttsum = tdrsum + tulsum
        maparray[stepsize // 2:mapsize_:stepsize, 0:mapsize_:stepsize] = wibbledmean(ttsum)

    while stepsize >= 2:
        fillsquares()
        filldiamonds()
        stepsize //= 2
        wibble /= wibbledecay
    maparray -= maparray.min()
    return maparray / maparray.max()


def clipped_zoom(img, zoom_factor):
    h = img.shape[0]
    ch = int(np.ceil(h / zoom_factor))
    top = (h - ch) // 2
    img = scizoom(img[top:top + ch, top:top + ch], (zoom_factor, zoom_factor, 1), order=1)
    trim_top = (img.shape[0] - h) // 2
    return img[trim_top:trim_top + h, trim_top:trim_top + h]


# Each takes the uint8 HWC image and its draws; returns the 0..255 float
# result (or uint8 where the published function returns an 8-bit image).

def gaussian_noise(x, s, n):
    c = [0.04, 0.06, .08, .09, .10][s - 1]
    x = np.array(x) / 255.
    return np.clip(x + c * n, 0, 1) * 255


def shot_noise(x, s, k):
    c = [500, 250, 100, 75, 50][s - 1]
    return np.clip(k / c, 0, 1) * 255


def impulse_noise(x, s, u1, u2):
    c = [.01, .02, .03, .05, .07][s - 1]
    out = np.array(x) / 255.
    flipped, salted = u1 <= c, u2 <= 0.5
    out[flipped & salted] = 1
    out[flipped & ~salted] = 0
    return np.clip(out, 0, 1) * 255


def speckle_noise(x, s, n):
    c = [.06, .1, .12, .16, .2][s - 1]
    x = np.array(x) / 255.
    return np.clip(x + x * (c * n), 0, 1) * 255


def gaussian_blur(x, s):
    c = [.4, .6, 0.7, .8, 1][s - 1]
    x = gaussian(np.array(x) / 255., sigma=c, multichannel=True)
    return np.clip(x, 0, 1) * 255


def glass_blur(x, s, shifts):
    c = [(0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)][s - 1]
    x = np.uint8(gaussian(np.array(x) / 255., sigma=c[0], multichannel=True) * 255)
    it = iter(shifts)
    for i in range(c[2]):
        for h in range(32 - c[1], c[1], -1):
            for w in range(32 - c[1], c[1], -1):
                dx, dy = int(next(it)), int(next(it))
                h_prime, w_prime = h + dy, w + dx
                x[h, w], x[h_prime, w_prime] = x[h_prime, w_prime], x[h, w]
    return np.clip(gaussian(x / 255., sigma=c[0], multichannel=True), 0, 1) * 255


def defocus_blur(x, s):
    c = [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)][s - 1]
    x = np.array(x) / 255.
    kernel = disk(radius=c[0], alias_blur=c[1])
    channels = [cv2.filter2D(x[:, :, d], -1, kernel) for d in range(3)]
    return np.clip(np.array(channels).transpose((1, 2, 0)), 0, 1) * 255


def motion_blur(x, s, angle):
    c = [(6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)][s - 1]
    output = BytesIO()
    PILImage.fromarray(x).save(output, format='PNG')
    x = MotionImage(blob=output.getvalue())
    x.motion_blur(radius=c[0], sigma=c[1], angle=float(angle[0]))
    x = cv2.imdecode(np.frombuffer(x.make_blob(), np.uint8), cv2.IMREAD_UNCHANGED)
    return np.clip(x[..., [2, 1, 0]], 0, 255)


def zoom_blur(x, s):
    c = [np.arange(1, 1.06, 0.01), np.arange(1, 1.11, 0.01), np.arange(1, 1.16, 0.01),
         np.arange(1, 1.21, 0.01), np.arange(1, 1.26, 0.01)][s - 1]
    x = (np.array(x) / 255.).astype(np.float32)
    out = np.zeros_like(x)
    for zoom_factor in c:
        out += clipped_zoom(x, zoom_factor)
    x = (x + out) / (len(c) + 1)
    return np.clip(x, 0, 1) * 255


def fog(x, s, u):
    c = [(.2, 3), (.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)][s - 1]
    x = np.array(x) / 255.
    max_val = x.max()
    x += c[0] * plasma_fractal(u, wibbledecay=c[1])[:32, :32][..., np.newaxis]
    return np.clip(x * max_val / (max_val + c[0]), 0, 1) * 255


def snow(x, s, n, angle):
    c = [(0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9), (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
         (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85), (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)][s - 1]
    x = np.array(x, dtype=np.float32) / 255.
    snow_layer = c[0] + c[1] * n.reshape(x.shape[:2])
    snow_layer = clipped_zoom(snow_layer[..., np.newaxis], c[2])
    snow_layer[snow_layer < c[3]] = 0
    snow_layer = PILImage.fromarray((np.clip(snow_layer.squeeze(), 0, 1) * 255).astype(np.uint8), mode='L')
    output = BytesIO()
    snow_layer.save(output, format='PNG')
    snow_layer = MotionImage(blob=output.getvalue())
    snow_layer.motion_blur(radius=c[4], sigma=c[5], angle=float(angle[0]))
    snow_layer = cv2.imdecode(np.frombuffer(snow_layer.make_blob(), np.uint8), cv2.IMREAD_UNCHANGED) / 255.
    snow_layer = snow_layer[..., np.newaxis]
    x = c[6] * x + (1 - c[6]) * np.maximum(x, cv2.cvtColor(x, cv2.COLOR_RGB2GRAY).reshape(32, 32, 1) * 1.5 + 0.5)
    return np.clip(x + snow_layer + np.rot90(snow_layer, k=2), 0, 1) * 255


def spatter(x, s, n):
    c = [(0.62, 0.1, 0.7, 0.7, 0.5, 0), (0.65, 0.1, 0.8, 0.7, 0.5, 0), (0.65, 0.3, 1, 0.69, 0.5, 0),
         (0.65, 0.1, 0.7, 0.69, 0.6, 1), (0.65, 0.1, 0.5, 0.68, 0.6, 1)][s - 1]
    x = np.array(x, dtype=np.float32) / 255.
    liquid_layer = c[0] + c[1] * n.reshape(x.shape[:2])
    liquid_layer = gaussian(liquid_layer, sigma=c[2])
    liquid_layer[liquid_layer < c[3]] = 0
    if c[5] == 0:
        liquid_layer = (liquid_layer * 255).astype(np.uint8)
        dist = 255 - cv2.Canny(liquid_layer, 50, 150)
        dist = cv2.distanceTransform(dist, cv2.DIST_L2, 5)
        _, dist = cv2.threshold(dist, 20, 20, cv2.THRESH_TRUNC)
        dist = cv2.blur(dist, (3, 3)).astype(np.uint8)
        dist = cv2.equalizeHist(dist)
        ker = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]])
        dist = cv2.filter2D(dist, cv2.CV_8U, ker)
        dist = cv2.blur(dist, (3, 3)).astype(np.float32)
        # The published cvtColor(liquid * dist, GRAY2BGRA) copies the gray
        # layer into every channel (it refuses float64 in this OpenCV).
        m = np.repeat((liquid_layer * dist)[..., np.newaxis], 3, axis=2)
        m /= np.max(m, axis=(0, 1))
        m *= c[4]
        color = np.concatenate((175 / 255. * np.ones_like(m[..., :1]), 238 / 255. * np.ones_like(m[..., :1]),
                                238 / 255. * np.ones_like(m[..., :1])), axis=2)
        return np.clip(x + m * color, 0, 1) * 255
    m = np.where(liquid_layer > c[3], 1, 0)
    m = gaussian(m.astype(np.float32), sigma=c[4])
    m[m < 0.8] = 0
    color = np.concatenate((63 / 255. * np.ones_like(x[..., :1]), 42 / 255. * np.ones_like(x[..., :1]),
                            20 / 255. * np.ones_like(x[..., :1])), axis=2)
    color *= m[..., np.newaxis]
    x *= (1 - m[..., np.newaxis])
    return np.clip(x + color, 0, 1) * 255


def contrast(x, s):
    c = [.75, .5, .4, .3, 0.15][s - 1]
    x = np.array(x) / 255.
    means = np.mean(x, axis=(0, 1), keepdims=True)
    return np.clip((x - means) * c + means, 0, 1) * 255


def brightness(x, s):
    c = [.05, .1, .15, .2, .3][s - 1]
    x = sk.color.rgb2hsv(np.array(x) / 255.)
    x[:, :, 2] = np.clip(x[:, :, 2] + c, 0, 1)
    return np.clip(sk.color.hsv2rgb(x), 0, 1) * 255


def saturate(x, s):
    c = [(0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)][s - 1]
    x = sk.color.rgb2hsv(np.array(x) / 255.)
    x[:, :, 1] = np.clip(x[:, :, 1] * c[0] + c[1], 0, 1)
    return np.clip(sk.color.hsv2rgb(x), 0, 1) * 255


def jpeg_compression(x, s):
    c = [80, 65, 58, 50, 40][s - 1]
    output = BytesIO()
    PILImage.fromarray(x).save(output, 'JPEG', quality=c)
    return np.array(PILImage.open(output))


def pixelate(x, s):
    c = [0.95, 0.9, 0.85, 0.75, 0.65][s - 1]
    x = PILImage.fromarray(x)
    x = x.resize((int(32 * c), int(32 * c)), PILImage.BOX)
    return np.array(x.resize((32, 32), PILImage.BOX))


def elastic_transform(image, s, ua, udx, udy):
    IMSIZE = 32
    c = [(IMSIZE * 0, IMSIZE * 0, IMSIZE * 0.08), (IMSIZE * 0.05, IMSIZE * 0.2, IMSIZE * 0.07),
         (IMSIZE * 0.08, IMSIZE * 0.06, IMSIZE * 0.06), (IMSIZE * 0.1, IMSIZE * 0.04, IMSIZE * 0.05),
         (IMSIZE * 0.1, IMSIZE * 0.03, IMSIZE * 0.03)][s - 1]
    image = np.array(image, dtype=np.float32) / 255.
    shape = image.shape
    shape_size = shape[:2]
    center_square = np.float32(shape_size) // 2
    square_size = min(shape_size) // 3
    pts1 = np.float32([center_square + square_size, [center_square[0] + square_size, center_square[1] - square_size],
                       center_square - square_size])
    pts2 = pts1 + (-c[2] + 2 * c[2] * ua.reshape(pts1.shape)).astype(np.float32)
    M = cv2.getAffineTransform(pts1, pts2)
    image = cv2.warpAffine(image, M, shape_size[::-1], borderMode=cv2.BORDER_REFLECT_101)
    dx = (gaussian(-1 + 2 * udx.reshape(shape[:2]), c[1], mode='reflect', truncate=3) * c[0]).astype(np.float32)
    dy = (gaussian(-1 + 2 * udy.reshape(shape[:2]), c[1], mode='reflect', truncate=3) * c[0]).astype(np.float32)
    dx, dy = dx[..., np.newaxis], dy[..., np.newaxis]
    x, y, z = np.meshgrid(np.arange(shape[1]), np.arange(shape[0]), np.arange(shape[2]))
    indices = np.reshape(y + dy, (-1, 1)), np.reshape(x + dx, (-1, 1)), np.reshape(z, (-1, 1))
    return np.clip(map_coordinates(image, indices, order=1, mode='reflect').reshape(shape), 0, 1) * 255


def save(name, a):
    """np.save into a gzip member with no name or time, so reruns are byte-identical."""
    buf = BytesIO()
    np.save(buf, a)
    with open(os.path.join(OUT, name + ".gz"), "wb") as f:
        with gzip.GzipFile(fileobj=f, mode="wb", filename="", mtime=0) as g:
            g.write(buf.getvalue())


def test_image():
    """A 32x32 RGB uint8 image with smooth shading, edges and texture."""
    r = np.random.RandomState(0)
    yy, xx = np.mgrid[0:32, 0:32] / 31.0
    img = np.stack([0.2 + 0.6 * xx, 0.3 + 0.5 * yy, 0.5 + 0.3 * np.sin(6 * xx * yy)], axis=-1)
    img[8:20, 10:24] = [0.9, 0.2, 0.1]
    img[22:28, 4:14] = [0.05, 0.1, 0.6]
    img += 0.05 * r.standard_normal(img.shape)
    return np.uint8(np.clip(img, 0, 1) * 255)


def main():
    os.makedirs(OUT, exist_ok=True)
    x = test_image()
    save("input.npy", x)
    g = np.random.RandomState(12345)
    hw, n = 32 * 32, 32 * 32 * 3
    draws = {
        "gaussian_noise": lambda s: [g.standard_normal(n)],
        "shot_noise": lambda s: [g.poisson(x.reshape(-1) / 255. * [500, 250, 100, 75, 50][s - 1]).astype(np.float64)],
        "impulse_noise": lambda s: [g.random_sample(n), g.random_sample(n)],
        "speckle_noise": lambda s: [g.standard_normal(n)],
        "glass_blur": lambda s: [g.randint(-1, 1, size=2 * 30 * 30 * [1, 1, 1, 2, 2][s - 1]).astype(np.float64)],
        "motion_blur": lambda s: [g.uniform(-45, 45, size=1)],
        "fog": lambda s: [g.random_sample(3 * (1 + 4 + 16 + 64 + 256))],
        "snow": lambda s: [g.standard_normal(hw), g.uniform(-135, -45, size=1)],
        "spatter": lambda s: [g.standard_normal(hw)],
        "elastic_transform": lambda s: [g.random_sample(6), g.random_sample(hw), g.random_sample(hw)],
    }
    funcs = {f.__name__: f for f in [gaussian_noise, shot_noise, impulse_noise, speckle_noise, gaussian_blur, glass_blur,
                                     defocus_blur, motion_blur, zoom_blur, fog, snow, spatter, contrast, brightness,
                                     saturate, jpeg_compression, pixelate, elastic_transform]}
    for name, f in funcs.items():
        for s in range(1, 6):
            d = draws.get(name, lambda s: [])(s)
            out = f(x.copy(), s, *[a.reshape(x.shape) if a.size == n and name in ("gaussian_noise", "impulse_noise", "speckle_noise", "shot_noise") else a for a in d])
            save("%s-%d-out.npy" % (name, s), np.asarray(out, dtype=np.float64))
            for k, a in enumerate(d):
                save("%s-%d-%d.npy" % (name, s, k), np.asarray(a, dtype=np.float64))
    print("wrote", OUT)


if __name__ == "__main__":
    main()
