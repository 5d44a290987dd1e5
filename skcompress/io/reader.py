"""Reading: a file is checked whole before anything large is allocated.

Order (docs/format.md, "Reading"): container (lengths, checksums, header
size and depth), header schema, module tree built on the meta device from
trusted classes only, tensor table against that module (names, kinds,
shapes, dtypes, stream lengths), total decoded size against ``max_bytes``;
only then are tensors decoded, each by a decoder linear in its output.
"""

import math

import numpy as np
import torch
from torch import nn

from . import container, tensors
from .errors import LIMITS, FormatError
from .net import make_net
from .registry import resolve, trusted_classes
from .tree import build

__all__ = ["load", "loads"]

_ENTRY_KEYS = {"name", "kind", "shape", "dtype", "enc", "meta", "streams",
               "frozen", "persistent", "same"}


def _module_tensors(module):
    """``name -> (kind, owner, leaf, tensor)`` of every parameter and buffer."""
    out = {}
    for prefix, sub in module.named_modules(remove_duplicate=False):
        for kind, store in (("p", sub._parameters), ("b", sub._buffers)):
            for leaf, value in store.items():
                if value is not None:
                    out[f"{prefix}.{leaf}" if prefix else leaf] = (kind, sub, leaf,
                                                                   value)
    return out


def _check_entries(header, module, blob_len, max_bytes):
    entries = header.get("tensors")
    if not isinstance(entries, list) or len(entries) > LIMITS["tensors"]:
        raise FormatError("the tensor table is missing or too long")
    expected = _module_tensors(module)
    seen, total_bytes, total_streams, enumerative_cells = {}, 0, 0, 0
    for entry in entries:
        if not isinstance(entry, dict) or set(entry) - _ENTRY_KEYS:
            raise FormatError("a tensor entry has unknown fields")
        name, kind = entry.get("name"), entry.get("kind")
        if name not in expected:
            raise FormatError(f"the file has tensor {str(name)[:80]!r}, which the "
                              "module does not have")
        if name in seen:
            raise FormatError(f"tensor {name!r} appears twice")
        own_kind, _, _, ref = expected[name]
        if kind != own_kind:
            raise FormatError(f"tensor {name!r} is of the wrong kind")
        if "same" in entry:
            target = seen.get(entry["same"])
            if target is None or set(entry) - {"name", "kind", "same", "frozen",
                                               "persistent"}:
                raise FormatError(f"alias {name!r} names no earlier tensor")
            if tuple(target["shape"]) != tuple(ref.shape):
                raise FormatError(f"alias {name!r} does not match the module")
            seen[name] = target
            continue
        shape, dtype, streams = entry.get("shape"), entry.get("dtype"), entry.get(
            "streams")
        if (not isinstance(shape, list) or len(shape) > LIMITS["ndim"]
                or not all(isinstance(d, int) and 0 <= d <= LIMITS["elements"]
                           for d in shape)):
            raise FormatError(f"tensor {name!r} has an invalid shape")
        if tuple(shape) != tuple(ref.shape):
            raise FormatError(
                f"tensor {name!r} has shape {tuple(shape)} in the file but "
                f"{tuple(ref.shape)} in the module")
        if dtype not in tensors.DTYPES or np.dtype(tensors.DTYPES[dtype]) != np.dtype(
                str(ref.dtype).replace("torch.", "")):
            raise FormatError(f"tensor {name!r} has the wrong dtype")
        if (not isinstance(streams, list) or len(streams) > LIMITS["streams"]
                or not all(isinstance(n, int) and 0 <= n <= blob_len
                           for n in streams)):
            raise FormatError(f"tensor {name!r} has an invalid stream table")
        if not isinstance(entry.get("enc"), str) or not isinstance(
                entry.get("meta"), dict):
            raise FormatError(f"tensor {name!r} has no encoding")
        meta = entry["meta"]
        if (entry["enc"] == "sparse" and isinstance(meta.get("positions"), dict)
                and meta["positions"].get("model") == "enumerative"):
            # its decoder steps through the cells in Python: a budget per file
            enumerative_cells += math.prod(shape)
            if enumerative_cells > LIMITS["enumerative_cells"]:
                raise FormatError("the file has more enumerative-coded cells than "
                                  "the format allows")
        total_streams += sum(streams)
        total_bytes += math.prod(shape) * np.dtype(tensors.DTYPES[dtype]).itemsize
        seen[name] = entry
    missing = set(expected) - set(seen)
    if missing:
        raise FormatError(f"tensor {sorted(missing)[0]!r} of the module is missing")
    if total_streams != blob_len:
        raise FormatError("the stream table does not match the data")
    if total_bytes > max_bytes:
        raise FormatError(
            f"the file decodes to {total_bytes} bytes, more than max_bytes="
            f"{max_bytes}; pass a larger max_bytes to load it if you trust it")
    return entries, expected


