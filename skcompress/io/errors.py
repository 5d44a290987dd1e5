"""The one error of the file format, and its hard limits (docs/format.md)."""

__all__ = ["FormatError", "LIMITS"]


class FormatError(ValueError):
    """A file is not a valid, intact skcompress file, or asks for too much.

    Every failure of :func:`skcompress.load` is a ``FormatError`` (a
    ``ValueError``), whatever the file holds: truncated, corrupted, crafted,
    of another version, or naming a class that is not trusted.
    """


# Hard limits, checked before anything is allocated or decompressed. The total
# decoded size has its own, caller-raisable limit (``load(max_bytes=...)``).
LIMITS = {
    "header_bytes": 4 * 2**20,    # decompressed JSON header
    "depth": 64,                  # nesting of the JSON header
    "json_values": 600_000,       # objects, arrays and items in the header
    "tensors": 20_000,            # tensor entries
    "modules": 20_000,            # modules + tensors a file's constructors make
    "build_seconds": 1.0,         # time to build the module on the meta device
    "enumerative_cells": 1 << 21,  # cells of enumerative positions, per file
    "ndim": 8,                    # dimensions of one tensor
    "elements": 2**31 - 1,        # elements of one tensor
    "streams": 16,                # byte streams of one tensor
    "file_bytes": 2**34,          # 16 GiB: larger files are refused unread
    "min_max_bytes": 64 * 2**20,  # default max_bytes floor ...
    "expansion": 1024,            # ... or this many times the file's size
}
