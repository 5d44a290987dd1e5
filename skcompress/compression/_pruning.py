"""Pruning: unstructured weight masks and structured filter removal.

The mechanics are split the torch-pruning way:

- *scoring* (:func:`weight_importance`, :func:`filter_importance`) says how
  important each weight / output channel is;
- *applying* (:func:`weight_masks` + :class:`~skcompress.compression._constraints.Mask`,
  or torch-pruning's ``MetaPruner`` along its dependency graph for filters)
  removes the least important ones;
- *fine-tuning* is the shared ``BaseCompressor._finetune`` (skorch's
  ``partial_fit``), run between the rounds of a cubic sparsity schedule
  (:func:`agp_schedule`).
"""

import numbers
import time
import warnings

import torch
from sklearn.utils._param_validation import Interval, StrOptions
from skorch.utils import to_tensor
from torch import nn

from ._base import BaseCompressor, CompressionResult, _first_samples
from ._constraints import (
    Mask,
    add_constraint,
    constraints_of,
    latent_weight,
    select_layers,
)

__all__ = [
    "Pruner",
    "agp_schedule",
    "lamp_scores",
    "split_epochs",
    "weight_importance",
    "weight_masks",
]

_GRADIENT_SAMPLES = 256


def agp_schedule(sparsity, n_steps):
    """Cubic sparsity schedule of Zhu & Gupta (2017), one value per round.

    ``s_t = sparsity * (1 - (1 - t / n_steps) ** 3)`` for ``t = 0 .. n_steps``:
    prune fast while many redundant weights are left, slowly near the target.

    Examples
    --------
    >>> [round(s, 3) for s in agp_schedule(0.8, 2)]
    [0.0, 0.7, 0.8]
    """
    return [sparsity * (1 - (1 - t / n_steps) ** 3) for t in range(n_steps + 1)]


def split_epochs(total, n_rounds):
    """Split ``total`` epochs over ``n_rounds`` as evenly as possible.

    The remainder goes to the last rounds (they prune the most fragile weights).
    """
    base, extra = divmod(total, n_rounds)
    return [base + (i >= n_rounds - extra) for i in range(n_rounds)]


# ---------------------------------------------------------------- scoring
def weight_importance(layers, criterion, *, generator=None):
    """One score per weight of each layer; the lowest are pruned first.

    ``"l1"`` and ``"l2"`` rank single weights identically (``|w|``);
    ``"lamp"`` is the layer-adaptive magnitude score of Lee et al. (2021),
    ``w_u**2 / sum(w_v**2 for |w_v| >= |w_u| in the same layer)``, which is
    comparable across layers and ranks weights within a layer like ``|w|``;
    ``"random"`` draws uniform scores; ``"taylor"`` is ``|w * dL/dw|`` and needs
    the gradients already accumulated on the layers' latent weights. Weights
    that are already exactly zero (an inner pruner's mask) score ``-inf`` so
    they stay pruned and count towards the sparsity.

    Parameters
    ----------
    layers : list of (name, module)
    criterion : {"l1", "l2", "lamp", "random", "taylor"}
    generator : torch.Generator, optional
        For ``"random"``.

    Returns
    -------
    dict of name -> Tensor shaped like the weight
    """
    scores = {}
    for name, layer in layers:
        weight = layer.weight.detach()
        if criterion in ("l1", "l2"):
            score = weight.abs()
        elif criterion == "lamp":
            score = lamp_scores(weight)
        elif criterion == "random":
            score = torch.rand(weight.shape, generator=generator)
        else:  # taylor
            grad = latent_weight(layer).grad
            if grad is None:
                raise RuntimeError(f"No gradient on layer {name!r} for taylor scores.")
            score = (weight * grad).abs()
        scores[name] = score.masked_fill(weight == 0, float("-inf"))
    return scores


