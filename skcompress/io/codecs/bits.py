"""Byte-aligned packing of symbols of 1, 2, 4 or 8 bits (MSB first)."""

import numpy as np

from ..errors import FormatError

__all__ = ["pack", "packed_size", "unpack", "width_for"]


def width_for(n_symbols):
    """The byte-aligned width (1, 2, 4 or 8 bits) that holds ``n_symbols``."""
    for width in (1, 2, 4):
        if n_symbols <= 1 << width:
            return width
    return 8


def packed_size(count, width):
    per = 8 // width
    return -(-count // per)


def _shifts(width):
    per = 8 // width
    return (8 - width * (np.arange(per, dtype=np.uint8) + 1)).astype(np.uint8)


def pack(symbols, width):
    """Pack ``symbols`` (< 2**width) into bytes, ``8 // width`` per byte."""
    symbols = np.asarray(symbols, dtype=np.uint8).ravel()
    if width == 8:
        return symbols.copy()
    per = 8 // width
    padded = np.zeros(packed_size(symbols.size, width) * per, dtype=np.uint8)
    padded[:symbols.size] = symbols
    blocks = padded.reshape(-1, per) << _shifts(width)
    return np.bitwise_or.reduce(blocks, axis=1).astype(np.uint8)


def unpack(data, width, count):
    """Inverse of :func:`pack`: ``count`` symbols from ``data``."""
    data = np.frombuffer(data, dtype=np.uint8) if isinstance(
        data, (bytes, bytearray, memoryview)) else np.asarray(data, dtype=np.uint8)
    if data.size != packed_size(count, width):
        raise FormatError("a packed symbol stream has the wrong length")
    if width == 8:
        return data
    mask = np.uint8((1 << width) - 1)
    out = (data[:, None] >> _shifts(width)) & mask
    return out.reshape(-1)[:count]
