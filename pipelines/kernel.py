"""The compiled augmentation kernel and the one source of its randomness.

Every random draw of every op comes from ``_sample_state(key, salt, epoch, index)``: a chain
of splitmix64 finalisers over the augmentation key, the op's salt, the epoch and the dataset
index. Draw ``k`` of a sample is ``mix64(state + k * golden)``, i.e. the (k+1)-th output of a
splitmix64 generator started at ``state``. No generator carries state from one sample to the
next, so results cannot depend on batch composition, thread count or scheduling.

All helpers live in this file on purpose: numba's on-disk cache (``cache=True``) does not
notice changes to helpers imported from other modules, and would serve a stale kernel.
``pipelines/twin.py`` re-implements all of this in plain numpy/Python for the tests.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from pipelines.augment import AugmentConfig

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MUL1 = np.uint64(0xBF58476D1CE4E5B9)
_MUL2 = np.uint64(0x94D049BB133111EB)
_TO_UNIT = 1.0 / 9007199254740992.0  # 2**-53

# One salt per op, so enabling one op never changes the draws of another.
SALT_TRANSLATE, SALT_FLIP, SALT_CROP, SALT_JITTER = 1, 2, 3, 4

# Layout of the parameter vectors handed to the kernel (see ``pack``).
I_TRANSLATE, I_FILL, I_CROP, I_JITTER = range(4)
F_FLIP, F_B_LO, F_B_HI, F_C_LO, F_C_HI, F_S_LO, F_S_HI, F_H_LO, F_H_HI = range(9)


def pack(cfg: AugmentConfig) -> tuple[np.ndarray, np.ndarray]:
    """The config as the (int64, float64) vectors the kernel reads; jitter ranges as [lo, hi]."""
    ints = np.array([cfg.translate, cfg.fill, cfg.crop_size, int(cfg.jitter)], dtype=np.int64)
    floats = np.array([cfg.flip_prob,
                       max(0.0, 1.0 - cfg.brightness), 1.0 + cfg.brightness,
                       max(0.0, 1.0 - cfg.contrast), 1.0 + cfg.contrast,
                       max(0.0, 1.0 - cfg.saturation), 1.0 + cfg.saturation,
                       -cfg.hue, cfg.hue], dtype=np.float64)
    return ints, floats


@njit(cache=True, nogil=True)
def _mix64(x):
    z = x + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _MUL1
    z = (z ^ (z >> np.uint64(27))) * _MUL2
    return z ^ (z >> np.uint64(31))


@njit(cache=True, nogil=True)
def _sample_state(key, salt, epoch, index):
    return _mix64(_mix64(_mix64(np.uint64(key) ^ np.uint64(salt)) ^ np.uint64(epoch)) ^ np.uint64(index))


@njit(cache=True, nogil=True)
def _bits(state, k):
    return _mix64(state + np.uint64(k) * _GOLDEN)


@njit(cache=True, nogil=True)
def _randint(state, k, n):
    """Uniform in [0, n); the modulo bias is below n / 2**64."""
    return np.int64(_bits(state, k) % np.uint64(n))


@njit(cache=True, nogil=True)
def _uniform(state, k):
    """Uniform in [0, 1) with 53 random bits."""
    return np.float64(_bits(state, k) >> np.uint64(11)) * _TO_UNIT


@njit(cache=True, nogil=True)
def draws(key, epoch, index, ints, floats):
    """All random choices for one sample: (ty, tx, flip, cy, cx, b, c, s, h, o0, o1, o2, o3).

    Exposed (callable from Python) so the tests can compare it with the twin's draws.
    """
    out = np.zeros(13, dtype=np.float64)
    pad = ints[I_TRANSLATE]
    if pad > 0:
        st = _sample_state(key, SALT_TRANSLATE, epoch, index)
        out[0] = _randint(st, 0, 2 * pad + 1) - pad
        out[1] = _randint(st, 1, 2 * pad + 1) - pad
    if floats[F_FLIP] > 0.0:
        out[2] = 1.0 if _uniform(_sample_state(key, SALT_FLIP, epoch, index), 0) < floats[F_FLIP] else 0.0
    for j in range(3):
        out[5 + j] = 1.0
    for j in range(4):
        out[9 + j] = j
    if ints[I_JITTER] != 0:
        st = _sample_state(key, SALT_JITTER, epoch, index)
        for j in range(4):
            lo = floats[F_B_LO + 2 * j]
            hi = floats[F_B_LO + 2 * j + 1]
            out[5 + j] = lo + (hi - lo) * _uniform(st, j)
        # Fisher-Yates over the 4 jitter ops, as torchvision applies them in random order.
        for j in range(3, 0, -1):
            r = _randint(st, 7 - j, j + 1)
            tmp = out[9 + j]
            out[9 + j] = out[9 + r]
            out[9 + r] = tmp
    return out


@njit(cache=True, nogil=True)
def _crop_origin(key, epoch, index, size, h, w):
    st = _sample_state(key, SALT_CROP, epoch, index)
    return _randint(st, 0, h - size + 1), _randint(st, 1, w - size + 1)


@njit(cache=True, nogil=True)
def _lerp_table(size, out_len):
    """Fixed-point bilinear taps resizing ``size`` -> ``out_len`` with half-pixel centres.

    Position of output o in source units is ((2o+1)*size - out_len) / (2*out_len); integer
    weights keep the compiled kernel and its twin bitwise equal.
    """
    den = 2 * out_len
    i0 = np.empty(out_len, np.int64)
    i1 = np.empty(out_len, np.int64)
    w1 = np.empty(out_len, np.int64)
    for o in range(out_len):
        num = (2 * o + 1) * size - out_len
        if num < 0:
            num = 0
        i0[o] = num // den
        w1[o] = num - i0[o] * den
        i1[o] = min(i0[o] + 1, size - 1)
    return i0, i1, w1, den


@njit(cache=True, nogil=True)
def _jitter(img, d):
    """Colour jitter of one (C, H, W) uint8 image, in place: float64 on the 0..255 scale, ops in
    the drawn order (0 brightness, 1 contrast, 2 saturation, 3 hue; the last two need colour)."""
    c = img.shape[0]
    flat = img.reshape(c, -1)
    n = flat.shape[1]
    buf = flat.astype(np.float64)
    grey = np.empty(n)
    for step in range(4):
        op = int(d[9 + step])
        if op >= 2 and c != 3:
            continue
        if op == 1 or op == 2:
            for p in range(n):
                grey[p] = 0.299 * buf[0, p] + 0.587 * buf[1, p] + 0.114 * buf[2, p] if c == 3 else buf[0, p]
        if op == 0:
            for ch in range(c):
                for p in range(n):
                    buf[ch, p] = min(max(buf[ch, p] * d[5], 0.0), 255.0)
        elif op == 1:
            mean = 0.0
            for p in range(n):
                mean += grey[p]
            mean /= n
            for ch in range(c):
                for p in range(n):
                    buf[ch, p] = min(max(d[6] * buf[ch, p] + (1.0 - d[6]) * mean, 0.0), 255.0)
        elif op == 2:
            for ch in range(c):
                for p in range(n):
                    buf[ch, p] = min(max(d[7] * buf[ch, p] + (1.0 - d[7]) * grey[p], 0.0), 255.0)
        else:
            for p in range(n):
                _shift_hue(buf, p, d[8])
    for ch in range(c):
        for p in range(n):
            flat[ch, p] = np.uint8(min(max(np.floor(buf[ch, p] + 0.5), 0.0), 255.0))


@njit(cache=True, nogil=True)
def _shift_hue(buf, p, shift):
    """Rotate the hue of pixel p (RGB -> HSV -> RGB, as torchvision does)."""
    r, g, b = buf[0, p], buf[1, p], buf[2, p]
    maxc, minc = max(r, max(g, b)), min(r, min(g, b))
    cr = maxc - minc
    if cr == 0.0:
        return  # grey pixels have no hue
    s = cr / maxc
    rc, gc, bc = (maxc - r) / cr, (maxc - g) / cr, (maxc - b) / cr
    if maxc == r:
        hh = bc - gc
    elif maxc == g:
        hh = 2.0 + rc - bc
    else:
        hh = 4.0 + gc - rc
    hh = hh / 6.0 + shift
    hh = hh - np.floor(hh)
    i6 = np.floor(hh * 6.0)
    f = hh * 6.0 - i6
    i = int(i6) % 6
    v, q, t, u = maxc, maxc * (1.0 - s * f), maxc * (1.0 - s * (1.0 - f)), maxc * (1.0 - s)
    rgb = ((v, t, u), (q, v, u), (u, v, t), (u, q, v), (t, u, v), (v, u, q))
    buf[0, p], buf[1, p], buf[2, p] = rgb[i]


@njit(cache=True, nogil=True)
def _shift(s, d, lut, direct, ty, tx, flip, fill):
    """Flip and translation of one image, s (H, W, C) uint8 -> d (C, H, W) = lut[channel, pixel].

    Two passes that LLVM vectorises (5x faster than one pass with computed indices): the
    HWC -> CHW de-interleave at constant strides into a scratch image, then row copies.
    Row indices are unsigned so that numba drops its negative-index wraparound, which
    otherwise blocks vectorisation. ``direct`` says ``lut`` is the identity and is skipped.
    """
    h, w, c = s.shape
    plane = h * w
    sf, df = s.reshape(-1), d.reshape(-1)
    t = np.empty(c * plane, np.uint8)
    if c == 3:
        for p in range(plane):
            t[p], t[plane + p], t[2 * plane + p] = sf[3 * p], sf[3 * p + 1], sf[3 * p + 2]
    else:
        for p in range(c * plane):
            t[p] = sf[p]
    x_lo, x_hi = max(0, -tx), min(w, w - tx)  # output columns that come from inside the image
    inner, uw = np.uint64(x_hi - x_lo), np.uint64(w)
    for ch in range(c):
        fill_value = lut[ch, fill]
        for y in range(h):
            row, sy = np.uint64(ch * plane + y * w), y + ty
            if sy < 0 or sy >= h:
                for k in range(uw):
                    df[row + k] = fill_value
                continue
            for k in range(np.uint64(x_lo)):
                df[row + k] = fill_value
            for k in range(np.uint64(x_hi), uw):
                df[row + k] = fill_value
            out = row + np.uint64(x_lo)
            if flip:  # output column x reads source column w - 1 - (x + tx)
                src = np.uint64(ch * plane + sy * w + w - 1 - x_lo - tx)
                if direct:
                    for k in range(inner):
                        df[out + k] = t[src - k]
                else:
                    for k in range(inner):
                        df[out + k] = lut[ch, t[src - k]]
            else:
                src = np.uint64(ch * plane + sy * w + x_lo + tx)
                if direct:
                    for k in range(inner):
                        df[out + k] = t[src + k]
                else:
                    for k in range(inner):
                        df[out + k] = lut[ch, t[src + k]]


@njit(cache=True, nogil=True)
def _crop_shift(s, d, lut, ty, tx, flip, fill, size, cy, cx, ry, rx):
    """Crop+resize, flip and translation of one image, each output pixel traced back once."""
    h, w, c = s.shape
    ry0, ry1, ryw, rden = ry
    rx0, rx1, rxw, cden = rx
    den = rden * cden
    for ch in range(c):
        table = lut[ch]
        for y in range(h):
            sy = y + ty
            for x in range(w):
                sx = x + tx
                if sy < 0 or sy >= h or sx < 0 or sx >= w:
                    d[ch, y, x] = table[fill]
                    continue
                if flip:
                    sx = w - 1 - sx
                y0, y1, wy1 = cy + ry0[sy], cy + ry1[sy], ryw[sy]
                x0, x1, wx1 = cx + rx0[sx], cx + rx1[sx], rxw[sx]
                wy0, wx0 = rden - wy1, cden - wx1
                top = wx0 * np.int64(s[y0, x0, ch]) + wx1 * np.int64(s[y0, x1, ch])
                bot = wx0 * np.int64(s[y1, x0, ch]) + wx1 * np.int64(s[y1, x1, ch])
                d[ch, y, x] = table[(wy0 * top + wy1 * bot + den // 2) // den]


@njit(parallel=True, cache=True, nogil=True)
def augment_batch(src, dst, indices, key, epoch, ints, floats, lut):
    """src (n, H, W, C) uint8 -> dst[:n] (C, H, W): crop+resize, flip, translate, jitter, then
    the per-channel lookup table ``lut`` (C, 256): identity for uint8 output, or the values of
    ``pipelines.loader.normalize`` for float output, so both agree bitwise by construction."""
    n, h, w, c = src.shape
    fill, size = ints[I_FILL], ints[I_CROP]
    ry = _lerp_table(max(size, 1), h)
    rx = _lerp_table(max(size, 1), w)
    identity = np.empty((c, 256), np.uint8)
    direct = True
    for ch in range(c):
        for v in range(256):
            identity[ch, v] = v
            direct = direct and lut[ch, v] == v
    for i in prange(n):
        index = indices[i]
        d = draws(key, epoch, index, ints, floats)
        ty, tx, flip = int(d[0]), int(d[1]), d[2] != 0.0
        cy, cx = 0, 0
        if size > 0:
            cy, cx = _crop_origin(key, epoch, index, size, h, w)
        if ints[I_JITTER] == 0:
            if size > 0:
                _crop_shift(src[i], dst[i], lut, ty, tx, flip, fill, size, cy, cx, ry, rx)
            else:
                _shift(src[i], dst[i], lut, direct, ty, tx, flip, fill)
        else:
            # Jitter works on uint8 pixels: a scratch image, then the lookup table.
            tmp = np.empty((c, h, w), np.uint8)
            if size > 0:
                _crop_shift(src[i], tmp, identity, ty, tx, flip, fill, size, cy, cx, ry, rx)
            else:
                _shift(src[i], tmp, identity, True, ty, tx, flip, fill)
            _jitter(tmp, d)
            for ch in range(c):
                for y in range(h):
                    for x in range(w):
                        dst[i, ch, y, x] = lut[ch, tmp[ch, y, x]]
    return dst[:n]


def identity_lut(channels: int) -> np.ndarray:
    return np.repeat(np.arange(256, dtype=np.uint8)[None], channels, axis=0)


def apply(images_nhwc: np.ndarray, indices, key: int, epoch: int, cfg: AugmentConfig,
          lut: np.ndarray | None = None) -> np.ndarray:
    """Run the kernel from Python (tests, benchmarks): (n, H, W, C) uint8 -> (n, C, H, W)."""
    src = np.ascontiguousarray(images_nhwc, dtype=np.uint8)
    n, h, w, c = src.shape
    lut = identity_lut(c) if lut is None else np.ascontiguousarray(lut)
    dst = np.empty((n, c, h, w), lut.dtype)
    ints, floats = pack(cfg)
    idx = np.ascontiguousarray(indices, dtype=np.uint64)
    return augment_batch(src, dst, idx, np.int64(key), np.int64(epoch), ints, floats, lut)


def warm_up() -> None:
    """Compile (or load from numba's disk cache) both signatures the loader uses: uint8 and
    float32 output. Called once when ``pipelines.ops`` is imported, before any FFCV Loader is
    built. Why: on a fresh cache, the float32 signature compiled after an FFCV Loader had been
    constructed failed numba 0.68's type inference with a spurious "Cannot modify readonly
    array" in ``_shift`` (seen in a fresh clone; a warm cache hid it). Compiled up front, the
    loaders only ever dispatch to existing code.
    """
    ints, floats = pack(AugmentConfig())
    for dtype in (np.uint8, np.float32):
        augment_batch(np.zeros((1, 2, 2, 1), np.uint8), np.empty((1, 1, 2, 2), dtype), np.zeros(1, np.uint64),
                      np.int64(0), np.int64(0), ints, floats, identity_lut(1).astype(dtype))
