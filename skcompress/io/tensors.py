"""Per-tensor encodings: chosen from the constraint's own description.

A tensor's encoding follows from the ``encoding_hint()`` of the constraints
(parametrizations) that produced it, never from a trial search:

=================  ==========================================================
hints              encoding
=================  ==========================================================
``sparse``         ``sparse``: positions (:mod:`.codecs.positions`) + values
                   (``dense``, ``fp16``, or ``codebook`` with a codebook hint)
``codebook``       ``codebook``: centroids + one symbol per weight
``uniform``        ``uniform``: integers + scale and zero point per channel
``binary``         ``binary``: one sign bit per weight + one scale per row
none               ``fp16`` when every value is exactly a float16, else
                   ``dense`` (float32); ``sparse`` when at most half of the
                   values are nonzero; ``raw`` for other dtypes
=================  ==========================================================

Every encoding is decoded and compared with the tensor (equal bit patterns,
or equal values: only the sign of a zero may change); one that does not
reproduce it exactly is replaced by ``dense``. Symbol streams are entropy
coded by :mod:`.codecs.symbols` (docs/format.md, "Symbol streams").
"""

import math
from dataclasses import dataclass, field

import numpy as np

from .codecs import positions
from .codecs.bits import le_bytes
from .codecs.symbols import decode as _decode_symbols
from .codecs.symbols import encode as _encode_symbols
from .errors import FormatError

__all__ = ["DTYPES", "EncodedTensor", "decode", "decode_tensor", "encode",
           "encode_tensor", "same"]

DTYPES = {
    "float32": np.float32, "float16": np.float16, "float64": np.float64,
    "int8": np.int8, "int16": np.int16, "int32": np.int32, "int64": np.int64,
    "uint8": np.uint8, "bool": np.bool_,
}


@dataclass
class EncodedTensor:
    """What one tensor becomes: an encoding, its JSON metadata, its streams."""

    encoding: str
    meta: dict
    streams: list = field(default_factory=list)

    @property
    def stored_bytes(self):
        return sum(len(s) for s in self.streams)


# ------------------------------------------------------------------ values
def _float_values(values):
    """Meta and streams of float32 values: fp16 when exact, else float32."""
    half = values.astype(np.float16)
    if same(half.astype(np.float32), values):
        return {"enc": "fp16"}, [le_bytes(half, np.float16)]
    return {"enc": "dense"}, [le_bytes(values, np.float32)]


def _byte_coded(pos_meta):
    """Sparse tensors whose positions are byte-coded (tensors of more cells
    than ``ANS_MAX_SYMBOLS``, ``positions.ZSTD_MIN_CELLS``, unless the line
    models save more than ``positions.LINE_GAIN``) are coded with zstd
    throughout: the values of their nonzeros too, whatever their count. Line
    -coded positions are ANS-decoded anyway, and so are the values then
    (docs/format.md)."""
    return pos_meta.get("model") in ("bitmap", "gaps")


def _codebook_values(values, centroids=None, rows=1, row_of=None, large=False):
    """Centroids + symbols, or None when the values are not a codebook."""
    if centroids is None:
        centroids = np.unique(values)
    else:
        # a codebook constraint leaves pruned weights at exactly zero
        zero = np.zeros(1 if (values == 0).any() else 0, dtype=np.float32)
        centroids = np.unique(np.concatenate(
            [np.asarray(centroids, dtype=np.float32).ravel(), zero]))
    if not 1 <= centroids.size <= 256:
        return None
    index = np.searchsorted(centroids, values).clip(0, centroids.size - 1)
    if not same(centroids[index], values):
        return None
    sym_meta, streams = _encode_symbols(index, centroids.size, rows, row_of,
                                        large=large)
    return ({"enc": "codebook", "k": int(centroids.size), "sym": sym_meta},
            [le_bytes(centroids, np.float32), *streams])


