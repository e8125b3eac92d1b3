"""The seeded augmentation of ``pipelines/kernel.py`` as torch tensor ops: any device, whole batches.

Same function, same bits: every draw comes from the kernel's counter-based hash of (augmentation
key, op salt, epoch, dataset index), and the ops run in the kernel's order with the kernel's
arithmetic (crop+resize, flip and translation in integers; colour jitter in float64 with the
same operations in the same order; then the per-channel lookup table). The tests compare the
output with the numba kernel bitwise, for every preset.

Two things torch does differently, and how they are handled:

* torch has no uint64. int64 ``+``, ``*`` and ``^`` give the same bits as uint64 (two's
  complement wraps), but ``>>`` is arithmetic and ``%`` is signed, so ``_shr`` masks off the
  sign extension and ``_randint`` reduces the unsigned value through its upper 63 bits.
* the contrast mean is a sequential float64 sum in the kernel; ``Tensor.sum`` adds pairwise
  and differs in the last bits. ``cumsum`` along the pixels is sequential on the CPU, and on
  CUDA along an outer dimension (one thread per column), so the grey levels are laid out as
  (pixels, batch) with at least two columns. On CUDA this rests on torch's scan kernels, not a
  promise: ``benchmarks/bench_device_data.py`` checks it on the device it runs on.
"""
from __future__ import annotations

import functools

import torch

from pipelines import twin
from pipelines.augment import AugmentConfig

_U64 = 1 << 64
_TO_UNIT = 2.0 ** -53


def _signed(value: int) -> int:
    """A uint64 constant as the int64 with the same bits."""
    value %= _U64
    return value - _U64 if value >= 1 << 63 else value


GOLDEN, MUL1, MUL2 = _signed(twin.GOLDEN), _signed(twin.MUL1), _signed(twin.MUL2)


def _shr(z: torch.Tensor, n: int) -> torch.Tensor:
    """Logical right shift of int64 bits read as uint64."""
    return (z >> n) & ((1 << (64 - n)) - 1)


def mix64(x: torch.Tensor) -> torch.Tensor:
    """The splitmix64 finaliser of ``kernel._mix64``, on int64 tensors."""
    z = x + GOLDEN
    z = (z ^ _shr(z, 30)) * MUL1
    z = (z ^ _shr(z, 27)) * MUL2
    return z ^ _shr(z, 31)


def sample_state(keys: torch.Tensor, salt: int, epoch: int, indices: torch.Tensor) -> torch.Tensor:
    return mix64(mix64(mix64(keys ^ salt) ^ epoch) ^ indices)


def _bits(state: torch.Tensor, k: int) -> torch.Tensor:
    return mix64(state + _signed(k * twin.GOLDEN))


def _randint(state: torch.Tensor, k: int, n) -> torch.Tensor:
    """``bits mod n`` with bits unsigned: bits = 2*hi + lo, hi < 2**63 fits int64."""
    bits = _bits(state, k)
    return ((_shr(bits, 1) % n) * 2 + (bits & 1)) % n


def _uniform(state: torch.Tensor, k: int) -> torch.Tensor:
    return _shr(_bits(state, k), 11).to(torch.float64) * _TO_UNIT


def draws(keys, epoch: int, indices: torch.Tensor, cfg: AugmentConfig, shape) -> dict[str, torch.Tensor]:
    """Every random choice of each sample (``twin.draws``' names): ty, tx, cy, cx int64; flip bool;
    factors (N, 4) float64 (brightness, contrast, saturation, hue); order (N, 4) int64.

    ``keys`` is one augmentation key (``lmc.seeds.aug_key``) or one per sample; ``shape`` (H, W).
    """
    indices = indices.to(torch.int64)
    dev, n = indices.device, indices.shape[0]
    # Constants are made on the device (fill, arange), never copied from host memory: a copy from
    # pageable memory makes the host wait for the GPU's queue, every batch.
    if isinstance(keys, torch.Tensor):
        keys = keys.to(device=dev, dtype=torch.int64).expand(n)
    else:
        keys = torch.full((n,), int(keys), dtype=torch.int64, device=dev)
    zeros = torch.zeros(n, dtype=torch.int64, device=dev)
    identity = torch.ones(n, 4, dtype=torch.float64, device=dev)
    identity[:, 3] = 0.0
    out = {"ty": zeros, "tx": zeros, "cy": zeros, "cx": zeros, "flip": zeros.bool(), "factors": identity,
           "order": torch.arange(4, device=dev).expand(n, 4)}
    if cfg.translate > 0:
        st = sample_state(keys, twin.SALT_TRANSLATE, epoch, indices)
        out["ty"] = _randint(st, 0, 2 * cfg.translate + 1) - cfg.translate
        out["tx"] = _randint(st, 1, 2 * cfg.translate + 1) - cfg.translate
    if cfg.flip_prob > 0:
        out["flip"] = _uniform(sample_state(keys, twin.SALT_FLIP, epoch, indices), 0) < cfg.flip_prob
    if cfg.crop_size > 0:
        st = sample_state(keys, twin.SALT_CROP, epoch, indices)
        out["cy"] = _randint(st, 0, shape[0] - cfg.crop_size + 1)
        out["cx"] = _randint(st, 1, shape[1] - cfg.crop_size + 1)
    if cfg.jitter:
        st = sample_state(keys, twin.SALT_JITTER, epoch, indices)
        ranges = [(max(0.0, 1.0 - cfg.brightness), 1.0 + cfg.brightness),
                  (max(0.0, 1.0 - cfg.contrast), 1.0 + cfg.contrast),
                  (max(0.0, 1.0 - cfg.saturation), 1.0 + cfg.saturation), (-cfg.hue, cfg.hue)]
        out["factors"] = torch.stack([lo + _uniform(st, j) * (hi - lo) for j, (lo, hi) in enumerate(ranges)], 1)
        # Fisher-Yates over the 4 jitter ops, the kernel's swaps one column at a time.
        order = torch.arange(4, device=dev).repeat(n, 1)
        for j in range(3, 0, -1):
            r = _randint(st, 7 - j, j + 1).unsqueeze(1)
            at_j = order[:, j:j + 1].clone()
            order[:, j:j + 1] = order.gather(1, r)
            order.scatter_(1, r, at_j)
        out["order"] = order
    return out


