"""Weight quantization: k-means weight sharing and uniform (affine) integers."""

import copy
import math
import numbers

import numpy as np
import torch
from sklearn.cluster import KMeans
from sklearn.utils._param_validation import Interval, Options, StrOptions
from sklearn.utils.validation import check_is_fitted
from torch import nn
from torch.nn.utils import parametrize

from ._base import BaseCompressor
from ._constraints import add_constraint, constraints_of, select_layers
from ._ste import straight_through

__all__ = ["Codebook", "HalfPrecision", "Quantizer", "UniformQuantize",
           "allocate_bits"]

# Bit-widths bits="auto" chooses from (2 is the least a symmetric grid allows).
AUTO_BITS = tuple(range(2, 9))


class Codebook(nn.Module):
    """Weight sharing: the effective weight is ``centroids[indices]``.

    ``indices`` are fixed; ``centroids`` is an ``nn.Parameter``, so fine-tuning
    trains the codebook and autograd sums the gradients of all the weights of
    a cluster (Han et al., 2016). Index ``-1`` marks a zero weight (a pruned
    one): it stays exactly zero and no centroid is spent on it. The latent
    weight underneath is not used (it receives no gradient).
    """

    def __init__(self, centroids, indices, bits):
        super().__init__()
        self.centroids = nn.Parameter(torch.as_tensor(centroids).detach().clone())
        self.bits = int(bits)
        # int8 up to 7 bits, int16 for 8 (indices and -1): int64 kept two
        # more fp32-sized copies of every quantized weight in memory
        dtype = torch.int8 if self.bits <= 7 else torch.int16
        self.register_buffer("indices", torch.as_tensor(indices).detach().to(dtype))

    def forward(self, weight):
        centroids = self.centroids.to(weight.dtype)
        values = centroids[self.indices.clamp(min=0).int()]
        return torch.where(self.indices >= 0, values, torch.zeros_like(values))

    def encoding_hint(self):
        # the file stores centroids + one symbol per weight (docs/format.md);
        # the effective weight is a function of these two alone
        return {"kind": "codebook", "bits": self.bits,
                "centroids": self.centroids.detach(), "indices": self.indices}

    def extra_repr(self):
        return f"bits={self.bits}, centroids={self.centroids.numel()}"


class UniformQuantize(nn.Module):
    """Affine integer grid with fixed scales (per output channel).

    The effective weight is exactly what the file format decodes::

        q = clamp(round(w / scale) + zero_point, qmin, qmax)   # integers
        w_hat = scale * (q - zero_point)

    broadcast along axis 0 (float32 arithmetic, ``round`` half to even). The
    gradient reaches the latent ``w`` through the identity straight-through
    estimator. ``zero_point`` is an integer, so 0 maps to exactly 0.
    """

    def __init__(self, scale, zero_point, bits, qmin, qmax):
        super().__init__()
        self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float32))
        self.register_buffer(
            "zero_point", torch.as_tensor(zero_point, dtype=torch.float32)
        )
        self.bits = int(bits)
        self.qmin = int(qmin)
        self.qmax = int(qmax)

    def _broadcast(self, tensor, weight):
        return tensor.to(weight.dtype).reshape((-1,) + (1,) * (weight.dim() - 1))

    def integers(self, weight):
        """The stored integers ``q`` of ``weight`` (as float tensor)."""
        scale = self._broadcast(self.scale, weight)
        zero_point = self._broadcast(self.zero_point, weight)
        q = torch.round(weight / scale) + zero_point
        return torch.clamp(q, self.qmin, self.qmax)

    def forward(self, weight):
        with torch.no_grad():
            q = self.integers(weight)
            scale = self._broadcast(self.scale, weight)
            zero_point = self._broadcast(self.zero_point, weight)
            value = scale * (q - zero_point)
        return straight_through(weight, value)

    def encoding_hint(self, weight=None):
        """The grid; with ``weight`` (this constraint's input), also its
        integers (as uint8 ``symbols`` minus ``q_min`` when the grid has at
        most 256 levels), so the file need not recompute them from the output."""
        scale, zero_point = self.scale, self.zero_point
        if (scale == scale[0]).all() and (zero_point == zero_point[0]).all():
            scale, zero_point = scale[:1], zero_point[:1]  # one grid per tensor
        hint = {
            "kind": "uniform",
            "bits": self.bits,
            "scale": scale,
            "zero_point": zero_point,
            "axis": 0,
        }
        if weight is not None:
            with torch.no_grad():
                if self.qmax - self.qmin <= 255:
                    hint["symbols"] = self.symbols(weight)
                    hint["q_min"] = self.qmin
                else:
                    hint["integers"] = self.integers(weight).to(torch.int32)
        return hint

    def symbols(self, weight):
        """``integers(weight) - qmin`` as uint8 (grids of at most 256 levels),
        computed with the same float32 operations in place: one temporary
        instead of four, for the file writer."""
        q = weight / self._broadcast(self.scale, weight)
        q.round_()
        if self.zero_point.any():  # adding zeros changes no symbol
            q.add_(self._broadcast(self.zero_point, weight))
        q.clamp_(self.qmin, self.qmax)
        # numpy's float32 -> int8 cast is about 3x faster than torch's; the
        # shift by -qmin is then a wrapping add on bytes, not on floats
        if -128 <= self.qmin and self.qmax <= 127:
            out = q.cpu().numpy().astype(np.int8).view(np.uint8)
            out += np.uint8(-self.qmin % 256)
        else:
            out = q.sub_(self.qmin).cpu().numpy().astype(np.uint8)
        return torch.from_numpy(out)

    def extra_repr(self):
        return f"bits={self.bits}, qmin={self.qmin}, qmax={self.qmax}"


