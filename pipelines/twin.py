"""Pure numpy/Python twins of the compiled kernel, written forwards (op after op) for the tests.

The kernel traces each output pixel back through all ops at once; these functions apply one
op after the other, the way the ops are specified. Integer ops (crop+resize, flip,
translation) must match the kernel bitwise. Colour jitter is float64 arithmetic in the same
order in both; only the contrast mean is summed differently (sequentially in the kernel,
pairwise in numpy), so results may differ by one grey level where a value lands within
~1e-12 of a rounding boundary (see ``JITTER_TOLERANCE``).
"""
from __future__ import annotations

import numpy as np

from pipelines.augment import AugmentConfig

MASK = (1 << 64) - 1
GOLDEN, MUL1, MUL2 = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB
SALT_TRANSLATE, SALT_FLIP, SALT_CROP, SALT_JITTER = 1, 2, 3, 4

# Colour jitter: at most one grey level apart, on at most this fraction of pixels.
JITTER_TOLERANCE = {"max_abs": 1, "max_fraction": 1e-3}


def mix64(x: int) -> int:
    z = (x + GOLDEN) & MASK
    z = ((z ^ (z >> 30)) * MUL1) & MASK
    z = ((z ^ (z >> 27)) * MUL2) & MASK
    return z ^ (z >> 31)


def sample_state(key: int, salt: int, epoch: int, index: int) -> int:
    return mix64(mix64(mix64(key ^ salt) ^ epoch) ^ index)


def bits(state: int, k: int) -> int:
    return mix64((state + k * GOLDEN) & MASK)


def randint(state: int, k: int, n: int) -> int:
    return bits(state, k) % n


def uniform(state: int, k: int) -> float:
    return (bits(state, k) >> 11) * 2.0 ** -53


def draws(key: int, epoch: int, index: int, cfg: AugmentConfig, shape) -> dict:
    """Every random choice for one sample, named."""
    h, w = shape[0], shape[1]
    out = {"ty": 0, "tx": 0, "flip": False, "cy": 0, "cx": 0, "factors": [1.0, 1.0, 1.0, 0.0],
           "order": [0, 1, 2, 3]}
    if cfg.translate > 0:
        st = sample_state(key, SALT_TRANSLATE, epoch, index)
        out["ty"] = randint(st, 0, 2 * cfg.translate + 1) - cfg.translate
        out["tx"] = randint(st, 1, 2 * cfg.translate + 1) - cfg.translate
    if cfg.flip_prob > 0:
        out["flip"] = uniform(sample_state(key, SALT_FLIP, epoch, index), 0) < cfg.flip_prob
    if cfg.crop_size > 0:
        st = sample_state(key, SALT_CROP, epoch, index)
        out["cy"] = randint(st, 0, h - cfg.crop_size + 1)
        out["cx"] = randint(st, 1, w - cfg.crop_size + 1)
    if cfg.jitter:
        st = sample_state(key, SALT_JITTER, epoch, index)
        ranges = [(max(0.0, 1.0 - cfg.brightness), 1.0 + cfg.brightness),
                  (max(0.0, 1.0 - cfg.contrast), 1.0 + cfg.contrast),
                  (max(0.0, 1.0 - cfg.saturation), 1.0 + cfg.saturation), (-cfg.hue, cfg.hue)]
        out["factors"] = [lo + (hi - lo) * uniform(st, j) for j, (lo, hi) in enumerate(ranges)]
        order = [0, 1, 2, 3]
        for j in range(3, 0, -1):
            r = randint(st, 7 - j, j + 1)
            order[j], order[r] = order[r], order[j]
        out["order"] = order
    return out


def lerp_taps(size: int, out_len: int):
    """Integer bilinear taps with half-pixel centres (same definition as the kernel's)."""
    den = 2 * out_len
    num = np.maximum((2 * np.arange(out_len) + 1) * size - out_len, 0)
    i0 = num // den
    return i0, np.minimum(i0 + 1, size - 1), num - i0 * den, den


