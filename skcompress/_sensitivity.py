"""Per-layer sensitivity analysis: how much each layer tolerates compression.

:func:`sensitivity` compresses one layer at a time, at several values of one
setting (``sparsity``, ``bits``, ``rank``...), and scores the net; the other
layers stay as the base has them. It answers "which layers can I prune
harder?" before a per-layer allocation is chosen (NNI's removed
``SensitivityAnalysis``, Han et al. 2015, Fig. 6). :func:`plot_sensitivity`
draws the result, one line per layer.

The compression itself is the compressor's own: the template's other
settings are kept, its ``layers`` parameter (``select_layers``) picks the one
layer, and its fit-flow steps compress a copy of one fitted base. The base is
fitted once (per fold), never once per point.
"""

import copy
import numbers

import numpy as np
import pandas as pd
from sklearn.base import is_classifier
from sklearn.metrics import check_scoring
from sklearn.model_selection import check_cv
from sklearn.utils import _safe_indexing, check_random_state
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.utils.validation import check_memory

from ._nets import find_net
from ._threads import worker_threads

__all__ = ["plot_sensitivity", "sensitivity"]

# Fit-flow parameters every compressor shares: not a compression setting.
_SHARED = ("estimator", "layers", "finetune_epochs", "finetune_lr", "prefit",
           "memory", "random_state", "keep_base")

# values=None: a sweep from mild to harsh for the usual settings.
DEFAULT_VALUES = {
    "sparsity": (0.25, 0.5, 0.75, 0.9),
    "bits": (8, 6, 4, 3, 2),
    "rank": (0.5, 0.25, 0.1),
}


def sensitivity(estimator, X, y, param="sparsity", values=None, *, cv=None,
                layers=None, scoring=None, finetune_epochs=0):
    """Score the net when only one layer is compressed, for every layer and value.

    For each chosen layer and each value of ``param``, a copy of the fitted
    base net is compressed by ``estimator`` (a compressor template, e.g.
    ``Pruner(net)``) with ``layers=[that layer]`` and ``param=value``, its
    other settings kept, and scored. No fine-tuning by default, so a point
    costs one compression and one prediction; the base is fitted once (per
    fold), through the template's ``memory`` when it has one, or not at all
    when the template is ``prefit=True``.

    Parameters
    ----------
    estimator : compressor
        The template: ``Pruner(net)`` (``param="sparsity"``),
        ``Quantizer(net, method="uniform")`` (``"bits"``),
        ``LowRankCompressor(net)`` (``"rank"``), or any compressor with a
        ``layers`` parameter. Its ``estimator`` is the base (a skorch net or
        an inner compressor, fitted once); never modified.
    X, y : array-like
        Data to score on. With ``cv=None`` the score is measured on ``X, y``
        as given: pass a held-out split and a ``prefit=True`` template (an
        unfitted base would be fitted on ``X, y`` and scored on its own
        training data, which flatters every layer).
    param : str, default="sparsity"
        The compressor's setting to vary (``"sparsity"``, ``"bits"``,
        ``"rank"``...).
    values : sequence or None, default=None
        The values of ``param`` to try, each checked by the compressor's own
        parameter constraints. ``None``: ``DEFAULT_VALUES[param]`` (sparsity
        0.25 to 0.9, bits 8 to 2, rank 0.5 to 0.1 of the full rank). For
        ``rank``, fractions of the full rank (floats) compare layers of
        different sizes; an int above a layer's full rank is an error, and a
        rank that would not save weights leaves the layer dense (its score is
        then the base score).
    cv : None, int, CV splitter or iterable, default=None
        ``None``: score on ``X, y``. Otherwise the scores and drops are
        averaged over the test folds, the base fitted on each training fold
        (once for a ``prefit=True`` template, which is then only scored on
        the test folds).
    layers : None, "all" or list of str, default=None
        The layers to analyse (dotted names of Conv2d / Linear layers of the
        base net); ``None``: the template's own ``layers`` when set, else
        every Conv2d / Linear layer, output layer included.
    scoring : None, str or callable, default=None
        As in scikit-learn (``scorer(net, X, y)``, greater is better);
        ``None``: the net's ``score`` (accuracy for a classifier).
    finetune_epochs : int, default=0
        Fine-tuning epochs per point (on ``X, y``, or the training fold).

    Returns
    -------
    pandas.DataFrame
        One row per (layer, value): ``layer``, ``param``, ``value``,
        ``score`` and ``drop`` (the base score minus ``score``, in the
        scorer's units: 0.01 is one point of accuracy). ``df.attrs`` holds
        ``base_score``, ``param`` and ``n_weights`` (layer -> number of
        weights).

    Notes
    -----
    Compressing one layer also changes what its neighbours receive, and
    structural techniques change more than the layer (filter pruning removes
    the next layer's input channels). The table measures each layer alone:
    drops do not add up when several layers are compressed together.

    See Also
    --------
    plot_sensitivity : one line per layer.

    References
    ----------
    S. Han, J. Pool, J. Tran and W. Dally, "Learning both weights and
    connections for efficient neural networks", NeurIPS 2015 (Fig. 6).

    Examples
    --------
    >>> from skcompress import Pruner, sensitivity
    >>> from skcompress.datasets import load_digits_images
    >>> from skcompress.models import make_digits_net
    >>> X, y = load_digits_images()
    >>> net = make_digits_net(max_epochs=2, module__channels=(4, 8),
    ...                       module__hidden=16).fit(X[:300], y[:300])
    >>> table = sensitivity(Pruner(net, prefit=True), X[300:600], y[300:600],
    ...                     values=[0.0, 0.9])
    >>> table.columns.tolist()
    ['layer', 'param', 'value', 'score', 'drop']
    >>> sorted(table.layer.unique())
    ['conv1', 'conv2', 'fc1', 'fc2']
    """
    _check_template(estimator, param)
    if values is None:
        if param not in DEFAULT_VALUES:
            raise ValueError(
                f"values=None has no default for param={param!r}; pass a list."
            )
        values = DEFAULT_VALUES[param]
    values = _check_values(values)
    if (
        isinstance(finetune_epochs, bool)
        or not isinstance(finetune_epochs, numbers.Integral)
        or finetune_epochs < 0
    ):
        raise ValueError(
            f"finetune_epochs must be an int >= 0, got {finetune_epochs!r}."
        )

    estimator._validate_params()
    points = [(value, _point(estimator, param, value, finetune_epochs))
              for value in values]
    for value, point in points:
        try:
            point._validate_params()
            point._check_params(X, y)
        except (InvalidParameterError, ValueError, TypeError) as exc:
            raise ValueError(
                f"values: {value!r} is not a valid {param} for "
                f"{type(estimator).__name__}: {exc}"
            ) from exc
    if cv is None:
        splits = [(None, None)]
    else:
        classifier = is_classifier(_innermost(estimator))
        splits = list(check_cv(cv, y, classifier=classifier).split(X, y))

    with worker_threads():
        return _sensitivity(estimator, X, y, param, points, splits, layers,
                            scoring)