class HalfPrecision(nn.Module):
    """Round a tensor to float16 values, kept in its own dtype.

    The effective tensor holds only values a float16 represents exactly
    (round to nearest even, clamped to the finite float16 range), so the
    file stores it in 2 bytes a value (its ``fp16`` encoding, chosen because
    it is exact) and ``load`` gives back the same bits. Fine-tuning reaches
    the latent tensor through the identity straight-through estimator.
    """

    _FP16_MAX = float(torch.finfo(torch.float16).max)

    def forward(self, weight):
        with torch.no_grad():
            value = weight.clamp(-self._FP16_MAX, self._FP16_MAX).to(
                torch.float16).to(weight.dtype)
        return straight_through(weight, value)


def kmeans_codebook(weight, bits, random_state):
    """Cluster the nonzero entries of ``weight`` into at most ``2**bits`` values.

    Linear initialisation over the weight range (``np.linspace(min, max, k)``,
    ``n_init=1``), which keeps the few large weights represented (Han et al.,
    2016). Zeros get index -1. A layer with fewer distinct nonzero values than
    ``2**bits`` keeps them all exactly (fewer centroids).

    Returns
    -------
    centroids : ndarray of float32, shape (k,)
    indices : ndarray of int64, shape ``weight.shape``
    """
    flat = weight.detach().cpu().to(torch.float64).reshape(-1).numpy()
    nonzero = flat != 0
    values = flat[nonzero]
    indices = np.full(flat.shape, -1, dtype=np.int64)
    distinct = np.unique(values)
    n_clusters = min(2**bits, distinct.size)
    if n_clusters == 0:  # a fully pruned layer
        return np.zeros(1, dtype=np.float32), indices.reshape(weight.shape)
    if n_clusters == distinct.size:
        centroids = distinct
        labels = np.searchsorted(distinct, values)
    else:
        init = np.linspace(values.min(), values.max(), n_clusters)[:, None]
        km = KMeans(
            n_clusters=n_clusters, init=init, n_init=1, random_state=random_state
        ).fit(values[:, None])
        centroids = km.cluster_centers_.ravel()
        labels = km.labels_
    indices[nonzero] = labels
    return centroids.astype(np.float32), indices.reshape(weight.shape)


