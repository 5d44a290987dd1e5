"""Compaction: rewrite a trained net's convolutions as depthwise-separable ones.

Each converted ``k x k`` convolution becomes a
:class:`~skcompress.blocks.DepthwiseSeparableConv2d` (depthwise ``k x k`` +
pointwise ``1x1``, no batch norm, so still linear), initialised from a rank-1
fit of the original kernel (:func:`separable_factors`), then the whole net is
trained by distillation from the original one (the
:class:`~skcompress.compression.Distiller`'s loss and training code,
:class:`~skcompress.compression._distillation.DistillationMixin`).
"""

import numbers
import time

import numpy as np
import pandas as pd
import torch
from sklearn.utils._param_validation import Interval
from torch import nn

from .._nets import find_net
from ..blocks import DepthwiseSeparableConv2d
from ._base import (
    BaseCompressor,
    CompressionResult,
    _input_shape,
    recalibrate_batchnorm,
)
from ._constraints import select_layers
from ._distillation import DistillationMixin, teacher_logits

__all__ = ["Compactor", "separable_factors"]


def separable_factors(weight):
    """Depthwise and pointwise weights from a rank-1 fit of a conv kernel.

    For every input channel ``c`` the ``(out, k*k)`` slice ``W[:, c]`` is
    replaced by its best rank-1 approximation (Eckart-Young, from the SVD)
    ``s1 * u1 v1^T``: the depthwise filter of ``c`` is ``sqrt(s1) * v1`` and
    the pointwise weights ``pointwise[:, c] = sqrt(s1) * u1``. The separable
    convolution then computes exactly the convolution with the kernel
    ``pointwise[o, c] * depthwise[c]``, the closest such kernel to ``W`` in
    Frobenius norm (slice by slice).

    Parameters
    ----------
    weight : Tensor of shape (out, in, k, k)

    Returns
    -------
    depthwise : Tensor of shape (in, 1, k, k)
    pointwise : Tensor of shape (out, in, 1, 1)

    Examples
    --------
    >>> import torch
    >>> from skcompress.compression._compaction import separable_factors
    >>> w = torch.einsum("oc,ckl->ockl", torch.randn(4, 3), torch.randn(3, 3, 3))
    >>> d, p = separable_factors(w)  # w is rank 1 per input channel: exact
    >>> torch.allclose(p * d.transpose(0, 1), w, atol=1e-5)
    True
    """
    out_channels, in_channels, kh, kw = weight.shape
    slices = weight.detach().transpose(0, 1).reshape(in_channels, out_channels,
                                                     kh * kw)
    U, S, Vh = torch.linalg.svd(slices.double(), full_matrices=False)
    root = S[:, 0].sqrt()
    depthwise = (root[:, None] * Vh[:, 0, :]).reshape(in_channels, 1, kh, kw)
    pointwise = (U[:, :, 0] * root[:, None]).T.reshape(out_channels, in_channels,
                                                       1, 1)
    return depthwise.to(weight.dtype), pointwise.to(weight.dtype)


def _skip_reason(conv):
    """Why ``conv`` is not converted, or None when it is."""
    if conv.groups != 1:
        return f"groups={conv.groups} (already grouped or depthwise)"
    if conv.in_channels == 1:
        return "in_channels=1 (every filter would be a multiple of one filter)"
    k = conv.kernel_size
    if k[0] != k[1]:
        return f"non-square kernel {tuple(k)}"
    if k[0] == 1:
        return "1x1 (already pointwise)"
    if tuple(conv.dilation) != (1, 1):
        return f"dilation={tuple(conv.dilation)}"
    if conv.padding_mode != "zeros":
        return f"padding_mode={conv.padding_mode!r}"
    if isinstance(conv.padding, str) or conv.padding[0] != conv.padding[1]:
        return f"padding={conv.padding!r} (not one symmetric int)"
    if conv.stride[0] != conv.stride[1]:
        return f"stride={tuple(conv.stride)} (not square)"
    return None


