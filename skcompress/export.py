"""Deployment: export fitted nets to ONNX and time them in onnxruntime.

:func:`export_onnx` writes the effective (baked) module of a fitted skorch net
or compressor as an ONNX graph with a dynamic batch axis;
:func:`measure_onnx_latency` times it in onnxruntime on CPU with the protocol
of :func:`skcompress.accounting.measure_latency`.

What each technique becomes in ONNX:

- filter-pruned, low-rank, distilled and compacted nets: ``"dense"``, a
  smaller float32 graph (fewer channels, factor layers);
- uniform ``Quantizer`` (2 to 8 bits) and ``Binarizer`` results:
  ``"qdq-int8"``, int8 weight initializers, each behind a ``DequantizeLinear``
  node, equal to PyTorch's weights bit for bit;
- k-means ``Quantizer`` and unstructured ``Pruner`` results: ``"dense"``,
  float32 weights (ONNX has no codebook or sparse weight that onnxruntime
  runs on CPU).

Both functions need the optional ``deploy`` dependencies (``onnx`` and
``onnxruntime``): ``pip install 'skcompress[deploy]'``. This module imports
without them.
"""

import dataclasses
import importlib
import io
import numbers
import os
import re
import statistics
import time
import warnings

import numpy as np
import torch
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted
from torch import nn
from torch.nn.utils import parametrize

from ._nets import find_net
from .accounting import _check_shape, _check_timing, _forward, _infer_input_shape

__all__ = ["OnnxExport", "export_onnx", "measure_onnx_latency"]

QDQ_INT8 = "qdq-int8"
DENSE = "dense"
# DequantizeLinear with a per-axis scale needs opset 13; 20 is the newest the
# TorchScript exporter writes (read from torch when it says).
_MIN_OPSET = 13
_INPUT_NAME, _OUTPUT_NAME = "input", "output"
# Constraints whose effective weight is ``scale * (integer - zero_point)``
_INTEGER_HINTS = ("uniform", "binary")
# How the exporter names the buffers of _Dequantized, and what they become
_QDQ_NAME = re.compile(
    r"^(?:(.*)\.)?parametrizations\.([^.]+)\.0\.(q|scale|zero_point)$"
)
_QDQ_SUFFIX = {"q": "quantized", "scale": "scale", "zero_point": "zero_point"}


def _require(package, caller):
    try:
        return importlib.import_module(package)
    except ImportError as exc:
        raise ImportError(
            f"{caller} needs the {package!r} package; install the deploy extra: "
            "pip install 'skcompress[deploy]'."
        ) from exc


@dataclasses.dataclass(frozen=True)
class OnnxExport:
    """What :func:`export_onnx` wrote.

    Attributes
    ----------
    path : str
        The ONNX file.
    format : {"qdq-int8", "dense"}
        ``"qdq-int8"`` when at least one layer's weight is stored as int8 codes
        behind a ``DequantizeLinear`` node, ``"dense"`` when every weight is
        float32. ``layers`` tells layer by layer.
    layers : dict of str to str
        ``"qdq-int8"`` or ``"dense"`` for every layer holding a weight of two
        or more dimensions (convolutions, linear layers), by dotted name.
    n_bytes : int
        Size of the file.
    input_shape : tuple of int
        Shape of one sample; the graph's input is ``(batch, *input_shape)``
        float32, named ``"input"``. Its output, ``"output"``, is the module's
        raw output (what the net's ``forward`` and the compressor's
        ``transform`` return: logits for the zoo's classifiers).
    opset : int
        The ONNX opset of the graph.
    """

    path: str
    format: str
    layers: dict
    n_bytes: int
    input_shape: tuple
    opset: int


# --------------------------------------------------------------------------
# The fitted module
# --------------------------------------------------------------------------


