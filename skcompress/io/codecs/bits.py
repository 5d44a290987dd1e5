"""Byte-aligned packing of symbols of 1, 2, 4 or 8 bits (MSB first)."""

import numpy as np

from ..errors import FormatError

__all__ = ["le_bytes", "pack", "packed_size", "unpack", "width_for"]


def width_for(n_symbols):
    """The byte-aligned width (1, 2, 4 or 8 bits) that holds ``n_symbols``."""
    for width in (1, 2, 4):
        if n_symbols <= 1 << width:
            return width
    return 8


def packed_size(count, width):
    per = 8 // width
    return -(-count // per)


def pack(symbols, width):
    """Pack ``symbols`` (< 2**width) into bytes, ``8 // width`` per byte."""
    symbols = np.asarray(symbols, dtype=np.uint8).ravel()
    if width == 8:
        return symbols.copy()
    if width == 1:
        return np.packbits(symbols)
    per = 8 // width
    if width == 4 and symbols.size % 2 == 0:
        # pairs read as little-endian uint16 (first symbol low): contiguous
        # passes instead of strided byte access, about 1.5x faster
        pairs = symbols.view("<u2")
        out = pairs << np.uint16(4)
        out |= pairs >> np.uint16(8)
        return out.astype(np.uint8)
    padded = symbols
    if symbols.size % per:  # the last byte's spare slots hold zeros
        padded = np.zeros(packed_size(symbols.size, width) * per, dtype=np.uint8)
        padded[:symbols.size] = symbols
    out = padded[0::per] << np.uint8(8 - width)
    for i in range(1, per):
        shift = 8 - width * (i + 1)
        out |= padded[i::per] << np.uint8(shift) if shift else padded[i::per]
    return out


def unpack(data, width, count):
    """Inverse of :func:`pack`: ``count`` symbols from ``data``."""
    data = np.frombuffer(data, dtype=np.uint8) if isinstance(
        data, (bytes, bytearray, memoryview)) else np.asarray(data, dtype=np.uint8)
    if data.size != packed_size(count, width):
        raise FormatError("a packed symbol stream has the wrong length")
    if width == 8:
        return data
    if width == 1:
        return np.unpackbits(data, count=count)
    per = 8 // width
    mask = np.uint8((1 << width) - 1)
    out = np.empty(data.size * per, dtype=np.uint8)
    for i in range(per):
        np.bitwise_and(data >> np.uint8(8 - width * (i + 1)), mask, out=out[i::per])
    return out[:count]


def le_bytes(array, dtype):
    """``array`` as little-endian bytes of ``dtype`` (the format's byte order)."""
    return np.ascontiguousarray(array, dtype=np.dtype(dtype).newbyteorder("<")
                                ).tobytes()
