"""The compact on-disk format for fitted skorch nets and compressors.

:func:`save` writes one file holding everything needed to rebuild a fitted
skorch net whose module may carry parametrizations (masks, codebooks,
quantizers, binarizers) or structural changes (low-rank factors, pruned
channels, custom blocks). :func:`load` rebuilds it without unpickling.

On-disk layout (all integers little-endian)::

    b"SKCZ" | version u8 | header codec u8 | header stored length u32
           | header raw length u32 | header crc32 u32
    header : JSON (sorted keys, compact), compressed by the header codec
             (none, zlib, LZMA, or from version 2 deflate primed with a fixed
             dictionary of the header's vocabulary)
    blob   : the arrays of every tensor's encoding, floats first then
             index/position streams, cut into chunks; each chunk is stored
             raw, as raw deflate (zlib) or as raw LZMA2, as the header says

The header records the net class and its params, the criterion, the module
tree (constructor kwargs plus only what differs from a fresh instance), one
entry per tensor (encoding + small metadata + array ids), the array table
(dtype, length), the chunk table and the blob's length and crc32.

Per-tensor encodings, the smallest exact one is chosen:

``dense``
    float32 values. ``fp16`` when every value is exactly a float16.
``codebook``
    sorted distinct values (float32) + one index per weight, bit-packed at
    ``ceil(log2(n_values))`` bits, one byte each, or adaptively range coded
    (order-0, reaches the indices' entropy).
``sparse``
    nonzero positions + nonzero values (dense or codebook). Positions are a
    bitmask (packed, or range coded for small tensors), relative gaps at a
    fixed width with escape symbols, or "lines": the tensor as a 2-D matrix
    (or its transpose), columns without nonzeros dropped by a bitmap, each
    row stored as its nonzero count plus the rank of its nonzero set
    (enumerative coding, ``log2 C(l, k)`` bits per row), so rows and columns
    of different densities (dead units, dead inputs) cost their own entropy.
``binary``
    ``np.packbits`` of the signs + one float32 scale per output channel.
``uniform``
    integers (bit-packed or bytes) + scale and zero point per channel or per
    tensor, only from an ``encoding_hint``.
``raw``
    any other dtype (``num_batches_tracked`` is int64), stored as is.

Version 2 added the header dictionary, "lines" and range-coded positions
and range-coded symbols; version 1 files still load.

Decoded tensors are compared to the originals with ``==`` and bit patterns:
an encoding is kept only if every value is reproduced exactly (the sign of an
exact zero may become ``+0.0`` in ``sparse``, which never changes a result).
"""

import collections
import copy
import hashlib
import importlib
import inspect
import json
import lzma
import math
import os
import struct
import sys
import threading
import warnings
import zlib

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

__all__ = [
    "FormatError",
    "bake",
    "collect_hints",
    "decode_tensor",
    "dumps",
    "encode_tensor",
    "load",
    "loads",
    "save",
    "tensor_storage_report",
]

FORMAT_VERSION = 2
# version 1 files (no "lines" positions, no header dictionary) still load
_READABLE_VERSIONS = (1, 2)
_MAGIC = b"SKCZ"
_PREFIX = struct.Struct("<4sBBIII")
_CODECS = ("none", "zlib", "lzma")
# Header codecs: the blob codecs, plus deflate primed with _HEADER_DICT
_HEADER_CODECS = _CODECS + ("zlib-dict",)
# A fixed preset dictionary of the header's vocabulary (keys, encodings, the
# usual class paths): a header of a few hundred bytes compresses far better
# when deflate can refer to it from the first byte. Part of format version 2:
# never change it without bumping FORMAT_VERSION.
_HEADER_DICT = (
    b'"dtype":"int64","persistent":false,"frozen":true,"same":"'
    b'"encoding":"raw","meta":{"dtype":"int64"},"name":"num_batches_tracked",'
    b'"running_mean","running_var","encoding":"fp16","encoding":"binary",'
    b'"meta":{},"arrays":{"scale":,"signs":"encoding":"uniform","meta":{"axis":0,'
    b'"index":{"bits":8,"format":"bytes"},"q_min":-"q":,"zero_point":'
    b'"attrs":{"children":[["drop":["none":["class":"torch.nn.modules.conv:Conv2d",'
    b'"kwargs":{"bias":true,"dilation":[1,1],"groups":1,"in_channels":'
    b'"kernel_size":[3,3],"out_channels":,"padding":[1,1],"padding_mode":"zeros",'
    b'"stride":[1,1]}"class":"torch.nn.modules.linear:Linear","kwargs":{"bias":true,'
    b'"in_features":,"out_features":"torch.nn.modules.batchnorm:BatchNorm2d",'
    b'"class":"skorch.regressor:NeuralNetRegressor","torch.nn.modules.loss:MSELoss"'
    b'"module":{"class":"skcompress.models:DigitsCNN","kwargs":{"channels":['
    b'"hidden":"net":{"class":"skorch.classifier:NeuralNetClassifier","criterion":'
    b'{"class":"torch.nn.modules.loss:CrossEntropyLoss","kwargs":{}},"params":'
    b'{"batch_size":64,"classes":[0,1,2,3,4,5,6,7,8,9],"lr":0.001,"max_epochs":'
    b',"predict_nonlinearity":"auto","threshold":0.5,"verbose":0}},"tensors":['
    b'{"arrays":{"values":0},"encoding":"dense","kind":"p","meta":{"values":"dense"}'
    b',"name":"conv1.bias","shape":[},{"arrays":{"centroids":1,"indices":'
    b'"encoding":"codebook","kind":"p","meta":{"index":{"bits":4,"format":"packed"}}'
    b',"name":"conv1.weight","shape":[},{"arrays":{"centroids":3,"columns":'
    b',"indices":,"line_counts":,"positions":},"encoding":"sparse","kind":"p",'
    b'"meta":{"index":{"bits":4,"format":"packed"},"lines":{"transpose":false},'
    b'"n_nonzero":,"positions":"lines","values":"codebook"},"name":"conv2.weight",'
    b'"shape":[},"gap":{"bits":4,"count":,"format":"bytes"},'
    b'"positions":"gaps","positions":"bitmask","values":"fp16"},"name":"fc1.weight",'
    b'"shape":[},{"arrays":{"values":2},"encoding":"dense","kind":"p",'
    b'"meta":{"values":"dense"},"name":"fc1.bias","shape":[},'
    b'"encoding":"sparse","kind":"p","meta":{"index":{"bits":4,"format":"packed"},'
    b'"lines":{"transpose":true},"n_nonzero":'
    b'{"arrays":[["float32",["uint8",["int16",["float16",["int64",'
    b'"blob":{"crc32":,"size":},"chunks":[["none",],["lzma",],["zlib",],"format":2,'
)
# Level 6, not 9: on the low-entropy symbol streams the encoder tries, level 9
# is up to 8x slower for under 3% smaller output, and LZMA (tried as well)
# wins on those streams anyway; zlib wins on the short ones, where the level
# makes no difference. Decoding does not depend on the level.
_ZLIB_LEVEL = 6
_LZMA_FILTERS = [
    {"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME, "lc": 0, "lp": 0,
     "dict_size": 1 << 20,
     "pb": 0}
]
_DTYPES = {
    "float32": np.float32, "float16": np.float16, "float64": np.float64,
    "int8": np.int8, "int16": np.int16, "int32": np.int32, "int64": np.int64,
    "uint8": np.uint8, "bool": np.bool_,
}
# Packages whose modules ``load`` may import; anything else must already be
# imported by the caller, so that reading a file never runs an import.
_IMPORTABLE = ("torch", "skorch", "skcompress")
_NET_PARAMS = ("batch_size", "lr", "max_epochs", "verbose", "threshold")


class FormatError(ValueError):
    """Raised when a file is not a valid, intact skcompress file."""


# --------------------------------------------------------------------------
# Bit packing and entropy coding
# --------------------------------------------------------------------------


def _pack_bits(values, width):
    """Pack non-negative integers < 2**width (1 <= width <= 8) MSB-first."""
    values = np.asarray(values, dtype=np.uint8).ravel()
    shifts = np.arange(width - 1, -1, -1, dtype=np.uint8)
    bits = (values[:, None] >> shifts) & 1
    return np.packbits(bits.ravel())