def _decode_values(meta, take, count, rows=1, row_of=None):
    enc = meta["enc"]
    if enc == "dense":
        return _array(take(4 * count), np.float32, count)
    if enc == "fp16":
        return _array(take(2 * count), np.float16, count).astype(np.float32)
    if enc == "codebook":
        k = meta["k"]
        if not isinstance(k, int) or not 1 <= k <= 256 or meta["sym"]["n"] != k:
            raise FormatError("a codebook must have 1 to 256 centroids")
        centroids = _array(take(4 * k), np.float32, k)
        return centroids[_decode_symbols(meta["sym"], take, count, rows, row_of)]
    raise FormatError(f"unknown value encoding {enc!r}")


def _array(data, dtype, count):
    dtype = np.dtype(dtype).newbyteorder("<")
    if len(data) != dtype.itemsize * count:
        raise FormatError("a stream has the wrong length for its tensor")
    return np.frombuffer(data, dtype=dtype).astype(dtype.newbyteorder("="))


# ---------------------------------------------------------------- encodings
def _uniform(w, hint):
    """Integers ``q`` with ``(q - zero_point).astype(float32) * scale == w``."""
    scale = np.asarray(hint["scale"], dtype=np.float32).ravel()
    zero_point = np.asarray(hint.get("zero_point", 0), dtype=np.float64).ravel()
    if (not np.all(np.isfinite(scale)) or np.any(scale == 0)
            or np.any(zero_point != np.round(zero_point))):
        return None
    zero_point = zero_point.astype(np.int64)
    channels = 1 if scale.size == 1 and zero_point.size == 1 else (
        w.shape[0] if w.ndim else 0)
    if channels == 0 or scale.size not in (1, channels) or zero_point.size not in (
            1, channels):
        return None
    scale = np.broadcast_to(scale, (channels,))
    zero_point = np.broadcast_to(zero_point, (channels,))
    rows = w.reshape(channels, -1)
    centered = np.rint(rows / scale[:, None])  # q - zero_point, if on the grid
    row_min = centered.min(axis=1)
    row_max = centered.max(axis=1)
    if not (np.isfinite(row_min).all() and np.isfinite(row_max).all()):
        return None
    q_min = int((row_min + zero_point).min())
    span = int((row_max + zero_point).max()) - q_min + 1
    if span > 256:
        return None
    shift = (q_min - zero_point).astype(np.float32)[:, None]
    centered -= shift
    symbols = centered.astype(np.uint8)  # in [0, span)
    # the decoder's arithmetic, checked here: (symbol + q_min - zp) * scale
    if not same((symbols.astype(np.float32) + shift) * scale[:, None], rows):
        return None
    sym_meta, streams = _encode_symbols(symbols.ravel(), span, channels)
    if (zero_point == zero_point[0]).all():
        zero_point = zero_point[:1]
    meta = {"channels": int(channels), "q_min": q_min, "sym": sym_meta,
            "zero_points": int(zero_point.size)}
    return EncodedTensor("uniform", meta, [
        le_bytes(scale, np.float32), le_bytes(zero_point, np.int32), *streams])


def _binary(w):
    if w.ndim == 0 or w.size == 0 or not np.all(w != 0):
        return None
    rows = np.abs(w.reshape(w.shape[0], -1))
    if not (rows == rows[:, :1]).all():
        return None
    scale = rows[:, 0]
    if (scale == scale[0]).all():
        scale = scale[:1]  # one scale for the whole tensor
    return EncodedTensor("binary", {"scales": int(scale.size)},
                         [np.packbits(np.signbit(w).ravel()).tobytes(),
                          le_bytes(scale, np.float32)])


def _sparse(w, value_hint=None):
    flat = w.ravel()
    mask = flat != 0
    pos_meta, pos_streams = positions.encode(mask, w.shape)
    values = flat[mask]
    coded = None
    if value_hint is not None:
        rows = w.shape[0]
        coded = _codebook_values(values, value_hint.get("centroids"), rows,
                                 np.flatnonzero(mask) // (w.size // rows),
                                 large=_byte_coded(pos_meta))
    if coded is None:
        coded = _float_values(values)
    value_meta, value_streams = coded
    meta = {"nnz": int(mask.sum()), "positions": pos_meta, "values": value_meta}
    return EncodedTensor("sparse", meta, [*pos_streams, *value_streams])


