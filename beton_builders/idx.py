"""The idx file format of MNIST and Fashion-MNIST (LeCun et al.), gzipped or not.

Layout: two zero bytes, a type code (0x08 = unsigned byte), the number of dimensions d, then
d big-endian uint32 sizes, then the values in C order. Every check below names the file, so
a truncated download or a swapped file is reported as such rather than as a reshape error.
"""
from __future__ import annotations

import gzip
import struct
import zlib

import numpy as np

from beton_builders.sources import SourceError

GZIP_MAGIC = b"\x1f\x8b"
UBYTE = 0x08
TYPE_NAMES = {0x08: "unsigned byte", 0x09: "signed byte", 0x0B: "short", 0x0C: "int", 0x0D: "float",
              0x0E: "double"}


def gunzip_if_needed(data: bytes, where: str) -> bytes:
    """Decompress when the bytes are gzip (decided by magic, not by the file name)."""
    if not data.startswith(GZIP_MAGIC):
        return data
    try:
        return gzip.decompress(data)
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise SourceError(f"{where}: truncated or corrupt gzip stream ({exc}); download the file again") from None


def parse_idx(data: bytes, where: str, ndim: int) -> np.ndarray:
    """The uint8 array held by an idx file with ``ndim`` dimensions (1: labels, 3: images)."""
    data = gunzip_if_needed(data, where)
    kind = "labels (idx1)" if ndim == 1 else f"images (idx{ndim})"
    magic = 0x800 + ndim
    if len(data) < 4:
        raise SourceError(f"{where}: truncated: {len(data)} bytes, not even an idx header")
    if data[0] != 0 or data[1] != 0 or data[2] not in TYPE_NAMES:
        raise SourceError(f"{where}: wrong magic number 0x{data[:4].hex()}; expected 0x{magic:08x} for "
                          f"{kind}. Is this an idx file?")
    if data[2] != UBYTE:
        raise SourceError(f"{where}: holds {TYPE_NAMES[data[2]]} values; MNIST-family files hold unsigned "
                          f"bytes (magic 0x{magic:08x})")
    if data[3] != ndim:
        raise SourceError(f"{where}: has {data[3]} dimensions (magic 0x{data[:4].hex()}); expected {ndim} "
                          f"for {kind} (magic 0x{magic:08x}). Are the image and label files swapped?")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise SourceError(f"{where}: truncated inside its header ({len(data)} of {header} bytes)")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    expected = int(np.prod(dims, dtype=np.int64))
    actual = len(data) - header
    if actual != expected:
        problem = "truncated" if actual < expected else "longer than its header says"
        raise SourceError(f"{where}: {problem}: the header declares {' x '.join(map(str, dims))} = "
                          f"{expected} bytes of data but the file holds {actual}; the count disagrees "
                          f"with the file size, download it again")
    return np.frombuffer(data, np.uint8, count=expected, offset=header).reshape(dims)


def encode_idx(array: np.ndarray) -> bytes:
    """The inverse of :func:`parse_idx` for uint8 arrays (used to write test fixtures)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    return bytes([0, 0, UBYTE, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
