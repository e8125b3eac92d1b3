"""Validation shared by the model configs: every error names the bad value and what is expected."""
from __future__ import annotations

import operator


def positive_int(value, name: str, minimum: int = 1, hint: str = "") -> int:
    """An integer >= ``minimum`` (bools and floats are refused: they hide typos in configs)."""
    try:
        if isinstance(value, bool):
            raise TypeError
        number = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}{hint}") from None
    if number < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}{hint}")
    return int(number)


def slope_in_unit_interval(value) -> float:
    """Leaky-ReLU negative slope p in [0, 1]: 0 is ReLU, 1 would be the identity (linear)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(
            f"slope must be a number in [0, 1] (0 = ReLU, 1 = linear), got {value!r}")
    return float(value)


def image_shape(value) -> tuple[int, int, int]:
    """``input_shape`` is (C, H, W) with positive entries."""
    try:
        shape = tuple(value)
    except TypeError:
        shape = ()
    if len(shape) != 3:
        raise ValueError(f"input_shape must be (C, H, W), e.g. (3, 32, 32), got {value!r}")
    return tuple(positive_int(v, f"input_shape entry in {value!r}") for v in shape)


def kernel_divides(kernel: int, shape: tuple[int, int, int], what: str = "kernel") -> tuple[int, int]:
    """Stride = kernel and no padding (Appendix D): the kernel must tile H and W exactly."""
    _, height, width = shape
    if height % kernel or width % kernel:
        divisors = sorted(set(d for d in range(1, min(height, width) + 1)
                              if height % d == 0 and width % d == 0))
        raise ValueError(
            f"{what}={kernel} must divide the image height and width {height}x{width} "
            f"(stride = {what}, no padding); valid choices: {divisors}")
    return height // kernel, width // kernel


def positive_number(value, name: str) -> float:
    """A finite number > 0 (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < float(value) < float("inf"):
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return float(value)
