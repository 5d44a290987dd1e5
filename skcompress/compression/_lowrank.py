"""Low-rank factorization of Linear and Conv2d layers.

Split like the pruner: *scoring* is the spectrum of each layer
(:func:`choose_rank` turns a rank spec into a rank from singular values),
*applying* replaces a layer by a small ``nn.Sequential`` of plain layers
(:func:`factorize_linear`, :func:`factorize_conv_channel`,
:func:`factorize_conv_tucker`), and *fine-tuning* is the shared
``BaseCompressor._finetune``.
"""

import math
import numbers
import warnings

import numpy as np
import torch
from sklearn.utils._param_validation import Interval, StrOptions
from skorch.utils import to_tensor
from torch import nn

from ._base import BaseCompressor, _first_samples
from ._constraints import constraints_of, effective_weight, select_layers

__all__ = [
    "LowRankCompressor",
    "choose_rank",
    "factorize_conv_channel",
    "factorize_conv_tucker",
    "factorize_linear",
]


LOWRANK_LR_FACTOR = 0.5
"""Fine-tuning's peak learning rate after a factorization is this fraction of
the net's own ``lr`` when ``finetune_lr=None`` (the shared rule's
``FINETUNE_LR_FACTOR`` is 0.25)."""


# ---------------------------------------------------------------- scoring
def choose_rank(spec, singular_values, *, name, param="rank"):
    """Rank for one matrix from a spec and its singular values.

    Parameters
    ----------
    spec : int, float in (0, 1] or ("energy", float)
        An int is the rank itself; a float the fraction of the full rank
        (rounded up); ``("energy", e)`` the smallest rank whose squared
        singular values sum to at least ``e`` of the total.
    singular_values : 1-d array, descending
    name : str
        The layer, for error messages.

    Examples
    --------
    >>> import numpy as np
    >>> choose_rank(0.5, np.array([3.0, 2.0, 1.0, 0.5]), name="fc")
    2
    >>> choose_rank(("energy", 0.9), np.array([3.0, 1.0, 0.1]), name="fc")
    2
    """
    full = len(singular_values)
    if isinstance(spec, tuple):
        energy = np.cumsum(np.asarray(singular_values, dtype=float) ** 2)
        if energy[-1] == 0:
            return 1
        return int(np.searchsorted(energy / energy[-1], spec[1] - 1e-12) + 1)
    if isinstance(spec, numbers.Integral):
        if spec > full:
            raise ValueError(
                f"{param}={spec} for layer {name!r} exceeds its full rank {full}."
            )
        return int(spec)
    return max(1, math.ceil(spec * full - 1e-9))


def _svd(matrix):
    return np.linalg.svd(matrix.double().cpu().numpy(), full_matrices=False)


# --------------------------------------------------------------- applying
def _as(array, reference):
    return torch.as_tensor(np.ascontiguousarray(array), dtype=reference.dtype)


def factorize_linear(layer, rank, weight=None):
    """``Linear(in, out)`` -> ``Sequential(Linear(in, r, bias=False), Linear(r, out))``.

    Truncated SVD ``W ~ (U_r sqrt(S_r)) (sqrt(S_r) V_r^T)``: exact at full rank.
    """
    weight = layer.weight.detach() if weight is None else weight
    U, S, Vt = _svd(weight)
    root = np.sqrt(S[:rank])
    first = nn.Linear(layer.in_features, rank, bias=False)
    second = nn.Linear(rank, layer.out_features, bias=layer.bias is not None)
    with torch.no_grad():
        first.weight.copy_(_as(root[:, None] * Vt[:rank], weight))
        second.weight.copy_(_as(U[:, :rank] * root, weight))
        if layer.bias is not None:
            second.bias.copy_(layer.bias.detach())
    return nn.Sequential(first, second)


def _conv(layer, in_channels, out_channels, kernel_size, *, spatial, bias):
    """A Conv2d with ``layer``'s geometry when ``spatial``, else a plain 1x1."""
    if spatial:
        return nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=layer.stride,
            padding=layer.padding,
            dilation=layer.dilation,
            bias=bias,
            padding_mode=layer.padding_mode,
        )
    return nn.Conv2d(in_channels, out_channels, 1, bias=bias)


