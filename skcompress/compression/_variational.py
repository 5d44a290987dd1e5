"""Learned sparsity: sparse variational dropout (Molchanov et al., 2017).

Each weight ``theta`` of the chosen layers gets a learned noise variance
``sigma**2`` (stored as ``log_sigma2``); its dropout rate is
``alpha = sigma**2 / theta**2``. Training minimises the data loss plus
``strength / n_samples`` times the KL divergence of the log-uniform prior,
approximated as in the paper::

    KL(log_alpha) ~= k1 - k1 * sigmoid(k2 + k3 * log_alpha)
                     + 0.5 * log1p(exp(-log_alpha))

with ``k1, k2, k3 = 0.63576, 1.87320, 1.48695``. Weights the data does not
need drift to a large ``log_alpha`` (pure noise); at the end of the fit every
weight with ``log_alpha > threshold`` is removed through the library's
:class:`~skcompress.compression._constraints.Mask`, so the result is an
ordinary masked net (stored sparse by the file format, chainable with the
``Quantizer``) and no variational layer is left in it.

During training the layers run with the local reparameterization trick: the
pre-activations are sampled from ``N(x @ theta, x**2 @ sigma**2)`` instead
of the weights, one draw per sample.
"""

import math
import numbers
import time
import warnings
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.utils._param_validation import Interval, StrOptions
from skorch import NeuralNetClassifier
from skorch.utils import to_tensor
from torch import nn

from ._base import BaseCompressor, CompressionResult, _first_samples
from ._constraints import Mask, add_constraint, select_layers
from ._dead_units import prune_dead_units
from ._pruning import is_depthwise

__all__ = ["VariationalPruner", "kl_approximation"]

K1, K2, K3 = 0.63576, 1.87320, 1.48695
_LOG_ALPHA_CLIP = 10.0
_EPS = 1e-8
# training-accuracy drop (in points) beyond which the fit warns
_COLLAPSE_POINTS = 20.0
_CHECK_SAMPLES = 1000


def kl_approximation(log_alpha):
    """Molchanov et al.'s approximation of ``KL(q(w) || p(w))`` per weight.

    ``q`` is the weight's Gaussian posterior with dropout rate ``alpha``, ``p``
    the log-uniform prior; the approximation is tight to within 0.01 for
    every ``log_alpha``, tends to 0 as ``log_alpha`` grows (a pure-noise
    weight costs nothing) and tends to ``k1 - log_alpha / 2`` as it falls.

    Examples
    --------
    >>> import torch
    >>> round(float(kl_approximation(torch.tensor(0.0))), 4)
    0.4312
    >>> float(kl_approximation(torch.tensor(30.0))) < 1e-6
    True
    """
    return (K1 - K1 * torch.sigmoid(K2 + K3 * log_alpha)
            + 0.5 * F.softplus(-log_alpha))


class _Variational(nn.Module):
    """A Conv2d / Linear layer trained with sparse variational dropout.

    Holds the original layer (with any constraint an inner compressor put on
    it, whose effective weight is ``theta``) and one ``log_sigma2`` per
    weight. Training mode samples the pre-activations (local
    reparameterization); eval mode uses ``theta`` with the weights of
    ``log_alpha > threshold`` removed, as the final net will.
    """

    def __init__(self, layer, threshold, init_log_sigma2):
        super().__init__()
        self.layer = layer
        self.threshold = threshold
        weight = layer.weight.detach()
        self.log_sigma2 = nn.Parameter(torch.full_like(weight, init_log_sigma2))
        # weights an inner constraint holds at zero stay zero and noiseless
        self.register_buffer("alive", weight != 0)

    def log_alpha(self):
        theta = self.layer.weight
        log_alpha = self.log_sigma2 - torch.log(theta * theta + _EPS)
        return log_alpha.clamp(-_LOG_ALPHA_CLIP, _LOG_ALPHA_CLIP)

    def keep(self):
        """The weights kept at the end: ``log_alpha <= threshold``."""
        with torch.no_grad():
            return (self.log_alpha() <= self.threshold) & self.alive

    def kl(self):
        return (kl_approximation(self.log_alpha()) * self.alive).sum()

    def _apply(self, X, weight, bias):
        layer = self.layer
        if isinstance(layer, nn.Linear):
            return F.linear(X, weight, bias)
        return layer._conv_forward(X, weight, bias)

    def forward(self, X):
        theta = self.layer.weight
        bias = self.layer.bias
        if not self.training:
            return self._apply(X, theta * self.keep().to(theta.dtype), bias)
        mean = self._apply(X, theta, bias)
        sigma2 = torch.exp(self.log_alpha()) * theta * theta * self.alive
        var = self._apply(X * X, sigma2, None)
        return mean + torch.sqrt(var + _EPS) * torch.randn_like(mean)


