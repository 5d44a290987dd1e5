"""Positions of the nonzeros of a tensor, line by line.

The tensor is viewed as a matrix (``reshape(shape[0], -1)``, or its
transpose: whichever the closed-form cost below says is smaller). Columns
without any nonzero are dropped through a bitmap; each line stores its number
of nonzeros ``k`` (of ``l`` kept columns), and the gaps between its nonzeros
are entropy coded with a geometric model of the line's density ``k / l``.
Lines of different densities (dead units, dead inputs of a pruned layer) so
cost about their own entropy ``l * H(k / l)`` bits, within a few bits of the
enumerative ``log2 C(l, k)``, and decoding is one vectorized pass.

Two models, chosen by size (docs/format.md, "Positions"):

``enumerative`` (views of at most ``ENUM_MAX_CELLS`` cells, lines of at most
``ENUM_MAX_LENGTH``, where it saves more than ``ENUM_GAIN``): every cell of a
line is coded with the probability ``r / m`` that it is nonzero, ``r``
nonzeros being left among its ``m`` last cells; a line costs exactly
``log2 C(l, k)`` bits (enumerative coding, which knows ``k``). Cells whose
value is implied (``r == 0`` or ``r == m``) cost nothing. The decoder steps
through the columns, all lines at once.

``geometric`` (larger views): gap symbols ``s < 255`` skip ``s`` zeros then
place a nonzero; ``255`` skips 255 zeros and places nothing. Lines are
grouped by a density class computed with integer arithmetic from ``(k, l)``;
one ANS model per class. A line costs about ``l * H(k / l)`` bits, a few bits
more than enumerative coding, and decoding is one vectorized pass.

Tensors of at least ``ZSTD_MIN_CELLS`` cells use byte-oriented models
instead, as symbol streams do above ``ANS_MAX_SYMBOLS`` (ANS decodes tens of
nanoseconds per symbol; zstd a gigabyte a second), whichever is smaller,
unless the line models' closed-form cost (geometric, or enumerative where
the view of kept columns allows it) is more than ``LINE_GAIN`` smaller (lines
of very different densities, e.g. a pruned layer's dead units and inputs):

``bitmap``: the row-major mask packed MSB-first, one zstd frame (within about
1 % of the line models from 15 % density up);

``gaps``: the flat row-major gaps as bytes (``s < 255`` skips ``s`` zeros
then places a nonzero, ``255`` skips 255 zeros), one zstd frame (within about
1 % of the line models at 4-8 % density).
"""

import math

import numpy as np

from ..errors import FormatError
from . import ans, zstd
from .symbols import ANS_MAX_SYMBOLS

__all__ = ["decode", "encode"]

ESCAPE = 255
ZSTD_MIN_CELLS = ANS_MAX_SYMBOLS + 1  # large tensors: one threshold for the format
LINE_GAIN = 0.05
ENUM_MAX_CELLS = 1 << 18
ENUM_MAX_LENGTH = 1024
ENUM_GAIN = 0.05
_CLASS_BITS = 16  # densities are classed on a 1/65536 grid ...
_MANTISSA = 3     # ... as minifloats with a 3-bit mantissa
_MAX_CLASSES = (_CLASS_BITS + 2) << _MANTISSA


def _view(mask, shape, transpose):
    rows = shape[0] if len(shape) else 1
    view = mask.reshape(rows, -1)
    return view.T if transpose else view