def uniform_grid(weight, bits, *, symmetric, per_channel):
    """Scales and zero points of the affine grid (one per output channel).

    symmetric: ``zero_point = 0``, ``q`` in ``[-(2**(bits-1) - 1), 2**(bits-1) - 1]``
    and ``scale = max|w| / qmax``. Asymmetric: ``q`` in ``[0, 2**bits - 1]``
    over ``[min(w, 0), max(w, 0)]``, ``zero_point = round(-min / scale)``.
    ``per_channel=False`` uses one grid for the whole tensor (repeated per
    channel, so the stored form is the same).
    """
    w = weight.detach().cpu().to(torch.float64)
    n_out = w.shape[0]
    rows = w.reshape(n_out, -1) if per_channel else w.reshape(1, -1)
    if symmetric:
        qmin, qmax = -(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1
        scale = rows.abs().amax(dim=1) / qmax
        zero_point = torch.zeros_like(scale)
    else:
        qmin, qmax = 0, 2**bits - 1
        low = rows.amin(dim=1).clamp(max=0)
        high = rows.amax(dim=1).clamp(min=0)
        scale = (high - low) / qmax
        zero_point = torch.where(scale > 0, torch.round(-low / scale), 0.0)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale)).to(torch.float32)
    if not per_channel:
        scale, zero_point = scale.expand(n_out), zero_point.expand(n_out)
    return scale.clone(), zero_point.to(torch.float32).clone(), qmin, qmax


def allocate_bits(drops, n_weights, target_bits):
    """Per-layer bit-widths whose weight-weighted mean is at most ``target_bits``.

    Greedy: every layer starts at its highest bit-width; then, while the mean
    bits per weight (weighted by ``n_weights``) exceeds ``target_bits``, the
    layer whose next lower bit-width costs the least score drop per saved
    bit (``(drop[b - 1] - drop[b]) / n_weights``) is lowered by one bit (ties:
    the larger layer, then the first one). What the last step left of the
    budget then goes, one bit at a time, to the layer that gains the most per
    added bit, while it fits.

    Parameters
    ----------
    drops : dict
        Layer -> {bits: score drop with only that layer at those bits}.
    n_weights : dict
        Layer -> number of weights.
    target_bits : float
        Budget: mean bits per weight over the layers.

    Returns
    -------
    dict
        Layer -> bits.

    Examples
    --------
    >>> drops = {"fragile": {2: 0.5, 3: 0.2, 4: 0.0},
    ...          "robust": {2: 0.01, 3: 0.0, 4: 0.0}}
    >>> allocate_bits(drops, {"fragile": 100, "robust": 100}, target_bits=3.0)
    {'fragile': 4, 'robust': 2}
    """
    bits = {layer: max(by_bits) for layer, by_bits in drops.items()}
    total = sum(n_weights[layer] for layer in bits)

    def mean_bits():
        return sum(n_weights[layer] * b for layer, b in bits.items()) / total

    while mean_bits() > target_bits + 1e-9:
        lowerable = [layer for layer, b in bits.items() if b - 1 in drops[layer]]
        if not lowerable:
            least = {layer: min(by_bits) for layer, by_bits in drops.items()}
            raise ValueError(
                f"target_bits={target_bits} is below the least bit-widths {least}."
            )

        def cost(layer):
            b = bits[layer]
            step = drops[layer][b - 1] - drops[layer][b]
            return step / n_weights[layer], -n_weights[layer]

        bits[min(lowerable, key=cost)] -= 1
    # Lowering the largest layer may overshoot: spend what is left of the
    # budget on the layers that gain the most per added bit.
    while True:
        room = target_bits * total - sum(n_weights[lay] * b for lay, b in bits.items())
        raisable = [
            layer for layer, b in bits.items()
            if b + 1 in drops[layer] and n_weights[layer] <= room + 1e-9
            and drops[layer][b + 1] < drops[layer][b]
        ]
        if not raisable:
            return bits

        def gain(layer):
            b = bits[layer]
            return (drops[layer][b] - drops[layer][b + 1]) / n_weights[layer]

        bits[max(raisable, key=gain)] += 1


