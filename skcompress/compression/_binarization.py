"""Weight binarization (BinaryConnect / XNOR-Net style) with optional binary
activations (BNN style)."""

from numbers import Integral

import numpy as np
import torch
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted
from torch import nn

from ._base import BaseCompressor, ConstraintCallback
from ._constraints import (
    add_constraint,
    constraints_of,
    latent_weight,
    run_with_hooks,
    select_layers,
)
from ._pruning import is_depthwise
from ._quantization import UniformQuantize, uniform_grid
from ._ste import straight_through

__all__ = ["Binarize", "BinaryActivation", "Binarizer"]


class Binarize(nn.Module):
    """Effective weight ``sign(w) * scale`` per output channel.

    ``sign(0) = +1``; ``scale = mean(|w|)`` of the channel's latent weights
    (``scale=True``, XNOR-Net) or 1. The gradient reaches the latent weight
    through the straight-through estimator of Htanh (1 where ``|w| <= 1``,
    else 0) and, with ``scale=True``, through the scale.

    ``stochastic=True`` samples ``+1`` with probability
    ``clip((w + 1) / 2, 0, 1)`` while the module is training and not
    ``frozen``; otherwise the sign is deterministic.
    """

    def __init__(self, scale=True, stochastic=False):
        super().__init__()
        self.scale = bool(scale)
        self.stochastic = bool(stochastic)
        self.frozen = False

    def forward(self, weight):
        latent = weight.detach()
        if self.stochastic and self.training and not self.frozen:
            prob = ((latent + 1) / 2).clamp(0, 1)
            positive = torch.rand_like(latent) < prob
        else:
            positive = latent >= 0
        signs = torch.where(positive, 1.0, -1.0).to(weight.dtype)
        binary = straight_through(weight, signs, limit=1.0)
        if not self.scale:
            return binary
        dims = tuple(range(1, weight.dim()))
        return binary * weight.abs().mean(dim=dims, keepdim=True)

    def encoding_hint(self):
        return {"kind": "binary"}

    def extra_repr(self):
        return f"scale={self.scale}, stochastic={self.stochastic}"


class BinaryActivation(nn.Module):
    """Binarize a layer's input: ``+1`` where ``x >= threshold``, else ``-1``.

    Gradients pass with the straight-through estimator of Htanh (1 where
    ``|x - threshold| <= 1``). No parameters; the constructor kwargs are kept
    in ``_init_kwargs`` so that :func:`skcompress.save` can rebuild it.

    Parameters
    ----------
    threshold : float, default=0.0
        0 for inputs that take both signs (BNN). For non-negative inputs
        (after a ReLU) the sign would be constant, so the Binarizer sets it to
        the mean input measured on the training data.
    """

    def __init__(self, threshold=0.0):
        super().__init__()
        self.threshold = float(threshold)
        self._init_kwargs = {"threshold": self.threshold}

    def forward(self, x):
        centered = x - self.threshold
        signs = torch.where(centered.detach() >= 0, 1.0, -1.0).to(x.dtype)
        return straight_through(centered, signs, limit=1.0)

    def extra_repr(self):
        return f"threshold={self.threshold:.4g}"


def _clip_binarized_latent(module):
    """Keep the latent weights of binarized layers in [-1, 1] (BinaryConnect)."""
    for sub in module.modules():
        if any(isinstance(c, Binarize) for c in constraints_of(sub)):
            latent_weight(sub).clamp_(-1.0, 1.0)


def _freeze_binarized(module):
    for sub in module.modules():
        for constraint in constraints_of(sub):
            if isinstance(constraint, Binarize):
                constraint.frozen = True