def _sensitivity(estimator, X, y, param, points, splits, layers, scoring):
    prefit_base = _prefit_base(estimator) if estimator.prefit else None
    names, n_weights = None, None
    base_scores, rows = [], []
    for train, test in splits:
        X_train, y_train = _subset(X, y, train)
        X_test, y_test = _subset(X, y, test)
        base = prefit_base if prefit_base is not None else _fit_base(
            estimator, X_train, y_train)
        base_net = find_net(base)
        if names is None:
            chosen = _layers(estimator, base_net, layers)
            names = [name for name, _ in chosen]
            n_weights = {name: int(layer.weight.numel()) for name, layer in chosen}
        scorer = check_scoring(base_net, scoring=scoring)
        base_score = float(scorer(base_net, X_test, y_test))
        base_scores.append(base_score)
        for name in names:
            for value, point in points:
                net = _compress_one(point, base_net, name, X_train, y_train)
                score = float(scorer(net, X_test, y_test))
                rows.append((name, value, score, base_score - score))

    table = pd.DataFrame(rows, columns=["layer", "value", "score", "drop"])
    table = (table.groupby(["layer", "value"], sort=False, as_index=False)
             .mean())
    table.insert(1, "param", param)
    table.attrs.update(base_score=float(np.mean(base_scores)), param=param,
                       n_weights=n_weights)
    return table


