"""Read a .beton back into numpy arrays without building an FFCV ``Loader``.

A Loader compiles its pipeline (seconds per instance); checking that a build holds the right
pixels needs none of that. FFCV's ``Reader`` gives the header, the per-sample metadata (an
``IntField`` stores its value there; an ``NDArrayField`` a file offset) and the allocation
table, and the raw pixels are then plain slices of the file.
"""
from __future__ import annotations

import os

import numpy as np

from lmc.ffcv_compat import import_ffcv


def read_beton(beton: str | os.PathLike) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(images N x H x W x C uint8, {label field: int64 array}) of a .beton in our layout."""
    import_ffcv()
    from ffcv.fields import IntField, NDArrayField, RGBImageField
    from ffcv.reader import Reader

    reader = Reader(str(beton))
    data = np.memmap(beton, dtype=np.uint8, mode="r")
    # FFCV names the metadata columns by position (f0, f1, ...), not by field name.
    meta = {name: reader.metadata[f"f{i}"] for i, name in enumerate(reader.field_names)}
    n = int(reader.num_samples)
    image = reader.handlers["image"]
    if isinstance(image, NDArrayField):
        size = int(np.prod(image.shape)) * image.dtype.itemsize
        images = np.stack([data[p:p + size] for p in meta["image"].astype(np.int64)]).view(image.dtype)
        images = images.reshape(n, *image.shape)
    elif isinstance(image, RGBImageField):
        import cv2

        # Each sample's JPEG is the allocation of that sample that the metadata points to.
        table = reader.alloc_table
        size_at = dict(zip(table["ptr"].tolist(), table["size"].tolist()))
        decoded = []
        for row in meta["image"]:
            ptr = int(row["data_ptr"])
            buf = np.asarray(data[ptr:ptr + size_at[ptr]])
            decoded.append(cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1])
        images = np.stack(decoded)
    else:
        raise TypeError(f"{beton}: image field is {type(image).__name__}, not one this package writes")
    labels = {name: np.asarray(meta[name]).astype(np.int64) for name, h in reader.handlers.items()
              if isinstance(h, IntField)}
    return np.ascontiguousarray(images), labels
