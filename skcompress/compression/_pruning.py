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

import math
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
from ._dead_units import prune_dead_units

__all__ = [
    "FloorImportance",
    "Pruner",
    "agp_schedule",
    "allocate_sparsity",
    "is_depthwise",
    "lamp_scores",
    "min_kept_count",
    "split_epochs",
    "weight_importance",
    "weight_masks",
]

_GRADIENT_SAMPLES = 256

# allocation="sensitivity": the sparsities each layer is measured at, alone
SENSITIVITY_SPARSITIES = (0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99)

FILTER_LR_FACTOR = 0.5
"""Fine-tuning's peak learning rate after filter pruning
(``granularity="filter"``) is this fraction of the net's own ``lr`` when
``finetune_lr=None`` (the shared rule's ``FINETUNE_LR_FACTOR``, 0.25, stays
for weight masks)."""


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


def weight_masks(scores, sparsity, scope, min_kept=None):
    """Keep-masks with exactly ``round(sparsity * n)`` weights off.

    ``n`` counts each layer's weights (``scope="layer"``) or all of them
    (``scope="global"``), as :mod:`torch.nn.utils.prune` counts them, so the
    masks equal ``l1_unstructured`` / ``global_unstructured``'s.

    ``min_kept`` (name -> count) keeps at least that many of a layer's
    highest-scoring weights: the global ranking takes the weights it would
    have removed there from the other layers, so the total stays exact unless
    the floors leave too few weights to remove.

    Examples
    --------
    >>> import torch
    >>> scores = {"a": torch.tensor([1.0, 2.0]), "b": torch.tensor([5.0, 6.0])}
    >>> masks = weight_masks(scores, 0.5, "global", min_kept={"a": 1})
    >>> masks["a"].tolist(), masks["b"].tolist()
    ([False, True], [False, True])
    """
    min_kept = min_kept or {}
    if scope == "layer":
        return {
            name: _lowest_off(
                score,
                min(round(sparsity * score.numel()),
                    score.numel() - min_kept.get(name, 0)),
            )
            for name, score in scores.items()
        }
    # one copy of all the scores (not a protected copy per layer, then their
    # concatenation: on ResNet-18 each is twice the fp32 weights)
    flat = torch.cat([score.flatten() for score in scores.values()])
    n_floor = start = 0
    for name, score in scores.items():
        kept = min(min_kept.get(name, 0), score.numel())
        if kept:
            # the floor's weights rank last, whatever their score
            top = torch.topk(score.flatten(), kept).indices
            flat[start + top] = float("inf")
        n_floor += kept
        start += score.numel()
    keep = _lowest_off(flat, min(round(sparsity * flat.numel()),
                                 flat.numel() - n_floor))
    masks, start = {}, 0
    for name, score in scores.items():
        masks[name] = keep[start : start + score.numel()].view(score.shape)
        start += score.numel()
    return masks


def min_kept_count(n, min_density, *, structural=False):
    """Weights (or filters) a layer of ``n`` keeps at least.

    ``max(1, ceil(min_density * n))``; with ``min_density=0`` unstructured
    pruning may empty a layer (``0``), filter pruning never (a layer keeps one
    filter, torch-pruning cannot remove the last).

    Examples
    --------
    >>> min_kept_count(9, 0.01), min_kept_count(1000, 0.01), min_kept_count(9, 0)
    (1, 10, 0)
    """
    if min_density == 0 and not structural:
        return 0
    return min(n, max(1, math.ceil(min_density * n)))


def is_depthwise(layer):
    """A depthwise convolution: one filter per input channel."""
    return (isinstance(layer, nn.Conv2d) and layer.groups > 1
            and layer.groups == layer.in_channels == layer.out_channels)


