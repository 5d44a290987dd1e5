"""Order-0 entropy coding of symbols with constriction's ANS coder.

The model is the stream's own histogram, quantized to 8-bit frequencies
(stored with the stream, so the decoder builds the same model), passed to
``constriction.stream.model.Categorical(..., perfect=False)``; the coder is
``constriction.stream.stack.AnsCoder`` (32-bit words, 24-bit precision).
The cost is the stream's order-0 entropy plus a few bytes, with no
hand-written coder: docs/format.md has the measurements against zstd and the
pure-Python range coder this replaced.
"""

import numpy as np

from ..errors import FormatError

__all__ = ["decode", "encode", "frequencies"]

_MAX_FREQUENCY = 0xFF


def frequencies(symbols, n_symbols):
    """8-bit frequencies of ``symbols`` (scaled so the largest is at most 255):
    nonzero exactly where a symbol occurs."""
    counts = np.bincount(np.asarray(symbols).ravel(), minlength=n_symbols)
    counts = counts[:n_symbols].astype(np.float64)
    top = counts.max() if counts.size else 0
    if top <= _MAX_FREQUENCY:
        return counts.astype(np.uint8)
    scaled = np.rint(counts * (_MAX_FREQUENCY / top))
    scaled[(counts > 0) & (scaled == 0)] = 1
    return scaled.astype(np.uint8)


def model(freq):
    """The categorical model of 8-bit frequencies (encoder and decoder alike)."""
    import constriction

    freq = np.asarray(freq, dtype=np.float64)
    if freq.ndim != 1 or freq.size == 0 or not freq.sum() > 0:
        raise FormatError("an entropy-coded stream has an empty frequency table")
    return constriction.stream.model.Categorical(freq / freq.sum(), perfect=False)


def _coder(words=None):
    import constriction

    if words is None:
        return constriction.stream.stack.AnsCoder()
    return constriction.stream.stack.AnsCoder(words)


def encode(symbols, n_symbols):
    """``(freq, words)``: the 8-bit model and the ANS words (uint32) of
    ``symbols`` (integers in ``[0, n_symbols)``)."""
    symbols = np.ascontiguousarray(symbols, dtype=np.int32).ravel()
    freq = frequencies(symbols, n_symbols)
    if symbols.size == 0:
        return freq, np.zeros(0, dtype=np.uint32)
    coder = _coder()
    coder.encode_reverse(symbols, model(freq))
    return freq, coder.get_compressed()


def decode(freq, words, count):
    """``count`` symbols (int32) from ``words`` under the model ``freq``."""
    if count == 0:
        return np.zeros(0, dtype=np.int32)
    words = np.ascontiguousarray(words, dtype=np.uint32)
    try:
        return np.asarray(_coder(words).decode(model(freq), int(count)),
                          dtype=np.int32)
    except FormatError:
        raise
    except Exception as exc:  # constriction reports invalid data as it likes
        raise FormatError(f"an entropy-coded stream is corrupted ({exc})") from None


def encode_many(streams):
    """One ANS coder over several ``(symbols, model)`` streams, decodable in
    order with :func:`decode_many` (the coder is a stack: encode backwards)."""
    coder = _coder()
    for symbols, entropy_model in reversed(streams):
        if len(symbols):
            coder.encode_reverse(np.ascontiguousarray(symbols, dtype=np.int32),
                                 entropy_model)
    return coder.get_compressed()


def decode_many(words, parts):
    """Inverse of :func:`encode_many`: ``parts`` is ``[(count, model), ...]``."""
    if not any(count for count, _ in parts):
        return [np.zeros(0, dtype=np.int32) for _ in parts]
    words = np.ascontiguousarray(words, dtype=np.uint32)
    try:
        coder = _coder(words)
        return [np.asarray(coder.decode(m, int(count)), dtype=np.int32) if count
                else np.zeros(0, dtype=np.int32) for count, m in parts]
    except Exception as exc:
        raise FormatError(f"an entropy-coded stream is corrupted ({exc})") from None
