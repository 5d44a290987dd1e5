"""Writing: one encoding of a fitted net, the file's bytes and its report."""

import os
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from . import container, tensors
from .net import find_net, net_header
from .parametrize import collect_hints, tensors_of
from .tree import describe

__all__ = ["EncodedNet", "dumps", "encode_net", "encode_tensors", "fingerprint",
           "save", "tensor_storage_report"]


@dataclass(frozen=True)
class EncodedNet:
    """A net encoded once: the file's bytes and what each tensor takes in it.

    Attributes
    ----------
    data : bytes
        The file :func:`save` writes.
    tensors : pandas.DataFrame
        One row per tensor, indexed by dotted name: ``encoding``,
        ``elements`` and ``stored_bytes`` (bytes of its streams in the file;
        an alias of a tied tensor stores nothing).
    fingerprint : tuple
        Identity and version counter of every tensor of the encoded module:
        :func:`fingerprint` of the same, unchanged net is equal.
    """

    data: bytes
    tensors: pd.DataFrame
    fingerprint: tuple

    @property
    def size_bytes(self):
        return len(self.data)


def fingerprint(net):
    """Identity and in-place version of every tensor of ``net.module_``
    (constraints included): it changes when any of them is written."""
    module = net.module_
    return (tuple((name, id(sub)) for name, sub in module.named_modules()),
            tuple((id(t), t._version) for t in
                  (*module.parameters(), *module.buffers())))


def _encode_tensors(module, hints):
    """Header entries, streams and the per-tensor table of a baked module."""
    entries, streams, rows = [], [], {}
    for name, kind, value, extra in tensors_of(module):
        entry = {"name": name, "kind": kind, **extra}
        if isinstance(value, str):
            entry["same"] = value
            rows[name] = ("alias", 0, 0)
            entries.append(entry)
            continue
        if value.dtype == torch.bfloat16:
            raise ValueError(f"tensor {name!r} is bfloat16, which cannot be saved.")
        encoded = tensors.encode(lambda v=value: v.detach().cpu().numpy(),
                                 hints.get(name, ()), tuple(value.shape),
                                 str(value.dtype).replace("torch.", ""))
        entry.update(shape=list(value.shape), dtype=str(value.dtype).replace(
                         "torch.", ""),
                     enc=encoded.encoding, meta=encoded.meta,
                     streams=[len(s) for s in encoded.streams])
        entries.append(entry)
        streams.extend(bytes(s) for s in encoded.streams)
        rows[name] = (encoded.encoding, int(value.numel()), encoded.stored_bytes)
    table = pd.DataFrame.from_dict(rows, orient="index",
                                   columns=["encoding", "elements", "stored_bytes"])
    table = table.astype({"elements": np.int64, "stored_bytes": np.int64})
    return entries, streams, table


def encode_tensors(module):
    """The per-tensor table of :class:`EncodedNet` for a bare ``nn.Module``
    (constraints read as their effective tensors): encoding, elements,
    stored bytes."""
    return _encode_tensors(module, collect_hints(module))[2]


def tensor_storage_report(module):
    """``name -> {"encoding", "stored_bytes", "bits_per_weight"}`` of every
    parameter and buffer of ``module`` in the compact format.

    Examples
    --------
    >>> import torch
    >>> from skcompress.io import tensor_storage_report
    >>> layer = torch.nn.Linear(64, 8, bias=False)
    >>> scale = 0.3 * torch.arange(1, 9.0)[:, None]
    >>> with torch.no_grad():
    ...     _ = layer.weight.copy_(layer.weight.sign() * scale)
    >>> tensor_storage_report(layer)["weight"]["encoding"]
    'dense'
    """
    table = encode_tensors(module)
    return {name: {"encoding": row.encoding, "stored_bytes": int(row.stored_bytes),
                   "bits_per_weight": 8.0 * row.stored_bytes / max(row.elements, 1)}
            for name, row in table.iterrows()}


def encode_net(obj):
    """Encode a fitted compressor or skorch net once.

    Returns an :class:`EncodedNet`: ``len(encode_net(obj).data)`` is the
    size of the file :func:`save` writes, and its ``tensors`` table is what
    :func:`skcompress.accounting.model_report` reports per layer.
    """
    net = find_net(obj)
    info, root_kwargs = net_header(net)
    hints = collect_hints(net.module_)
    module = net.module_
    entries, streams, table = _encode_tensors(module, hints)
    header = {"format": container.FORMAT_VERSION, "net": info,
              "module": describe(module, root_kwargs), "tensors": entries}
    data = container.pack(header, b"".join(streams))
    return EncodedNet(data, table, fingerprint(net))


def encoded(obj):
    """The fit's own encoding when ``obj`` still holds that net, else a new one."""
    cached = getattr(obj, "encoded_", None)
    if isinstance(cached, EncodedNet):
        try:
            if cached.fingerprint == fingerprint(find_net(obj)):
                return cached
        except (TypeError, ValueError):
            pass
    return encode_net(obj)


def dumps(obj):
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
    return encoded(obj).data


def save(obj, file):
    """Save a fitted compressor or skorch net in the compact format.

    Parameters
    ----------
    obj : fitted compressor or skorch ``NeuralNet``
        A compressor is saved through its ``estimator_`` (followed through
        nested compressors down to the skorch net), encoded anew (a fitted
        compressor keeps no file bytes): while the net is unchanged, that
        is the encoding ``fit`` measured, ``size_bytes_`` long. ``obj`` is
        never modified: parametrizations are baked on a copy.
    file : str, os.PathLike or binary file object

    Returns
    -------
    n_bytes : int
        Bytes written, equal to ``len(dumps(obj))`` and, after a fit, to
        ``size_bytes_``.

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
    data = dumps(obj)
    if isinstance(file, (str, os.PathLike)):
        with open(file, "wb") as handle:
            handle.write(data)
    else:
        file.write(data)
    return len(data)