def _unpack_bits(packed, width, count):
    bits = np.unpackbits(np.asarray(packed, dtype=np.uint8), count=count * width)
    bits = bits.reshape(count, width).astype(np.uint8)
    weights = (1 << np.arange(width - 1, -1, -1)).astype(np.uint8)
    return (bits * weights).sum(axis=1, dtype=np.uint16).astype(np.uint8)


# Adaptive range coding of small symbols (the LZMA range coder's carry
# handling, with a counting model): each node of a bit tree over the symbol's
# bits predicts its next bit from the bits it has seen so far (the
# Krichevsky-Trofimov estimate, counts start at 1/2). This reaches the order-0
# entropy of codebook indices within a few bytes, where zlib and LZMA on
# packed indices leave 2-4 %. Pure Python, so offered only while a tensor needs
# at most _RANGE_MAX_DECISIONS binary decisions.
_RANGE_MAX_DECISIONS = 1 << 18
_RANGE_MAX_MASK = 1 << 16  # range-coded masks: small tensors only
_RANGE_TOP = 1 << 24
_RANGE_PROB_BITS = 15


def _range_probability(zeros, ones):
    """P(bit = 0) in units of 2**-_RANGE_PROB_BITS, from doubled counts."""
    p = (zeros << _RANGE_PROB_BITS) // (zeros + ones)
    return min(max(p, 1), (1 << _RANGE_PROB_BITS) - 1)


def _range_encode(symbols, width):
    zeros, ones = [1] * (1 << width), [1] * (1 << width)
    out = bytearray()
    low, rng, cache, cache_size = 0, 0xFFFFFFFF, 0, 1

    def shift_low():
        nonlocal low, cache, cache_size
        if low < 0xFF000000 or low >= 1 << 32:
            carry, byte = low >> 32, cache
            while cache_size:
                out.append((byte + carry) & 0xFF)
                byte = 0xFF
                cache_size -= 1
            cache = (low >> 24) & 0xFF
        cache_size += 1
        low = (low & 0x00FFFFFF) << 8

    for symbol in np.asarray(symbols).ravel().tolist():
        node = 1
        for shift in range(width - 1, -1, -1):
            bit = (symbol >> shift) & 1
            bound = (rng >> _RANGE_PROB_BITS) * _range_probability(zeros[node],
                                                                  ones[node])
            if bit:
                low += bound
                rng -= bound
                ones[node] += 2
            else:
                rng = bound
                zeros[node] += 2
            node = (node << 1) | bit
            while rng < _RANGE_TOP:
                rng <<= 8
                shift_low()
    for _ in range(5):
        shift_low()
    # the first byte is always 0; trailing zeros are implied
    return np.frombuffer(bytes(out[1:]).rstrip(b"\0"), dtype=np.uint8).copy()


def _range_decode(stream, width, count):
    data = np.asarray(stream, dtype=np.uint8).tobytes()
    data += b"\0" * max(0, 4 - len(data))
    zeros, ones = [1] * (1 << width), [1] * (1 << width)
    code, rng, pos = int.from_bytes(data[:4], "big"), 0xFFFFFFFF, 4
    end, top = len(data), 1 << width
    out = np.empty(count, dtype=np.uint8)
    for k in range(count):
        node = 1
        while node < top:
            bound = (rng >> _RANGE_PROB_BITS) * _range_probability(zeros[node],
                                                                  ones[node])
            if code < bound:
                rng = bound
                zeros[node] += 2
                node <<= 1
            else:
                code -= bound
                rng -= bound
                ones[node] += 2
                node = (node << 1) | 1
            while rng < _RANGE_TOP:
                # trailing zero bytes are not stored
                byte = data[pos] if pos < end else 0
                rng <<= 8
                code = ((code << 8) | byte) & 0xFFFFFFFF
                pos += 1
        out[k] = node - top
    return out


def _compress(codec, data):
    if codec == "none":
        return data
    if codec == "zlib":
        obj = zlib.compressobj(_ZLIB_LEVEL, zlib.DEFLATED, -15)
        return obj.compress(data) + obj.flush()
    return lzma.compress(data, format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS)


def _decompress(codec, data, raw_len):
    if codec == "none":
        out = data
    elif codec == "zlib":
        out = zlib.decompressobj(-15).decompress(data, raw_len)
    elif codec == "lzma":
        dec = lzma.LZMADecompressor(format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS)
        out = dec.decompress(data, max_length=raw_len)
    else:
        raise FormatError(f"unknown codec {codec!r}")
    if len(out) != raw_len:
        raise FormatError("a compressed chunk does not decode to its recorded length")
    return out


def _compress_header(text):
    """``(codec index, stored bytes)`` of the smallest way to store the header."""
    options = [(_CODECS.index(codec), _compress(codec, text))
               for codec in _CODECS]
    obj = zlib.compressobj(9, zlib.DEFLATED, -15, zdict=_HEADER_DICT)
    options.append((_HEADER_CODECS.index("zlib-dict"),
                    obj.compress(text) + obj.flush()))
    return min(options, key=lambda option: (len(option[1]), option[0]))


def _decompress_header(codec_index, data, raw_len):
    if codec_index >= len(_HEADER_CODECS):
        raise FormatError("unknown header codec")
    codec = _HEADER_CODECS[codec_index]
    if codec != "zlib-dict":
        return _decompress(codec, data, raw_len)
    out = zlib.decompressobj(-15, zdict=_HEADER_DICT).decompress(data, raw_len)
    if len(out) != raw_len:
        raise FormatError("the header does not decode to its recorded length")
    return out


def _best_codec(data, entropy_coding):
    """Return ``(codec, stored_bytes)`` of the smallest way to store ``data``."""
    if not entropy_coding or not data:
        return "none", data
    best = ("none", data)
    for codec in ("zlib", "lzma"):
        stored = _compress(codec, data)
        if len(stored) < len(best[1]):
            best = (codec, stored)
    return best


def _cost(arrays, entropy_coding, memo=None):
    """Stored bytes of a tensor's arrays; float arrays are never entropy coded.

    ``memo`` (a dict owned by one encoding call) keeps the cost of each byte
    string seen: candidates often share arrays, and the gap streams of
    several symbol widths are often byte-identical, so each distinct array
    is compressed once.
    """
    total = 0
    for a in arrays.values():
        if a.dtype.kind == "f":
            total += a.nbytes
            continue
        data = np.ascontiguousarray(a).tobytes()
        size = None if memo is None else memo.get(data)
        if size is None:
            size = len(_best_codec(data, entropy_coding)[1])
            if memo is not None:
                memo[data] = size
        total += size
    return total


# --------------------------------------------------------------------------
# Per-tensor encodings
# --------------------------------------------------------------------------


def _index_bits(n_values):
    return max(1, math.ceil(math.log2(max(n_values, 2))))


def _symbol_candidates(symbols, width, entropy_coding, adaptive=False):
    """Ways to store uint8 symbols < 2**width: bit-packed, one byte each, or
    (``adaptive``) range coded."""
    out = [({"format": "packed", "bits": width}, _pack_bits(symbols, width))]
    if entropy_coding or width == 8:
        out.append(({"format": "bytes", "bits": width}, symbols.astype(np.uint8)))
    if width == 8:
        out = out[1:]
    if adaptive and entropy_coding and symbols.size * width <= _RANGE_MAX_DECISIONS:
        out.append(({"format": "range", "bits": width},
                    _range_encode(symbols, width)))
    return out


def _read_symbols(meta, stream, count):
    if not 1 <= int(meta["bits"]) <= 8:
        raise FormatError("symbol width must be 1 to 8 bits")
    if meta["format"] == "bytes":
        if stream.size != count:
            raise FormatError("symbol stream has the wrong length")
        return stream
    if meta["format"] == "range":
        if count * int(meta["bits"]) > _RANGE_MAX_DECISIONS:
            raise FormatError("range-coded stream is longer than the format allows")
        return _range_decode(stream, int(meta["bits"]), count)
    return _unpack_bits(stream, int(meta["bits"]), count)


