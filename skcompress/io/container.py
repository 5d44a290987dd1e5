"""The container: prefix, JSON header and blob, with checksums and limits.

Layout (integers little-endian; docs/format.md, "Layout")::

    prefix  "<4sBBHIIQI": magic b"SKCZ", version (3), flags (0), reserved (0),
            header length, header crc32, blob length, blob crc32
    header  one zstd frame of UTF-8 JSON (content size recorded, at most
            LIMITS["header_bytes"])
    blob    every tensor's streams, back to back, in header order
"""

import json
import os
import stat
import struct
import zlib

import numpy as np

from .codecs import zstd
from .errors import LIMITS, FormatError

__all__ = ["FORMAT_VERSION", "pack", "read_bytes", "unpack"]

# headers up to this size are compressed at zstd level 19, larger ones at 9
HEADER_LEVEL_19_BYTES = 8192

FORMAT_VERSION = 3
MAGIC = b"SKCZ"
PREFIX = struct.Struct("<4sBBHIIQI")
# The header's vocabulary (field names, encodings, common torch/skorch class
# paths): a raw-content zstd dictionary, so that a header of a few hundred
# bytes compresses from its first byte. Part of format version 3: never
# change it without bumping FORMAT_VERSION.
HEADER_DICTIONARY = (
    b'{"format":3,"module":{"children":[["0",{"class":"torch.nn.modules.'
    b'container:Sequential"},"drop":["none":["bias"],"attrs":{"in_channels":'
    b'"class":"torch.nn.modules.conv:Conv2d","kwargs":{"bias":true,"dilation":'
    b'[1,1],"groups":1,"in_channels":,"kernel_size":[3,3],"out_channels":,'
    b'"padding":[1,1],"padding_mode":"zeros","stride":[1,1]}},'
    b'"class":"torch.nn.modules.linear:Linear","kwargs":{"bias":true,'
    b'"in_features":,"out_features":}},"class":"torch.nn.modules.batchnorm:'
    b'BatchNorm2d","kwargs":{"affine":true,"eps":1e-05,"momentum":0.1,'
    b'"num_features":,"track_running_stats":true}},"class":"torch.nn.modules.'
    b'activation:ReLU","class":"skcompress.blocks:"module":{"class":'
    b'"skcompress.models:"},"net":{"class":"skorch.classifier:'
    b'NeuralNetClassifier","criterion":{"class":"torch.nn.modules.loss:'
    b'CrossEntropyLoss","kwargs":{}},"params":{"batch_size":64,"classes":'
    b'[0,1,2,3,4,5,6,7,8,9],"lr":0.001,"max_epochs":,"predict_nonlinearity":'
    b'"auto","threshold":0.5,"verbose":0}},"tensors":['
    b'{"dtype":"int64","enc":"raw","kind":"b","meta":{},"name":"'
    b'.num_batches_tracked","shape":[],"streams":[8]},"persistent":false,'
    b'"frozen":true,{"dtype":"float32","enc":"fp16","kind":"b","meta":{},'
    b'"name":".running_mean","shape":[,".running_var","streams":['
    b'{"dtype":"float32","enc":"binary","kind":"p","meta":{"scales":1},"name":"'
    b'{"dtype":"float32","enc":"uniform","kind":"p","meta":{"channels":,"q_min":-'
    b',"sym":{"codec":"zstd","n":16},"zero_points":1},"name":"'
    b'{"dtype":"float32","enc":"codebook","kind":"p","meta":{"k":16,"sym":'
    b'{"classes":1,"codec":"packed","n":16}},"name":"'
    b'{"dtype":"float32","enc":"sparse","kind":"p","meta":{"nnz":,"positions":'
    b'{"model":"geometric","transpose":false},"values":{"enc":"dense"}},"name":"'
    b'{"dtype":"float32","enc":"sparse","kind":"p","meta":{"nnz":,"positions":'
    b'{"model":"enumerative","transpose":true},"values":{"enc":"codebook",'
    b'"k":16,"sym":{"classes":1,"codec":"ans","n":16}}},"name":"'
    b'.weight","shape":[,"streams":[]},'
    b'{"dtype":"float32","enc":"dense","kind":"p","meta":{},"name":"'
    b'.bias","shape":[,"streams":[]},'
)


def pack(header, blob):
    """The file's bytes: prefix, compressed header, blob."""
    text = json.dumps(header, sort_keys=True, separators=(",", ":"),
                      allow_nan=False).encode()
    if len(text) > LIMITS["header_bytes"]:
        raise ValueError("the header is larger than the format allows.")
    # level 19 costs under a millisecond on a small net's header and 20 ms on
    # a ResNet-18's (18 KB), where level 9 is within 6 % of it (50 bytes)
    level = 19 if len(text) <= HEADER_LEVEL_19_BYTES else 9
    stored = zstd.compress(text, level=level, dictionary=HEADER_DICTIONARY)
    prefix = PREFIX.pack(MAGIC, FORMAT_VERSION, 0, 0, len(stored),
                         zlib.crc32(stored), len(blob), zlib.crc32(blob))
    return prefix + stored + blob


