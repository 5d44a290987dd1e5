"""Streams of small integer symbols (alphabet of at most 256).

- ``packed``: byte-aligned bit packing, for short streams whose frequency
  table would cost more than it saves;
- ``ans`` (at most ``ANS_MAX_SYMBOLS``): constriction's ANS with one 8-bit
  frequency table per class of rows (output units whose symbols spread
  differently get their own model);
- ``zstd`` (longer streams): zstd over the packed symbols, within about 1 %
  of ANS and 30x faster to decode (docs/format.md, "Codecs").
"""


import numpy as np

from ..errors import FormatError
from . import ans, bits, zstd
from .bits import le_bytes

__all__ = ["ANS_MAX_SYMBOLS", "decode", "encode"]

ANS_MAX_SYMBOLS = 1 << 17


_MAX_CLASSES = 8


def _entropy_bytes(counts):
    counts = counts[counts > 0]
    return float(-(counts * np.log2(counts / counts.sum())).sum()) / 8


def _row_classes(symbols, row_of, rows, n_symbols):
    """Class of each row: rows ranked by their spread around the most common
    symbol and cut into 1, 2, 4 or 8 equal groups, whichever the closed-form
    cost (entropies + 8-bit tables + class ids) says is smallest."""
    # one histogram per row; every grouping is a sum of them
    per_row = np.bincount(row_of * n_symbols + symbols,
                          minlength=rows * n_symbols).reshape(rows, n_symbols)
    mode = per_row.sum(axis=0).argmax()
    distance = np.abs(np.arange(n_symbols) - mode)
    spread = (per_row @ distance) / np.maximum(per_row.sum(axis=1), 1)
    order = np.argsort(spread, kind="stable")
    best, best_cost = np.zeros(rows, dtype=np.uint8), None
    for n_classes in (1, 2, 4, 8):
        if n_classes > 1 and rows < 4 * n_classes:
            break
        classes = np.empty(rows, dtype=np.uint8)
        classes[order] = (np.arange(rows) * n_classes // rows).astype(np.uint8)
        cost = sum(_entropy_bytes(per_row[classes == c].sum(axis=0))
                   for c in range(n_classes))
        cost += n_symbols * n_classes + (
            bits.packed_size(rows, bits.width_for(n_classes)) if n_classes > 1 else 0)
        if best_cost is None or cost < best_cost:
            best, best_cost = classes, cost
    return best


def _rows_of(count, rows, row_of):
    """Row of each symbol: given, or ``count / rows`` symbols per row."""
    if row_of is not None:
        return row_of
    if rows < 1 or count % rows:
        raise FormatError("row classes do not match the tensor")
    return np.repeat(np.arange(rows), count // rows)


def encode(symbols, n_symbols, rows=1, row_of=None, *, large=False):
    """``(meta, streams)`` of integer symbols in ``[0, n_symbols)``.

    Up to ``ANS_MAX_SYMBOLS`` symbols: ANS, with one frequency table per
    class of rows (``symbols`` seen as ``rows`` lines: output units whose
    weights spread differently get their own model); above, or for the
    values of a ``large`` tensor (more than ``ANS_MAX_SYMBOLS`` cells, sparse):
    zstd over the byte-aligned packed symbols.
    """
    symbols = np.asarray(symbols).ravel()
    width = bits.width_for(n_symbols)
    if symbols.size > ANS_MAX_SYMBOLS or large:
        return ({"n": int(n_symbols), "codec": "zstd"},
                [zstd.compress(bits.pack(symbols, width).tobytes())])
    packed = bits.packed_size(symbols.size, width)
    if packed <= _entropy_bytes(np.bincount(symbols, minlength=n_symbols)) + (
            n_symbols + 4):
        # a short stream: its frequency table would cost more than it saves
        return ({"n": int(n_symbols), "codec": "packed"},
                [bits.pack(symbols, width).tobytes()])
    classes = np.zeros(1, dtype=np.uint8)
    if rows > 1 and symbols.size:
        row_of = _rows_of(symbols.size, rows, row_of)
        classes = _row_classes(symbols, row_of, rows, n_symbols)
    n_classes = int(classes.max()) + 1
    of_symbol = classes[row_of] if n_classes > 1 else np.zeros(symbols.size, np.uint8)
    tables, streams = [], []
    for c in range(n_classes):
        group = symbols[of_symbol == c]
        freq = ans.frequencies(group, n_symbols)
        tables.append(freq)
        streams.append((group, ans.model(freq) if group.size else None))
    words = ans.encode_many([(g, m) for g, m in streams if g.size])
    meta = {"n": int(n_symbols), "codec": "ans", "classes": n_classes}
    out = [np.concatenate(tables).astype(np.uint8).tobytes()]
    if n_classes > 1:
        out.append(bits.pack(classes, bits.width_for(n_classes)).tobytes())
    return meta, out + [le_bytes(words, np.uint32)]


def decode(meta, take, count, rows=1, row_of=None):
    n_symbols, codec = meta["n"], meta["codec"]
    if not isinstance(n_symbols, int) or not 1 <= n_symbols <= 256:
        raise FormatError("a symbol alphabet must have 1 to 256 symbols")
    if codec == "ans":
        n_classes = meta.get("classes", 1)
        if n_classes not in range(1, _MAX_CLASSES + 1) or count > ANS_MAX_SYMBOLS:
            raise FormatError("an entropy-coded stream has an invalid layout")
        tables = np.frombuffer(take(n_symbols * n_classes), dtype=np.uint8
                               ).reshape(n_classes, n_symbols)
        of_symbol = np.zeros(count, dtype=np.uint8)
        if n_classes > 1:
            if rows < 2:
                raise FormatError("row classes do not match the tensor")
            width = bits.width_for(n_classes)
            classes = bits.unpack(take(bits.packed_size(rows, width)), width, rows)
            if classes.max() >= n_classes:
                raise FormatError("a row class is out of range")
            of_symbol = classes[_rows_of(count, rows, row_of)]
        words = take()
        if len(words) % 4 or len(words) > 4 * (count + 2):
            raise FormatError("an entropy-coded stream has an invalid length")
        sizes = np.bincount(of_symbol, minlength=n_classes)
        parts = [(int(n), ans.model(t) if n else None) for n, t in zip(sizes, tables)]
        decoded = ans.decode_many(np.frombuffer(words, dtype="<u4"), parts)
        out = np.empty(count, dtype=np.int32)
        for c, part in enumerate(decoded):
            out[of_symbol == c] = part
        if out.size and (out.min() < 0 or out.max() >= n_symbols):
            raise FormatError("an entropy-coded symbol is out of range")
        return out
    if codec in ("zstd", "packed"):
        width = bits.width_for(n_symbols)
        raw = take()
        if codec == "zstd":
            raw = zstd.decompress(raw, bits.packed_size(count, width))
        out = bits.unpack(raw, width, count)
        if width == 8 and n_symbols < 256 and out.size and out.max() >= n_symbols:
            raise FormatError("a packed symbol is out of range")
        return out
    raise FormatError(f"unknown symbol codec {codec!r}")