def factorize_conv_channel(layer, rank, weight=None):
    """``Conv2d`` -> k x k conv with ``rank`` filters, then a 1 x 1 conv.

    From the SVD of the kernel reshaped ``(out, in * k * k)``; stride,
    padding, dilation and bias are kept; exact at full rank.
    """
    weight = layer.weight.detach() if weight is None else weight
    out_c, in_c, kh, kw = weight.shape
    U, S, Vt = _svd(weight.reshape(out_c, -1))
    root = np.sqrt(S[:rank])
    first = _conv(layer, in_c, rank, (kh, kw), spatial=True, bias=False)
    second = _conv(layer, rank, out_c, 1, spatial=False, bias=layer.bias is not None)
    filters = (root[:, None] * Vt[:rank]).reshape(rank, in_c, kh, kw)
    mixing = (U[:, :rank] * root).reshape(out_c, rank, 1, 1)
    with torch.no_grad():
        first.weight.copy_(_as(filters, weight))
        second.weight.copy_(_as(mixing, weight))
        if layer.bias is not None:
            second.bias.copy_(layer.bias.detach())
    return nn.Sequential(first, second)


def _partial_tucker(kernel, ranks):
    """tensorly's Tucker-2 on modes (out, in): ``core, [U_out, U_in]``."""
    from tensorly.decomposition import partial_tucker

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = partial_tucker(kernel, rank=list(ranks), modes=[0, 1], init="svd")
    # tensorly >= 0.9 returns ((core, factors), errors); older ones (core, factors)
    if isinstance(result[0], tuple):
        result = result[0]
    core, factors = result
    return np.asarray(core), [np.asarray(f) for f in factors]


def factorize_conv_tucker(layer, ranks, weight=None):
    """``Conv2d`` -> 1 x 1 (in -> r_in), k x k (r_in -> r_out), 1 x 1 (-> out).

    Tucker-2 of the kernel along its channel modes (Kim et al., 2016), with
    tensorly's ``partial_tucker``; exact at full ranks.
    """
    weight = layer.weight.detach() if weight is None else weight
    out_c, in_c, kh, kw = weight.shape
    r_out, r_in = ranks
    core, (u_out, u_in) = _partial_tucker(weight.double().cpu().numpy(), ranks)
    first = _conv(layer, in_c, r_in, 1, spatial=False, bias=False)
    middle = _conv(layer, r_in, r_out, (kh, kw), spatial=True, bias=False)
    last = _conv(layer, r_out, out_c, 1, spatial=False, bias=layer.bias is not None)
    with torch.no_grad():
        first.weight.copy_(_as(u_in.T.reshape(r_in, in_c, 1, 1), weight))
        middle.weight.copy_(_as(core, weight))
        last.weight.copy_(_as(u_out.reshape(out_c, r_out, 1, 1), weight))
        if layer.bias is not None:
            last.bias.copy_(layer.bias.detach())
    return nn.Sequential(first, middle, last)


def _dense_params(layer):
    return layer.weight.numel()


def _is_pointwise(layer):
    """A 1x1 convolution."""
    return isinstance(layer, nn.Conv2d) and tuple(layer.kernel_size) == (1, 1)