def _dense(w):
    meta, streams = _float_values(w.ravel())
    return EncodedTensor(meta["enc"], {}, streams)


def _choose(w, hints):
    kinds = {h.get("kind"): h for h in hints if isinstance(h, dict)}
    density = np.count_nonzero(w) / max(w.size, 1)
    if "uniform" in kinds and "scale" in kinds["uniform"]:
        return _uniform(w, kinds["uniform"])
    if "codebook" in kinds:
        if "sparse" in kinds and density <= 0.5:
            return _sparse(w, kinds["codebook"])
        coded = _codebook_values(w.ravel(), kinds["codebook"].get("centroids"),
                                 w.shape[0] if w.ndim else 1)
        return None if coded is None else EncodedTensor("codebook", *coded)
    if "binary" in kinds:
        return _binary(w)
    # a mask pays for itself below ~97% density; unhinted zeros from half on
    if density < (0.97 if "sparse" in kinds else 0.5):
        return _sparse(w)
    return None


def _from_indices(hint, shape, sparse):
    """A codebook constraint's own centroids and indices (``-1``: a pruned
    zero), when it is the last constraint: its output is a function of these
    alone, ``where(indices >= 0, centroids[indices], 0)``."""
    centroids = np.asarray(hint["centroids"], dtype=np.float32).ravel()
    indices = np.asarray(hint["indices"]).reshape(shape)
    k = centroids.size
    if not 1 <= k <= 256 or indices.shape != shape or not len(shape):
        return None
    keep = indices >= 0
    rows = shape[0]
    if sparse and keep.mean() <= 0.5:
        pos_meta, pos_streams = positions.encode(keep, shape)
        flat = np.flatnonzero(keep)
        sym_meta, sym_streams = _encode_symbols(indices.ravel()[flat], k, rows,
                                                flat // (indices.size // rows),
                                                large=_byte_coded(pos_meta))
        value_meta = {"enc": "codebook", "k": k, "sym": sym_meta}
        meta = {"nnz": int(flat.size), "positions": pos_meta, "values": value_meta}
        return EncodedTensor("sparse", meta, [
            *pos_streams, le_bytes(centroids, np.float32), *sym_streams])
    if not keep.all():  # pruned weights: one more centroid, exactly zero
        centroids = np.append(centroids, np.float32(0))
        k += 1
        if k > 256:
            return None
    symbols = np.where(keep, indices, k - 1).ravel()
    sym_meta, streams = _encode_symbols(symbols, k, rows)
    return EncodedTensor("codebook", {"k": k, "sym": sym_meta},
                         [le_bytes(centroids, np.float32), *streams])


def _from_integers(hint, shape):
    """A uniform grid's own integers ``q`` (the only constraint on the tensor):
    its output is ``(q - zero_point) * scale`` in float32, which is what the
    decoder computes, so the integers are stored as they are. The hint gives
    them as ``integers``, or as uint8 ``symbols`` ``q - q_min`` with ``q_min``
    (what ``UniformQuantize`` computes in place, saving two passes)."""
    if "symbols" in hint:  # q - q_min, already uint8: no pass to shift them
        q = np.asarray(hint["symbols"])
        offset = int(hint["q_min"])
        if q.dtype != np.uint8:
            return None
    else:
        q, offset = np.asarray(hint["integers"]), 0
    scale = np.asarray(hint["scale"], dtype=np.float32).ravel()
    zero_point = np.asarray(hint.get("zero_point", 0), dtype=np.float64).ravel()
    if q.shape != shape or not shape or q.dtype.kind not in "iu":
        return None
    channels = 1 if scale.size == 1 and zero_point.size == 1 else shape[0]
    if (scale.size not in (1, channels) or zero_point.size not in (1, channels)
            or np.any(zero_point != np.round(zero_point))
            or not np.all(np.isfinite(scale))):
        return None
    low, high = (int(q.min()), int(q.max())) if q.size else (0, 0)
    q_min, q_max = low + offset, high + offset
    if q_max - q_min > 255:
        return None
    if q.dtype == np.uint8 and low == 0:
        symbols = q.ravel()
    else:
        symbols = (q - low).astype(np.uint8).ravel()
    zero_point = np.broadcast_to(zero_point.astype(np.int64), (channels,))
    if (zero_point == zero_point[0]).all():
        zero_point = zero_point[:1]
    sym_meta, streams = _encode_symbols(symbols, q_max - q_min + 1, channels)
    meta = {"channels": int(channels), "q_min": q_min, "sym": sym_meta,
            "zero_points": int(zero_point.size)}
    return EncodedTensor("uniform", meta, [
        le_bytes(np.broadcast_to(scale, (channels,)), np.float32),
        le_bytes(zero_point, np.int32), *streams])