def _fitted_module(fitted):
    """The ``nn.Module`` of a fitted compressor, skorch net or module."""
    from skorch import NeuralNet

    if isinstance(fitted, nn.Module):
        return fitted
    name = type(fitted).__name__
    if isinstance(fitted, NeuralNet):
        if not getattr(fitted, "initialized_", False):
            raise NotFittedError(
                f"The {name} passed as fitted is not initialized; fit it before "
                "export_onnx."
            )
    elif hasattr(fitted, "fit") and hasattr(fitted, "get_params"):
        try:
            check_is_fitted(fitted)
        except NotFittedError:
            raise NotFittedError(
                f"This {name} is not fitted yet; call fit(X, y) before export_onnx."
            ) from None
    try:
        return find_net(fitted).module_
    except TypeError as exc:
        raise TypeError(
            "fitted must be a fitted compressor, a fitted skorch net or an "
            f"nn.Module, got {name}."
        ) from exc


def _check_path(path):
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(
            f"path must be a str or os.PathLike, got {type(path).__name__}."
        )
    path = os.fspath(path)
    if not isinstance(path, str) or not path:
        raise ValueError(f"path must be a non-empty file name, got {path!r}.")
    if os.path.isdir(path):
        raise ValueError(f"path must be a file name, got the folder {path!r}.")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ValueError(f"path's folder {folder!r} does not exist.")
    return path