def _check_structure(text):
    """Before parsing: JSON nesting and the number of values are bounded.

    One linear pass in numpy: a quote is escaped when an odd run of
    backslashes precedes it; brackets, commas and colons count only outside
    strings.
    """
    b = np.frombuffer(text, dtype=np.uint8)
    n = b.size
    if not n:
        return
    index = np.arange(n, dtype=np.int32)
    backslash = b == ord("\\")
    last_other = np.maximum.accumulate(np.where(backslash, -1, index))
    run = np.empty(n, dtype=np.int32)  # backslashes just before each byte
    run[0] = 0
    run[1:] = index[:-1] - last_other[:-1]
    quote = (b == ord('"')) & (run % 2 == 0)
    inside = (np.cumsum(quote, dtype=np.int32) - quote) % 2 == 1
    outside = ~inside & ~quote
    opening = outside & ((b == ord("[")) | (b == ord("{")))
    closing = outside & ((b == ord("]")) | (b == ord("}")))
    depth = np.cumsum(opening.astype(np.int8) - closing.astype(np.int8),
                      dtype=np.int32)
    if depth.max() > LIMITS["depth"]:
        raise FormatError("the header is nested deeper than the format allows")
    values = int(np.count_nonzero(opening | (outside & ((b == ord(",")) |
                                                        (b == ord(":"))))))
    if values > LIMITS["json_values"]:
        raise FormatError("the header holds more values than the format allows")


def unpack(data):
    """``(header dict, blob memoryview)``, every length and checksum checked."""
    data = memoryview(data)
    if len(data) < 5 or bytes(data[:4]) != MAGIC:
        raise FormatError("not a skcompress file (bad magic number)")
    version = data[4]
    if version != FORMAT_VERSION:
        raise FormatError(
            f"this file is format version {version}; this skcompress reads "
            f"version {FORMAT_VERSION} only (earlier versions were never "
            "released: save the net again)")
    if len(data) < PREFIX.size:
        raise FormatError("file is truncated (prefix incomplete)")
    _, _, flags, reserved, header_len, header_crc, blob_len, blob_crc = (
        PREFIX.unpack_from(data))
    if flags or reserved:
        raise FormatError("unknown flags in the prefix")
    end = PREFIX.size + header_len
    if header_len > LIMITS["header_bytes"] or end > len(data):
        raise FormatError("file is truncated (header incomplete)")
    if end + blob_len < len(data):
        raise FormatError("file has trailing bytes after the data")
    if end + blob_len > len(data):
        raise FormatError("file is truncated (data incomplete)")
    stored = data[PREFIX.size:end]
    if zlib.crc32(stored) != header_crc:
        raise FormatError("header checksum mismatch: the file is corrupted")
    blob = data[end:]
    if zlib.crc32(blob) != blob_crc:
        raise FormatError("data checksum mismatch: the file is corrupted")
    try:
        import zstandard

        size = zstandard.frame_content_size(bytes(stored))
    except Exception:
        raise FormatError("the header is not a zstd frame") from None
    if not 0 < size <= LIMITS["header_bytes"]:
        raise FormatError("the header is larger than the format allows")
    text = zstd.decompress(bytes(stored), size, dictionary=HEADER_DICTIONARY)
    _check_structure(text)
    try:
        header = json.loads(text)
    except (ValueError, RecursionError):
        raise FormatError("header is not valid JSON") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT_VERSION:
        raise FormatError("header has no supported format version")
    return header, blob


def _check_regular(fd, name):
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        raise FormatError(f"{name} is not a regular file; only regular files are read")
    return info.st_size


def read_bytes(file, limit=LIMITS["file_bytes"]):
    """Read a whole file: only regular files, at most ``limit`` bytes.

    A path is opened without blocking (a FIFO cannot hang the reader) and
    checked with ``fstat`` before anything is read; so is a file object that
    has a file descriptor. Other file objects (``io.BytesIO``) are read up to
    ``limit`` bytes.
    """
    if isinstance(file, (str, os.PathLike)):
        name = repr(os.fspath(file))
        try:
            fd = os.open(file, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        except OSError as exc:
            raise FormatError(f"cannot open {name}: {exc}") from None
        try:
            size = _check_regular(fd, name)
            if size > limit:
                raise FormatError("the file is larger than the format allows")
            with os.fdopen(fd, "rb") as handle:
                fd = None
                data = handle.read(size + 1)
        finally:
            if fd is not None:
                os.close(fd)
    else:
        read = getattr(file, "read", None)
        if read is None:
            raise TypeError("file must be a path or a binary file object.")
        try:
            fd = file.fileno()
        except (AttributeError, OSError, ValueError):
            fd = None
        if fd is not None:
            _check_regular(fd, "the file object")
        data = read(limit + 1)
        if not isinstance(data, (bytes, bytearray)):
            raise TypeError("file must be opened in binary mode.")
    if len(data) > limit:
        raise FormatError("the file is larger than the format allows")
    return bytes(data)
