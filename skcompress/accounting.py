"""Size, multiply-accumulate and latency accounting for nets and compressors.

Every function accepts an ``nn.Module``, a skorch net (its ``module_`` is
used) or a fitted compressor (its ``estimator_`` is followed down to the
skorch net). Parametrized modules are measured in their effective (baked)
form, which is what :func:`skcompress.io.save` stores and what runs after
:func:`skcompress.io.load`.
"""

import numbers
import statistics
import time

import numpy as np
import pandas as pd
import torch
from torch import nn

from ._nets import find_net
from ._threads import torch_threads
from .io import bake, encode_tensors, encoded

__all__ = [
    "count_macs",
    "count_parameters",
    "dense_size_bytes",
    "measure_latency",
    "model_report",
    "onnx_latency",
    "onnx_missing_note",
]

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONV_TRANSPOSE = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def _as_module(obj):
    if isinstance(obj, nn.Module):
        return obj
    return find_net(obj).module_


def _check_shape(input_shape):
    """``input_shape`` as a tuple of positive ints, or None."""
    if input_shape is None:
        return None
    if isinstance(input_shape, (str, bytes)) or not hasattr(input_shape, "__iter__"):
        raise TypeError(f"input_shape must be a tuple of ints, got {input_shape!r}.")
    shape = tuple(input_shape)
    if not all(isinstance(d, numbers.Integral) and not isinstance(d, bool)
               for d in shape):
        raise TypeError(f"input_shape must be a tuple of ints, got {input_shape!r}.")
    if not shape or any(d <= 0 for d in shape):
        raise ValueError(f"input_shape must hold positive ints, got {input_shape!r}.")
    return tuple(int(d) for d in shape)


def _check_timing(input_shape, batch_size, repeats, warmup, n_threads):
    """The shape of one sample, after checking every timing argument."""
    shape = _check_shape(input_shape)
    if shape is None:
        raise ValueError("input_shape is required to measure latency.")
    for name, value in (("batch_size", batch_size), ("repeats", repeats),
                        ("n_threads", n_threads)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}.")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be a non-negative int, got {warmup!r}.")
    return shape


def count_parameters(module):
    """Number of effective parameter elements (parametrizations baked).

    Examples
    --------
    >>> import torch
    >>> from skcompress.accounting import count_parameters
    >>> count_parameters(torch.nn.Linear(3, 2))
    8
    """
    return int(sum(p.numel() for p in bake(_as_module(module)).parameters()))


def dense_size_bytes(net_or_module):
    """float32 size of every effective parameter and buffer: 4 bytes an element.

    This is ``original_size_bytes_`` of the compressors.

    Examples
    --------
    >>> import torch
    >>> from skcompress.accounting import dense_size_bytes
    >>> dense_size_bytes(torch.nn.BatchNorm1d(4))  # 4 tensors of 4 + 1 counter
    68
    """
    baked = bake(_as_module(net_or_module))
    n = sum(t.numel() for t in baked.parameters())
    n += sum(t.numel() for t in baked.buffers())
    return int(4 * n)


def _forward(module, X, input_shape):
    """``module(X)``; a module that cannot take samples of ``input_shape``
    raises a ValueError naming it instead of a traceback from torch."""
    try:
        return module(X)
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        raise ValueError(
            f"{type(module).__name__} cannot process samples of input_shape="
            f"{tuple(input_shape)} (input_shape is the shape of ONE sample, "
            f"without the batch dimension): {str(exc).splitlines()[0]}"
        ) from exc


def _layer_macs(module, input_shape):
    """MACs per sample of every Conv/Linear leaf, keyed by dotted name."""
    macs = {}
    handles = []

    def hook(name):
        def record(layer, inputs, output):
            if isinstance(layer, _CONV):
                per_out = (layer.in_channels // layer.groups) * int(
                    np.prod(layer.kernel_size))
                count = output.numel() * per_out
            elif isinstance(layer, _CONV_TRANSPOSE):
                per_in = (layer.out_channels // layer.groups) * int(
                    np.prod(layer.kernel_size))
                count = inputs[0].numel() * per_in
            else:  # Linear
                count = output.numel() * layer.in_features
            macs[name] = macs.get(name, 0) + int(count)
        return record

    for name, layer in module.named_modules():
        if isinstance(layer, _CONV + _CONV_TRANSPOSE + (nn.Linear,)):
            handles.append(layer.register_forward_hook(hook(name)))
    try:
        module.eval()
        with torch.no_grad():
            param = next(module.parameters(), None)
            device = param.device if param is not None else "cpu"
            _forward(module, torch.zeros((1, *input_shape), device=device),
                     input_shape)
    finally:
        for handle in handles:
            handle.remove()
    return macs