# -------------------------------------------------------------- estimator
class LowRankCompressor(BaseCompressor):
    """Factorize a skorch net's Linear and Conv2d layers, then fine-tune.

    Each chosen ``Linear`` becomes two (truncated SVD); each ``Conv2d`` a
    k x k conv with ``r`` filters plus a 1 x 1 conv (``method="channel"``) or a
    1 x 1, k x k, 1 x 1 Tucker-2 sandwich (``method="tucker"``). The module
    really shrinks and runs faster; layers where the factorization would not
    save parameters, and grouped convolutions, stay dense. By default 1x1
    (pointwise) convolutions stay dense too: they have no spatial extent to
    factor out, and in inverted-residual and bottleneck blocks (MobileNetV2)
    they already are the low-rank factors of the block; truncating them
    again removes channels the residual stream carries (MobileNetV2 on
    MNIST-5k, rank 0.25 of every 1x1 conv: 0.914 -> 0.593 after fine-tuning).
    Name them in ``layers`` to factorize them. A fit that factorizes no
    layer leaves the net as it is and warns; so does one that leaves more
    weights dense in 1x1 convolutions than it factorizes.

    Parameters
    ----------
    estimator : skorch NeuralNet or compressor
        The net to factorize, or a compressor to chain after.
    rank : int, float in (0, 1], dict or None, default=0.25
        An int: the rank of every chosen layer; a float: that fraction of each
        layer's full rank (rounded up; ``1.0`` is the full rank); a dict
        ``{"fc1": 8, "conv2": 0.25}``: per-layer ranks, overriding ``energy``
        and the defaults (only the dict's layers are factorized unless
        ``energy`` is given). For Tucker an int or float applies to both
        channel modes (an int is capped at each mode's size).
    energy : float in (0, 1] or None, default=None
        When given, replaces a scalar ``rank``: the smallest rank keeping that
        share of the squared singular values.
    method : {"channel", "tucker"}, default="channel"
        Conv2d decomposition.
    layers : None, "all" or list of str, default=None
        Layers to factorize; ``None``: every Conv2d / Linear but the output
        layer and the 1x1 convolutions; ``"all"``: every Conv2d / Linear.
    finetune_lr : float or None, default=None
        Peak fine-tuning learning rate; ``None``: half the net's own ``lr``
        (``LOWRANK_LR_FACTOR``), twice the shared rule's quarter. Truncating
        a layer to a quarter of its rank discards half or more of its
        weights' energy (ResNet-20's 3x3 convolutions: 53-64 %), a larger
        step away from the trained net than masks or quantization grids
        take, as the digits benchmark's protocol already assumes (1e-3 for
        structural compression, 5e-4 for masks). ResNet-20 on MNIST-5k, 3
        epochs: 0.957 at a quarter, 0.963 at a half (recalibrated base
        0.973).
    finetune_epochs, prefit, memory, random_state, keep_base
        See :class:`~skcompress.compression.BaseCompressor`.

    Attributes
    ----------
    estimator_ : skorch NeuralNet
        The factorized, fine-tuned net.
    factorized_layers_ : dict
        Layer name -> rank (a pair ``(r_out, r_in)`` for Tucker).
    skipped_layers_ : dict
        Layer name -> why it was left dense.
    size_bytes_, original_size_bytes_, compression_ratio_, report_, fit_time_
        See :class:`~skcompress.compression.BaseCompressor`.

    Notes
    -----
    A factorized layer of a chained net loses the inner compressor's
    constraint on that layer (its effective weight is factorized); a warning
    says so.

    See Also
    --------
    Pruner : structured compression by removing filters.

    References
    ----------
    E. Denton et al., "Exploiting linear structure within convolutional
    networks for efficient evaluation", NeurIPS 2014.
    Y.-D. Kim et al., "Compression of deep convolutional neural networks for
    fast and low power mobile applications", ICLR 2016.

    Examples
    --------
    >>> from skcompress.compression import LowRankCompressor
    >>> from skcompress.datasets import load_digits_images
    >>> from skcompress.models import make_digits_net
    >>> X, y = load_digits_images()
    >>> net = make_digits_net(max_epochs=1, module__channels=(4, 8),
    ...                       module__hidden=16)
    >>> lowrank = LowRankCompressor(net, rank={"fc1": 4}, finetune_epochs=1)
    >>> lowrank.fit(X[:200], y[:200]).factorized_layers_
    {'fc1': 4}
    """

    _parameter_constraints = {
        **BaseCompressor._parameter_constraints,
        "rank": [
            Interval(numbers.Integral, 1, None, closed="left"),
            Interval(numbers.Real, 0, 1, closed="right"),
            dict,
            None,
        ],
        "energy": [None, Interval(numbers.Real, 0, 1, closed="right")],
        "method": [StrOptions({"channel", "tucker"})],
        "layers": [None, StrOptions({"all"}), list, tuple],
    }

    def __init__(
        self,
        estimator,
        *,
        rank=0.25,
        energy=None,
        method="channel",
        layers=None,
        finetune_epochs=3,
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
        self.rank = rank
        self.energy = energy
        self.method = method
        self.layers = layers

    def _finetune_lr(self, net):
        """``finetune_lr`` when given, else ``LOWRANK_LR_FACTOR`` (0.5) times
        the net's own ``lr``."""
        if self.finetune_lr is not None:
            return float(self.finetune_lr)
        return LOWRANK_LR_FACTOR * float(net.lr)

    def _check_params(self, X, y):
        if self.rank is None and self.energy is None:
            raise ValueError("rank=None needs energy=<float in (0, 1]>.")
        if isinstance(self.rank, dict):
            for name, value in self.rank.items():
                ok_int = isinstance(value, numbers.Integral) and value >= 1
                ok_float = isinstance(value, numbers.Real) and 0 < value <= 1
                if isinstance(value, bool) or not (ok_int or ok_float):
                    raise ValueError(
                        f"rank[{name!r}]={value!r} must be an int >= 1 or a "
                        "float in (0, 1]."
                    )

    def _layer_specs(self, module, example):
        """``[(name, layer, spec)]``: what to factorize, with its rank spec."""
        per_layer = self.rank if isinstance(self.rank, dict) else {}
        if per_layer and self.energy is None and self.layers is None:
            chosen = select_layers(module, list(per_layer), param_name="rank")
        else:
            chosen = select_layers(module, self.layers, example_input=example)
            names = {name for name, _ in chosen}
            extra = [name for name in per_layer if name not in names]
            if extra:
                chosen += select_layers(module, extra, param_name="rank")
        default = ("energy", self.energy) if self.energy is not None else self.rank
        return [(name, layer, per_layer.get(name, default)) for name, layer in chosen]

    def _compress(self, net, X, y, rng):
        module = net.module_
        example = to_tensor(_first_samples(X), device=net.device)
        factorized, skipped, replacements = {}, {}, []
        named = set(self.rank) if isinstance(self.rank, dict) else set()
        pointwise_weights = factorized_weights = 0
        for name, layer, spec in self._layer_specs(module, example):
            if isinstance(layer, nn.Conv2d) and layer.groups != 1:
                skipped[name] = f"grouped convolution (groups={layer.groups})"
                continue
            if self.layers is None and name not in named and _is_pointwise(layer):
                skipped[name] = ("1x1 convolution (left dense by default; name "
                                 "it in layers to factorize it)")
                pointwise_weights += _dense_params(layer)
                continue
            weight = effective_weight(layer)
            rank, params, new = self._factorize(name, layer, weight, spec)
            if new is None:
                skipped[name] = (
                    f"rank {rank} would need {params} weights, not fewer than "
                    f"the dense {_dense_params(layer)}"
                )
                continue
            if constraints_of(layer):
                warnings.warn(
                    f"LowRankCompressor factorizes the effective weight of "
                    f"{name!r}; the inner compressor's constraint on it is "
                    "no longer enforced.",
                    UserWarning,
                    stacklevel=4,
                )
            factorized[name] = rank
            factorized_weights += _dense_params(layer)
            replacements.append((name, new.to(weight.device)))
        # Replace only once every layer succeeded: errors leave `net` whole.
        for name, new in replacements:
            module.set_submodule(name, new)
        if factorized and pointwise_weights > factorized_weights:
            warnings.warn(
                f"LowRankCompressor left {pointwise_weights} weights of 1x1 "
                f"convolutions dense by default, more than the "
                f"{factorized_weights} of the layers it factorized, so the net "
                "shrinks little; name the 1x1 convolutions in layers to "
                "factorize them (see skipped_layers_).",
                UserWarning,
                stacklevel=4,
            )
        if not factorized:
            reasons = "; ".join(f"{name}: {why}" for name, why in
                                list(skipped.items())[:3])
            warnings.warn(
                f"LowRankCompressor factorized no layer, the net is only "
                f"fine-tuned ({len(skipped)} skipped: {reasons}"
                f"{' ...' if len(skipped) > 3 else ''}; see skipped_layers_).",
                UserWarning,
                stacklevel=4,
            )
        return {"factorized_layers_": factorized, "skipped_layers_": skipped}

    def _factorize(self, name, layer, weight, spec):
        """``(rank, factor weights, new module or None)`` for one layer."""
        if isinstance(layer, nn.Linear):
            rank = choose_rank(spec, _svd(weight)[1], name=name)
            params = rank * (layer.in_features + layer.out_features)
            build = factorize_linear
        elif self.method == "channel":
            out_c = weight.shape[0]
            rank = choose_rank(spec, _svd(weight.reshape(out_c, -1))[1], name=name)
            params = rank * (weight[0].numel() + out_c)
            build = factorize_conv_channel
        else:
            rank = self._tucker_ranks(name, weight, spec)
            out_c, in_c, kh, kw = weight.shape
            params = in_c * rank[1] + rank[1] * rank[0] * kh * kw + rank[0] * out_c
            build = factorize_conv_tucker
        if params >= _dense_params(layer):
            return rank, params, None
        return rank, params, build(layer, rank, weight)

    @staticmethod
    def _tucker_ranks(name, weight, spec):
        out_c, in_c = weight.shape[:2]
        if isinstance(spec, numbers.Integral) and not isinstance(spec, bool):
            if spec > max(out_c, in_c):
                raise ValueError(
                    f"rank={spec} for layer {name!r} exceeds its channel "
                    f"sizes (out={out_c}, in={in_c})."
                )
            return min(spec, out_c), min(spec, in_c)
        unfold_out = weight.reshape(out_c, -1)
        unfold_in = weight.transpose(0, 1).reshape(in_c, -1)
        return tuple(
            min(
                choose_rank(spec, _svd(unfolding)[1], name=name),
                size,
            )
            for unfolding, size in ((unfold_out, out_c), (unfold_in, in_c))
        )