def _codebook_candidates(values, entropy_coding, prefix=""):
    """Encode float32 ``values`` as centroids + indices, or return []."""
    centroids, inverse = np.unique(values, return_inverse=True)
    if centroids.size > 256:
        return []
    width = _index_bits(centroids.size)
    out = []
    for fmt, stream in _symbol_candidates(inverse.astype(np.uint8), width,
                                          entropy_coding, adaptive=True):
        meta = {prefix + "index": fmt}
        arrays = {prefix + "centroids": centroids.astype(np.float32),
                  prefix + "indices": stream}
        out.append((meta, arrays))
    return out


def _gap_symbols(positions, width):
    """Relative index coding: zeros skipped before each nonzero, with escapes.

    A symbol ``s < M = 2**width - 1`` skips ``s`` zeros then places a value; the
    escape ``M`` skips ``M`` zeros and places nothing (Deep Compression's
    padding entries, without a stored padding value).
    """
    escape = (1 << width) - 1
    gaps = np.diff(positions, prepend=-1) - 1
    n_escapes = gaps // escape
    ends = np.cumsum(n_escapes + 1) - 1
    symbols = np.full(int(ends[-1]) + 1 if ends.size else 0, escape, dtype=np.uint8)
    symbols[ends] = (gaps % escape).astype(np.uint8)
    return symbols


def _order0_bits(symbols):
    """Bits of ``symbols`` under their own order-0 (i.i.d.) entropy."""
    counts = np.bincount(symbols)
    counts = counts[counts > 0]
    return float(-(counts * np.log2(counts / max(symbols.size, 1))).sum())


def _gap_positions(symbols, width):
    escape = (1 << width) - 1
    symbols = symbols.astype(np.int64)
    is_value = symbols < escape
    return (np.cumsum(symbols + is_value) - 1)[is_value]


def _position_candidates(mask, entropy_coding, shape=None):
    """``(meta, arrays)`` ways to store the nonzero positions of flat ``mask``."""
    out = [({"positions": "bitmask"}, {"positions": np.packbits(mask)})]
    positions = np.flatnonzero(mask)
    if entropy_coding:
        # Every width is a different stream to compress twice; the gap streams
        # are close to i.i.d., so zlib/LZMA land near their order-0 entropy:
        # try the two widths whose streams have the lowest.
        streams = {w: _gap_symbols(positions, w) for w in (2, 3, 4, 5, 6, 7, 8)}
        widths = sorted(streams, key=lambda w: _order0_bits(streams[w]))[:2]
    else:
        widths = (2, 3, 4, 5, 6, 8)
        streams = {w: _gap_symbols(positions, w) for w in widths}
    for width in sorted(widths):
        symbols = streams[width]
        for fmt, stream in _symbol_candidates(symbols, width, entropy_coding):
            gap = {**fmt, "count": int(symbols.size)}
            out.append(({"positions": "gaps", "gap": gap}, {"positions": stream}))
    if entropy_coding and mask.size <= _RANGE_MAX_MASK:
        # the i.i.d. mask at its adaptive order-0 entropy
        out.append(({"positions": "range"},
                    {"positions": _range_encode(mask.astype(np.uint8), 1)}))
    if shape is not None:
        out += _lines_candidates(mask, shape)
    return out


# Enumerative ("lines") coding of sparse positions: the tensor is viewed as a
# 2-D matrix (``w.reshape(shape[0], -1)``, or its transpose), columns without
# any nonzero are dropped through a bitmap, and each line (row) is stored as
# its number of nonzeros plus the rank of its nonzero set among all sets of
# that size (combinatorial number system). Given the counts this costs exactly
# ``log2 C(l, k)`` bits per line, so lines of different densities (dead units,
# dead input features of a magnitude-pruned layer) are each coded at their own
# entropy, which an i.i.d. coder of the whole mask cannot do.
_LINES_MAX_CELLS = 1 << 20  # decoding walks every cell in Python
_BLOCK_BITS = 1 << 15  # ranks are packed in mixed-radix blocks of this many bits


def _lines_view(mask, shape, transpose):
    rows = shape[0] if len(shape) else 1
    view = mask.reshape(rows, -1)
    return view.T if transpose else view


def _rank_blocks(radices):
    """Split line indices into blocks whose radix product stays bounded."""
    blocks, current, product = [], [], 1
    for i, radix in enumerate(radices):
        if current and (product * radix).bit_length() > _BLOCK_BITS:
            blocks.append((current, product))
            current, product = [], 1
        current.append(i)
        product *= radix
    if current:
        blocks.append((current, product))
    return blocks


def _block_nbytes(product):
    return ((product - 1).bit_length() + 7) // 8


def _encode_lines(mask, shape, transpose):
    """``(meta, arrays)`` of the lines coding of a boolean mask."""
    view = _lines_view(mask, shape, transpose)
    columns = view.any(axis=0)
    sub = view[:, columns]
    length = int(sub.shape[1])
    counts = sub.sum(axis=1)
    radices = [math.comb(length, int(k)) for k in counts]
    ranks = _line_ranks(sub, counts)
    stream = bytearray()
    for lines, product in _rank_blocks(radices):
        number, scale = 0, 1
        for i in lines:
            number += ranks[i] * scale
            scale *= radices[i]
        stream += number.to_bytes(_block_nbytes(product), "little")
    meta = {"positions": "lines", "lines": {"transpose": bool(transpose)}}
    arrays = {
        "positions": np.frombuffer(bytes(stream), dtype=np.uint8).copy(),
        "line_counts": counts.astype(_count_dtype(length)),
        "columns": np.packbits(columns),
    }
    return meta, arrays


def _line_ranks(sub, counts, method=None):
    """Rank of each row's nonzero set: ``sum_i C(p_i, i)`` over its sorted
    positions ``p_1 < p_2 < ...`` (exact Python integers).

    Two exact ways, picked by their cost: one ``math.comb`` per nonzero, or
    the binomial table built one column at a time by the hockey-stick
    identity ``C(p, i) = sum_{q < p} C(q, i - 1)`` (an object-array cumsum
    per ``i``, shared by all rows), which is far cheaper when rows hold
    hundreds of nonzeros. ``method`` (``"comb"`` or ``"table"``) forces one.
    """
    n_lines, length = sub.shape
    max_count = int(counts.max()) if n_lines else 0
    rows, cols = np.nonzero(sub)
    if method is None:
        cheap = max_count * length <= max(32 * rows.size, 1 << 12)
        method = "table" if cheap else "comb"
    if method == "comb":
        return [sum(math.comb(int(p), i)
                    for i, p in enumerate(np.flatnonzero(line), start=1))
                for line in sub]
    # 0-based order of each nonzero within its row (np.nonzero is row-major)
    starts = np.cumsum(counts) - counts
    order = np.arange(rows.size) - starts[rows]
    by_order = np.argsort(order, kind="stable")
    bounds = np.searchsorted(order[by_order], np.arange(max_count + 1))
    ranks = np.zeros(n_lines, dtype=object)
    column = np.ones(length, dtype=object)  # C(p, 0)
    for i in range(1, max_count + 1):
        nxt = np.empty(length, dtype=object)
        nxt[0] = 0
        np.cumsum(column[:-1], out=nxt[1:])
        column = nxt  # C(p, i) for p = 0 .. length - 1
        sel = by_order[bounds[i - 1]:bounds[i]]
        np.add.at(ranks, rows[sel], column[cols[sel]])
    return [int(r) for r in ranks]


def _count_dtype(length):
    return np.uint8 if length <= 255 else np.int16 if length <= 32767 else np.int32


def _unrank_line(rank, length, count):
    """Positions (descending) of the ``count``-subset of ``range(length)`` of
    rank ``rank``, walking down with exact binomial ratios."""
    if count == 0:
        return []
    out = []
    c, i = length - 1, count
    binom = math.comb(c, i)  # C(c, i)
    while i > 0:
        while binom > rank:  # C(c - 1, i) = C(c, i) * (c - i) / c
            binom = binom * (c - i) // c
            c -= 1
        out.append(c)
        rank -= binom
        if i == 1:
            break
        binom = binom * i // c  # C(c - 1, i - 1) = C(c, i) * i / c
        c -= 1
        i -= 1
    return out