def lamp_scores(weight):
    """LAMP scores of one layer's weights (Lee et al., 2021).

    With the squared weights sorted ascending, the score of a weight is its
    square over the sum of the squares of itself and every larger weight: the
    largest weight of each layer scores 1, so a global threshold on LAMP
    scores never empties a layer, and the layer's own weights keep their
    magnitude order.

    Examples
    --------
    >>> import torch
    >>> lamp_scores(torch.tensor([1.0, -2.0, 0.0])).tolist()
    [0.2, 1.0, 0.0]
    """
    squares = weight.detach().flatten().to(torch.float64) ** 2
    order = torch.argsort(squares, stable=True)
    ascending = squares[order]
    # suffix sums: sum of the squares of this weight and all larger ones
    tails = ascending.flip(0).cumsum(0).flip(0)
    ranked = torch.where(tails > 0, ascending / tails.clamp(min=1e-300), 0.0)
    scores = torch.empty_like(squares)
    scores[order] = ranked
    return scores.view(weight.shape)


def _lowest_off(scores, n_off):
    """Boolean keep-mask with exactly the ``n_off`` lowest scores off."""
    keep = torch.ones(scores.numel(), dtype=torch.bool)
    if n_off > 0:
        keep[torch.argsort(scores.flatten(), stable=True)[:n_off]] = False
    return keep.view(scores.shape)


def weight_masks(scores, sparsity, scope):
    """Keep-masks with exactly ``round(sparsity * n)`` weights off.

    ``n`` counts each layer's weights (``scope="layer"``) or all of them
    (``scope="global"``), as :mod:`torch.nn.utils.prune` counts them, so the
    masks equal ``l1_unstructured`` / ``global_unstructured``'s.
    """
    if scope == "layer":
        return {
            name: _lowest_off(score, round(sparsity * score.numel()))
            for name, score in scores.items()
        }
    flat = torch.cat([score.flatten() for score in scores.values()])
    keep = _lowest_off(flat, round(sparsity * flat.numel()))
    masks, start = {}, 0
    for name, score in scores.items():
        masks[name] = keep[start : start + score.numel()].view(score.shape)
        start += score.numel()
    return masks


def filter_importance(criterion):
    """torch-pruning's importance for ``criterion`` (one score per channel)."""
    import torch_pruning as tp

    if criterion == "l1":
        return tp.importance.MagnitudeImportance(p=1)
    if criterion == "l2":
        return tp.importance.MagnitudeImportance(p=2)
    if criterion == "random":
        return tp.importance.RandomImportance()
    if criterion == "taylor":
        return tp.importance.TaylorImportance()
    if criterion == "lamp":
        return tp.importance.LAMPImportance()
    return tp.importance.BNScaleImportance()


def accumulate_gradients(net, X, y, n_samples=_GRADIENT_SAMPLES):
    """Gradients of the net's loss on (at most) ``n_samples`` training samples."""
    module = net.module_
    module.zero_grad()
    was_training = module.training
    module.train()
    try:
        Xb = to_tensor(_first_samples(X, n_samples), device=net.device)
        y_pred = net.infer(Xb)
        y_true = to_tensor(_first_samples(y, n_samples), device=net.device)
        net.get_loss(y_pred, y_true, X=Xb, training=True).backward()
    finally:
        module.train(was_training)