class _ELBOLoss(nn.Module):
    """The net's criterion plus ``scale`` times the layers' KL terms.

    The variational layers are kept in a plain list, not as submodules, so
    that skorch does not hand their parameters to the optimizer twice.
    """

    def __init__(self, criterion, layers, scale):
        super().__init__()
        self.criterion = criterion
        self._layers = list(layers)
        self.scale = scale

    def forward(self, y_pred, y_true):
        loss = self.criterion(y_pred, y_true)
        if self.scale == 0:
            return loss
        return loss + self.scale * sum(v.kl() for v in self._layers)


@contextmanager
def _variational_layers(module, chosen, threshold, init_log_sigma2):
    """Swap the chosen layers for :class:`_Variational` ones in the block.

    The original layers (the same objects) are put back whatever happens;
    yields ``{name: _Variational}``.
    """
    wrappers = {}
    try:
        for name, layer in chosen:
            wrappers[name] = _Variational(layer, threshold, init_log_sigma2)
            module.set_submodule(name, wrappers[name])
        yield wrappers
    finally:
        for name, layer in chosen:
            module.set_submodule(name, layer)


@contextmanager
def _elbo_criterion(net, loss):
    original = net.criterion_
    net.criterion_ = loss
    try:
        yield
    finally:
        net.criterion_ = original


def _accuracy(net, X, y):
    if not isinstance(net, NeuralNetClassifier) or y is None:
        return None
    try:
        Xs, ys = _first_samples(X, _CHECK_SAMPLES), _first_samples(y, _CHECK_SAMPLES)
        predicted = net.predict(Xs)
        return 100.0 * float(np.mean(np.asarray(predicted) == np.asarray(ys)))
    except Exception:  # inputs the check cannot slice or compare
        return None