def convert_conv(conv):
    """A :class:`DepthwiseSeparableConv2d` initialised from ``conv``."""
    block = DepthwiseSeparableConv2d(
        conv.in_channels, conv.out_channels, int(conv.kernel_size[0]),
        stride=int(conv.stride[0]), padding=int(conv.padding[0]),
        bias=conv.bias is not None,
    ).to(device=conv.weight.device, dtype=conv.weight.dtype)
    depthwise, pointwise = separable_factors(conv.weight)
    with torch.no_grad():
        block.depthwise.weight.copy_(depthwise)
        block.pointwise.weight.copy_(pointwise)
        if conv.bias is not None:
            block.pointwise.bias.copy_(conv.bias.detach())
    return block


class Compactor(DistillationMixin, BaseCompressor):
    """Make a trained net's convolutions depthwise-separable, then distil.

    Every eligible ``k x k`` ``nn.Conv2d`` (``groups=1``, ``in_channels > 1``,
    square kernel ``k > 1``, no dilation, zero padding) is replaced by a
    :class:`~skcompress.blocks.DepthwiseSeparableConv2d` (depthwise ``k x k``
    then pointwise ``1x1``), cutting its multiply-accumulates from
    ``out*in*k*k`` to ``in*k*k + out*in`` per output pixel. The new layer is
    initialised from the rank-1 SVD of each input channel's ``(out, k*k)``
    kernel slice (:func:`separable_factors`: the closest separable kernel),
    and the whole net is then trained for ``finetune_epochs`` with the
    distillation loss, the original net being the teacher (its logits are
    computed once, before the rewrite, after its BatchNorm statistics are
    recomputed on ``X`` as :class:`Distiller` does with
    ``recalibrate_teacher=True``: a net whose running statistics lag its
    weights would otherwise teach its stale predictions).

    Skipped: ``in_channels=1`` convolutions (e.g. the digits CNN's first one:
    all filters would be multiples of a single filter), grouped / depthwise
    and 1x1 convolutions, non-square kernels, dilation, non-zero padding
    modes; ``conversion_report_`` says why.

    Parameters
    ----------
    estimator : skorch NeuralNetClassifier or compressor
        The net to compact.
    layers : None or list of str, default=None
        ``None``: every eligible ``Conv2d``; a list: exactly these layers
        (a named layer that cannot be converted is an error).
    temperature : float, default=4.0
        Distillation temperature (see :class:`Distiller`).
    alpha : float, default=0.9
        Weight of the soft (teacher) term.
    finetune_epochs : int, default=10
        Epochs of distillation after the rewrite.
    finetune_lr : float or None, default=None
    prefit : bool, default=False
    memory : str, path or joblib.Memory, default=None
    random_state : int, RandomState or None, default=None
    keep_base : bool, default=False
        See :class:`~skcompress.compression.BaseCompressor`.

    Attributes
    ----------
    estimator_ : skorch NeuralNetClassifier
        The compacted, distilled net (same class as the original).
    converted_layers_ : list of str
        The convolutions that were replaced.
    conversion_report_ : pandas.DataFrame
        One row per ``Conv2d`` of the original net: ``converted``, ``reason``
        (why skipped), ``params_before``, ``params_after``, ``macs_before``,
        ``macs_after`` (per sample, :func:`skcompress.accounting.count_macs`
        convention), and a ``total`` row.
    conv_macs_ratio_ : float
        MACs of all convolution layers before / after.
    base_estimator_, original_size_bytes_, size_bytes_, compression_ratio_, \
report_, fit_time_
        As in :class:`~skcompress.compression.BaseCompressor`.

    See Also
    --------
    Distiller : train any student on any teacher's soft targets.
    skcompress.blocks.DepthwiseSeparableConv2d : the replacement block.

    References
    ----------
    Howard et al., "MobileNets: Efficient Convolutional Neural Networks for
    Mobile Vision Applications", 2017. Hinton, Vinyals and Dean, "Distilling
    the Knowledge in a Neural Network", 2015.

    Examples
    --------
    >>> from skcompress.compression import Compactor
    >>> from skcompress.datasets import load_digits_images
    >>> from skcompress.models import make_digits_net
    >>> X, y = load_digits_images()
    >>> X, y = X[:300], y[:300]
    >>> net = make_digits_net(max_epochs=2, module__channels=(4, 8),
    ...                       module__hidden=16)
    >>> compactor = Compactor(net, finetune_epochs=1, random_state=0).fit(X, y)
    >>> compactor.converted_layers_
    ['conv2']
    """

    _parameter_constraints = {
        **BaseCompressor._parameter_constraints,
        "layers": [None, list],
        "temperature": [Interval(numbers.Real, 0, None, closed="neither")],
        "alpha": [Interval(numbers.Real, 0, 1, closed="both")],
    }

    def __init__(
        self,
        estimator,
        *,
        layers=None,
        temperature=4.0,
        alpha=0.9,
        finetune_epochs=10,
        finetune_lr=None,
        prefit=False,
        memory=None,
        random_state=None,
        keep_base=False,
    ):
        super().__init__(
            estimator,
            finetune_epochs=finetune_epochs,
            finetune_lr=finetune_lr,
            prefit=prefit,
            memory=memory,
            random_state=random_state,
            keep_base=keep_base,
        )
        self.layers = layers
        self.temperature = temperature
        self.alpha = alpha

    def _selected(self, module):
        """``(converted, skipped)``: lists of names and ``{name: reason}``."""
        chosen = select_layers(module, self.layers, types=(nn.Conv2d,),
                               skip_last=False, param_name="layers")
        skipped = {name: _skip_reason(conv) for name, conv in chosen}
        skipped = {name: reason for name, reason in skipped.items() if reason}
        if self.layers is not None and skipped:
            raise ValueError(
                f"layers={self.layers!r} names convolutions that cannot be made "
                f"depthwise-separable: {skipped}."
            )
        converted = [name for name, _ in chosen if name not in skipped]
        if not converted:
            raise ValueError(
                "No convolution of the net can be made depthwise-separable: "
                f"{skipped}."
            )
        return converted, skipped

    def _convert(self, module):
        """Convert the selected convolutions in place: ``(converted, skipped)``."""
        converted, skipped = self._selected(module)
        for name in converted:
            module.set_submodule(name, convert_conv(module.get_submodule(name)))
        return converted, skipped

    def _compress_and_finetune(self, net, X, y, rng):
        start = time.perf_counter()
        # The original net (this fit's copy), before the rewrite, with its
        # BatchNorm statistics recomputed: it teaches its own best outputs.
        recalibrate_batchnorm(net, X, y)
        logits = teacher_logits(net, X)
        teacher_time = time.perf_counter() - start
        start = time.perf_counter()
        converted, skipped = self._convert(net.module_)
        compress_time = time.perf_counter() - start
        start = time.perf_counter()
        self._distill(net, X, y, logits, self.finetune_epochs)
        timings = {"teacher": teacher_time, "compress": compress_time,
                   "finetune": time.perf_counter() - start}
        return CompressionResult(net, {"converted_layers_": converted}, timings,
                                 details={"skipped": skipped})

    def _summarize(self, result, X):
        """``conversion_report_`` and ``conv_macs_ratio_``, from ``report_``."""
        from ..accounting import model_report

        converted = result.attributes["converted_layers_"]
        skipped = result.details["skipped"]
        base_net = find_net(self.base_estimator_)
        shape = _input_shape(X)
        before = model_report(base_net, input_shape=shape)
        after = self.report_ if shape is not None else model_report(self)
        rows = {}
        parts_of = after.index.to_series()
        for name, conv in base_net.module_.named_modules():
            if not isinstance(conv, nn.Conv2d):
                continue
            parts = parts_of[(parts_of == name) | parts_of.str.startswith(name + ".")]
            reason = "" if name in converted else "not selected"
            rows[name] = {
                "converted": name in converted,
                "reason": skipped.get(name, reason),
                "params_before": int(before.loc[name, "parameters"]),
                "params_after": int(after.loc[parts, "parameters"].sum()),
                "macs_before": float(before.loc[name, "macs"]),
                "macs_after": float(after.loc[parts, "macs"].sum()),
            }
        report = pd.DataFrame.from_dict(rows, orient="index")
        total = report[["params_before", "params_after", "macs_before",
                        "macs_after"]].sum()
        report.loc["total"] = {"converted": bool(report["converted"].any()),
                               "reason": "", **total.to_dict()}
        macs_after = total["macs_after"]
        return {
            "conversion_report_": report.astype(
                {"params_before": "int64", "params_after": "int64"}
            ),
            "conv_macs_ratio_": (
                float(total["macs_before"] / macs_after) if macs_after else np.nan
            ),
        }