def count_macs(module, input_shape):
    """Multiply-accumulates of one forward pass for a single sample.

    ``Conv`` layers count ``output elements * in_channels / groups * kernel
    size``, ``Linear`` layers ``output elements * in_features`` (so leading
    dimensions multiply); BatchNorm, pooling, activations and additions count
    0. Zeros in weights are counted: MACs measure the dense computation.

    Parameters
    ----------
    module : nn.Module, skorch net or fitted compressor
    input_shape : tuple of int
        Shape of ONE sample, e.g. ``(1, 8, 8)``.

    Examples
    --------
    >>> import torch
    >>> from skcompress.accounting import count_macs
    >>> count_macs(torch.nn.Conv2d(1, 4, 3, padding=1), (1, 8, 8))
    2304
    """
    shape = _check_shape(input_shape)
    if shape is None:
        raise ValueError("input_shape is required to count MACs.")
    return int(sum(_layer_macs(bake(_as_module(module)), shape).values()))


def _infer_input_shape(module):
    first = next((m for m in module.modules() if not list(m.children())
                  and list(m.parameters(recurse=False))), None)
    if isinstance(first, nn.Linear):
        return (first.in_features,)
    return None


def model_report(net_or_module, input_shape=None, *, latency=False,
                 batch_size=256):
    """Per-layer parameters, nonzeros, stored size and MACs, plus a total row.

    Parameters
    ----------
    net_or_module : nn.Module, skorch net or fitted compressor
    input_shape : tuple of int, default=None
        Shape of ONE sample, e.g. ``(1, 8, 8)``; without it MACs are NaN unless
        the first parametrized layer is a ``Linear``.
    latency : bool, default=False
        Also time the whole net on the CPU, one thread, a batch of
        ``batch_size``: in PyTorch (:func:`measure_latency`) and in
        onnxruntime (the :func:`skcompress.export_onnx` graph, written to a
        temporary folder, timed by :func:`skcompress.export.measure_onnx_latency`
        with ``DequantizeLinear`` folded at load). Adds the columns
        ``torch_latency_ms`` and ``onnx_latency_ms``, set on the total row
        (NaN on the layers). Without the ``deploy`` extra (onnx,
        onnxruntime) ``onnx_latency_ms`` is NaN and ``report.attrs["note"]``
        says why. Needs ``input_shape`` (or a first ``Linear`` layer).
    batch_size : int, default=256
        Batch of the latency measurements.

    Returns
    -------
    report : pandas.DataFrame
        Indexed by dotted layer name (leaf modules holding parameters), then
        ``"total"``. Columns: ``type``, ``parameters``, ``nonzeros`` (of the
        effective weights), ``stored_bytes`` (bytes of the layer's parameters
        and buffers in the compact format, see
        :class:`skcompress.io.EncodedNet`), ``bits_per_weight``
        (``8 * stored_bytes / parameters``) and ``macs`` (see
        :func:`count_macs`); with ``latency=True`` also ``torch_latency_ms``
        and ``onnx_latency_ms``.

    Examples
    --------
    >>> from skcompress.accounting import model_report
    >>> from skcompress.models import DigitsCNN
    >>> report = model_report(DigitsCNN(), input_shape=(1, 8, 8))
    >>> int(report.loc["conv1", "macs"]), list(report.index)[-1]
    (18432, 'total')
    """
    module = _as_module(net_or_module)
    shape = _check_shape(input_shape)
    baked = bake(module)
    if shape is None:
        shape = _infer_input_shape(baked)
    # stored bytes come from the one encoding of the file: the fit's own when
    # the object still holds the net it measured, else one encoding now
    if isinstance(net_or_module, nn.Module):
        storage = encode_tensors(module)["stored_bytes"]
    else:
        storage = encoded(net_or_module).tensors["stored_bytes"]
    macs = _layer_macs(baked, shape) if shape is not None else None
    rows = {}
    for name, layer in baked.named_modules():
        params = dict(layer.named_parameters(recurse=False))
        if not params:
            continue
        tensors = [*params, *dict(layer.named_buffers(recurse=False))]
        stored = sum(int(storage.get(f"{name}.{t}" if name else t, 0))
                     for t in tensors)
        n_params = sum(p.numel() for p in params.values())
        rows[name or type(layer).__name__] = {
            "type": type(layer).__name__,
            "parameters": int(n_params),
            "nonzeros": int(sum(int(torch.count_nonzero(p)) for p in params.values())),
            "stored_bytes": int(stored),
            "bits_per_weight": 8.0 * stored / n_params if n_params else np.nan,
            "macs": float(macs.get(name, 0)) if macs is not None else np.nan,
        }
    report = pd.DataFrame.from_dict(rows, orient="index",
                                    columns=["type", "parameters", "nonzeros",
                                             "bits_per_weight", "stored_bytes",
                                             "macs"])
    total_params = int(report["parameters"].sum())
    total_stored = int(report["stored_bytes"].sum())
    report.loc["total"] = {
        "type": "total",
        "parameters": total_params,
        "nonzeros": int(report["nonzeros"].sum()),
        "bits_per_weight": 8.0 * total_stored / total_params if total_params
        else np.nan,
        "stored_bytes": total_stored,
        "macs": float(sum(macs.values())) if macs is not None else np.nan,
    }
    report = report.astype({"parameters": "int64", "nonzeros": "int64",
                            "stored_bytes": "int64", "bits_per_weight": "float64",
                            "macs": "float64"})
    if latency:
        if shape is None:
            raise ValueError("input_shape is required to measure latency.")
        report["torch_latency_ms"] = np.nan
        report["onnx_latency_ms"] = np.nan
        report.loc["total", "torch_latency_ms"] = 1e3 * measure_latency(
            net_or_module, shape, batch_size=batch_size)
        seconds, note = onnx_latency(net_or_module, shape, batch_size=batch_size)
        report.loc["total", "onnx_latency_ms"] = 1e3 * seconds
        if note:
            report.attrs["note"] = note
    return report