class VariationalPruner(BaseCompressor):
    """Learn which weights to remove with sparse variational dropout.

    Instead of a magnitude rule and a sparsity chosen in advance, every weight
    of the chosen layers learns its own dropout rate ``alpha`` while the net is
    fine-tuned on the ELBO of Molchanov et al. (2017): the data loss plus
    ``strength / n_samples`` times the KL divergence to a log-uniform prior
    (:func:`kl_approximation`). Weights the data does not need become pure
    noise; at the end of the fit those with ``log_alpha > threshold`` are
    removed with the library's
    :class:`~skcompress.compression._constraints.Mask` (exact zeros, stored
    sparse by :func:`skcompress.save`, kept by a chained ``Quantizer``), and
    the variational parameters are dropped: the fitted net is the user's
    architecture with plain weights and masks. How many weights go, and in
    which layers, is learned; ``strength`` sets the price of a weight (1 is
    the paper's ELBO, larger is sparser) and a grid can tune it.

    Parameters
    ----------
    estimator : skorch NeuralNet or compressor
        The net to sparsify, or a compressor to chain after (an inner
        pruner's zeros stay zero).
    strength : float >= 0, default=1.0
        Scale of the KL term (1: the variational lower bound with the
        training set size as the number of samples).
    threshold : float, default=3.0
        Weights with ``log_alpha`` above it are removed at the end (3 is the
        paper's: dropout rate ``alpha > e**3 ~= 20``).
    init_log_sigma2 : float, default=-10.0
        Initial ``log(sigma**2)`` of every weight (the paper's).
    layers : None, "all" or list of str, default=None
        Conv2d / Linear layers to sparsify. ``None``: all of them but the
        depthwise convolutions (few weights, and one lost tap of a 3x3 filter
        hurts); the output layer takes part, since its sparsity is learned too.
    finetune_epochs : int, default=10
        Epochs of variational training (the sparsity is learned during them);
        the ``log_sigma2`` parameters are trained with the weights, by the same
        optimizer at the same learning rate and schedule.
    masked_epochs : int, default=0
        Epochs of ordinary fine-tuning after the threshold, with the mask kept
        exact.
    prune_dead_units : bool, default=True
        After the threshold, also mask the incoming weights and the bias of
        every unit (output neuron or channel) whose outgoing weights were all
        removed (:func:`~skcompress.compression.prune_dead_units`): nothing
        reads such a unit, so the outputs stay exactly the same and the file
        is smaller. Units found this way are counted in ``sparsity_`` and
        ``dead_units_``.
    finetune_lr, prefit, memory, random_state, keep_base
        See :class:`~skcompress.compression.BaseCompressor`.

    Attributes
    ----------
    estimator_ : skorch NeuralNet
        The sparsified, fine-tuned net (plain layers with a ``Mask``).
    sparsity_ : float
        Fraction of the chosen layers' weights removed.
    layer_sparsity_ : dict
        Per chosen layer, the fraction of its weights removed.
    layer_report_ : pandas.DataFrame
        What was learned, per chosen layer: ``weights``, ``kept``,
        ``sparsity``, the median ``log_alpha`` of the layer at the end of
        training and ``dead_units``, the units masked because nothing reads
        them.
    dead_units_ : dict
        Layer -> number of units masked by ``prune_dead_units`` (layers with
        at least one; empty when it is off).
    size_bytes_, original_size_bytes_, compression_ratio_, report_, fit_time_
        See :class:`~skcompress.compression.BaseCompressor`.

    Warns
    -----
    UserWarning
        When a layer loses every weight, or when the training accuracy of the
        sparsified net is more than 20 points below the base net's (on up to
        1,000 training samples): ``strength`` is too large.

    References
    ----------
    D. Molchanov, A. Ashukha and D. Vetrov, "Variational Dropout Sparsifies
    Deep Neural Networks", ICML 2017.

    Examples
    --------
    >>> from skcompress.compression import VariationalPruner
    >>> from skcompress.datasets import load_digits_images
    >>> from skcompress.models import make_digits_net
    >>> X, y = load_digits_images()
    >>> net = make_digits_net(max_epochs=2, module__channels=(4, 8),
    ...                       module__hidden=16)
    >>> vp = VariationalPruner(net, strength=1.0, finetune_epochs=2,
    ...                        random_state=0).fit(X[:200], y[:200])
    >>> 0 <= vp.sparsity_ < 1
    True
    """

    _parameter_constraints = {
        **BaseCompressor._parameter_constraints,
        "strength": [Interval(numbers.Real, 0, None, closed="left")],
        "threshold": [Interval(numbers.Real, None, None, closed="neither")],
        "init_log_sigma2": [Interval(numbers.Real, None, None, closed="neither")],
        "layers": [None, StrOptions({"all"}), list, tuple],
        "masked_epochs": [Interval(numbers.Integral, 0, None, closed="left")],
        "prune_dead_units": ["boolean"],
    }

    def __init__(
        self,
        estimator,
        *,
        strength=1.0,
        threshold=3.0,
        init_log_sigma2=-10.0,
        layers=None,
        finetune_epochs=10,
        masked_epochs=0,
        prune_dead_units=True,
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
        self.strength = strength
        self.threshold = threshold
        self.init_log_sigma2 = init_log_sigma2
        self.layers = layers
        self.masked_epochs = masked_epochs
        self.prune_dead_units = prune_dead_units

    def _check_params(self, X, y):
        for name in ("strength", "threshold", "init_log_sigma2"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(
                    f"{type(self).__name__}: {name} must be finite, got "
                    f"{getattr(self, name)!r}."
                )

    def _compress_and_finetune(self, net, X, y, rng):
        module = net.module_
        example = to_tensor(_first_samples(X), device=net.device)
        chosen = select_layers(module, self.layers, example_input=example,
                               skip_last=False)
        if self.layers is None:
            chosen = [(n, layer) for n, layer in chosen if not is_depthwise(layer)]
        base_accuracy = _accuracy(net, X, y)
        n_samples = len(y) if y is not None else len(X)
        timings = {"compress": 0.0, "finetune": 0.0}

        start = time.perf_counter()
        with _variational_layers(module, chosen, self.threshold,
                                 self.init_log_sigma2) as wrappers:
            loss = _ELBOLoss(net.criterion_, wrappers.values(),
                             self.strength / max(n_samples, 1))
            with _elbo_criterion(net, loss):
                self._finetune(net, X, y, self.finetune_epochs)
            keep = {name: w.keep() for name, w in wrappers.items()}
            with torch.no_grad():
                median_log_alpha = {
                    name: float(w.log_alpha()[w.alive].median())
                    if bool(w.alive.any()) else float("nan")
                    for name, w in wrappers.items()
                }
        timings["finetune"] += time.perf_counter() - start
        net.initialize_optimizer()  # forget the log_sigma2 parameters

        start = time.perf_counter()
        masks = {name: Mask(keep[name]) for name, _ in chosen}
        for name, layer in chosen:
            add_constraint(layer, masks[name], "weight")
        dead = prune_dead_units(module, example) if self.prune_dead_units else {}
        # the masks as prune_dead_units left them (it tightens them in place)
        keep = {name: mask.mask for name, mask in masks.items()}
        timings["compress"] += time.perf_counter() - start
        start = time.perf_counter()
        self._finetune(net, X, y, self.masked_epochs)
        timings["finetune"] += time.perf_counter() - start

        attributes = self._report(chosen, keep, median_log_alpha, dead)
        self._warn_collapse(base_accuracy, _accuracy(net, X, y))
        return CompressionResult(net, attributes, timings)

    def _report(self, chosen, keep, median_log_alpha, dead):
        import pandas as pd

        rows = []
        for name, layer in chosen:
            n = layer.weight.numel()
            kept = int(keep[name].sum())
            rows.append({"layer": name, "weights": n, "kept": kept,
                         "sparsity": 1 - kept / n,
                         "median_log_alpha": median_log_alpha[name],
                         "dead_units": dead.get(name, 0)})
        report = pd.DataFrame(rows).set_index("layer")
        total = int(report["weights"].sum())
        emptied = [name for name, row in report.iterrows() if row["kept"] == 0]
        if emptied:
            warnings.warn(
                f"{type(self).__name__}(strength={self.strength}) removed every "
                f"weight of {emptied}: their outputs no longer depend on their "
                "inputs. Use a smaller strength, or leave those layers out "
                "(layers=...).",
                UserWarning,
                stacklevel=6,
            )
        return {
            "sparsity_": 1 - int(report["kept"].sum()) / total,
            "layer_sparsity_": report["sparsity"].to_dict(),
            "layer_report_": report,
            "dead_units_": dict(dead),
        }

    def _warn_collapse(self, before, after):
        if before is None or after is None or before - after <= _COLLAPSE_POINTS:
            return
        warnings.warn(
            f"{type(self).__name__}(strength={self.strength}): the training "
            f"accuracy fell from {before:.1f}% to {after:.1f}% (on up to "
            f"{_CHECK_SAMPLES} training samples); the KL term outweighs the "
            "data. Use a smaller strength or more finetune_epochs.",
            UserWarning,
            stacklevel=6,
        )