def _check_opset(opset):
    if opset is None:
        return None
    constants = getattr(torch.onnx, "_constants", None)
    highest = getattr(constants, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", 20)
    if isinstance(opset, bool) or not isinstance(opset, numbers.Integral):
        raise TypeError(f"opset must be an int or None, got {opset!r}.")
    if not _MIN_OPSET <= opset <= highest:
        raise ValueError(
            f"opset must be in [{_MIN_OPSET}, {highest}] (per-channel "
            f"DequantizeLinear needs {_MIN_OPSET}; the exporter writes up to "
            f"{highest}), got {opset!r}."
        )
    return int(opset)


# --------------------------------------------------------------------------
# Integer weights as DequantizeLinear
# --------------------------------------------------------------------------


def _axis_shape(scale, weight, axis):
    if scale.dim() == 0:
        return ()
    shape = [1] * weight.dim()
    shape[axis] = -1
    return tuple(shape)


def _dequantize(q, scale, zero_point, axis):
    # (q - zero_point) is an exact integer in float32, then one rounding in
    # the product: bit for bit what onnxruntime's DequantizeLinear computes
    shape = _axis_shape(scale, q, axis)
    return (q.float() - zero_point.float().reshape(shape)) * scale.reshape(shape)


class _DequantizeLinear(torch.autograd.Function):
    """``scale * (q - zero_point)``, exported as one ONNX ``DequantizeLinear``."""

    @staticmethod
    def forward(ctx, q, scale, zero_point, axis):
        return _dequantize(q, scale, zero_point, axis)

    @staticmethod
    def symbolic(g, q, scale, zero_point, axis):
        return g.op("DequantizeLinear", q, scale, zero_point, axis_i=axis)


class _Dequantized(nn.Module):
    """A parametrization whose weight is int8 codes times a scale."""

    def __init__(self, q, scale, zero_point, axis):
        super().__init__()
        self.register_buffer("q", q)
        self.register_buffer("scale", scale)
        self.register_buffer("zero_point", zero_point)
        self.axis = axis

    def forward(self, weight):
        return _DequantizeLinear.apply(self.q, self.scale, self.zero_point, self.axis)


def _integer_hint(stack):
    """The last ``uniform`` or ``binary`` encoding hint of a constraint stack."""
    found = None
    for constraint in stack:
        method = getattr(constraint, "encoding_hint", None)
        hint = method() if callable(method) else None
        if isinstance(hint, dict) and hint.get("kind") in _INTEGER_HINTS:
            found = hint
    return found


def _integer_codes(weight, hint):
    """int8 ``q``, float32 ``scale`` and int8 ``zero_point`` (per tensor or per
    channel along ``axis``) with ``scale * (q - zero_point) == weight`` exactly,
    or None when ``weight`` is not on such a grid."""
    weight = weight.detach().cpu().float()
    if weight.dim() < 1 or not torch.isfinite(weight).all():
        return None
    axis = int(hint.get("axis", 0)) if hint["kind"] == "uniform" else 0
    if hint["kind"] == "uniform":
        scale = torch.as_tensor(hint["scale"]).detach().cpu().float().reshape(-1)
        zero_point = torch.as_tensor(hint["zero_point"]).detach().cpu().float()
        zero_point = zero_point.reshape(-1)
    else:  # binary: +-scale per output channel (scale 1 where a channel is 0)
        scale = weight.abs().reshape(weight.shape[0], -1).amax(dim=1)
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        zero_point = torch.zeros_like(scale)
    if scale.numel() == 1 or (bool((scale == scale[0]).all())
                              and bool((zero_point == zero_point[0]).all())):
        scale, zero_point = scale[0], zero_point[0]  # one grid for the tensor
    elif scale.numel() != weight.shape[axis]:
        return None
    shape = _axis_shape(scale, weight, axis)
    q = torch.round(weight / scale.reshape(shape)) + zero_point.reshape(shape)
    # asymmetric 8-bit codes run 0..255: shift codes and zero points into int8
    highest = max(float(q.max()) if q.numel() else 0.0, float(zero_point.max()))
    offset = 128.0 if highest > 127 else 0.0
    q, zero_point = q - offset, zero_point - offset
    for codes in (q, zero_point):
        if codes.numel() and (float(codes.min()) < -128 or float(codes.max()) > 127):
            return None
    q, zero_point = q.to(torch.int8), zero_point.to(torch.int8)
    if not torch.equal(_dequantize(q, scale, zero_point, axis), weight):
        return None
    return q, scale, zero_point, axis


def _plan_integer_weights(module, baked):
    """Swap every weight that is exactly on an integer grid, in ``baked``, for
    its int8 codes behind ``_Dequantized``; return the layers swapped."""
    swapped = set()
    for name, sub in module.named_modules():
        if not parametrize.is_parametrized(sub):
            continue
        for tensor_name, stack in sub.parametrizations.items():
            hint = _integer_hint(stack)
            if hint is None:
                continue
            target = baked.get_submodule(name)
            codes = _integer_codes(getattr(target, tensor_name), hint)
            if codes is None:
                warnings.warn(
                    f"{name or type(sub).__name__}.{tensor_name} carries a "
                    f"{hint['kind']} constraint but its weights are not exactly "
                    "int8 codes times a scale; it is exported dense (float32).",
                    stacklevel=3,
                )
                continue
            parametrize.register_parametrization(target, tensor_name,
                                                 _Dequantized(*codes))
            swapped.add(name)
    return swapped


def _rename_qdq_initializers(model):
    """``conv1.parametrizations.weight.0.q`` -> ``conv1.weight_quantized`` and
    likewise ``_scale`` / ``_zero_point``, in the graph and its node inputs."""
    names = {}
    for init in model.graph.initializer:
        match = _QDQ_NAME.match(init.name)
        if match:
            layer, tensor, part = match.groups()
            prefix = f"{layer}.{tensor}" if layer else tensor
            names[init.name] = f"{prefix}_{_QDQ_SUFFIX[part]}"
    for init in model.graph.initializer:
        init.name = names.get(init.name, init.name)
    for node in model.graph.node:
        node.input[:] = [names.get(i, i) for i in node.input]


# --------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------


def export_onnx(fitted, path, input_shape=None, *, opset=None):
    """Write a fitted net as an ONNX graph that onnxruntime runs.

    The module is exported in its effective form (parametrizations baked, on
    a copy: ``fitted`` is not modified), in eval mode, on CPU, float32, with
    PyTorch's TorchScript-based exporter (``dynamo=False``, which needs no
    network and no ``onnxscript``). The batch axis is dynamic.

    Structurally compressed nets (filter-pruned, low-rank, distilled,
    ``Compactor``) are smaller modules and export as smaller graphs. Weights
    that are exactly integers times a scale -- uniform ``Quantizer`` results
    at any bit width (2 to 8) and ``Binarizer`` results (codes +-1) -- are
    stored as int8 initializers, each followed by a ``DequantizeLinear`` node
    (per output channel, ``axis=0``, or one scale per tensor). The codes are
    the quantizer's own integers, so the dequantized weights equal PyTorch's
    bit for bit. Codes narrower than 8 bits still take one byte each:
    onnxruntime's CPU support for the ``int4`` type (opset 21) is partial.
    Activations stay float32 (no activation quantization, no calibration).
    k-means codebooks and unstructured sparsity export as dense float32
    weights; the return value says which layers are which.

    A ``"qdq-int8"`` file is about 4x smaller than the dense one, not faster:
    run it with ``DequantizeLinear`` folded at load (see
    :func:`measure_onnx_latency`, ``fold_dequantize``) and it runs as fast as
    the dense graph; onnxruntime's default session runs it slower.

    Parameters
    ----------
    fitted : fitted compressor, fitted skorch net or nn.Module
        A compressor's ``estimator_`` is followed down to its skorch net.
    path : str or os.PathLike
        The ``.onnx`` file to write (its folder must exist). It is written
        only once the export succeeded.
    input_shape : tuple of int, default=None
        Shape of ONE sample, without the batch dimension, e.g. ``(1, 8, 8)``.
        ``None`` works only when the first layer is a ``Linear``.
    opset : int, default=None
        ONNX opset, 13 to 20; ``None`` keeps the exporter's default.

    Returns
    -------
    OnnxExport
        ``path``, ``format`` (``"qdq-int8"`` or ``"dense"``), per-layer
        ``layers``, ``n_bytes`` (file size), ``input_shape`` and ``opset``.

    Raises
    ------
    sklearn.exceptions.NotFittedError
        If ``fitted`` is a compressor or skorch net that is not fitted.
    ImportError
        If ``onnx`` is not installed (``pip install 'skcompress[deploy]'``).

    See Also
    --------
    measure_onnx_latency : time the exported graph in onnxruntime.
    skcompress.save : the compact file, smaller but read by PyTorch only.

    Examples
    --------
    >>> import os, tempfile
    >>> import torch
    >>> from skcompress.export import export_onnx
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     result = export_onnx(torch.nn.Linear(4, 2), os.path.join(tmp, "m.onnx"))
    >>> result.format, result.layers, result.input_shape
    ('dense', {'Linear': 'dense'}, (4,))
    """
    module = _fitted_module(fitted)
    path = _check_path(path)
    shape = _check_shape(input_shape)
    opset = _check_opset(opset)
    onnx = _require("onnx", "export_onnx")
    from .io import bake  # lazily: the format module is the heavier import

    baked = bake(module).cpu().float().eval()
    if shape is None:
        shape = _infer_input_shape(baked)
        if shape is None:
            raise ValueError(
                "input_shape is required: the shape of one sample cannot be "
                f"inferred from {type(baked).__name__}, whose first layer is not "
                "a Linear; pass e.g. input_shape=(1, 8, 8)."
            )
    example = torch.zeros((1, *shape))
    with torch.no_grad():
        _forward(baked, example, shape)  # a wrong shape fails here, clearly
    layers = {
        name or type(sub).__name__: DENSE
        for name, sub in baked.named_modules()
        if isinstance(getattr(sub, "weight", None), torch.Tensor)
        and sub.weight.dim() >= 2
    }
    for name in _plan_integer_weights(module, baked):
        layers[name or type(baked).__name__] = QDQ_INT8

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # the TorchScript exporter is deprecated in favour of dynamo=True,
        # which needs onnxscript; it is the one that runs offline here
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based",
                                category=DeprecationWarning)
        warnings.filterwarnings("ignore", message="The feature will be removed",
                                category=DeprecationWarning)
        kwargs = {} if opset is None else {"opset_version": opset}
        torch.onnx.export(
            baked, (example,), buffer, dynamo=False,
            input_names=[_INPUT_NAME], output_names=[_OUTPUT_NAME],
            dynamic_axes={_INPUT_NAME: {0: "batch"}, _OUTPUT_NAME: {0: "batch"}},
            do_constant_folding=True, **kwargs,
        )
    model = onnx.load_model_from_string(buffer.getvalue())
    _rename_qdq_initializers(model)
    onnx.save_model(model, path)
    opset_used = next(o.version for o in model.opset_import
                      if o.domain in ("", "ai.onnx"))
    return OnnxExport(
        path=path,
        format=QDQ_INT8 if QDQ_INT8 in layers.values() else DENSE,
        layers=layers,
        n_bytes=os.path.getsize(path),
        input_shape=tuple(shape),
        opset=int(opset_used),
    )