def encode(w, hints=(), shape=None, dtype=None):
    """Encode one tensor exactly; see the module docstring.

    ``w`` is a numpy array, or a callable returning it (with ``shape`` and
    ``dtype`` given): an encoding that follows from the constraint alone
    never calls it.
    """
    if callable(w):
        hints = list(hints or ())
        last = [h for h in hints if isinstance(h, dict) and h.get("last")]
        if (dtype == "float32" and len(hints) == 1 and last
                and last[0].get("kind") == "uniform"
                and ("integers" in last[0] or "symbols" in last[0])):
            encoded = _from_integers(last[0], tuple(shape))
            if encoded is not None:
                return encoded
        if (dtype == "float32" and last and last[0].get("kind") == "codebook"
                and "indices" in last[0] and "centroids" in last[0]):
            kinds = {h.get("kind") for h in hints if isinstance(h, dict)}
            encoded = _from_indices(last[0], tuple(shape), "sparse" in kinds)
            if encoded is not None:
                return encoded
        w = w()
    w = np.ascontiguousarray(w)
    if w.dtype != np.float32:
        if w.dtype.name not in DTYPES:
            raise ValueError(f"tensor of dtype {w.dtype} cannot be stored.")
        return EncodedTensor("raw", {}, [le_bytes(w, w.dtype)])
    encoded = None
    if w.size:
        try:
            encoded = _choose(w, list(hints or ()))
        except (ValueError, TypeError, KeyError):
            encoded = None
    return encoded if encoded is not None else _dense(w)


def same(decoded, original):
    """Exact equality: equal bit patterns, or equal values (only +-0 differ)."""
    decoded = np.asarray(decoded)
    if decoded.shape != original.shape or decoded.dtype != original.dtype:
        return False
    if original.dtype.kind != "f":
        return bool(np.array_equal(decoded, original))
    view = {2: np.uint16, 4: np.uint32, 8: np.uint64}[original.dtype.itemsize]
    return bool(((decoded == original)
                 | (decoded.view(view) == original.view(view))).all())