def onnx_missing_note():
    """Why onnxruntime latencies cannot be measured here, or ``""``."""
    import importlib.util

    missing = [m for m in ("onnx", "onnxruntime")
               if importlib.util.find_spec(m) is None]
    if not missing:
        return ""
    return (f"no onnxruntime latency: {' and '.join(missing)} not installed "
            "(pip install 'skcompress[deploy]')")


def onnx_latency(net_or_module, input_shape, batch_size=256, repeats=30, warmup=5,
                 n_threads=1):
    """onnxruntime CPU latency of a net's ONNX export, or NaN and why not.

    The net is exported with :func:`skcompress.export_onnx` into a temporary
    folder (removed afterwards) and timed with
    :func:`skcompress.export.measure_onnx_latency` (``fold_dequantize=True``,
    as a deployment would load an int8 graph), with the protocol of
    :func:`measure_latency`.

    Returns
    -------
    seconds : float
        Median seconds of one batch; NaN when the ``deploy`` extra (onnx,
        onnxruntime) is not installed.
    note : str
        Empty, or why ``seconds`` is NaN.
    """
    import os
    import tempfile

    note = onnx_missing_note()
    if note:
        return np.nan, note
    from .export import export_onnx, measure_onnx_latency

    shape = _check_shape(input_shape)
    with tempfile.TemporaryDirectory(prefix="skcompress-onnx-") as folder:
        export = export_onnx(net_or_module, os.path.join(folder, "model.onnx"),
                             shape)
        seconds = measure_onnx_latency(export, shape, batch_size=batch_size,
                                       repeats=repeats, warmup=warmup,
                                       n_threads=n_threads, fold_dequantize=True)
    return float(seconds), ""


def measure_latency(net_or_module, input_shape, batch_size=256, repeats=30,
                    warmup=5, n_threads=1):
    """Median seconds of a ``torch.no_grad()`` eval forward pass on CPU.

    The module is measured baked (parametrizations made permanent) on a copy,
    so the caller's module keeps its mode and device. ``torch``'s thread count
    is set to ``n_threads`` during the measurement and restored afterwards.

    Parameters
    ----------
    net_or_module : nn.Module, skorch net or fitted compressor
    input_shape : tuple of int
        Shape of ONE sample.
    batch_size, repeats, warmup, n_threads : int

    Examples
    --------
    >>> import torch
    >>> from skcompress.accounting import measure_latency
    >>> measure_latency(torch.nn.Linear(8, 2), (8,), repeats=3, warmup=1) > 0
    True
    """
    shape = _check_timing(input_shape, batch_size, repeats, warmup, n_threads)
    module = bake(_as_module(net_or_module)).cpu().eval()
    X = torch.zeros((batch_size, *shape))
    times = []
    with torch_threads(n_threads), torch.no_grad():
        for i in range(warmup + repeats):
            start = time.perf_counter()
            _forward(module, X, shape)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    return float(statistics.median(times))