def _session_source(path_or_model):
    if isinstance(path_or_model, OnnxExport):
        path_or_model = path_or_model.path
    if isinstance(path_or_model, (str, os.PathLike)):
        path = os.fspath(path_or_model)
        if not os.path.isfile(path):
            raise ValueError(f"path_or_model {path!r} is not a file.")
        return path
    if isinstance(path_or_model, (bytes, bytearray)):
        return bytes(path_or_model)
    if callable(getattr(path_or_model, "SerializeToString", None)):  # ModelProto
        return path_or_model.SerializeToString()
    raise TypeError(
        "path_or_model must be an ONNX file path, an OnnxExport, serialized "
        f"bytes or an onnx.ModelProto, got {type(path_or_model).__name__}."
    )


def measure_onnx_latency(path_or_model, input_shape, batch_size=256, repeats=30,
                         warmup=5, n_threads=1, *, fold_dequantize=False):
    """Median seconds of one onnxruntime CPU inference of a batch.

    The protocol of :func:`skcompress.accounting.measure_latency`, so the two
    compare: a batch of zeros of ``(batch_size, *input_shape)`` float32,
    ``warmup`` untimed runs, then the median of ``repeats`` timed runs. The
    session runs on the CPU provider with ``n_threads`` intra-op threads, one
    inter-op thread and onnxruntime's default (full) graph optimizations.

    By default onnxruntime keeps the ``DequantizeLinear`` nodes of a
    ``"qdq-int8"`` export and runs them at every call; the convolutions behind
    them then miss their prepacked-weight kernels, and the graph runs slower
    than its dense export (about 0.65x on the digits net).
    ``fold_dequantize=True`` sets onnxruntime's ``session.disable_quant_qdq``
    so that those nodes are folded into float32 weights when the session
    loads: the int8 file then runs as fast as the dense graph. Do the same in
    your own ``InferenceSession`` to deploy such a file::

        options = onnxruntime.SessionOptions()
        options.add_session_config_entry("session.disable_quant_qdq", "1")

    Parameters
    ----------
    path_or_model : str, os.PathLike, OnnxExport, bytes or onnx.ModelProto
        The ONNX model, e.g. what :func:`export_onnx` wrote.
    input_shape : tuple of int
        Shape of ONE sample.
    batch_size, repeats, warmup, n_threads : int
    fold_dequantize : bool, default=False
        Fold ``DequantizeLinear`` nodes of constant weights into float32
        weights at load (see above). Leave it off for graphs whose activations
        are quantized too: it would run them in float.

    Returns
    -------
    float
        Median seconds per run.

    Raises
    ------
    ImportError
        If ``onnxruntime`` is not installed (``pip install 'skcompress[deploy]'``).

    Examples
    --------
    >>> import os, tempfile
    >>> import torch
    >>> from skcompress.export import export_onnx, measure_onnx_latency
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     result = export_onnx(torch.nn.Linear(8, 2), os.path.join(tmp, "m.onnx"))
    ...     seconds = measure_onnx_latency(result, (8,), repeats=3, warmup=1)
    >>> seconds > 0
    True
    """
    shape = _check_timing(input_shape, batch_size, repeats, warmup, n_threads)
    if not isinstance(fold_dequantize, (bool, np.bool_)):
        raise TypeError(f"fold_dequantize must be a bool, got {fold_dequantize!r}.")
    source = _session_source(path_or_model)
    ort = _require("onnxruntime", "measure_onnx_latency")
    options = ort.SessionOptions()
    options.intra_op_num_threads = n_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # errors only
    if fold_dequantize:
        options.add_session_config_entry("session.disable_quant_qdq", "1")
    session = ort.InferenceSession(source, sess_options=options,
                                   providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: np.zeros((batch_size, *shape), np.float32)}
    times = []
    for i in range(warmup + repeats):
        start = time.perf_counter()
        try:
            session.run(None, feed)
        except Exception as exc:  # onnxruntime's own exception types
            raise ValueError(
                f"The ONNX model cannot process samples of input_shape={shape} "
                "(input_shape is the shape of ONE sample, without the batch "
                f"dimension): {str(exc).splitlines()[0]}"
            ) from exc
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return float(statistics.median(times))