def _line_bits(counts, length):
    p = counts / max(length, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -(p * np.log2(p) + (1 - p) * np.log2(1 - p))
    return float(np.nansum(length * h))


def _side_stream(kept, counts, escapes=()):
    """Column bitmap, line counts and escapes per class, in one zstd frame."""
    dtype = np.dtype(_count_dtype(kept.size)).newbyteorder("<")
    return zstd.compress(np.packbits(kept).tobytes() + counts.astype(dtype).tobytes()
                         + np.asarray(escapes, dtype="<u4").tobytes())


def _enumerative_bits(counts, length):
    from scipy.special import gammaln

    k = np.asarray(counts, dtype=np.float64)
    log_comb = gammaln(length + 1) - gammaln(k + 1) - gammaln(length - k + 1)
    return float(log_comb.sum() / np.log(2))


def _fits_enumerative(n_lines, length):
    return n_lines * length <= ENUM_MAX_CELLS and length <= ENUM_MAX_LENGTH


def _choice(view):
    """``(bits, model, kept, counts)`` of the positions of one orientation.

    The enumerative model costs exactly ``log2 C(l, k)`` per line but codes
    every undetermined cell; the geometric one codes only the nonzeros and
    costs about ``0.5 log2(2 pi k)`` bits more per line. Enumerative is used
    where that difference (closed form) is over ENUM_GAIN of the positions.
    """
    kept = view.any(axis=0)
    length = int(kept.sum())
    counts = view[:, kept].sum(axis=1)
    geometric = _line_bits(counts, length)
    model, bits = "geometric", geometric
    if _fits_enumerative(view.shape[0], length):
        enumerative = _enumerative_bits(counts, length)
        if geometric - enumerative > ENUM_GAIN * enumerative:
            model, bits = "enumerative", enumerative
    return bits + 8 * len(_side_stream(kept, counts)), model, kept, counts


def density_class(counts, length):
    """Integer class of each line's density ``counts / length``, exact so that
    the decoder derives the same classes from the same counts.

    ``u = (k << 16) // l``; classes 1-7 are ``u`` itself, larger ``u`` keep
    their bit length and the 3 bits after the leading one (a minifloat).
    """
    u = (np.asarray(counts, dtype=np.int64) << _CLASS_BITS) // max(int(length), 1)
    exponent = np.frexp(u.astype(np.float64))[1].astype(np.int64)  # bit length
    big = exponent > _MANTISSA
    shift = np.where(big, exponent - _MANTISSA - 1, 0)
    mantissa = (u >> shift) & ((1 << _MANTISSA) - 1)
    return np.where(big, (exponent << _MANTISSA) | mantissa, u)


def _class_density(cls):
    """The density a class stands for, an exact binary fraction."""
    if cls < 1 << _MANTISSA:
        u = float(cls)
    else:
        exponent, mantissa = cls >> _MANTISSA, cls & ((1 << _MANTISSA) - 1)
        u = ((1 << _MANTISSA | mantissa) + 0.5) * 2.0 ** (exponent - _MANTISSA - 1)
    return min(max(u / (1 << _CLASS_BITS), 2.0**-24), 1 - 2.0**-24)


def _model(cls):
    """Geometric gap model of a class: P(s) = (1-p)^s p, P(255) = (1-p)^255,
    built with multiplications only (identical on every IEEE machine)."""
    p = _class_density(int(cls))
    powers = np.cumprod(np.full(ESCAPE, 1.0 - p))  # (1-p)^1 .. (1-p)^255
    probs = np.empty(ESCAPE + 1)
    probs[0] = p
    probs[1:ESCAPE] = p * powers[:ESCAPE - 1]
    probs[ESCAPE] = powers[ESCAPE - 1]
    import constriction

    return constriction.stream.model.Categorical(probs / probs.sum(), perfect=False)


def _bernoulli():
    import constriction

    return constriction.stream.model.Bernoulli(perfect=False)


def _encode_enumerative(sub, counts):
    """ANS words of every undetermined cell, column by column."""
    n_lines, length = sub.shape
    cells = sub.astype(np.int64)
    before = np.cumsum(cells, axis=1) - cells  # nonzeros before each cell
    left = counts[:, None] - before            # r: nonzeros left from here on
    remaining = length - np.arange(length)     # m: cells left from here on
    active = (left > 0) & (left < remaining)
    order = active.T  # column-major: the decoder steps through the columns
    symbols = cells.T[order].astype(np.int32)
    probs = (left / remaining).T[order]
    coder = ans._coder()
    if symbols.size:
        coder.encode_reverse(symbols, _bernoulli(), probs)
    return coder.get_compressed()


def _decode_enumerative(words, counts, length):
    """Cells (lines x length, bool) from the words and the line counts."""
    n_lines = counts.size
    out = np.zeros((length, n_lines), dtype=bool)  # one row per step
    left = counts.astype(np.int64).copy()
    live = np.flatnonzero(left)  # lines with nonzeros still to place
    model = _bernoulli()
    try:
        coder = ans._coder(np.frombuffer(words, dtype="<u4"))
        for t in range(length):
            if not live.size:
                break
            m = length - t
            rest = left[live]
            full = rest == m  # every remaining cell is nonzero: implied
            if full.any():
                done = live[full]
                out[t:, done] = True
                left[done] = 0
                live, rest = live[~full], rest[~full]
            if live.size:
                bits = np.asarray(coder.decode(model, rest / m), dtype=bool)
                ones = live[bits]
                out[t, ones] = True
                left[ones] -= 1
                live = live[left[live] > 0] if bits.any() else live
    except Exception as exc:
        raise FormatError(f"sparse position stream is corrupted ({exc})") from None
    return out.T


def _count_dtype(length):
    return np.uint8 if length <= 0xFF else np.uint16 if length <= 0xFFFF else np.uint32


def encode(mask, shape):
    """``(meta, arrays)`` coding the nonzero positions of boolean ``mask``."""
    mask = np.asarray(mask, dtype=bool).reshape(shape)
    if mask.size >= ZSTD_MIN_CELLS:
        meta, streams = _byte_models(mask)
        # lines of very different densities (dead units, dead inputs): the
        # line models are worth their slower decoding when they save more
        # than LINE_GAIN; the closed-form estimate says when to search them,
        # the search's own size decides
        budget = (1 - LINE_GAIN) * sum(map(len, streams))
        if _line_bytes_estimate(mask) < budget:
            line_meta, line_streams = _searched(mask, shape)
            if sum(map(len, line_streams)) < budget:
                return line_meta, line_streams
        return meta, streams
    if not mask.any():  # what the search gives, without the search
        return _all_zero(shape)
    return _searched(mask, shape)


def _gap_bytes(flat):
    """Gap symbols of sorted flat positions: ``g // 255`` escapes, then
    ``g % 255``, per gap ``g`` of zeros before each nonzero."""
    gaps = np.diff(flat, prepend=-1) - 1
    escapes = gaps // ESCAPE
    ends = np.cumsum(escapes + 1) - 1
    out = np.full(int(ends[-1]) + 1 if ends.size else 0, ESCAPE, dtype=np.uint8)
    out[ends] = gaps % ESCAPE
    return out


def _byte_models(mask):
    """``bitmap`` or ``gaps`` (module docstring), whichever is smaller."""
    bitmap = zstd.compress(np.packbits(mask.ravel()).tobytes())
    gaps = zstd.compress(_gap_bytes(np.flatnonzero(mask)).tobytes())
    if len(gaps) < len(bitmap):
        return {"model": "gaps"}, [gaps, b""]
    return {"model": "bitmap"}, [bitmap, b""]


def _decode_bytes(model, data, words, size, n_nonzero):
    if len(words):
        raise FormatError("byte-coded positions have a second stream")
    if model == "bitmap":
        cells = np.unpackbits(np.frombuffer(zstd.decompress(data, (size + 7) // 8),
                                            dtype=np.uint8), count=size)
        flat = np.flatnonzero(cells)
        if flat.size != n_nonzero:
            raise FormatError("the position bitmap does not hold nnz nonzeros")
        return flat
    # gaps: nnz values and at most size // 255 escapes
    symbols = np.frombuffer(zstd.decompress(data, n_nonzero,
                                            n_nonzero + size // ESCAPE),
                            dtype=np.uint8)
    is_value = symbols < ESCAPE
    if int(is_value.sum()) != n_nonzero or (symbols.size and not is_value[-1]):
        raise FormatError("the position gaps do not match the nonzero count")
    advance = np.cumsum(symbols.astype(np.int64) + is_value)
    flat = advance[is_value] - 1
    if flat.size and flat[-1] >= size:
        raise FormatError("the position gaps run past the tensor")
    return flat


def _line_bytes_estimate(mask):
    """About what the line models cost in their better orientation, from two
    sums over the mask: the closed form of :func:`_line_bits` (geometric),
    or of :func:`_enumerative_bits` where the view of kept columns allows
    the enumerative model (dead lines and columns cost nothing), plus a byte
    per nonempty line's count and the kept-column bitmap (the side stream,
    whose empty lines zstd reduces to almost nothing)."""
    view = mask.reshape(mask.shape[0], -1)
    per_row, per_col = view.sum(axis=1), view.sum(axis=0)
    costs = []
    for counts, other in ((per_row, per_col), (per_col, per_row)):
        length = np.count_nonzero(other)
        bits = _line_bits(counts, length)
        if _fits_enumerative(counts.size, length):
            bits = min(bits, _enumerative_bits(counts, length))
        costs.append(bits / 8 + np.count_nonzero(counts) + other.size / 8)
    return min(costs)


def _searched(mask, shape):
    """:func:`encode` by the search over orientations and line models."""
    options = [(_choice(_view(mask, shape, t)), t) for t in (
        (False, True) if len(shape) > 1 else (False,))]
    (_, model, kept, counts), transpose = min(options, key=lambda o: o[0][0])
    sub = _view(mask, shape, transpose)[:, kept]
    length = int(sub.shape[1])
    if model == "enumerative":
        words = _encode_enumerative(sub, counts)
        meta = {"transpose": bool(transpose), "model": "enumerative"}
        return meta, [_side_stream(kept, counts), words.astype("<u4").tobytes()]
    rows, cols = np.nonzero(sub)
    # gaps within each line
    first = np.ones(rows.size, dtype=bool)
    first[1:] = rows[1:] != rows[:-1]
    previous = np.empty_like(cols)
    previous[0:1] = -1
    previous[1:] = cols[:-1]
    previous[first] = -1
    gaps = cols - previous - 1
    escapes = gaps // ESCAPE
    classes = density_class(counts, length)
    symbol_class = classes[rows]
    # expand: each nonzero is `escapes` ESCAPE symbols then its remainder
    ends = np.cumsum(escapes + 1) - 1
    symbols = np.full(int(ends[-1]) + 1 if ends.size else 0, ESCAPE, dtype=np.int32)
    symbols[ends] = gaps % ESCAPE
    owner = np.repeat(symbol_class, escapes + 1)
    # stable grouping by class; lines keep their order within a class
    order = np.argsort(owner, kind="stable")
    grouped, owner = symbols[order], owner[order]
    used, starts = np.unique(owner, return_index=True)
    bounds = list(starts) + [grouped.size]
    streams = [(grouped[bounds[i]:bounds[i + 1]], _model(c))
               for i, c in enumerate(used)]
    words = ans.encode_many(streams)
    escapes = [int((s == ESCAPE).sum()) for s, _ in streams]
    meta = {"transpose": bool(transpose), "model": "geometric"}
    arrays = [_side_stream(kept, counts, escapes), words.astype("<u4").tobytes()]
    return meta, arrays


def _all_zero(shape):
    """The positions of an all-zero tensor: no words, and the orientation
    whose side stream is shorter (the first on a tie), as :func:`encode`'s
    search would pick (every line costs 0 bits there)."""
    best = None
    for transpose in (False, True) if len(shape) > 1 else (False,):
        n_lines, n_cols = stream_sizes(shape, transpose)
        side = _side_stream(np.zeros(n_cols, dtype=bool),
                            np.zeros(n_lines, dtype=np.int64))
        if best is None or len(side) < len(best[1]):
            best = (transpose, side)
    return {"transpose": bool(best[0]), "model": "geometric"}, [best[1], b""]


def stream_sizes(shape, transpose):
    """``(n_lines, n_columns)`` of the view, from the shape alone."""
    rows = shape[0] if len(shape) else 1
    size = math.prod(shape)
    n_cols = size // rows if rows else 0
    return (n_cols, rows) if transpose else (rows, n_cols)


def _in_order(flat, size):
    """The distinct flat positions ``flat`` in increasing order: above 1/64
    density a scatter into a bitmap and one scan, faster than sorting."""
    if flat.size * 64 < size:
        return np.sort(flat)
    seen = np.zeros(size, dtype=bool)
    seen[flat] = True
    out = np.flatnonzero(seen)
    if out.size != flat.size:
        raise FormatError("sparse positions repeat")
    return out


def decode(meta, side, words, shape, n_nonzero):
    """Flat sorted positions of the nonzeros; every count is checked first."""
    size = math.prod(shape)
    model = meta.get("model")
    if model in ("bitmap", "gaps"):
        if size < ZSTD_MIN_CELLS:
            raise FormatError(f"position model {model!r} is not for {size} cells")
        if set(meta) != {"model"}:
            raise FormatError("byte-coded positions have unknown fields")
        return _decode_bytes(model, side, words, size, n_nonzero)
    transpose = bool(meta["transpose"])
    n_lines, n_cols = stream_sizes(shape, transpose)
    dtype = np.dtype(_count_dtype(n_cols)).newbyteorder("<")
    n_bitmap = (n_cols + 7) // 8
    fixed = n_bitmap + n_lines * dtype.itemsize
    side = zstd.decompress(side, fixed, fixed + 4 * _MAX_CLASSES)
    columns = np.frombuffer(side, dtype=np.uint8, count=n_bitmap)
    kept_ids = np.flatnonzero(np.unpackbits(columns, count=n_cols))
    length = int(kept_ids.size)
    counts = np.frombuffer(side, dtype=dtype, offset=n_bitmap,
                           count=n_lines).astype(np.int64)
    if model not in ("enumerative", "geometric"):
        raise FormatError(f"unknown position model {model!r}")
    if (len(side) - fixed) % 4:
        raise FormatError("sparse escape counts have an invalid length")
    escapes = np.frombuffer(side, dtype="<u4", offset=fixed).astype(np.int64)
    if counts.size and (counts.min() < 0 or counts.max() > length):
        raise FormatError("sparse line counts do not match the tensor")
    if int(counts.sum()) != n_nonzero:
        raise FormatError("sparse line counts do not add up to the nonzeros")
    if len(words) % 4:
        raise FormatError("sparse position stream has an invalid length")
    if model == "enumerative":
        if not _fits_enumerative(n_lines, length) or len(side) != fixed:
            raise FormatError("sparse positions are too large for their model")
        lines, cols = np.nonzero(_decode_enumerative(words, counts, length))
        cols = kept_ids[cols]
        flat = cols * n_lines + lines if transpose else lines * n_cols + cols
        return _in_order(flat, n_lines * n_cols)
    classes = density_class(counts, length)
    used = np.unique(classes[counts > 0])
    if used.size != escapes.size:
        raise FormatError("sparse escape counts do not match the line classes")
    # a line of length l holds at most k values and l // 255 escapes
    lines_of = {int(c): np.flatnonzero((classes == c) & (counts > 0)) for c in used}
    parts = []
    for c, n_escapes in zip(used.tolist(), escapes.tolist()):
        lines = lines_of[c]
        if n_escapes > lines.size * (length // ESCAPE + 1):
            raise FormatError("sparse position stream is longer than its lines allow")
        parts.append((int(counts[lines].sum()) + n_escapes, _model(c)))
    decoded = ans.decode_many(np.frombuffer(words, dtype="<u4"), parts)
    line_of, col_of = [], []
    for c, symbols in zip(used.tolist(), decoded):
        lines = lines_of[c]
        is_value = symbols < ESCAPE
        if int(is_value.sum()) != int(counts[lines].sum()) or not is_value[-1]:
            raise FormatError("sparse position stream does not match the counts")
        advance = np.cumsum(symbols.astype(np.int64) + is_value)
        pos = advance[is_value] - 1  # position in the concatenation of lines
        owner = np.repeat(lines, counts[lines])
        last = np.cumsum(counts[lines]) - 1  # each line's last value
        base = np.zeros(lines.size, dtype=np.int64)
        base[1:] = pos[last[:-1]] + 1
        within = pos - np.repeat(base, counts[lines])
        if within.size and within.max() >= length:
            raise FormatError("sparse positions run past their line")
        line_of.append(owner)
        col_of.append(kept_ids[within])
    line_of = np.concatenate(line_of) if line_of else np.zeros(0, np.int64)
    col_of = np.concatenate(col_of) if col_of else np.zeros(0, np.int64)
    flat = col_of * n_lines + line_of if transpose else line_of * n_cols + col_of
    return _in_order(flat, n_lines * n_cols)