@functools.lru_cache(maxsize=32)
def _lerp_taps(size: int, out_len: int, device: torch.device):
    """``kernel._lerp_table`` as tensors: (i0, i1, w1, den), copied to ``device`` once."""
    i0, i1, w1, den = twin.lerp_taps(size, out_len)
    return (*(torch.as_tensor(a, dtype=torch.int64, device=device) for a in (i0, i1, w1)), den)


def _geometry(images: torch.Tensor, d: dict, cfg: AugmentConfig) -> torch.Tensor:
    """Crop+resize, flip and translation of uint8 (N, C, H, W), each output pixel traced back once
    (``kernel._crop_shift`` / ``kernel._shift``)."""
    n, c, h, w = images.shape
    dev = images.device
    sy = torch.arange(h, device=dev) + d["ty"][:, None]  # (N, H): source row before translation
    sx = torch.arange(w, device=dev) + d["tx"][:, None]
    inside = ((sy >= 0) & (sy < h))[:, :, None] & ((sx >= 0) & (sx < w))[:, None, :]
    sx = torch.where(d["flip"][:, None], w - 1 - sx, sx)
    sy, sx = sy.clamp(0, h - 1), sx.clamp(0, w - 1)
    flat = images.reshape(n, c, h * w)

    def pick(rows, cols):  # (N, H) source rows x (N, W) source columns -> (N, C, H, W)
        where = (rows[:, :, None] * w + cols[:, None, :]).reshape(n, 1, h * w).expand(n, c, h * w)
        return flat.gather(2, where).reshape(n, c, h, w)

    if cfg.crop_size == 0:
        out = pick(sy, sx)
    else:
        ry0, ry1, ryw, rden = _lerp_taps(cfg.crop_size, h, dev)
        rx0, rx1, rxw, cden = _lerp_taps(cfg.crop_size, w, dev)
        y0, y1, wy1 = d["cy"][:, None] + ry0[sy], d["cy"][:, None] + ry1[sy], ryw[sy][:, None, :, None]
        x0, x1, wx1 = d["cx"][:, None] + rx0[sx], d["cx"][:, None] + rx1[sx], rxw[sx][:, None, None, :]
        wy0, wx0, den = rden - wy1, cden - wx1, rden * cden
        top = wx0 * pick(y0, x0).to(torch.int64) + wx1 * pick(y0, x1).to(torch.int64)
        bot = wx0 * pick(y1, x0).to(torch.int64) + wx1 * pick(y1, x1).to(torch.int64)
        out = ((wy0 * top + wy1 * bot + den // 2) // den).to(torch.uint8)
    return torch.where(inside[:, None], out, cfg.fill)


def _grey(buf: torch.Tensor) -> torch.Tensor:
    """(N, C, P) float64 -> (N, P), the kernel's luma sum in its order (no fused multiply-add)."""
    if buf.shape[1] != 3:
        return buf[:, 0]
    return 0.299 * buf[:, 0] + 0.587 * buf[:, 1] + 0.114 * buf[:, 2]


def _sequential_mean(grey: torch.Tensor) -> torch.Tensor:
    """(N, P) -> (N,): the kernel's left-to-right float64 sum, divided by P (see the module doc)."""
    n, p = grey.shape
    columns = torch.cat([grey.t(), grey.new_zeros(p, 1)], 1) if n == 1 else grey.t()
    return columns.contiguous().cumsum(0)[-1, :n] / p


@functools.lru_cache(maxsize=8)
def _hue_sectors(device: torch.device) -> torch.Tensor:
    """Sector i -> (r, g, b) as picks from (v, q, t, u): the kernel's table of tuples."""
    return torch.tensor([[0, 2, 3], [1, 0, 3], [3, 0, 2], [3, 1, 0], [2, 3, 0], [0, 3, 1]], device=device)


def _shift_hue(buf: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """``kernel._shift_hue`` on (N, 3, P) float64, every pixel at once; grey pixels unchanged."""
    r, g, b = buf[:, 0], buf[:, 1], buf[:, 2]
    maxc, minc = torch.maximum(r, torch.maximum(g, b)), torch.minimum(r, torch.minimum(g, b))
    cr = maxc - minc
    grey = cr == 0.0
    safe_cr, safe_max = torch.where(grey, 1.0, cr), torch.where(grey, 1.0, maxc)
    s = cr / safe_max
    rc, gc, bc = (maxc - r) / safe_cr, (maxc - g) / safe_cr, (maxc - b) / safe_cr
    hh = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    hh = hh / 6.0 + shift[:, None]
    hh = hh - torch.floor(hh)
    i6 = torch.floor(hh * 6.0)
    f = hh * 6.0 - i6
    i = (i6.to(torch.int64) % 6).unsqueeze(1)
    v, q, t, u = maxc, maxc * (1.0 - s * f), maxc * (1.0 - s * (1.0 - f)), maxc * (1.0 - s)
    rgb = torch.stack([v, q, t, u], 1).gather(1, _hue_sectors(buf.device)[i.squeeze(1)].permute(0, 2, 1))
    return torch.where(grey[:, None], buf, rgb)


def _jitter(img: torch.Tensor, d: dict) -> torch.Tensor:
    """``kernel._jitter`` on uint8 (N, C, H, W): float64 on the 0..255 scale, the four ops in each
    sample's drawn order (0 brightness, 1 contrast, 2 saturation, 3 hue), rounded half up.

    Brightness, contrast and saturation are all ``clamp(gain * x + offset)`` (brightness with
    offset 0, which adds nothing to a non-negative product), so one expression serves the three.
    """
    n, c, h, w = img.shape
    buf = img.reshape(n, c, h * w).to(torch.float64)
    factor = d["factors"]
    colour = c == 3
    for step in range(4):
        op = d["order"][:, step]
        grey = _grey(buf)
        contrast, saturation = op == 1, (op == 2) & colour
        gain = torch.where(op == 0, factor[:, 0], torch.where(contrast, factor[:, 1],
                                                              torch.where(saturation, factor[:, 2], 1.0)))
        offset = torch.where(contrast[:, None], ((1.0 - factor[:, 1]) * _sequential_mean(grey))[:, None],
                             torch.where(saturation[:, None], (1.0 - factor[:, 2])[:, None] * grey, 0.0))
        out = (gain[:, None, None] * buf + offset[:, None]).clamp(0.0, 255.0)
        if colour:
            hue = (op == 3)[:, None, None]
            out = torch.where(hue, _shift_hue(buf, factor[:, 3]), out)
        buf = out
    return torch.floor(buf + 0.5).clamp(0.0, 255.0).to(torch.uint8).reshape(n, c, h, w)


def augment_on_device(images: torch.Tensor, indices: torch.Tensor, keys, epoch: int, cfg: AugmentConfig,
                      lut: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 (N, C, H, W) images of dataset samples ``indices`` -> augmented (N, C, H, W), then
    mapped through the per-channel lookup table ``lut`` (C, 256) (uint8 out when None).

    ``keys``: ``lmc.seeds.aug_key(aug_seed)``, or an int64 tensor with one key per sample (replicas
    with different augmentation seeds in one call). Equals ``kernel.apply`` bitwise on the same
    images in (H, W, C) layout.
    """
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected uint8 images (N, C, H, W) with C in (1, 3), got {images.dtype} "
                         f"{tuple(images.shape)}")
    n, c, h, w = images.shape
    cfg.check_image((h, w, c))
    indices = indices.to(device=images.device, dtype=torch.int64)
    if cfg.is_identity:
        out = images
    else:
        d = draws(keys, int(epoch), indices, cfg, (h, w))
        out = _geometry(images, d, cfg)
        if cfg.jitter:
            out = _jitter(out, d)
    if lut is None:
        return out.contiguous() if out is not images else out.clone()
    lut = lut.to(images.device)
    channel = torch.arange(c, device=images.device).view(1, c, 1, 1) * 256
    return lut.reshape(-1)[channel + out.to(torch.int64)]
