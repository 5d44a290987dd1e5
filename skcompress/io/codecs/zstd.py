"""zstandard frames whose decoded size is known and checked before decoding."""

import zstandard

from ..errors import FormatError

__all__ = ["compress", "decompress"]

LEVEL = 1  # higher levels gain nothing on symbol streams (measured)


def _dictionary(dictionary):
    if dictionary is None:
        return None
    return zstandard.ZstdCompressionDict(dictionary,
                                         dict_type=zstandard.DICT_TYPE_RAWCONTENT)


def compress(data, level=LEVEL, dictionary=None):
    """One zstd frame that records its content size (``dictionary``: raw
    content the frame may refer to, needed again to decompress it)."""
    return zstandard.ZstdCompressor(
        level=level, write_content_size=True, dict_data=_dictionary(dictionary)
    ).compress(bytes(data))


def decompress(data, size, max_size=None, dictionary=None):
    """Decode a frame that must hold exactly ``size`` bytes (or, with
    ``max_size``, between ``size`` and ``max_size``).

    The content size the frame declares is checked before any output is
    allocated, and the decoder never writes past it.
    """
    try:
        declared = zstandard.frame_content_size(bytes(data))
    except zstandard.ZstdError:
        raise FormatError("a zstd stream is not a valid frame") from None
    if max_size is None and declared != size or max_size is not None and not (
            size <= declared <= max_size):
        raise FormatError("a zstd stream does not declare its expected size")
    size = declared
    try:
        out = zstandard.ZstdDecompressor(dict_data=_dictionary(dictionary)
                                         ).decompress(data, max_output_size=size)
    except zstandard.ZstdError as exc:
        raise FormatError(f"a zstd stream is corrupted ({exc})") from None
    if len(out) != size:
        raise FormatError("a zstd stream does not decode to its expected size")
    return out
