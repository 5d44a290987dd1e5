"""Weight binarization (BinaryConnect / XNOR-Net style) with optional binary
activations (BNN style)."""

import warnings
from numbers import Integral

import numpy as np
import torch
import torch.fx
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted
from torch import nn
from torch.nn import functional as F

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


# Operations after which a layer's output is no longer a linear function of
# it (activations, max pooling, softmax).
_NONLINEAR_MODULES = (
    nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU,
    nn.CELU, nn.GELU, nn.SiLU, nn.Mish, nn.Sigmoid, nn.Tanh, nn.Hardswish,
    nn.Hardsigmoid, nn.Softplus, nn.Softmax, nn.LogSoftmax, nn.MaxPool1d,
    nn.MaxPool2d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d,
)
_NONLINEAR_FUNCTIONS = {
    F.relu, F.relu_, F.relu6, F.hardtanh, F.leaky_relu, F.prelu, F.elu, F.selu,
    F.celu, F.gelu, F.silu, F.mish, F.sigmoid, F.tanh, F.hardswish,
    F.hardsigmoid, F.softplus, F.softmax, F.log_softmax, F.max_pool1d,
    F.max_pool2d, F.adaptive_max_pool1d, F.adaptive_max_pool2d, torch.relu,
    torch.relu_, torch.sigmoid, torch.tanh, torch.softmax, torch.log_softmax,
    torch.max_pool1d, torch.max_pool2d, torch.clamp, torch.clip,
}
_NONLINEAR_METHODS = {"relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_",
                      "clamp", "clamp_", "clip", "clip_", "softmax", "log_softmax"}


class _LayerTracer(torch.fx.Tracer):
    """Keeps every Conv2d / Linear (parametrized or not) a single node."""

    def is_leaf_module(self, module, qualname):
        return (isinstance(module, (nn.Conv2d, nn.Linear, *_NONLINEAR_MODULES))
                or super().is_leaf_module(module, qualname))


def linear_successors(module):
    """Names of the Conv2d / Linear layers whose output reaches another
    Conv2d / Linear layer, or the module's output, through no nonlinearity.

    Between such a layer and the next one there are only linear operations
    (BatchNorm, additions, average pooling, reshapes): together they are one
    linear map, factorized. MobileNetV2's 1x1 projections, its "linear
    bottlenecks", are such layers: they carry the residual stream, and
    binarizing them loses what the narrow bottleneck holds. The net's output
    layer is always one. A ResNet's convolutions are not (a ReLU follows each
    residual sum), nor are layers followed by max pooling (LeNet-5-Caffe).

    Read from a ``torch.fx`` trace of ``module``; ``None`` when the module
    cannot be traced (data-dependent control flow).

    Examples
    --------
    >>> from skcompress.models import MobileNetV2
    >>> names = linear_successors(MobileNetV2(width_mult=0.25))
    >>> names[:2], names[-1]
    (['features.1.conv.1', 'features.2.conv.2'], 'classifier.1')
    """
    try:
        graph = _LayerTracer().trace(module)
    except Exception:  # noqa: BLE001 - any tracing failure means "unknown"
        return None
    modules = dict(module.named_modules())

    def kind(node):
        if node.op == "call_module":
            sub = modules.get(node.target)
            if isinstance(sub, (nn.Conv2d, nn.Linear)):
                return "layer"
            if isinstance(sub, _NONLINEAR_MODULES):
                return "nonlinear"
        elif node.op == "call_function" and node.target in _NONLINEAR_FUNCTIONS:
            return "nonlinear"
        elif node.op == "call_method" and node.target in _NONLINEAR_METHODS:
            return "nonlinear"
        elif node.op == "output":
            return "layer"
        return "linear"

    names = []
    for node in graph.nodes:
        if node.op != "call_module" or kind(node) != "layer":
            continue
        stack, seen = list(node.users), set()
        while stack:
            user = stack.pop()
            if user in seen:
                continue
            seen.add(user)
            found = kind(user)
            if found == "layer":
                names.append(node.target)
                break
            if found == "linear":
                stack.extend(user.users)
    return names


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
    Biases stay fp32. The first convolution, the output layer, depthwise
    convolutions and linear bottlenecks are not binarized by default
    (binarizing them costs the most accuracy: a depthwise 3x3 filter has 9
    weights and is its channel's only spatial filter, and a layer whose
    output meets no nonlinearity before the next layer, such as MobileNetV2's
    1x1 projections, is one factor of a linear map that carries the residual
    stream; see :func:`linear_successors`); they get 8-bit integers
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
        forward order, the depthwise convolutions (``groups ==
        in_channels == out_channels > 1``, as in MobileNet) and the linear
        bottlenecks (:func:`linear_successors`; a module torch.fx cannot
        trace warns and has none); ``"all"``: every Conv2d / Linear.
    keep_bits : int in [2, 8] or None, default=8
        The Conv2d / Linear layers that are not binarized (by default the
        first, the last, the depthwise ones and the linear bottlenecks) get
        a symmetric per-channel uniform grid of this many bits, kept exact
        through fine-tuning like the binary weights;
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
            linear = linear_successors(module)
            if linear is None:
                warnings.warn(
                    "Binarizer: the module cannot be traced by torch.fx, so "
                    "layers followed by no nonlinearity (linear bottlenecks) "
                    "cannot be recognised and are binarized too; pass layers= "
                    "to choose the binarized layers.", UserWarning, stacklevel=4)
                linear = []
            chosen = [(name, layer) for name, layer in chosen
                      if not is_depthwise(layer) and name not in set(linear)]
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