# ------------------------------------------------------------------ decoding
def decode(encoding, meta, streams, shape, dtype):
    """The tensor (numpy, shape ``shape``) an encoding stands for.

    ``streams`` are byte strings, consumed in order; every one must be used.
    Sizes are checked before anything is decoded.
    """
    streams = list(streams)
    cursor = iter(range(len(streams)))

    def take(expected=None):
        try:
            data = streams[next(cursor)]
        except StopIteration:
            raise FormatError("a tensor has fewer streams than its encoding needs"
                              ) from None
        if expected is not None and len(data) != expected:
            raise FormatError("a stream has the wrong length for its tensor")
        return data

    size = math.prod(shape)
    if encoding == "raw":
        if dtype not in DTYPES or dtype == "float32":
            raise FormatError(f"unsupported raw dtype {dtype!r}")
        out = _array(take(np.dtype(DTYPES[dtype]).itemsize * size), DTYPES[dtype],
                     size)
    elif dtype != "float32":
        raise FormatError(f"encoding {encoding!r} is for float32 tensors")
    elif encoding in ("dense", "fp16"):
        out = _decode_values({"enc": encoding}, take, size)
    elif encoding == "codebook":
        out = _decode_values({"enc": "codebook", **meta}, take, size,
                             shape[0] if shape else 1)
    elif encoding == "uniform":
        channels = meta["channels"]
        if channels not in (1, shape[0] if shape else 1) or not isinstance(
                meta["q_min"], int) or abs(meta["q_min"]) > 2**31:
            raise FormatError("uniform channels do not match the tensor")
        scale = _array(take(4 * channels), np.float32, channels)
        n_zero = meta["zero_points"]
        if n_zero not in (1, channels):
            raise FormatError("uniform zero points do not match the tensor")
        zero_point = np.broadcast_to(_array(take(4 * n_zero), np.int32, n_zero),
                                     (channels,)).astype(np.int64)
        q = _decode_symbols(meta["sym"], take, size, channels).reshape(channels, -1)
        offset = (meta["q_min"] - zero_point).astype(np.float32)
        # float32(q) + offset, then * scale: the constraint's own arithmetic;
        # the conversion happens inside the addition, the product in place
        out = np.add(q, offset[:, None], dtype=np.float32)
        out *= scale[:, None]
    elif encoding == "binary":
        rows = shape[0] if shape else 0
        if rows == 0:
            raise FormatError("a binary tensor needs at least one dimension")
        signs = np.unpackbits(np.frombuffer(take((size + 7) // 8), np.uint8),
                              count=size).astype(bool).reshape(rows, -1)
        n_scales = meta.get("scales")
        if n_scales not in (1, rows):
            raise FormatError("binary scales do not match the tensor")
        scale = np.broadcast_to(_array(take(4 * n_scales), np.float32, n_scales),
                                (rows,))
        out = np.where(signs, -scale[:, None], scale[:, None])
    elif encoding == "sparse":
        nnz = meta["nnz"]
        if not isinstance(nnz, int) or not 0 <= nnz <= size or not shape:
            raise FormatError("sparse nonzero count does not match the tensor")
        where = positions.decode(meta["positions"], take(), take(), shape, nnz)
        out = np.zeros(size, dtype=np.float32)
        rows = shape[0]
        out[where] = _decode_values(meta["values"], take, nnz, rows,
                                    where // (size // rows))
    else:
        raise FormatError(f"unknown tensor encoding {encoding!r}")
    if next(cursor, None) is not None:
        raise FormatError("a tensor has more streams than its encoding uses")
    return np.asarray(out).reshape(shape)


def _as_numpy(value):
    if hasattr(value, "detach"):
        return value.detach().cpu().numpy()
    return value


def encode_tensor(tensor, hint=None):
    """Encode one tensor: ``(encoding, meta, streams)``.

    ``hint`` is an ``encoding_hint()`` dict, or a list of them (the
    constraint stack, in order); see the module docstring for the rule.

    Examples
    --------
    >>> import torch
    >>> from skcompress.io import decode_tensor, encode_tensor
    >>> w = torch.randn(8, 64).sign() * 0.3 * torch.arange(1, 9.0)[:, None]
    >>> encoding, meta, streams = encode_tensor(w, {"kind": "binary"})
    >>> encoding, len(streams)
    ('binary', 2)
    >>> torch.equal(decode_tensor(encoding, meta, streams, (8, 64)), w)
    True
    """
    hints = [hint] if isinstance(hint, dict) else list(hint or ())
    hints = [{k: _as_numpy(v) for k, v in h.items()} for h in hints
             if isinstance(h, dict)]
    encoded = encode(np.ascontiguousarray(_as_numpy(tensor)), hints)
    return encoded.encoding, encoded.meta, encoded.streams


def decode_tensor(encoding, meta, streams, shape, dtype="float32"):
    """Decode what :func:`encode_tensor` returned into a CPU ``torch.Tensor``."""
    import torch

    out = decode(encoding, meta, streams, tuple(shape), dtype)
    return torch.from_numpy(np.require(out, requirements=["W", "C"]))