def _decode_lines(meta, arrays, shape, n_nonzero):
    transpose = bool(meta["lines"]["transpose"])
    rows = shape[0] if len(shape) else 1
    size = int(np.prod(shape, dtype=np.int64))
    if size > _LINES_MAX_CELLS or size == 0:
        raise FormatError("a lines-coded tensor is larger than the format allows")
    n_lines, n_cols = (size // rows, rows) if transpose else (rows, size // rows)
    if arrays["columns"].size != (n_cols + 7) // 8:
        raise FormatError("sparse line columns do not match the tensor")
    columns = np.unpackbits(arrays["columns"], count=n_cols).astype(bool)
    column_ids = np.flatnonzero(columns)
    length = int(column_ids.size)
    counts = arrays["line_counts"].astype(np.int64)
    if (counts.size != n_lines or counts.size and (counts.min() < 0
                                                   or counts.max() > length)
            or int(counts.sum()) != n_nonzero):
        raise FormatError("sparse line counts do not match the tensor")
    radices = [math.comb(length, int(k)) for k in counts]
    stream = arrays["positions"].tobytes()
    line_of, col_of, offset = [], [], 0
    for lines, product in _rank_blocks(radices):
        nbytes = _block_nbytes(product)
        number = int.from_bytes(stream[offset:offset + nbytes], "little")
        offset += nbytes
        if number >= product:
            raise FormatError("sparse line ranks are corrupted")
        for i in lines:
            number, rank = divmod(number, radices[i])
            found = _unrank_line(rank, length, int(counts[i]))
            line_of += [i] * len(found)
            col_of += found
    if offset != len(stream):
        raise FormatError("sparse line ranks have the wrong length")
    line_of = np.asarray(line_of, dtype=np.int64)
    col_of = column_ids[np.asarray(col_of, dtype=np.int64)]
    if transpose:
        flat = col_of * n_lines + line_of
    else:
        flat = line_of * n_cols + col_of
    return np.sort(flat)


def _lines_candidates(mask, shape):
    """Lines codings of ``mask``, rows as lines and columns as lines.

    Both orientations are encoded: which one wins depends on the counts and
    the dropped empty columns, and the ideal sizes do not always predict it
    (they ignore the entropy coding of the counts).
    """
    if mask.size > _LINES_MAX_CELLS or mask.size == 0:
        return []
    return [_encode_lines(mask, shape, transpose) for transpose in (False, True)]


def _float_candidates(values, entropy_coding, prefix="", with_codebook=True):
    out = [({prefix + "values": "dense"}, {prefix + "values": values})]
    half = values.astype(np.float16)
    if _same(half.astype(np.float32), values):
        out.append(({prefix + "values": "fp16"}, {prefix + "values": half}))
    if with_codebook:
        for meta, arrays in _codebook_candidates(values, entropy_coding, prefix):
            out.append(({prefix + "values": "codebook", **meta}, arrays))
    return out


def _same(decoded, original):
    """Exact equality: equal bit patterns, or equal values (only +-0 differ)."""
    decoded = np.asarray(decoded)
    if decoded.shape != original.shape or decoded.dtype != original.dtype:
        return False
    if original.dtype.kind != "f":
        return bool(np.array_equal(decoded, original))
    view = {2: np.uint16, 4: np.uint32, 8: np.uint64}[original.dtype.itemsize]
    return bool(((decoded == original) | (decoded.view(view) == original.view(view)))
                .all())


def _hint_list(hint):
    if hint is None:
        return []
    if isinstance(hint, dict):
        return [hint]
    return [h for h in hint if isinstance(h, dict)]


def _uniform_candidates(w, hint, entropy_coding):
    """Integers q with ``(q - zero_point).astype(float32) * scale`` == w."""
    axis = hint.get("axis", 0)
    scale = np.asarray(_to_numpy(hint["scale"]), dtype=np.float32).ravel()
    zero_point = np.asarray(_to_numpy(hint.get("zero_point", 0))).ravel()
    if not np.all(np.isfinite(scale)) or np.any(scale == 0):
        return []
    if np.any(zero_point != np.round(zero_point)):
        return []
    zero_point = zero_point.astype(np.int64)
    if scale.size == 1 and zero_point.size == 1:
        axis = None
    elif axis is None or w.ndim == 0 or not -w.ndim <= axis < w.ndim:
        return []
    else:
        axis = axis % w.ndim
        n_channels = w.shape[axis]
        if scale.size == 1:
            scale = np.repeat(scale, n_channels)
        if zero_point.size == 1:
            zero_point = np.repeat(zero_point, n_channels)
        if scale.size != n_channels or zero_point.size != n_channels:
            return []
    q = np.rint(w.astype(np.float64) / _along(scale, axis, w.ndim)) + _along(
        zero_point, axis, w.ndim)
    if not np.all(np.isfinite(q)):
        return []
    q = q.astype(np.int64)
    q_min = int(q.min()) if q.size else 0
    span = int(q.max()) - q_min if q.size else 0
    if span > 255:
        return []
    width = _index_bits(span + 1)
    meta_base = {"axis": axis, "q_min": q_min}
    out = []
    for fmt, stream in _symbol_candidates((q - q_min).astype(np.uint8), width,
                                          entropy_coding, adaptive=True):
        arrays = {"q": stream, "scale": scale.astype(np.float32),
                  "zero_point": zero_point.astype(np.int32)}
        out.append(({**meta_base, "index": fmt}, arrays))
    return out


def _along(vector, axis, ndim):
    if axis is None:
        return vector.reshape(())
    shape = [1] * ndim
    shape[axis] = -1
    return vector.reshape(shape)


def _to_numpy(value):
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return value


def encode_tensor(tensor, hint=None, *, entropy_coding=True):
    """Encode one tensor in the smallest encoding that decodes exactly.

    Parameters
    ----------
    tensor : torch.Tensor or ndarray
        The effective (baked) tensor.
    hint : dict, list of dict or None
        ``encoding_hint()`` results of the parametrizations that produced the
        tensor. Hints are advice: every candidate, hinted or detected, is
        decoded and compared with the tensor, and dropped unless equal.

        ``{"kind": "uniform", "scale": s, "zero_point": z, "axis": 0}``
            (``bits`` optional) proposes integers ``q`` decoded, in float32,
            as ``(q - zero_point).astype(np.float32) * scale``, where
            ``scale`` (float32) and ``zero_point`` (integers) are scalars or
            one value per index along ``axis`` (in torch:
            ``(q - zero_point).to(torch.float32) * scale.view(-1, 1, ...)``).
            ``q = rint(w / scale) + zero_point`` is recomputed here from the
            effective tensor, so a quantizer only needs to use this formula
            in its forward.
        Other kinds (``"codebook"``, ``"binary"``, ``"sparse"``) are
        detected from the values without a hint.
    entropy_coding : bool, default=True
        Rank candidates by their size after zlib/LZMA (as :func:`save` stores
        them), else by their raw size.

    Returns
    -------
    encoding : str
        ``"dense"``, ``"fp16"``, ``"codebook"``, ``"sparse"``, ``"binary"``,
        ``"uniform"`` or ``"raw"``.
    meta : dict
        JSON-serialisable metadata.
    arrays : dict of str to ndarray
        The 1-D arrays to store.

    Examples
    --------
    >>> import torch
    >>> from skcompress.io import decode_tensor, encode_tensor
    >>> scale = 0.3 * torch.arange(1, 9.0)[:, None]  # one scale per row
    >>> w = torch.randn(8, 64).sign() * scale
    >>> encoding, meta, arrays = encode_tensor(w)
    >>> encoding, sorted(arrays)
    ('binary', ['scale', 'signs'])
    >>> torch.equal(decode_tensor(encoding, meta, arrays, (8, 64)), w)
    True
    """
    w = np.ascontiguousarray(_to_numpy(tensor))
    key = _encoding_key(w, hint, entropy_coding)
    with _ENCODINGS_LOCK:
        cached = _ENCODINGS.get(key)
    if cached is None:
        cached = _encode_array(w, hint, entropy_coding)
        _remember_encoding(key, cached)
    # Callers own what they get: the cache keeps its own copy.
    return copy.deepcopy(cached)


# A fit measures its result twice from the same tensors (the file size, then
# the per-layer report), and encoding searches several exact candidates: the
# last encodings are kept, keyed by a digest of the tensor and its hints.
_ENCODINGS = collections.OrderedDict()
_ENCODINGS_LOCK = threading.Lock()
_ENCODINGS_MAX_BYTES = 64 * 2**20


def _encoding_key(w, hint, entropy_coding):
    digest = hashlib.blake2b(digest_size=20)
    digest.update(repr((w.dtype.str, w.shape, bool(entropy_coding))).encode())
    digest.update(w.tobytes())
    for h in _hint_list(hint):
        for name in sorted(h):
            value = h[name]
            digest.update(name.encode())
            if isinstance(value, (torch.Tensor, np.ndarray)):
                array = np.ascontiguousarray(_to_numpy(value))
                digest.update(repr((array.dtype.str, array.shape)).encode())
                digest.update(array.tobytes())
            else:
                digest.update(repr(value).encode())
    return digest.digest()


def _encoded_bytes(encoded):
    return sum(a.nbytes for a in encoded[2].values())


def _remember_encoding(key, encoded):
    with _ENCODINGS_LOCK:
        _ENCODINGS[key] = encoded
        total = sum(_encoded_bytes(item) for item in _ENCODINGS.values())
        while total > _ENCODINGS_MAX_BYTES and len(_ENCODINGS) > 1:
            _, dropped = _ENCODINGS.popitem(last=False)
            total -= _encoded_bytes(dropped)


def _encode_array(w, hint, entropy_coding):
    memo = {}
    if w.dtype == np.float32:
        candidates = _float32_candidates(w, _hint_list(hint), entropy_coding, memo)
    elif w.dtype.name in _DTYPES:
        candidates = []
    else:
        raise ValueError(f"tensor of dtype {w.dtype} cannot be stored.")
    flat = w.ravel()
    ranked = sorted(
        ((_cost(arrays, entropy_coding, memo), i, enc, meta, arrays)
         for i, (enc, meta, arrays) in enumerate(candidates)),
        key=lambda c: c[:2],
    )
    for _, _, enc, meta, arrays in ranked:
        try:
            decoded = _decode(enc, meta, arrays, w.shape)
        except (FormatError, ValueError, IndexError):
            continue
        if _same(decoded, w):
            return enc, meta, arrays
    return "raw", {"dtype": w.dtype.name}, {"values": flat.copy()}


def _float32_candidates(w, hints, entropy_coding, memo=None):
    flat = w.ravel()
    out = [("dense", meta, arrays)
           for meta, arrays in _float_candidates(flat, entropy_coding,
                                                 with_codebook=False)]
    out += [("codebook", meta, arrays)
            for meta, arrays in _codebook_candidates(flat, entropy_coding)]
    mask = flat != 0
    n_nonzero = int(mask.sum())
    if flat.size and n_nonzero <= flat.size // 2:
        values = flat[mask]
        value_options = _float_candidates(values, entropy_coding)
        position_options = _position_candidates(mask, entropy_coding, w.shape)
        if entropy_coding:
            # rank positions and values separately: their costs add up
            position_options = [min(position_options,
                                    key=lambda o: _cost(o[1], True, memo))]
            value_options = [min(value_options,
                                 key=lambda o: _cost(o[1], True, memo))]
        for pos_meta, pos_arrays in position_options:
            for val_meta, val_arrays in value_options:
                meta = {"n_nonzero": n_nonzero, **pos_meta, **val_meta}
                out.append(("sparse", meta, {**pos_arrays, **val_arrays}))
    if w.ndim >= 1 and flat.size and n_nonzero == flat.size:
        rows = np.abs(w.reshape(w.shape[0], -1))
        if (rows == rows[:, :1]).all():
            out.append(("binary", {}, {"signs": np.packbits(np.signbit(flat)),
                                       "scale": rows[:, 0].copy()}))
    for hint in hints:
        if hint.get("kind") == "uniform" and "scale" in hint:
            try:
                options = _uniform_candidates(w, hint, entropy_coding)
            except (TypeError, ValueError):
                options = []
            out += [("uniform", meta, arrays) for meta, arrays in options]
    return out


def _decode_values(meta, arrays, count, prefix=""):
    kind = meta[prefix + "values"]
    if kind in ("dense", "fp16"):
        values = arrays[prefix + "values"]
        if values.size != count:
            raise FormatError("value stream has the wrong length")
        return values.astype(np.float32)
    if kind == "codebook":
        centroids = arrays[prefix + "centroids"].astype(np.float32)
        indices = _read_symbols(meta[prefix + "index"], arrays[prefix + "indices"],
                                count)
        return centroids[indices]
    raise FormatError(f"unknown value encoding {kind!r}")


def _decode(encoding, meta, arrays, shape):
    size = int(np.prod(shape, dtype=np.int64))
    if encoding == "raw":
        out = arrays["values"]
    elif encoding == "dense":
        out = _decode_values(meta, arrays, size)
    elif encoding == "codebook":
        centroids = arrays["centroids"].astype(np.float32)
        out = centroids[_read_symbols(meta["index"], arrays["indices"], size)]
    elif encoding == "sparse":
        n_nonzero = int(meta["n_nonzero"])
        if meta["positions"] == "bitmask":
            positions = np.flatnonzero(np.unpackbits(arrays["positions"], count=size))
        elif meta["positions"] == "range":
            if size > _RANGE_MAX_MASK:
                raise FormatError("range-coded mask is larger than the format allows")
            positions = np.flatnonzero(_range_decode(arrays["positions"], 1, size))
        elif meta["positions"] == "lines":
            positions = _decode_lines(meta, arrays, shape, n_nonzero)
        else:
            gap = meta["gap"]
            symbols = _read_symbols(gap, arrays["positions"], int(gap["count"]))
            positions = _gap_positions(symbols, int(gap["bits"]))
        if positions.size != n_nonzero or (n_nonzero and positions[-1] >= size):
            raise FormatError("sparse positions do not match the tensor")
        out = np.zeros(size, dtype=np.float32)
        out[positions] = _decode_values(meta, arrays, n_nonzero)
    elif encoding == "binary":
        scale = arrays["scale"].astype(np.float32)
        if size % max(scale.size, 1):
            raise FormatError("binary scales do not match the tensor")
        signs = np.unpackbits(arrays["signs"], count=size).astype(bool)
        rows = np.repeat(scale, size // max(scale.size, 1))
        out = np.where(signs, -rows, rows).astype(np.float32)
    elif encoding == "uniform":
        axis = meta["axis"]
        ndim = len(shape)
        q = _read_symbols(meta["index"], arrays["q"], size).astype(np.int64)
        q = (q + int(meta["q_min"])).reshape(shape)
        scale = arrays["scale"].astype(np.float32)
        zero_point = arrays["zero_point"].astype(np.int64)
        out = (q - _along(zero_point, axis, ndim)).astype(np.float32) * _along(
            scale, axis, ndim)
    else:
        raise FormatError(f"unknown tensor encoding {encoding!r}")
    if out.size != size:
        raise FormatError("a tensor does not decode to its recorded shape")
    return out.reshape(shape)


def decode_tensor(encoding, meta, arrays, shape):
    """Decode what :func:`encode_tensor` returned into a CPU ``torch.Tensor``."""
    return torch.from_numpy(np.array(_decode(encoding, meta, arrays, tuple(shape))))


# --------------------------------------------------------------------------
# Parametrizations
# --------------------------------------------------------------------------


def collect_hints(module):
    """Return ``{"layer.weight": [hint, ...]}`` from parametrizations' hints.

    For every parametrized tensor, each parametrization in the stack (in order)
    that has a callable ``encoding_hint()`` contributes the dict it returns.
    """
    hints = {}
    for prefix, sub in module.named_modules():
        if not parametrize.is_parametrized(sub):
            continue
        for name, stack in sub.parametrizations.items():
            found = []
            for p in stack:
                method = getattr(p, "encoding_hint", None)
                if callable(method):
                    hint = method()
                    if isinstance(hint, dict):
                        found.append(hint)
            if found:
                hints[f"{prefix}.{name}" if prefix else name] = found
    return hints


def bake(module):
    """Return a deep copy of ``module`` with every parametrization made permanent.

    Examples
    --------
    >>> import torch
    >>> from torch.nn.utils import parametrize
    >>> from skcompress.io import bake
    >>> class Zero(torch.nn.Module):
    ...     def forward(self, w):
    ...         return torch.zeros_like(w)
    >>> layer = torch.nn.Linear(2, 2)
    >>> _ = parametrize.register_parametrization(layer, "weight", Zero())
    >>> baked = bake(layer)
    >>> parametrize.is_parametrized(baked), float(baked.weight.detach().sum())
    (False, 0.0)
    """
    baked = copy.deepcopy(module)
    with torch.no_grad():
        for sub in list(baked.modules()):
            if parametrize.is_parametrized(sub):
                # a deep copy shares the dynamic ``ParametrizedX`` class with the
                # original, and removing a parametrization deletes the property
                # from that class: give the copy its own class first
                cls = type(sub)
                namespace = {k: v for k, v in vars(cls).items()
                             if k not in ("__dict__", "__weakref__")}
                sub.__class__ = type(cls.__name__, cls.__bases__, namespace)
            while parametrize.is_parametrized(sub):
                name = next(iter(sub.parametrizations))
                parametrize.remove_parametrizations(sub, name, leave_parametrized=True)
    return baked


# --------------------------------------------------------------------------
# Classes, kwargs and the module tree
# --------------------------------------------------------------------------


def _class_path(cls):
    path = f"{cls.__module__}:{cls.__qualname__}"
    try:
        found = _resolve(path, object)
    except FormatError:
        found = None
    if found is not cls:
        raise ValueError(
            f"class {cls.__qualname__} cannot be saved by name: define it at module "
            "level in an importable module."
        )
    return path


def _resolve(path, base):
    """Resolve ``"pkg.mod:Qual.Name"`` to a subclass of ``base`` or raise."""
    if not isinstance(path, str) or path.count(":") != 1:
        raise FormatError(f"invalid class path {path!r}")
    modname, qualname = path.split(":")
    if modname in sys.modules:
        obj = sys.modules[modname]
    elif modname.split(".")[0] in _IMPORTABLE:
        try:
            obj = importlib.import_module(modname)
        except ImportError as exc:
            raise FormatError(f"cannot import {modname!r}: {exc}") from None
    else:
        raise FormatError(
            f"class {path!r} lives in module {modname!r}, which is not imported; "
            "import it before loading"
        )
    for part in qualname.split("."):
        if not part or part.startswith("<"):
            raise FormatError(f"invalid class path {path!r}")
        obj = getattr(obj, part, None)
    if not (isinstance(obj, type) and issubclass(obj, base)):
        raise FormatError(
            f"{path!r} is not a {base.__module__}.{base.__qualname__} subclass; "
            "refusing to instantiate it"
        )
    return obj


def _encode_value(value, what):
    """JSON form of a constructor kwarg or attribute, else raise ValueError."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(value):
            raise ValueError(f"{what} is not finite")
        return float(value)
    if isinstance(value, (list, tuple)):
        return [_encode_value(v, what) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        if "__class__" in value:
            raise ValueError(f"{what} uses the reserved key '__class__'")
        return {k: _encode_value(v, what) for k, v in value.items()}
    if isinstance(value, type) and issubclass(value, nn.Module):
        return {"__class__": _class_path(value)}
    raise ValueError(f"{what}={value!r} is not a JSON value or nn.Module class")


def _decode_value(value):
    if isinstance(value, list):
        return tuple(_decode_value(v) for v in value)
    if isinstance(value, dict):
        if set(value) == {"__class__"}:
            return _resolve(value["__class__"], nn.Module)
        return {k: _decode_value(v) for k, v in value.items()}
    return value


def _init_kwargs_of(module):
    """Constructor kwargs of ``module``: ``_init_kwargs`` or read from attributes."""
    cls = type(module)
    recorded = getattr(module, "_init_kwargs", None)
    if isinstance(recorded, dict):
        return {k: _encode_value(v, f"{cls.__name__}._init_kwargs[{k!r}]")
                for k, v in recorded.items()}
    kwargs = {}
    for name, param in inspect.signature(cls.__init__).parameters.items():
        if name in ("self", "device", "dtype") or param.kind in (
            param.VAR_POSITIONAL, param.VAR_KEYWORD
        ):
            continue
        value = getattr(module, name, inspect.Parameter.empty)
        if name == "bias" and (value is None or isinstance(value, torch.Tensor)):
            value = value is not None
        try:
            if value is inspect.Parameter.empty or isinstance(value, torch.Tensor):
                raise ValueError
            kwargs[name] = _encode_value(value, name)
        except ValueError:
            if param.default is inspect.Parameter.empty:
                raise ValueError(
                    f"cannot tell the constructor argument {name!r} of "
                    f"{cls.__qualname__}; store the constructor kwargs in an "
                    "attribute `_init_kwargs` (a dict of JSON values)."
                ) from None
    return kwargs


def _construct(cls, kwargs):
    # fork_rng: building a module draws random weights; the caller's global
    # RNG state must not change (all tensors are overwritten anyway)
    with torch.random.fork_rng(devices=[]):
        return cls(**{k: _decode_value(v) for k, v in kwargs.items()})


def _simple_attrs(module):
    out = {}
    for key, value in vars(module).items():
        if key.startswith("_") or key == "training":
            continue
        try:
            out[key] = _encode_value(value, key)
        except ValueError:
            continue
    return out


def _diff(module, ref):
    """What to change on ``ref`` (a fresh instance) to get ``module``'s layout."""
    node = {}
    mine, theirs = _simple_attrs(module), _simple_attrs(ref)
    attrs = {k: v for k, v in mine.items() if k in theirs and theirs[k] != v}
    if attrs:
        node["attrs"] = attrs
    none = [name for store in ("_parameters", "_buffers")
            for name, value in getattr(module, store).items()
            if value is None and getattr(ref, store).get(name) is not None]
    if none:
        node["none"] = none
    children = []
    for name, child in module._modules.items():
        ref_child = ref._modules.get(name)
        if child is None:
            if ref_child is not None:
                children.append([name, None])
        elif ref_child is None or type(child) is not type(ref_child):
            children.append([name, _describe(child)])
        else:
            sub = _diff(child, ref_child)
            if sub:
                children.append([name, sub])
    if children:
        node["children"] = children
    dropped = [name for name in ref._modules if name not in module._modules]
    if dropped:
        node["drop"] = dropped
    return node


def _describe(module, kwargs=None):
    """A full node: class, constructor kwargs and the differences from it."""
    cls = type(module)
    if kwargs is None:
        kwargs = _init_kwargs_of(module)
    node = {"class": _class_path(cls)}
    if kwargs:
        node["kwargs"] = kwargs
    try:
        ref = _construct(cls, kwargs)
    except Exception as exc:
        raise ValueError(
            f"{cls.__qualname__}(**{kwargs}) cannot be rebuilt ({exc}); store the "
            "constructor kwargs in an attribute `_init_kwargs`."
        ) from None
    node.update(_diff(module, ref))
    return node


def _build(node):
    module = _construct(_resolve(node["class"], nn.Module), node.get("kwargs", {}))
    _patch(module, node)
    return module


def _patch(module, node):
    for key, value in node.get("attrs", {}).items():
        if key.startswith("_") or key not in vars(module):
            raise FormatError(f"unexpected attribute {key!r}")
        setattr(module, key, _like(_decode_value(value), vars(module)[key]))
    for name in node.get("none", []):
        if name in module._parameters:
            module.register_parameter(name, None)
        elif name in module._buffers:
            module.register_buffer(name, None)
        else:
            raise FormatError(f"unexpected tensor name {name!r}")
    for name in node.get("drop", []):
        module._modules.pop(name, None)
    for name, child in node.get("children", []):
        if not isinstance(name, str) or not name or "." in name:
            raise FormatError(f"invalid submodule name {name!r}")
        if child is None:
            module._modules[name] = None
        elif "class" in child:
            if hasattr(module, name) and name not in module._modules:
                raise FormatError(f"invalid submodule name {name!r}")
            module.add_module(name, _build(child))
        elif isinstance(module._modules.get(name), nn.Module):
            _patch(module._modules[name], child)
        else:
            raise FormatError(f"submodule {name!r} is not in the rebuilt module")


def _like(value, reference):
    if isinstance(reference, list) and isinstance(value, tuple):
        return list(value)
    return value


# --------------------------------------------------------------------------
# Nets
# --------------------------------------------------------------------------


def _find_net(obj):
    from skorch import NeuralNet

    seen = 0
    while not isinstance(obj, NeuralNet) and hasattr(obj, "estimator_") and seen < 64:
        obj, seen = obj.estimator_, seen + 1
    if not isinstance(obj, NeuralNet):
        raise TypeError(
            f"obj must be a fitted compressor or skorch net, got {type(obj).__name__}."
        )
    if not getattr(obj, "initialized_", False):
        raise ValueError("obj is a skorch net that is not initialized; fit it first.")
    return obj


def _prefixed(params, prefix, what):
    out = {}
    for key, value in params.items():
        if not key.startswith(prefix) or "__" in key[len(prefix):]:
            continue
        try:
            out[key[len(prefix):]] = _encode_value(value, key)
        except ValueError as exc:
            warnings.warn(f"{what} parameter not saved: {exc}", stacklevel=3)
    return out


def _net_header(net):
    params = net.get_params(deep=False)
    module = net.module_
    module_cls = net.module if isinstance(net.module, type) else None
    if type(module) is module_cls:
        kwargs = {}
        for key, value in params.items():
            if key.startswith("module__"):
                kwargs[key[8:]] = _encode_value(value, key)
    else:
        kwargs = None
    criterion = net.criterion if isinstance(net.criterion, type) else type(
        net.criterion)
    header = {
        "class": _class_path(type(net)),
        "criterion": {"class": _class_path(criterion),
                      "kwargs": _prefixed(params, "criterion__", "criterion")},
        "params": {},
    }
    for key in _NET_PARAMS:
        if key in params:
            try:
                header["params"][key] = _encode_value(params[key], key)
            except ValueError:
                pass
    nonlinearity = params.get("predict_nonlinearity", "auto")
    if nonlinearity is None or nonlinearity == "auto":
        header["params"]["predict_nonlinearity"] = nonlinearity
    else:
        raise ValueError(
            "predict_nonlinearity must be 'auto' or None to be saved; got "
            f"{nonlinearity!r}."
        )
    try:
        classes = net.classes_
    except AttributeError:
        classes = None
    if classes is not None:
        header["params"]["classes"] = _encode_value(np.asarray(classes).tolist(),
                                                    "classes_")
    return header, kwargs


# --------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------


def _tensor_entries(module):
    """Yield ``(name, kind, tensor_or_alias, extra)`` for every param and buffer."""
    seen = {}
    for prefix, sub in module.named_modules(remove_duplicate=False):
        for kind, store in (("p", sub._parameters), ("b", sub._buffers)):
            for leaf, value in store.items():
                if value is None:
                    continue
                name = f"{prefix}.{leaf}" if prefix else leaf
                extra = {}
                if kind == "p" and not value.requires_grad:
                    extra["frozen"] = True
                if kind == "b" and leaf in sub._non_persistent_buffers_set:
                    extra["persistent"] = False
                if id(value) in seen:
                    yield name, kind, seen[id(value)], extra
                else:
                    seen[id(value)] = name
                    yield name, kind, value, extra


def _encode_module(module, hints, entropy_coding):
    tensors, arrays = [], []
    for name, kind, value, extra in _tensor_entries(module):
        entry = {"name": name, "kind": kind, **extra}
        if isinstance(value, str):
            entry["same"] = value
            tensors.append(entry)
            continue
        data = value.detach().cpu()
        if data.dtype == torch.bfloat16:
            raise ValueError(f"tensor {name!r} is bfloat16, which cannot be saved.")
        encoding, meta, streams = encode_tensor(
            data, hints.get(name), entropy_coding=entropy_coding
        )
        entry.update(shape=list(data.shape), encoding=encoding, meta=meta,
                     arrays={})
        for role, array in streams.items():
            entry["arrays"][role] = len(arrays)
            arrays.append(np.ascontiguousarray(array))
        tensors.append(entry)
    return tensors, arrays


def _layout(arrays, entropy_coding):
    """Order arrays (floats first) and cut the blob into chunks.

    Float arrays form one raw chunk (entropy coding gains little on float32
    mantissas and costs time); the index/position streams are compressed
    either one by one or together, whichever is smaller.
    """
    order = sorted(range(len(arrays)), key=lambda i: (arrays[i].dtype.kind != "f", i))
    floats = b"".join(arrays[i].tobytes() for i in order if arrays[i].dtype.kind == "f")
    ints = [arrays[i].tobytes() for i in order if arrays[i].dtype.kind != "f"]
    options = [[_best_codec(data, entropy_coding) for data in ints]]
    if entropy_coding and len(ints) > 1:
        options.append([_best_codec(b"".join(ints), True)])
    best = min(options, key=lambda chunks: sum(len(c[1]) for c in chunks))
    chunks = [("none", floats, floats)] if floats else []
    for (codec, stored), data in zip(best, ints if len(best) == len(ints) else
                                     [b"".join(ints)]):
        if codec == "none" and chunks and chunks[-1][0] == "none":
            merged = chunks[-1][1] + stored
            chunks[-1] = ("none", merged, merged)
        else:
            chunks.append((codec, stored, data))
    return order, [(codec, stored, len(raw)) for codec, stored, raw in chunks]


def dumps(obj, *, entropy_coding=True):
    """Return the bytes that :func:`save` writes for ``obj``.

    Examples
    --------
    >>> from skcompress.datasets import load_digits_images
    >>> from skcompress.io import dumps
    >>> from skcompress.models import make_digits_net
    >>> X, y = load_digits_images()
    >>> net = make_digits_net(max_epochs=1, module__hidden=8).fit(X[:64], y[:64])
    >>> dumps(net)[:4]
    b'SKCZ'
    """
    net = _find_net(obj)
    net_header, root_kwargs = _net_header(net)
    hints = collect_hints(net.module_)
    module = bake(net.module_).cpu()
    tree = _describe(module, root_kwargs)
    tensors, arrays = _encode_module(module, hints, entropy_coding)
    order, chunks = _layout(arrays, entropy_coding)
    position = {old: new for new, old in enumerate(order)}
    for entry in tensors:
        if "arrays" in entry:
            entry["arrays"] = {k: position[v] for k, v in entry["arrays"].items()}
    blob = b"".join(c[1] for c in chunks)
    header = {
        "format": FORMAT_VERSION,
        "net": net_header,
        "module": tree,
        "tensors": tensors,
        "arrays": [[arrays[i].dtype.name, int(arrays[i].size)] for i in order],
        "chunks": [[codec, raw_len, len(stored)] for codec, stored, raw_len in chunks],
        "blob": {"size": len(blob), "crc32": zlib.crc32(blob)},
    }
    text = json.dumps(header, sort_keys=True, separators=(",", ":"),
                      allow_nan=False).encode()
    codec_index, stored = _compress_header(text)
    prefix = _PREFIX.pack(_MAGIC, FORMAT_VERSION, codec_index, len(stored),
                          len(text), zlib.crc32(stored))
    return prefix + stored + blob


def save(obj, file, *, entropy_coding=True):
    """Save a fitted compressor or skorch net in the compact format.

    Parameters
    ----------
    obj : fitted compressor or skorch ``NeuralNet``
        A compressor is saved through its ``estimator_`` (followed through
        nested compressors down to the skorch net). ``obj`` is never modified:
        parametrizations are baked on a deep copy.
    file : str, os.PathLike or binary file object
    entropy_coding : bool, default=True
        Compress index, position and value streams with zlib or LZMA where that
        is smaller (and choose encodings by their compressed size).

    Returns
    -------
    n_bytes : int
        Bytes written, equal to ``len(dumps(obj))``.

    See Also
    --------
    load : rebuild the net.

    Examples
    --------
    >>> import io
    >>> from skcompress.datasets import load_digits_images
    >>> from skcompress.io import load, save
    >>> from skcompress.models import make_digits_net
    >>> X, y = load_digits_images()
    >>> net = make_digits_net(max_epochs=1, module__hidden=8).fit(X[:64], y[:64])
    >>> buffer = io.BytesIO()
    >>> n_bytes = save(net, buffer)
    >>> n_bytes == len(buffer.getvalue())
    True
    >>> (load(io.BytesIO(buffer.getvalue())).predict(X[:5]) == net.predict(X[:5])).all()
    np.True_
    """
    data = dumps(obj, entropy_coding=entropy_coding)
    if isinstance(file, (str, os.PathLike)):
        with open(file, "wb") as handle:
            handle.write(data)
    else:
        file.write(data)
    return len(data)


# --------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------


def _read_header(data):
    if len(data) < _PREFIX.size:
        raise FormatError("file is too short to be a skcompress file (truncated?)")
    magic, version, codec, stored_len, raw_len, crc = _PREFIX.unpack_from(data)
    if magic != _MAGIC:
        raise FormatError("not a skcompress file (bad magic number)")
    if version not in _READABLE_VERSIONS:
        raise FormatError(f"unsupported format version {version}")
    if codec >= len(_HEADER_CODECS) or (version == 1 and codec >= len(_CODECS)):
        raise FormatError("unknown header codec")
    end = _PREFIX.size + stored_len
    if len(data) < end:
        raise FormatError("file is truncated (header incomplete)")
    stored = data[_PREFIX.size:end]
    if zlib.crc32(stored) != crc:
        raise FormatError("header checksum mismatch: the file is corrupted")
    try:
        header = json.loads(_decompress_header(codec, stored, raw_len))
    except (ValueError, lzma.LZMAError, zlib.error, UnicodeDecodeError):
        raise FormatError("header is not valid JSON") from None
    if not isinstance(header, dict) or header.get("format") != version:
        raise FormatError("header has no supported format version")
    return header, data[end:]


def _read_arrays(header, blob):
    info = header["blob"]
    if len(blob) < info["size"]:
        raise FormatError("file is truncated (data incomplete)")
    if len(blob) > info["size"]:
        raise FormatError("file has trailing bytes after the data")
    if zlib.crc32(blob) != info["crc32"]:
        raise FormatError("data checksum mismatch: the file is corrupted")
    parts, offset = [], 0
    for codec, raw_len, stored_len in header["chunks"]:
        if codec not in _CODECS:
            raise FormatError(f"unknown codec {codec!r}")
        parts.append(_decompress(codec, blob[offset:offset + stored_len], raw_len))
        offset += stored_len
    raw = b"".join(parts)
    arrays, offset = [], 0
    for dtype, count in header["arrays"]:
        if dtype not in _DTYPES:
            raise FormatError(f"unsupported array dtype {dtype!r}")
        dtype = np.dtype(_DTYPES[dtype])
        end = offset + dtype.itemsize * int(count)
        if count < 0 or end > len(raw):
            raise FormatError("array table does not match the data")
        arrays.append(np.frombuffer(raw, dtype=dtype, count=count, offset=offset))
        offset = end
    if offset != len(raw):
        raise FormatError("array table does not match the data")
    return arrays


def _set_tensors(module, header, arrays):
    done = {}
    for entry in header["tensors"]:
        name, kind = entry["name"], entry["kind"]
        prefix, _, leaf = name.rpartition(".")
        sub = module.get_submodule(prefix)
        if "same" in entry:
            value = done[entry["same"]]
        else:
            streams = {role: arrays[i] for role, i in entry["arrays"].items()}
            value = decode_tensor(entry["encoding"], entry["meta"], streams,
                                  entry["shape"])
            if kind == "p":
                value = nn.Parameter(value, requires_grad=not entry.get("frozen"))
        if kind == "p":
            sub.register_parameter(leaf, value)
        elif kind == "b":
            sub.register_buffer(leaf, value, persistent=entry.get("persistent", True))
        else:
            raise FormatError(f"unknown tensor kind {kind!r}")
        done[name] = value
    for prefix, sub in module.named_modules(remove_duplicate=False):
        for store in (sub._parameters, sub._buffers):
            for leaf, value in store.items():
                name = f"{prefix}.{leaf}" if prefix else leaf
                if value is not None and name not in done:
                    raise FormatError(f"tensor {name!r} of the module is missing")


def loads(data):
    """Rebuild a skorch net from bytes written by :func:`dumps`; see :func:`load`."""
    from skorch import NeuralNet

    header, blob = _read_header(bytes(data))
    try:
        arrays = _read_arrays(header, blob)
        net_info, tree = header["net"], header["module"]
        net_cls = _resolve(net_info["class"], NeuralNet)
        module_cls = _resolve(tree["class"], nn.Module)
        criterion_cls = _resolve(net_info["criterion"]["class"], nn.Module)
        kwargs = {f"module__{k}": _decode_value(v)
                  for k, v in tree.get("kwargs", {}).items()}
        kwargs.update({f"criterion__{k}": _decode_value(v)
                       for k, v in net_info["criterion"]["kwargs"].items()})
        for key, value in net_info["params"].items():
            if key not in _NET_PARAMS + ("classes", "predict_nonlinearity"):
                raise FormatError(f"unexpected net parameter {key!r}")
            kwargs[key] = list(value) if key == "classes" else _decode_value(value)
        net = net_cls(module=module_cls, criterion=criterion_cls, device="cpu",
                      **kwargs)
        with torch.random.fork_rng(devices=[]):
            net.initialize()
        _patch(net.module_, tree)
        _set_tensors(net.module_, header, arrays)
        net.initialize_optimizer()
    except FormatError:
        raise
    except Exception as exc:  # malformed or tampered header: never a traceback
        raise FormatError(
            f"invalid skcompress file: {type(exc).__name__}: {exc}"
        ) from None
    return net


def load(file):
    """Load a net saved by :func:`save`, without unpickling.

    Only classes that resolve to ``torch.nn.Module`` subclasses (module,
    submodules, criterion) and ``skorch.NeuralNet`` subclasses are
    instantiated; classes outside torch, skorch and skcompress must already be
    imported. Truncated, corrupted or tampered files raise :class:`FormatError`.

    Parameters
    ----------
    file : str, os.PathLike or binary file object

    Returns
    -------
    net : skorch ``NeuralNet``
        Initialized on CPU, its ``module_`` holding plain dense tensors; it
        predicts exactly like the saved net.

    Examples
    --------
    >>> import io
    >>> from skcompress.datasets import load_digits_images
    >>> from skcompress.io import dumps, load
    >>> from skcompress.models import make_digits_net
    >>> X, y = load_digits_images()
    >>> net = make_digits_net(max_epochs=1, module__hidden=8).fit(X[:64], y[:64])
    >>> type(load(io.BytesIO(dumps(net)))).__name__
    'NeuralNetClassifier'
    """
    if isinstance(file, (str, os.PathLike)):
        with open(file, "rb") as handle:
            data = handle.read()
    else:
        data = file.read()
    return loads(data)


# --------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------


def tensor_storage_report(module, *, entropy_coding=True):
    """Bytes each tensor of ``module`` takes in the compact format.

    Parameters
    ----------
    module : nn.Module
        Possibly parametrized; it is baked on a copy.
    entropy_coding : bool, default=True

    Returns
    -------
    report : dict
        ``name -> {"encoding", "stored_bytes", "bits_per_weight"}`` for every
        parameter and buffer. ``stored_bytes`` sums the tensor's streams, each
        compressed on its own; :func:`save` may pack them a little tighter.

    Examples
    --------
    >>> import torch
    >>> from skcompress.io import tensor_storage_report
    >>> layer = torch.nn.Linear(64, 8, bias=False)
    >>> scale = 0.3 * torch.arange(1, 9.0)[:, None]
    >>> with torch.no_grad():
    ...     _ = layer.weight.copy_(layer.weight.sign() * scale)
    >>> tensor_storage_report(layer, entropy_coding=False)["weight"]
    {'encoding': 'binary', 'stored_bytes': 96, 'bits_per_weight': 1.5}
    """
    hints = collect_hints(module)
    baked = bake(module).cpu()
    report = {}
    for name, _, value, _ in _tensor_entries(baked):
        if isinstance(value, str):
            report[name] = {"encoding": "shared", "stored_bytes": 0,
                            "bits_per_weight": 0.0}
            continue
        encoding, _, arrays = encode_tensor(value.detach(), hints.get(name),
                                            entropy_coding=entropy_coding)
        stored = _cost(arrays, entropy_coding)
        report[name] = {
            "encoding": encoding,
            "stored_bytes": int(stored),
            "bits_per_weight": 8.0 * stored / max(value.numel(), 1),
        }
    return report