def crop_resize(img: np.ndarray, cy: int, cx: int, size: int) -> np.ndarray:
    """(C, H, W) uint8: the size x size crop at (cy, cx), resized back to H x W."""
    c, h, w = img.shape
    crop = img[:, cy:cy + size, cx:cx + size].astype(np.int64)
    y0, y1, wy1, dy = lerp_taps(size, h)
    x0, x1, wx1, dx = lerp_taps(size, w)
    wy0, wx0 = (dy - wy1)[:, None], dx - wx1
    wy1 = wy1[:, None]
    top = wx0 * crop[:, y0][:, :, x0] + wx1 * crop[:, y0][:, :, x1]
    bot = wx0 * crop[:, y1][:, :, x0] + wx1 * crop[:, y1][:, :, x1]
    den = dy * dx
    return ((wy0 * top + wy1 * bot + den // 2) // den).astype(np.uint8)


def flip(img: np.ndarray) -> np.ndarray:
    return img[:, :, ::-1].copy()


def translate(img: np.ndarray, ty: int, tx: int, fill: int) -> np.ndarray:
    """out[y, x] = img[y + ty, x + tx], ``fill`` where that falls outside the image."""
    c, h, w = img.shape
    out = np.full_like(img, fill)
    ys, xs = slice(max(0, -ty), min(h, h - ty)), slice(max(0, -tx), min(w, w - tx))
    out[:, ys, xs] = img[:, max(0, ty):min(h, h + ty), max(0, tx):min(w, w + tx)]
    return out


def _grey(buf: np.ndarray) -> np.ndarray:
    return 0.299 * buf[0] + 0.587 * buf[1] + 0.114 * buf[2] if buf.shape[0] == 3 else buf[0]


def _shift_hue(buf: np.ndarray, shift: float) -> np.ndarray:
    r, g, b = buf
    maxc, minc = buf.max(axis=0), buf.min(axis=0)
    cr = maxc - minc
    safe_cr, safe_max = np.where(cr == 0, 1.0, cr), np.where(maxc == 0, 1.0, maxc)
    s = cr / safe_max
    rc, gc, bc = (maxc - r) / safe_cr, (maxc - g) / safe_cr, (maxc - b) / safe_cr
    hh = np.where(maxc == r, bc - gc, np.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    hh = hh / 6.0 + shift
    hh = hh - np.floor(hh)
    i6 = np.floor(hh * 6.0)
    f = hh * 6.0 - i6
    i = i6.astype(np.int64) % 6
    p, q, t = maxc * (1.0 - s), maxc * (1.0 - s * f), maxc * (1.0 - s * (1.0 - f))
    v = maxc
    out = np.stack([np.select([i == k for k in range(6)], chan) for chan in
                    ([v, q, p, p, t, v], [t, v, v, q, p, p], [p, p, t, v, v, q])])
    return np.where(cr == 0, buf, out)


def color_jitter(img: np.ndarray, factors, order) -> np.ndarray:
    """(C, H, W) uint8, ops applied in ``order`` (0 brightness, 1 contrast, 2 saturation, 3 hue)."""
    buf = img.astype(np.float64)
    b, c, s, h = factors
    for op in order:
        if op == 0:
            buf = np.clip(buf * b, 0.0, 255.0)
        elif op == 1:
            buf = np.clip(c * buf + (1.0 - c) * _grey(buf).mean(), 0.0, 255.0)
        elif op == 2 and buf.shape[0] == 3:
            buf = np.clip(s * buf + (1.0 - s) * _grey(buf)[None], 0.0, 255.0)
        elif op == 3 and buf.shape[0] == 3:
            buf = _shift_hue(buf, h)
    return np.clip(np.floor(buf + 0.5), 0.0, 255.0).astype(np.uint8)


def augment_one(img_hwc: np.ndarray, index: int, key: int, epoch: int, cfg: AugmentConfig) -> np.ndarray:
    """One (H, W, C) uint8 image -> (C, H, W) uint8, op after op."""
    d = draws(key, epoch, int(index), cfg, img_hwc.shape)
    img = np.ascontiguousarray(img_hwc.transpose(2, 0, 1))
    if cfg.crop_size > 0:
        img = crop_resize(img, d["cy"], d["cx"], cfg.crop_size)
    if d["flip"]:
        img = flip(img)
    if cfg.translate > 0:
        img = translate(img, d["ty"], d["tx"], cfg.fill)
    if cfg.jitter:
        img = color_jitter(img, d["factors"], d["order"])
    return img


def augment(images_nhwc: np.ndarray, indices, key: int, epoch: int, cfg: AugmentConfig) -> np.ndarray:
    return np.stack([augment_one(img, i, key, epoch, cfg) for img, i in zip(images_nhwc, indices)])


def normalize(images_nchw: np.ndarray, mean, std) -> np.ndarray:
    """float32 (x - mean) / std per channel; agrees with ``pipelines.loader.normalize`` to 1 ulp."""
    m = np.asarray(mean, np.float32).reshape(1, -1, 1, 1)
    s = np.asarray(std, np.float32).reshape(1, -1, 1, 1)
    return (images_nchw.astype(np.float32) - m) / s