class Quantizer(BaseCompressor):
    """Quantize a skorch net's weights: k-means weight sharing or integers.

    ``method="kmeans"`` (weight sharing, Han et al., 2016): each layer gets a
    codebook of ``2**bits`` centroids fitted by scikit-learn ``KMeans`` (linear
    initialisation over the weight range, ``n_init=1``) and every weight
    becomes an index into it; fine-tuning trains the centroids with the
    indices fixed. The file stores the codebook plus bit-packed indices.

    ``method="uniform"``: affine integers ``q`` with fixed per-channel (or
    per-tensor) scales, ``w_hat = scale * (q - zero_point)``; fine-tuning is
    quantization-aware (forward on ``w_hat``, gradient to the latent weight
    through the straight-through estimator). The file stores the integers and
    scales.

    Biases stay in fp32 unless ``bias_bits`` is set, BatchNorm parameters
    always (they are a small fraction of the weights and sensitive); they
    are counted in the file size. On a
    pruned net (``Quantizer(Pruner(net), ...)``) zero weights stay exactly
    zero and only the nonzeros are clustered; the file stores their sparse
    positions plus the packed indices.

    Parameters
    ----------
    estimator : skorch NeuralNet or compressor
        The net to quantize, or a compressor to chain after (e.g. a Pruner).
    bits : int or "auto", default=4
        Bits per weight, 1 to 8 (``2**bits`` centroids for k-means). Uniform
        symmetric grids need ``bits >= 2``. ``"auto"``: mixed precision, a
        bit-width in 2..8 per layer under the ``target_bits`` budget, chosen
        on the training data only (:func:`allocate_bits` over the layers'
        sensitivity, :func:`skcompress.sensitivity`, to the training log-loss
        for a classifier, else to the net's score).
    target_bits : float in [2, 8] or None, default=None
        With ``bits="auto"`` (and only then): the most bits per weight on
        average over the quantized layers, weighted by their numbers of
        nonzero weights (the weights the file stores symbols for: all of
        them in a dense net, the survivors in a pruned one,
        ``Quantizer(Pruner(net))``). Grid-searchable like any setting.
    method : {"kmeans", "uniform"}, default="kmeans"
    symmetric : bool, default=True
        Uniform only: zero point 0 and a grid symmetric around zero.
    per_channel : bool, default=True
        Uniform only: one scale per output channel (else one per tensor).
    layers : None, "all" or list of str, default=None
        Layers to quantize. ``None`` (= ``"all"``): every Conv2d / Linear,
        the input and output layers included (quantizing them costs little
        accuracy, unlike binarizing them).
    bias_bits : None, int in [1, 8] or 16, default=None
        Precision of the quantized layers' biases. ``None``: float32, as
        trained. ``16``: rounded to float16 values in the module
        (:class:`HalfPrecision`), stored in 2 bytes each. ``1`` to ``8``: a
        k-means codebook of ``2**bias_bits`` centroids per layer, like the
        weights (a zero bias, e.g. of a dead unit masked by an inner pruner,
        stays zero and costs no centroid); a layer whose float32 centroids
        would make the codebook larger than float16 biases (``4 * k +
        bias_bits * n / 8 >= 2 * n`` bytes for ``n`` nonzero biases) gets
        float16 instead. Either way the saved file
        reproduces the fitted net bit for bit; the fine-tuning trains the
        biases through the constraint (k-means: the centroids).
    finetune_epochs : int, default=1
        Quantization-aware fine-tuning epochs (0 disables it).
    finetune_lr : float or None, default=None
        Fine-tuning learning rate; ``None`` keeps the net's ``lr``.
    prefit : bool, default=False
    memory : str, joblib.Memory or None, default=None
    random_state : int, RandomState or None, default=None
    keep_base : bool, default=False
        See :class:`~skcompress.compression.BaseCompressor`.

    Attributes
    ----------
    estimator_ : skorch NeuralNet
        The quantized net (constraints registered on the quantized layers).
    layers_ : list of str
        The quantized layers.
    bits_ : dict
        Layer -> bit-width (all ``bits`` unless ``bits="auto"``).
    base_estimator_, original_size_bytes_, size_bytes_, compression_ratio_, \
report_, fit_time_ :
        See :class:`~skcompress.compression.BaseCompressor`.

    See Also
    --------
    Binarizer : 1-bit weights with a per-channel scale.
    Pruner : chain ``Quantizer(Pruner(net))`` for sparse + quantized files.

    Notes
    -----
    ``export_int8`` turns a symmetric uniform quantizer's net into PyTorch's
    dynamic int8 Linear layers (fbgemm/onednn CPU kernels); see
    ``benchmarks/bench_quantize.py`` for whether it is faster on your CPU.

    References
    ----------
    Han, Mao and Dally, "Deep Compression", ICLR 2016.
    Jacob et al., "Quantization and Training of Neural Networks for Efficient
    Integer-Arithmetic-Only Inference", CVPR 2018.

    Examples
    --------
    >>> from skcompress import Quantizer
    >>> from skcompress.datasets import load_digits_images
    >>> from skcompress.models import make_digits_net
    >>> X, y = load_digits_images()
    >>> net = make_digits_net(max_epochs=1, module__channels=(4, 8),
    ...                       module__hidden=16)
    >>> q = Quantizer(net, bits=4, finetune_epochs=1, random_state=0).fit(
    ...     X[:200], y[:200])
    >>> w = q.estimator_.module_.fc1.weight
    >>> len(w.unique()) <= 16
    True
    """

    _parameter_constraints = {
        **BaseCompressor._parameter_constraints,
        "bits": [Interval(numbers.Integral, 1, 8, closed="both"),
                 StrOptions({"auto"})],
        "target_bits": [None, Interval(numbers.Real, 2, 8, closed="both")],
        "method": [StrOptions({"kmeans", "uniform"})],
        "symmetric": ["boolean"],
        "per_channel": ["boolean"],
        "layers": [None, StrOptions({"all"}), list, tuple],
        "bias_bits": [None, Interval(numbers.Integral, 1, 8, closed="both"),
                      Options(numbers.Integral, {16})],
    }

    def __init__(
        self,
        estimator,
        *,
        bits=4,
        target_bits=None,
        method="kmeans",
        symmetric=True,
        per_channel=True,
        layers=None,
        bias_bits=None,
        finetune_epochs=1,
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
        self.bits = bits
        self.target_bits = target_bits
        self.method = method
        self.symmetric = symmetric
        self.per_channel = per_channel
        self.layers = layers
        self.bias_bits = bias_bits

    def _check_params(self, X, y):
        if isinstance(self.bits, bool):
            raise TypeError(f"bits must be an int in [1, 8], got {self.bits!r}.")
        if isinstance(self.bias_bits, bool):
            raise TypeError(
                f"bias_bits must be None, an int in [1, 8] or 16, got "
                f"{self.bias_bits!r}.")
        if self.bits == "auto":
            if self.target_bits is None:
                raise ValueError(
                    "bits='auto' needs target_bits, the mean bits per weight "
                    "(a float in [2, 8])."
                )
            return
        if self.method == "uniform" and self.symmetric and self.bits < 2:
            raise ValueError(
                "bits=1 with method='uniform' and symmetric=True leaves a single "
                "level (0); use bits >= 2, symmetric=False or the Binarizer."
            )

    def _compress(self, net, X, y, rng):
        module = net.module_
        layers = "all" if self.layers is None else self.layers
        chosen = select_layers(module, layers)
        if self.bits == "auto":
            layer_bits = self._allocate(net, [name for name, _ in chosen], X, y, rng)
        else:
            layer_bits = {name: self.bits for name, _ in chosen}
        for name, layer in chosen:
            weight = layer.weight.detach()  # effective: inner constraints applied
            if self.method == "kmeans":
                centroids, indices = kmeans_codebook(
                    weight, layer_bits[name], rng.randint(np.iinfo(np.int32).max)
                )
                bits = max(1, math.ceil(math.log2(max(len(centroids), 1))))
                constraint = Codebook(
                    torch.from_numpy(centroids).to(weight.device),
                    torch.from_numpy(indices).to(weight.device),
                    min(bits, layer_bits[name]),
                )
            else:
                scale, zero_point, qmin, qmax = uniform_grid(
                    weight,
                    layer_bits[name],
                    symmetric=self.symmetric,
                    per_channel=self.per_channel,
                )
                constraint = UniformQuantize(
                    scale.to(weight.device),
                    zero_point.to(weight.device),
                    layer_bits[name],
                    qmin,
                    qmax,
                )
            add_constraint(layer, constraint, "weight")
            if self.bias_bits is not None and layer.bias is not None:
                add_constraint(layer, self._bias_constraint(layer.bias.detach(), rng),
                               "bias")
        return {"bits_": layer_bits}

    def _bias_constraint(self, bias, rng):
        """``HalfPrecision`` for ``bias_bits=16``, and where a codebook would
        take more bytes than float16 (a few biases: the centroids dominate);
        else a k-means codebook."""
        if self.bias_bits == 16:
            return HalfPrecision()
        nonzero = bias[bias != 0]
        k = min(2**self.bias_bits, int(nonzero.unique().numel()))
        if 4 * k + math.ceil(nonzero.numel() * self.bias_bits / 8) >= (
                2 * nonzero.numel()):
            return HalfPrecision()
        centroids, indices = kmeans_codebook(bias, self.bias_bits,
                                             rng.randint(np.iinfo(np.int32).max))
        bits = max(1, math.ceil(math.log2(max(len(centroids), 1))))
        return Codebook(torch.from_numpy(centroids).to(bias.device),
                        torch.from_numpy(indices).to(bias.device),
                        min(bits, self.bias_bits))

    def _allocate(self, net, names, X, y, rng):
        """``bits="auto"``: each layer's bits from its sensitivity on ``X, y``."""
        from sklearn.base import is_classifier

        from .._sensitivity import sensitivity

        template = type(self)(**{
            **self.get_params(deep=False), "estimator": net, "prefit": True,
            "bits": max(AUTO_BITS), "random_state": rng.randint(2**31 - 1),
        })
        scoring = "neg_log_loss" if is_classifier(net) else None
        table = sensitivity(template, X, y, param="bits", values=list(AUTO_BITS),
                            layers=names, scoring=scoring)
        drops = {name: dict(zip(rows["value"], rows["drop"]))
                 for name, rows in table.groupby("layer", sort=False)}
        # the budget counts stored symbols: a pruned layer's zeros cost none
        modules = dict(net.module_.named_modules())
        stored = {name: max(int((modules[name].weight != 0).sum()), 1)
                  for name in drops}
        return allocate_bits(drops, stored, self.target_bits)

    @property
    def layers_(self):
        check_is_fitted(self, "estimator_")
        return [
            name
            for name, sub in self.estimator_.module_.named_modules()
            if any(
                isinstance(c, (Codebook, UniformQuantize)) for c in constraints_of(sub)
            )
        ]

    def export_int8(self):
        """The quantized module with its Linear layers as PyTorch int8 kernels.

        Needs ``method="uniform"`` and ``symmetric=True`` (PyTorch's int8
        Linear kernels take symmetric qint8 weights). The int8 weights are
        exactly the fitted integers and scales (no re-quantization), the
        activations are quantized dynamically per batch by PyTorch, so outputs
        are close to, not equal to, ``transform``. Convolutions stay float
        (PyTorch's dynamic quantization covers Linear only). The result is a
        plain ``nn.Module`` for CPU inference; it is not saved by
        :func:`skcompress.save`.

        Returns
        -------
        nn.Module
        """
        check_is_fitted(self, "estimator_")
        if self.method != "uniform" or not self.symmetric:
            raise ValueError(
                "export_int8 needs method='uniform' and symmetric=True, got "
                f"method={self.method!r}, symmetric={self.symmetric!r}."
            )
        from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

        module = copy.deepcopy(self.estimator_.module_).cpu().eval()
        targets = [
            (name, sub)
            for name, sub in module.named_modules()
            if isinstance(sub, nn.Linear)
            and any(isinstance(c, UniformQuantize) for c in constraints_of(sub))
        ]
        for name, layer in targets:
            grid = constraints_of(layer)[-1]
            if not isinstance(grid, UniformQuantize):
                continue
            with torch.no_grad():
                weight = layer.weight.detach().float()
                q = grid.integers(weight).to(torch.int64)
            qweight = torch._make_per_channel_quantized_tensor(
                q.to(torch.int8),
                grid.scale.double(),
                torch.zeros_like(grid.zero_point, dtype=torch.int64),
                0,
            )
            qlinear = DynamicLinear(
                layer.in_features,
                layer.out_features,
                bias_=layer.bias is not None,
                dtype=torch.qint8,
            )
            bias = None if layer.bias is None else layer.bias.detach().float()
            qlinear.set_weight_bias(qweight, bias)
            module.set_submodule(name, qlinear)
        for sub in module.modules():
            for tensor_name in list(getattr(sub, "parametrizations", {}) or {}):
                parametrize.remove_parametrizations(sub, tensor_name)
        return module