# ---------------------------------------------------------------- estimator
class Pruner(BaseCompressor):
    """Prune a skorch net's weights or filters, then fine-tune.

    ``granularity="weight"`` zeroes single weights through a
    :class:`~skcompress.compression._constraints.Mask` constraint (exact zeros
    through fine-tuning, stored sparse by :func:`skcompress.save` so the file
    shrinks). ``granularity="filter"`` removes whole output channels, with the
    matching input channels of the next layers and BatchNorm, along
    torch-pruning's dependency graph: the module itself becomes smaller and
    faster.

    Pruning runs in ``n_steps`` rounds on the cubic schedule of Zhu & Gupta
    (:func:`agp_schedule`), each followed by fine-tuning; ``finetune_epochs``
    is the total, split over the rounds (:func:`split_epochs`), so the cost
    of fine-tuning does not depend on ``n_steps``.

    Parameters
    ----------
    estimator : skorch NeuralNet or compressor
        The net to prune, or a compressor to chain after.
    sparsity : float in [0, 1), default=0.5
        Fraction of weights (``"weight"``) or output channels (``"filter"``)
        of the chosen layers to remove.
    granularity : {"weight", "filter"}, default="weight"
    criterion : {"l1", "l2", "lamp", "random", "taylor", "bn_scale"}, \
default="l1"
        Importance: magnitude (L1 / L2 norm of each weight or filter), LAMP
        (layer-adaptive magnitude, Lee et al. 2021: a weight's square over the
        sum of the squares of the weights of its layer at least as large;
        with ``scope="global"`` it sets how much of each layer goes, within a
        layer it ranks like ``"l1"``; for filters torch-pruning's
        ``LAMPImportance``), random,
        first-order Taylor ``|w * dL/dw|`` (gradients of the loss on up to 256
        training samples) or, for filters only, the scale of the following
        BatchNorm (groups without BatchNorm are left alone).
    scope : {"global", "layer"}, default="global"
        Rank all chosen layers together, or reach ``sparsity`` in each layer.
    n_steps : int, default=1
        Prune / fine-tune rounds.
    layers : None, "all" or list of str, default=None
        Layers to prune (dotted names of Conv2d / Linear layers). ``None``:
        all but the output layer. For filters these are the layers whose
        output channels are removed; the next layer loses inputs regardless.
    finetune_epochs : int, default=3
        Total epochs of fine-tuning, over all rounds.
    finetune_lr, prefit, memory, random_state
        See :class:`~skcompress.compression.BaseCompressor`.

    Attributes
    ----------
    estimator_ : skorch NeuralNet
        The pruned, fine-tuned net.
    layer_sparsity_ : dict
        Per pruned layer: fraction of zero weights (``"weight"``) or of removed
        output channels (``"filter"``).
    sparsity_ : float
        The same over all pruned layers together.
    size_bytes_, original_size_bytes_, compression_ratio_, report_, fit_time_
        See :class:`~skcompress.compression.BaseCompressor`.

    Notes
    -----
    Chaining weight pruning keeps the inner zeros (they rank lowest and the
    inner mask stays registered). Filter pruning of a net that carries
    constraints from an inner compressor first bakes them into plain weights
    (:func:`skcompress.io.bake`) and warns: those constraints are not enforced
    during this fine-tuning any more.

    See Also
    --------
    LowRankCompressor : structured compression by matrix factorization.
    torch.nn.utils.prune : the same masks, without a smaller file.

    References
    ----------
    M. Zhu and S. Gupta, "To prune, or not to prune: exploring the efficacy of
    pruning for model compression", 2017.
    J. Lee, S. Park, S. Mo, S. Ahn and J. Shin, "Layer-adaptive sparsity for
    the magnitude-based pruning", ICLR 2021.
    G. Fang et al., "DepGraph: Towards Any Structural Pruning", CVPR 2023.

    Examples
    --------
    >>> from skcompress.compression import Pruner
    >>> from skcompress.datasets import load_digits_images
    >>> from skcompress.models import make_digits_net
    >>> X, y = load_digits_images()
    >>> net = make_digits_net(max_epochs=1, module__channels=(4, 8),
    ...                       module__hidden=16)
    >>> pruner = Pruner(net, sparsity=0.75, finetune_epochs=1).fit(X[:200], y[:200])
    >>> round(pruner.sparsity_, 2)
    0.75
    """

    _parameter_constraints = {
        **BaseCompressor._parameter_constraints,
        "sparsity": [Interval(numbers.Real, 0, 1, closed="left")],
        "granularity": [StrOptions({"weight", "filter"})],
        "criterion": [
            StrOptions({"l1", "l2", "lamp", "random", "taylor", "bn_scale"})
        ],
        "scope": [StrOptions({"global", "layer"})],
        "n_steps": [Interval(numbers.Integral, 1, None, closed="left")],
        "layers": [None, StrOptions({"all"}), list, tuple],
    }

    def __init__(
        self,
        estimator,
        *,
        sparsity=0.5,
        granularity="weight",
        criterion="l1",
        scope="global",
        n_steps=1,
        layers=None,
        finetune_epochs=3,
        finetune_lr=None,
        prefit=False,
        memory=None,
        random_state=None,
    ):
        super().__init__(
            estimator,
            finetune_epochs=finetune_epochs,
            finetune_lr=finetune_lr,
            prefit=prefit,
            memory=memory,
            random_state=random_state,
        )
        self.sparsity = sparsity
        self.granularity = granularity
        self.criterion = criterion
        self.scope = scope
        self.n_steps = n_steps
        self.layers = layers

    def _check_params(self, X, y):
        if self.criterion == "bn_scale" and self.granularity == "weight":
            raise ValueError(
                "criterion='bn_scale' scores whole channels; use it with "
                "granularity='filter', or pick criterion from 'l1', 'l2', "
                "'lamp', 'random', 'taylor'."
            )

    def _compress_and_finetune(self, net, X, y, rng):
        if self.granularity == "filter" and _has_constraints(net.module_):
            net.module_ = _bake_inner_constraints(net.module_)
        module = net.module_
        example = to_tensor(_first_samples(X), device=net.device)
        chosen = select_layers(module, self.layers, example_input=example)
        channels = {name: _out_channels(layer) for name, layer in chosen}

        schedule = agp_schedule(self.sparsity, self.n_steps)
        epochs = split_epochs(self.finetune_epochs, self.n_steps)
        if self.granularity == "filter":
            prune_step = self._filter_pruner(module, chosen, example, schedule)
        else:
            generator = torch.Generator().manual_seed(int(rng.randint(2**31 - 1)))
            prune_step = self._weight_pruner(chosen, schedule, generator)

        timings = {"compress": 0.0, "finetune": 0.0}
        for step in range(1, self.n_steps + 1):
            start = time.perf_counter()
            if self.criterion == "taylor":
                accumulate_gradients(net, X, y)
            prune_step(step)
            module.zero_grad(set_to_none=True)
            timings["compress"] += time.perf_counter() - start
            start = time.perf_counter()
            self._finetune(net, X, y, epochs[step - 1])
            timings["finetune"] += time.perf_counter() - start
        return CompressionResult(net, self._sparsity(net.module_, channels), timings)

    def _sparsity(self, module, channels):
        """``layer_sparsity_`` and ``sparsity_`` of the pruned ``module``.

        ``channels``: output channels of each pruned layer before pruning.
        """
        modules = dict(module.named_modules())
        if self.granularity == "weight":
            zeros = {n: int((modules[n].weight == 0).sum()) for n in channels}
            totals = {n: modules[n].weight.numel() for n in channels}
        else:
            zeros = {n: channels[n] - _out_channels(modules[n]) for n in channels}
            totals = channels
        return {
            "layer_sparsity_": {n: zeros[n] / totals[n] for n in channels},
            "sparsity_": sum(zeros.values()) / sum(totals.values()),
        }

    def _weight_pruner(self, chosen, schedule, generator):
        """A ``step(t)`` registering / tightening one Mask per layer."""
        constraints = {}

        def step(t):
            scores = weight_importance(chosen, self.criterion, generator=generator)
            masks = weight_masks(scores, schedule[t], self.scope)
            for name, layer in chosen:
                if name in constraints:
                    constraints[name].mask.copy_(masks[name])
                else:
                    constraints[name] = Mask(masks[name])
                    add_constraint(layer, constraints[name], "weight")

        return step

    def _filter_pruner(self, module, chosen, example, schedule):
        """A ``step(t)`` removing channels with torch-pruning's MetaPruner."""
        import torch_pruning as tp

        chosen_ids = {id(layer) for _, layer in chosen}
        ignored = [
            sub
            for sub in module.modules()
            if isinstance(sub, (nn.Conv2d, nn.Linear)) and id(sub) not in chosen_ids
        ]
        pruner = tp.pruner.MetaPruner(
            module,
            example_inputs=example,
            importance=filter_importance(self.criterion),
            global_pruning=self.scope == "global",
            pruning_ratio=self.sparsity,
            iterative_steps=self.n_steps,
            iterative_pruning_ratio_scheduler=lambda ratio, steps: schedule,
            ignored_layers=ignored,
        )

        return lambda t: pruner.step()


def _out_channels(layer):
    return layer.out_channels if isinstance(layer, nn.Conv2d) else layer.out_features


def _has_constraints(module):
    return any(constraints_of(sub) for sub in module.modules())


def _bake_inner_constraints(module):
    from ..io import bake

    warnings.warn(
        "Pruner(granularity='filter') bakes the constraints of the inner "
        "compressor into plain weights before removing channels; they are "
        "not enforced during this fine-tuning.",
        UserWarning,
        stacklevel=4,
    )
    return bake(module)