def _fill(module, entries, expected, blob):
    """Decode every tensor into the module, replacing the meta tensors."""
    done, offset = {}, 0
    for entry in entries:
        name = entry["name"]
        kind, owner, leaf, _ = expected[name]
        if "same" in entry:
            value = done[entry["same"]]
        else:
            streams = []
            for length in entry["streams"]:
                streams.append(bytes(blob[offset:offset + length]))
                offset += length
            array = tensors.decode(entry["enc"], entry["meta"], streams,
                                   tuple(entry["shape"]), entry["dtype"])
            value = torch.from_numpy(np.require(array, requirements=["W", "C"]))
            if kind == "p":
                value = nn.Parameter(value, requires_grad=not entry.get("frozen"))
        if kind == "p":
            owner._parameters[leaf] = value
        else:
            owner._buffers[leaf] = value
            if entry.get("persistent", True) is False:
                owner._non_persistent_buffers_set.add(leaf)
        done[name] = value


def loads(data, *, trusted=None, max_bytes=None):
    """Rebuild a skorch net from bytes written by :func:`dumps`; see :func:`load`."""
    from skorch import NeuralNet  # noqa: F401  (the registry needs skorch)

    data = bytes(data)
    limit = max_bytes if max_bytes is not None else max(
        LIMITS["min_max_bytes"], LIMITS["expansion"] * len(data))
    registry = trusted_classes(trusted)  # a bad ``trusted`` is the caller's error
    header, blob = container.unpack(data)
    try:
        if set(header) != {"format", "net", "module", "tensors"}:
            raise FormatError("the header has unknown or missing fields")
        tree = header["module"]
        if not isinstance(tree, dict) or "class" not in tree:
            raise FormatError("the module node has no class")
        root_cls = resolve(tree["class"], nn.Module, registry)
        module = build(tree, registry)
        entries, expected = _check_entries(header, module, len(blob), limit)
        _fill(module, entries, expected, blob)
        module.eval()
        return make_net(header["net"], module, root_cls, tree.get("kwargs", {}),
                        registry)
    except FormatError:
        raise
    except (MemoryError, RecursionError) as exc:
        raise FormatError(f"invalid skcompress file: {type(exc).__name__}") from None
    except Exception as exc:  # malformed or tampered header: never a traceback
        raise FormatError(
            f"invalid skcompress file: {type(exc).__name__}: {exc}") from None


def load(file, *, trusted=None, max_bytes=None):
    """Load a net saved by :func:`save`, without unpickling or importing.

    Classes resolve only from a registry of trusted classes (``torch.nn``
    layers and losses, skorch nets, skcompress's modules) plus ``trusted``;
    sizes are checked before anything is allocated (docs/format.md, "Threat
    model"). Every failure is a :class:`FormatError`.

    Parameters
    ----------
    file : str, os.PathLike or binary file object
        Paths must name regular files.
    trusted : list of classes, default=None
        Your own ``nn.Module`` (or skorch net, criterion) classes the file may
        name. Pass them only for files you trust.
    max_bytes : int, default=None
        Most bytes the tensors may decode to; by default 64 MiB or 1024 times
        the file's size, whichever is larger.

    Returns
    -------
    net : skorch ``NeuralNet``
        Initialized on CPU, its ``module_`` in eval mode holding plain dense
        tensors; it predicts exactly like the saved net.

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
    if max_bytes is not None and (not isinstance(max_bytes, int)
                                  or isinstance(max_bytes, bool) or max_bytes < 0):
        raise ValueError(f"max_bytes must be a non-negative int, got {max_bytes!r}.")
    return loads(container.read_bytes(file), trusted=trusted, max_bytes=max_bytes)