def plot_sensitivity(df, ax=None):
    """Draw the table of :func:`sensitivity`: score against value, one line per layer.

    Parameters
    ----------
    df : pandas.DataFrame
        The result of :func:`sensitivity`.
    ax : matplotlib Axes, optional
        Where to draw; a new figure's Axes otherwise.

    Returns
    -------
    matplotlib.axes.Axes
    """
    missing = {"layer", "param", "value", "score"} - set(df.columns)
    if missing:
        raise ValueError(
            f"df must be the table sensitivity() returns; it lacks the columns "
            f"{sorted(missing)}."
        )
    if ax is None:
        from matplotlib.figure import Figure

        ax = Figure(figsize=(6.4, 4.4), layout="constrained").add_subplot()
    for layer, rows in df.groupby("layer", sort=False):
        rows = rows.sort_values("value", kind="stable")
        ax.plot(rows["value"], rows["score"], "o-", label=str(layer))
    base_score = df.attrs.get("base_score")
    if base_score is not None:
        ax.axhline(base_score, color="0.5", linestyle="--", label="base")
    ax.set_xlabel(str(df["param"].iloc[0]) if len(df) else "value")
    ax.set_ylabel("score")
    ax.grid(True, alpha=0.3)
    ax.legend(title="layer compressed alone")
    return ax


# ------------------------------------------------------------------ helpers
def _check_values(values):
    if isinstance(values, (str, bytes, dict)) or not hasattr(values, "__iter__"):
        raise ValueError(
            f"values must be a non-empty list of settings, got {values!r}."
        )
    values = list(values)
    if not values:
        raise ValueError("values must be a non-empty list of settings, got [].")
    if len(set(map(repr, values))) != len(values):
        raise ValueError(f"values must not repeat a setting, got {values!r}.")
    return values


def _check_template(estimator, param):
    from .compression._base import is_compressor

    if not is_compressor(estimator):
        raise TypeError(
            "estimator must be a compressor template such as Pruner(net), got "
            f"{type(estimator).__name__}."
        )
    params = estimator.get_params(deep=False)
    if "layers" not in params:
        raise ValueError(
            f"{type(estimator).__name__} has no layers parameter: sensitivity "
            "compresses one layer at a time through it."
        )
    settings = sorted(set(params) - set(_SHARED))
    if not isinstance(param, str) or param not in settings:
        raise ValueError(
            f"param={param!r} is not a setting of {type(estimator).__name__}; "
            f"choose from {settings}."
        )
    if param == "rank" and params.get("energy") is not None:
        raise ValueError(
            f"param='rank' with energy={params['energy']!r}: energy replaces "
            "rank; set energy=None on the template."
        )


def _point(estimator, param, value, finetune_epochs):
    """The template with ``param=value`` (its layer is set per point)."""
    params = estimator.get_params(deep=False)
    params.update({param: value, "finetune_epochs": finetune_epochs})
    return type(estimator)(**params)


def _innermost(estimator):
    from .compression._base import is_compressor

    while is_compressor(estimator):
        estimator = estimator.estimator
    return estimator


def _prefit_base(estimator):
    # the compressors' own check; the base is only read, never modified
    from .compression._base import is_compressor

    base = estimator.estimator
    if is_compressor(base):
        find_net(base)
    else:
        base.check_is_fitted()
    return base


def _fit_base(estimator, X, y):
    """``clone(base).fit(X, y)``, cached by the template's ``memory``."""
    from .compression._base import _fit_clone

    return check_memory(estimator.memory).cache(_fit_clone)(estimator.estimator, X, y)


def _layers(estimator, base_net, layers):
    from .compression._constraints import select_layers

    if layers is None:
        layers = "all" if estimator.layers is None else estimator.layers
    return select_layers(base_net.module_, layers)


def _subset(X, y, indices):
    if indices is None:
        return X, y
    return _safe_indexing(X, indices), _safe_indexing(y, indices)


def _compress_one(point, base_net, layer, X, y):
    """A copy of ``base_net`` with only ``layer`` compressed by ``point``.

    The fit flow's compression step (``_compress_and_finetune``) under the
    fit's seed, without the file accounting a full ``fit`` adds: a point
    needs the net, not its size.
    """
    from .compression._base import _seeded

    # built, not cloned: the template's base is only stored, never copied
    point = type(point)(**{**point.get_params(deep=False), "layers": [layer]})
    seed = check_random_state(point.random_state).randint(np.iinfo(np.int32).max)
    net = copy.deepcopy(base_net)
    with _seeded(seed):
        result = point._compress_and_finetune(
            net, X, y, np.random.RandomState(seed))
    result.net.module_.eval()
    return result.net