class Binarizer(BaseCompressor):
    """Binarize a skorch net's weights to ``+-scale`` per output channel.

    Training keeps real-valued latent weights (clipped to [-1, 1] after every
    optimizer step); the forward pass uses ``sign(w) * scale`` with
    ``scale = mean|w|`` of each output channel of the latent weight (XNOR-Net)
    and gradients pass through the straight-through estimator of Htanh
    (BinaryConnect). The file stores the signs with ``np.packbits`` plus one
    fp32 scale per channel: about 1/32 of fp32 for the binarized layers.
    Biases stay fp32. The first convolution, the output layer and depthwise
    convolutions are not binarized by default (binarizing them costs the
    most accuracy and saves the least: a depthwise 3x3 filter has 9 weights
    and is its channel's only spatial filter); they get 8-bit integers
    (``keep_bits``).

    Parameters
    ----------
    estimator : skorch NeuralNet or compressor
    scale : bool, default=True
        Per-output-channel scale ``mean|w|``; ``False`` gives weights +-1.
    mode : {"deterministic", "stochastic"}, default="deterministic"
        ``"deterministic"``: ``sign(w)`` with ``sign(0) = +1``.
        ``"stochastic"``: during fine-tuning ``+1`` is sampled with probability
        ``clip((w + 1) / 2, 0, 1)``; at the end of ``fit`` the binary weights
        are frozen to the deterministic sign of the latent weights, so
        predictions (and the saved file) are reproducible.
    activations : bool, default=False
        Also binarize (sign + straight-through estimator) the input of every
        binarized layer except the first one in forward order, BNN style: the
        layer ``L`` is replaced by ``nn.Sequential(BinaryActivation(), L)``.
        Needs at least two binarized layers.
    layers : None, "all" or list of str, default=None
        ``None``: every Conv2d / Linear except the first and the last in
        forward order and the depthwise convolutions (``groups ==
        in_channels == out_channels > 1``, as in MobileNet); ``"all"``: every
        Conv2d / Linear.
    keep_bits : int in [2, 8] or None, default=8
        The Conv2d / Linear layers that are not binarized (by default the
        first, the last and the depthwise ones) get a symmetric per-channel
        uniform grid of this many bits, kept exact through fine-tuning like
        the binary weights;
        ``None`` keeps them fp32. Eight bits cost them almost no accuracy
        and a quarter of their size.
    finetune_epochs : int, default=5
    finetune_lr : float or None, default=None
    prefit : bool, default=False
    memory : str, joblib.Memory or None, default=None
    random_state : int, RandomState or None, default=None
    keep_base : bool, default=False
        See :class:`~skcompress.compression.BaseCompressor`.

    Attributes
    ----------
    estimator_ : skorch NeuralNet
    layers_ : list of str
        The binarized layers.
    kept_layers_ : list of str
        The Conv2d / Linear layers left out of binarization (``keep_bits``
        integers, or fp32).
    base_estimator_, original_size_bytes_, size_bytes_, compression_ratio_, \
report_, fit_time_ :
        See :class:`~skcompress.compression.BaseCompressor`.

    See Also
    --------
    Quantizer : 2 to 8 bits per weight.

    References
    ----------
    Courbariaux, Bengio and David, "BinaryConnect", NeurIPS 2015.
    Hubara et al., "Binarized Neural Networks", NeurIPS 2016.
    Rastegari et al., "XNOR-Net", ECCV 2016.

    Examples
    --------
    >>> from skcompress import Binarizer
    >>> from skcompress.datasets import load_digits_images
    >>> from skcompress.models import make_digits_net
    >>> X, y = load_digits_images()
    >>> net = make_digits_net(max_epochs=1, module__channels=(4, 8),
    ...                       module__hidden=16)
    >>> b = Binarizer(net, finetune_epochs=1, random_state=0).fit(X[:200], y[:200])
    >>> b.layers_
    ['conv2', 'fc1']
    >>> w = b.estimator_.module_.fc1.weight
    >>> bool((w.abs() == w.abs()[:, :1]).all())
    True
    """

    _parameter_constraints = {
        **BaseCompressor._parameter_constraints,
        "scale": ["boolean"],
        "mode": [StrOptions({"deterministic", "stochastic"})],
        "activations": ["boolean"],
        "layers": [None, StrOptions({"all"}), list, tuple],
        "keep_bits": [None, Interval(Integral, 2, 8, closed="both")],
    }

    def __init__(
        self,
        estimator,
        *,
        scale=True,
        mode="deterministic",
        activations=False,
        layers=None,
        keep_bits=8,
        finetune_epochs=5,
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
        self.scale = scale
        self.mode = mode
        self.activations = activations
        self.layers = layers
        self.keep_bits = keep_bits

    def _compress(self, net, X, y, rng):
        module = net.module_
        device = next(module.parameters()).device
        sample = torch.as_tensor(np.asarray(X[:256])).to(device)
        chosen = select_layers(
            module,
            self.layers,
            example_input=sample[:2],
            skip_first=True,
            skip_last=True,
        )
        if self.layers is None:
            chosen = [(name, layer) for name, layer in chosen
                      if not is_depthwise(layer)]
        thresholds = self._activation_thresholds(module, chosen, sample)
        for _, layer in chosen:
            with torch.no_grad():
                latent_weight(layer).clamp_(-1.0, 1.0)
            add_constraint(
                layer, Binarize(self.scale, self.mode == "stochastic"), "weight"
            )
        binarized = {id(layer) for _, layer in chosen}
        kept = [(name, layer) for name, layer in select_layers(
                    module, "all", example_input=sample[:2])
                if id(layer) not in binarized]
        for _, layer in kept if self.keep_bits is not None else []:
            grid = uniform_grid(layer.weight, self.keep_bits, symmetric=True,
                                per_channel=True)
            add_constraint(layer, UniformQuantize(*grid[:2], self.keep_bits,
                                                  *grid[2:]), "weight")
        for name, layer in chosen[1:] if self.activations else []:
            module.set_submodule(
                name, nn.Sequential(BinaryActivation(thresholds[name]), layer)
            )
        return {"kept_layers_": [name for name, _ in kept]}

    def _activation_thresholds(self, module, chosen, sample):
        """Threshold of each binary activation (see BinaryActivation)."""
        if not self.activations:
            return {}
        if len(chosen) < 2:
            raise ValueError(
                "activations=True binarizes the inputs of the binarized layers "
                "after the first one, but only "
                f"{[name for name, _ in chosen]} is binarized; the network input "
                "itself is not binarized. Binarize more layers (layers=...) or "
                "use activations=False."
            )
        inputs = {}
        handles = [
            layer.register_forward_pre_hook(
                lambda mod, args, name=name: inputs.setdefault(name, args[0].detach())
            )
            for name, layer in chosen[1:]
        ]
        run_with_hooks(module, sample, handles)
        thresholds = {}
        for name, _ in chosen[1:]:
            x = inputs.get(name)
            if not isinstance(x, torch.Tensor):
                raise ValueError(
                    f"activations=True cannot binarize the input of layer {name!r}: "
                    "it is not reached by a forward pass on X."
                )
            thresholds[name] = 0.0 if bool((x < 0).any()) else float(x.mean())
        return thresholds

    def _finetune_callbacks(self):
        return [("clip_latent", ConstraintCallback(_clip_binarized_latent))]

    def _compress_and_finetune(self, net, X, y, rng):
        result = super()._compress_and_finetune(net, X, y, rng)
        _freeze_binarized(result.net.module_)
        return result

    @property
    def layers_(self):
        check_is_fitted(self, "estimator_")
        module = self.estimator_.module_
        names = []
        for name, sub in module.named_modules():
            if not any(isinstance(c, Binarize) for c in constraints_of(sub)):
                continue
            parent, _, last = name.rpartition(".")
            if last == "1" and isinstance(module.get_submodule(parent)[0],
                                          BinaryActivation):
                name = parent  # wrapped as Sequential(BinaryActivation(), layer)
            names.append(name)
        return names