class FloorImportance:
    """A torch-pruning importance whose groups keep their ``floor`` most
    important channels: those score ``+inf``, so a global threshold takes the
    channels from the other groups instead of emptying a layer (which
    torch-pruning would refuse silently, leaving the layer unpruned)."""

    def __init__(self, importance, floors):
        self.importance = importance
        self.floors = floors  # root module -> channels kept at least

    def __call__(self, group, **kwargs):
        scores = self.importance(group, **kwargs)
        kept = self.floors.get(group[0].dep.target.module, 0)
        if scores is None or not kept:
            return scores
        scores = scores.clone()
        scores[torch.topk(scores, min(kept, len(scores))).indices] = float("inf")
        return scores


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


# ------------------------------------------------------------- allocation
def _lower_hull(points):
    """Lower convex hull of ``(x, y)`` points sorted by ``x`` (distinct)."""
    hull = []
    for point in points:
        while len(hull) >= 2:
            (x0, y0), (x1, y1) = hull[-2], hull[-1]
            # drop the middle point when it lies on or above the chord
            if (y1 - y0) * (point[0] - x0) >= (point[1] - y0) * (x1 - x0):
                hull.pop()
            else:
                break
        hull.append(point)
    return hull


def allocate_sparsity(drops, n_weights, sparsity, *, floors=None, zeros=None):
    """Weights to remove per layer: exactly ``round(sparsity * N)`` in all,
    the least total score drop.

    Each layer's drop as a function of the weights it loses is read from
    ``drops`` (measured with that layer alone pruned, by
    :func:`skcompress.sensitivity`), starting from no drop at the weights it
    has lost already (``zeros``), linear between measured points and
    extended, past the last one, by its last slope up to the layer's floor.
    On the lower convex hull of each curve, the segments are taken cheapest
    drop per removed weight first, whatever their layer, the last one only
    in part, so that the counts add up exactly (the optimum when the curves
    are convex, Lagrangian-style water filling otherwise).

    Parameters
    ----------
    drops : dict
        Layer -> {sparsity: score drop with only that layer pruned to it}.
    n_weights : dict
        Layer -> number of weights.
    sparsity : float
        Fraction of all the layers' weights to remove.
    floors : dict, optional
        Layer -> weights it keeps at least (``min_kept_count``).
    zeros : dict, optional
        Layer -> weights already zero (an inner pruner's): they stay off.

    Returns
    -------
    dict
        Layer -> number of weights to remove. Their sum is
        ``round(sparsity * N)``, or every layer at its floor when the floors
        leave less to remove.

    Examples
    --------
    >>> drops = {"fragile": {0.5: 0.4, 0.9: 0.9}, "robust": {0.5: 0.0, 0.9: 0.1}}
    >>> allocate_sparsity(drops, {"fragile": 100, "robust": 100}, 0.6)
    {'fragile': 20, 'robust': 100}
    """
    floors = floors or {}
    zeros = zeros or {}
    segments = []
    counts = {}
    for order, (layer, by_value) in enumerate(drops.items()):
        n = n_weights[layer]
        top = n - min(floors.get(layer, 0), n)
        start = min(zeros.get(layer, 0), top)
        counts[layer] = start
        points = {start: 0.0}
        for value, drop in sorted(by_value.items()):
            count = min(round(value * n), top)
            if count > start and count not in points:
                points[count] = float(drop)
        points = sorted(points.items())
        if points[-1][0] < top:  # extend by the last slope, never downwards
            (x0, y0), (x1, y1) = points[-2] if len(points) > 1 else points[-1], \
                points[-1]
            slope = max((y1 - y0) / (x1 - x0), 0.0) if x1 > x0 else 0.0
            points.append((top, y1 + slope * (top - x1)))
        hull = _lower_hull(points)
        for (x0, y0), (x1, y1) in zip(hull, hull[1:]):
            segments.append(((y1 - y0) / (x1 - x0), order, x0, layer, x1 - x0))
    total = sum(n_weights[layer] for layer in drops)
    left = round(sparsity * total) - sum(counts.values())
    # cheapest first; within a layer the hull's slopes increase, and ties
    # keep each layer's segments in order (by their start)
    for _, _, _, layer, width in sorted(segments):
        if left <= 0:
            break
        take = min(width, left)
        counts[layer] += take
        left -= take
    return counts


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
default="lamp"
        Importance: LAMP (the default; layer-adaptive magnitude, Lee et al.
        2021: a weight's square over the sum of the squares of the weights of
        its layer at least as large; with ``scope="global"`` it sets how much
        of each layer goes, so that no layer is wiped out by the scale of the
        others, and within a layer it ranks like ``"l1"``; for filters
        torch-pruning's ``LAMPImportance``), magnitude (L1 / L2 norm of each
        weight or filter, one threshold for all layers), random,
        first-order Taylor ``|w * dL/dw|`` (gradients of the loss on up to 256
        training samples) or, for filters only, the scale of the following
        BatchNorm (groups without BatchNorm are left alone).
    scope : {"global", "layer"}, default="global"
        Rank all chosen layers together, or reach ``sparsity`` in each layer.
        Not used with ``allocation="sensitivity"``.
    allocation : {"criterion", "sensitivity"}, default="criterion"
        How much of each layer goes. ``"criterion"``: as ``scope`` and
        ``criterion`` rank the weights (with the default global LAMP, the
        scores set it). ``"sensitivity"`` (``granularity="weight"`` only):
        per-layer sparsities chosen on the training data ``X, y`` of ``fit``
        alone. Each layer is pruned alone, without fine-tuning, at the
        sparsities of ``SENSITIVITY_SPARSITIES`` (:func:`skcompress.sensitivity`,
        scored by the training log-loss for a classifier, else by the net's
        score), and :func:`allocate_sparsity` removes exactly
        ``round(sparsity * n)`` weights in all where they cost the least, so
        fragile layers keep more; ``criterion`` ranks the weights within
        each layer, and the rounds of ``n_steps`` scale every layer's share
        along the schedule. Costs one prediction on ``X`` per layer and
        measured sparsity.
    n_steps : int, default=1
        Prune / fine-tune rounds.
    min_density : float in [0, 1), default=0.01
        Every pruned layer keeps at least ``max(1, ceil(min_density * n))``
        of its ``n`` weights (``"weight"``) or output channels (``"filter"``),
        its most important ones; with ``scope="global"`` the rest of the
        pruning is taken from the other layers, so ``sparsity_`` stays exact.
        ``0`` lets unstructured pruning empty layers (with a warning naming
        them); filter pruning always keeps one channel.
    layers : None, "all" or list of str, default=None
        Layers to prune (dotted names of Conv2d / Linear layers). ``None``:
        all but the output layer and, for ``"weight"``, but the depthwise
        convolutions (one filter per channel, e.g. MobileNetV2's): they hold
        few weights and removing some of each 3x3 filter's nine wrecks the
        net. For filters these are the layers whose output channels are
        removed (a depthwise convolution loses the channels of the layer
        before it); the next layer loses inputs regardless.
    finetune_epochs : int, default=3
        Total epochs (passes over the training data) of fine-tuning, over
        all rounds: ``n_steps=3, finetune_epochs=3`` fine-tunes one epoch
        after each round. Each round's fine-tuning has its own warm-up and
        cosine schedule and BatchNorm recalibration (a round given 0 epochs
        is only recalibrated).
    prune_dead_units : bool, default=False
        At the end of the fit, also mask the incoming weights and the bias of
        every unit whose outgoing weights were all pruned
        (:func:`~skcompress.compression.prune_dead_units`): the outputs stay
        exactly the same and the file is smaller, but ``sparsity_`` then
        exceeds ``sparsity`` by the weights of those units.
    finetune_lr : float or None, default=None
        Peak fine-tuning learning rate (of every round). ``None``: for
        ``"weight"``, the shared rule's quarter of the net's own ``lr``
        (``FINETUNE_LR_FACTOR``); for ``"filter"``, half of it
        (``FILTER_LR_FACTOR``). Removing half of the channels takes away
        whole features the next layers read, and every remaining filter
        must take them over: a larger step away from the trained net than
        zeroing the smallest weights of each filter, as the digits
        benchmark's protocol already assumes (1e-3, half the digits net's
        ``lr``, for structural compression; 5e-4 for masks). ResNet-20 on
        MNIST-5k, default setting, 3 epochs: 0.952 at a quarter, 0.968 at a
        half (recalibrated base 0.973).
    prefit, memory, random_state, keep_base
        See :class:`~skcompress.compression.BaseCompressor`.

    Attributes
    ----------
    estimator_ : skorch NeuralNet
        The pruned, fine-tuned net.
    dead_units_ : dict
        Layer -> number of units masked by ``prune_dead_units`` (empty when
        it is off).
    layer_sparsity_ : dict
        Per pruned layer: fraction of zero weights (``"weight"``) or of removed
        output channels (``"filter"``). With ``allocation="sensitivity"``,
        the allocated sparsities.
    sparsity_ : float
        The same over all pruned layers together; for ``"filter"``, over the
        dependency groups (channels that must go together, e.g. the outputs
        of the convolutions a residual sum adds, or a convolution's and its
        depthwise successor's, count once). It equals ``sparsity`` up
        to rounding: one weight, or one channel per pruned layer for
        ``"filter"``. Where the floors of ``min_density`` (or torch-pruning's
        dependency groups) leave less to remove, the fit warns and names the
        layers that could not be pruned further.
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
        "allocation": [StrOptions({"criterion", "sensitivity"})],
        "n_steps": [Interval(numbers.Integral, 1, None, closed="left")],
        "min_density": [Interval(numbers.Real, 0, 1, closed="left")],
        "layers": [None, StrOptions({"all"}), list, tuple],
        "prune_dead_units": ["boolean"],
    }

    def __init__(
        self,
        estimator,
        *,
        sparsity=0.5,
        granularity="weight",
        criterion="lamp",
        scope="global",
        allocation="criterion",
        n_steps=1,
        min_density=0.01,
        layers=None,
        prune_dead_units=False,
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
        self.sparsity = sparsity
        self.granularity = granularity
        self.criterion = criterion
        self.scope = scope
        self.allocation = allocation
        self.n_steps = n_steps
        self.min_density = min_density
        self.layers = layers
        self.prune_dead_units = prune_dead_units

    def _finetune_lr(self, net):
        """``finetune_lr`` when given; else, for ``granularity="filter"``,
        ``FILTER_LR_FACTOR`` (0.5) times the net's own ``lr``, and the shared
        rule (a quarter of it) for weight masks."""
        if self.finetune_lr is None and self.granularity == "filter":
            return FILTER_LR_FACTOR * float(net.lr)
        return super()._finetune_lr(net)

    def _check_params(self, X, y):
        if self.criterion == "bn_scale" and self.granularity == "weight":
            raise ValueError(
                "criterion='bn_scale' scores whole channels; use it with "
                "granularity='filter', or pick criterion from 'l1', 'l2', "
                "'lamp', 'random', 'taylor'."
            )
        if self.allocation == "sensitivity" and self.granularity == "filter":
            raise ValueError(
                "allocation='sensitivity' allocates weights, not filters: use "
                "it with granularity='weight', or allocation='criterion' with "
                "granularity='filter'."
            )

    def _compress_and_finetune(self, net, X, y, rng):
        if self.granularity == "filter" and _has_constraints(net.module_):
            net.module_ = _bake_inner_constraints(net.module_)
        module = net.module_
        example = to_tensor(_first_samples(X), device=net.device)
        chosen = select_layers(module, self.layers, example_input=example)
        if self.layers is None and self.granularity == "weight":
            chosen = [(n, layer) for n, layer in chosen if not is_depthwise(layer)]
        channels = {name: _out_channels(layer) for name, layer in chosen}

        schedule = agp_schedule(self.sparsity, self.n_steps)
        epochs = split_epochs(self.finetune_epochs, self.n_steps)
        timings = {"compress": 0.0, "finetune": 0.0}
        if self.granularity == "filter":
            prune_step, units = self._filter_pruner(module, chosen, example)
        else:
            # the unit of pruning is a weight; each layer keeps its floor
            units = {
                name: (layer.weight.numel(),
                       min_kept_count(layer.weight.numel(), self.min_density))
                for name, layer in chosen
            }
            generator = torch.Generator().manual_seed(int(rng.randint(2**31 - 1)))
            floors = {name: floor for name, (_, floor) in units.items()}
            allocated = None
            if self.allocation == "sensitivity":
                start = time.perf_counter()
                allocated = self._allocate(net, chosen, floors, X, y, rng)
                timings["compress"] += time.perf_counter() - start
            prune_step = self._weight_pruner(chosen, schedule, generator, floors,
                                             allocated)

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
        # exact whenever it runs: the zeros are fixed since the last round
        dead = prune_dead_units(net.module_, example) if self.prune_dead_units else {}
        attributes = self._sparsity(net.module_, channels, units)
        attributes["dead_units_"] = dead
        return CompressionResult(net, attributes, timings)

    def _kept(self, layer):
        if self.granularity == "weight":
            return int((layer.weight != 0).sum())
        return _out_channels(layer)

    def _sparsity(self, module, channels, units):
        """``layer_sparsity_`` and ``sparsity_`` of the pruned ``module``,
        with a warning where a layer was emptied or ``sparsity_`` falls short.

        ``channels``: output channels of each pruned layer before pruning;
        ``units``: per unit of the pruning (a weight layer, or a filter
        group's root layer), ``(count before pruning, floor)``.
        """
        modules = dict(module.named_modules())
        if self.granularity == "weight":
            totals = {n: modules[n].weight.numel() for n in channels}
        else:
            totals = channels
        per_layer = {n: 1 - self._kept(modules[n]) / totals[n] for n in channels}
        kept = {n: self._kept(modules[n]) for n in units}
        total = sum(count for count, _ in units.values())
        sparsity = 1 - sum(kept.values()) / total if total else 0.0

        owner = type(self).__name__
        emptied = [n for n, fraction in per_layer.items() if fraction == 1.0]
        if emptied:
            warnings.warn(
                f"{owner}(min_density=0) removed every weight of {emptied}: "
                "their outputs no longer depend on their inputs. Use "
                "min_density > 0 to keep some of each layer.",
                UserWarning,
                stacklevel=6,
            )
        # rounding: one weight or channel; anything more is reported
        if total and sparsity < self.sparsity - 1 / total - 1e-12:
            stuck = [n for n, (_, floor) in units.items() if kept[n] <= max(floor, 1)]
            warnings.warn(
                f"{owner} reached sparsity_={sparsity:.4f}, less than the "
                f"requested sparsity={self.sparsity}: the layers {stuck} could "
                "not be pruned further (each keeps at least max(1, ceil("
                f"min_density * n)) of its {self.granularity}s, "
                f"min_density={self.min_density}).",
                UserWarning,
                stacklevel=6,
            )
        return {"layer_sparsity_": per_layer, "sparsity_": sparsity}

    def _allocate(self, net, chosen, floors, X, y, rng):
        """``allocation="sensitivity"``: weights to remove per layer, from
        each layer's sensitivity on the training data ``X, y``."""
        from sklearn.base import is_classifier

        from .._sensitivity import sensitivity

        names = [name for name, _ in chosen]
        template = type(self)(**{
            **self.get_params(deep=False), "estimator": net, "prefit": True,
            "allocation": "criterion", "scope": "layer", "n_steps": 1,
            "random_state": int(rng.randint(2**31 - 1)),
        })
        scoring = "neg_log_loss" if is_classifier(net) else None
        with warnings.catch_warnings():
            # a measured sparsity above a layer's floor is capped there
            warnings.filterwarnings("ignore", message=".*reached sparsity_",
                                    category=UserWarning)
            table = sensitivity(template, X, y, param="sparsity",
                                values=list(SENSITIVITY_SPARSITIES),
                                layers=names, scoring=scoring)
        drops = {name: dict(zip(rows["value"], rows["drop"]))
                 for name, rows in table.groupby("layer", sort=False)}
        n_weights = {name: layer.weight.numel() for name, layer in chosen}
        zeros = {name: int((layer.weight == 0).sum()) for name, layer in chosen}
        return allocate_sparsity({name: drops[name] for name in names}, n_weights,
                                 self.sparsity, floors=floors, zeros=zeros)

    def _weight_pruner(self, chosen, schedule, generator, floors, allocated=None):
        """A ``step(t)`` registering / tightening one Mask per layer.

        ``allocated`` (layer -> weights removed at the end): each round
        removes that share of the schedule's sparsity in each layer.
        """
        constraints = {}

        def step(t):
            scores = weight_importance(chosen, self.criterion, generator=generator)
            if allocated is None:
                masks = weight_masks(scores, schedule[t], self.scope, floors)
            else:
                share = schedule[t] / self.sparsity if self.sparsity else 0.0
                masks = {
                    name: _lowest_off(scores[name], max(
                        round(share * allocated[name]),
                        int((scores[name] == float("-inf")).sum())))
                    for name, _ in chosen
                }
            for name, layer in chosen:
                if name in constraints:
                    constraints[name].set_mask(masks[name])
                else:
                    constraints[name] = Mask(masks[name])
                    add_constraint(layer, constraints[name], "weight")

        return step

    def _filter_pruner(self, module, chosen, example):
        """A ``step(t)`` removing channels with torch-pruning's MetaPruner, and
        the units it prunes: per dependency group's root layer, its channels
        and its floor.

        torch-pruning ranks dependency groups (a layer with the layers that
        must lose the same channels); it skips, silently, a group it would
        empty. So every group keeps its floor (:class:`FloorImportance`), and
        the ratios are capped where the floors leave less to remove.
        """
        import torch_pruning as tp

        chosen_ids = {id(layer) for _, layer in chosen}
        ignored = [
            sub
            for sub in module.modules()
            if isinstance(sub, (nn.Conv2d, nn.Linear)) and id(sub) not in chosen_ids
        ]
        roots = (nn.Conv2d, nn.Linear)
        graph = tp.DependencyGraph().build_dependency(module, example_inputs=example)
        sizes = {}
        for group in graph.get_all_groups(ignored_layers=ignored,
                                          root_module_types=roots):
            root = group[0].dep.target.module
            sizes[root] = graph.get_out_channels(root)
        floors = {
            root: min_kept_count(n, self.min_density, structural=True)
            for root, n in sizes.items()
        }

        def cap(n, kept):
            # int(n * (1 - ratio)) channels stay: at least ``kept``
            return max(0.0, 1 - (kept + 0.5) / n) if n else 0.0

        ratios = {}
        if self.scope == "global":
            ratio = min(self.sparsity,
                        cap(sum(sizes.values()), sum(floors.values())))
        else:
            ratio = self.sparsity
            ratios = {root: cap(n, floors[root]) for root, n in sizes.items()
                      if cap(n, floors[root]) < self.sparsity}
        pruner = tp.pruner.MetaPruner(
            module,
            example_inputs=example,
            importance=FloorImportance(filter_importance(self.criterion), floors),
            global_pruning=self.scope == "global",
            pruning_ratio=ratio,
            pruning_ratio_dict=ratios or None,
            iterative_steps=self.n_steps,
            iterative_pruning_ratio_scheduler=agp_schedule,
            ignored_layers=ignored,
            root_module_types=list(roots),
        )
        names = {layer: name for name, layer in module.named_modules()}
        units = {names[root]: (n, floors[root]) for root, n in sizes.items()}
        return (lambda t: pruner.step()), units


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

