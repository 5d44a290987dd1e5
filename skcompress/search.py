"""Choosing a compression setting like a model: scorers, refit rules, fronts.

- Scorers for ``GridSearchCV(scoring={...})``: :data:`SCORERS` maps
  ``"compression_ratio"``, ``"neg_parameters"``, ``"neg_macs"`` and
  ``"speedup"`` to callables ``scorer(estimator, X, y)``; all of them are
  "greater is better", as scikit-learn expects.
- :func:`smallest_within` builds a ``refit`` callable that keeps the most
  compressed candidate whose score is within a tolerance of the best.
- :func:`pareto_front` and :func:`plot_tradeoff` read ``cv_results_`` (or a
  DataFrame of results) and show the size/accuracy trade-off.

Examples
--------
>>> from skcompress.search import pareto_front
>>> results = {"params": [{"s": 0.5}, {"s": 0.9}, {"s": 0.95}],
...            "mean_test_accuracy": [0.99, 0.985, 0.90],
...            "mean_test_compression_ratio": [2.0, 9.0, 8.0]}
>>> pareto_front(results)["params"].tolist()
[{'s': 0.5}, {'s': 0.9}]
"""

import numpy as np
import pandas as pd

from ._nets import find_net

__all__ = [
    "SCORERS",
    "compare_to_base",
    "compression_ratio_score",
    "macs_score",
    "parameters_score",
    "pareto_front",
    "plot_tradeoff",
    "smallest_within",
    "speedup_score",
]


def _compressor_of(estimator, scorer):
    """The compressor at the end of ``estimator`` (a Pipeline is unwrapped)."""
    from .compression import BaseCompressor

    final = estimator
    steps = getattr(estimator, "steps", None)
    if steps:
        final = steps[-1][1]
    if not isinstance(final, BaseCompressor):
        raise TypeError(
            f"The {scorer} scorer measures a fitted skcompress compressor (or a "
            f"Pipeline ending in one); got {type(final).__name__}."
        )
    return final


def _transformed(estimator, X):
    """X as the compressor's net sees it (after a Pipeline's transformers)."""
    steps = getattr(estimator, "steps", None)
    if steps:
        for _, step in steps[:-1]:
            if step is not None and step != "passthrough":
                X = step.transform(X)
    return X


def _one_sample_shape(X):
    shape = getattr(X, "shape", None)
    if shape is None or len(shape) < 2:
        raise ValueError("MACs and latency scorers need an array-like X with shape.")
    return tuple(shape[1:])


def _module(obj):
    """The torch module of a skorch net or of a fitted compressor's net."""
    return find_net(obj).module_


def _base_module(compressor):
    """The uncompressed module at the bottom of a (chain of) compressor(s).

    A chain fitted with ``keep_base=False`` keeps only its architecture
    (``base_skeleton_``, on the meta device): it is rebuilt here with freshly
    initialised weights, which is all a latency measurement needs.
    """
    base = compressor.base_estimator_
    while hasattr(base, "base_estimator_"):
        base = base.base_estimator_
    if not hasattr(base, "base_skeleton_"):
        return find_net(base).module_
    import copy

    import torch

    module = copy.deepcopy(base.base_skeleton_).to_empty(device="cpu")
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            tensor.zero_()
        for layer in module.modules():
            if hasattr(layer, "reset_parameters"):
                layer.reset_parameters()
    return module.eval()


def compression_ratio_score(estimator, X=None, y=None):
    """File-size ratio ``original_size_bytes_ / size_bytes_`` (greater is better)."""
    return float(_compressor_of(estimator, "compression_ratio").compression_ratio_)


def parameters_score(estimator, X=None, y=None):
    """Minus the number of parameters of the compressed module."""
    compressor = _compressor_of(estimator, "neg_parameters")
    from .accounting import count_parameters

    return -float(count_parameters(_module(compressor)))


def macs_score(estimator, X, y=None):
    """Minus the multiply-accumulates per sample of the compressed module."""
    compressor = _compressor_of(estimator, "neg_macs")
    from .accounting import count_macs

    shape = _one_sample_shape(_transformed(estimator, X))
    return -float(count_macs(_module(compressor), shape))


def speedup_score(estimator, X, y=None, *, repeats=10):
    """CPU latency of the base net divided by the compressed net's (batch 256)."""
    compressor = _compressor_of(estimator, "speedup")
    from .accounting import measure_latency

    shape = _one_sample_shape(_transformed(estimator, X))
    base = measure_latency(_base_module(compressor), shape, repeats=repeats)
    compressed = measure_latency(_module(compressor), shape, repeats=repeats)
    return base / compressed


SCORERS = {
    "compression_ratio": compression_ratio_score,
    "neg_parameters": parameters_score,
    "neg_macs": macs_score,
    "speedup": speedup_score,
}


def _results_frame(results):
    """``cv_results_`` (dict) or a DataFrame, as a DataFrame."""
    if isinstance(results, pd.DataFrame):
        return results.reset_index(drop=True)
    if isinstance(results, dict):
        return pd.DataFrame(results)
    raise TypeError(
        "results must be a GridSearchCV cv_results_ dict or a pandas DataFrame, "
        f"got {type(results).__name__}."
    )


def _column(frame, name, param):
    """The column for metric ``name``: ``mean_test_<name>`` or ``name`` itself."""
    for candidate in (f"mean_test_{name}", name):
        if candidate in frame.columns:
            return candidate
    prefix = "mean_test_"
    available = sorted(
        c.removeprefix(prefix) for c in frame.columns if c.startswith(prefix)
    ) or sorted(map(str, frame.columns))
    raise ValueError(
        f"{param}={name!r} is not in the results: neither 'mean_test_{name}' nor "
        f"'{name}' is a column. Available metrics: {available}. Add it to "
        "GridSearchCV(scoring={...}) (see skcompress.search.SCORERS)."
    )


class smallest_within:  # noqa: N801 - used like a function: refit=smallest_within()
    """``refit`` rule: the most compressed candidate within ``tolerance`` of the best.

    Parameters
    ----------
    tolerance : float, default=0.005
        How much of ``metric`` may be given up (0.005 = half a point of
        accuracy).
    metric : str, default="accuracy"
        The quality score (``mean_test_<metric>`` in ``cv_results_``).
    size : str, default="compression_ratio"
        The compression score to maximise among the candidates that qualify
        (``mean_test_<size>``; any "greater is better" scorer of
        :data:`SCORERS`).

    Examples
    --------
    >>> from skcompress.search import smallest_within
    >>> results = {"mean_test_accuracy": [0.99, 0.987, 0.95],
    ...            "mean_test_compression_ratio": [2.0, 10.0, 40.0]}
    >>> smallest_within(0.005)(results)
    1
    """

    def __init__(self, tolerance=0.005, metric="accuracy", size="compression_ratio"):
        if not np.isfinite(tolerance) or tolerance < 0:
            raise ValueError(
                f"tolerance must be a non-negative number, got {tolerance!r}."
            )
        self.tolerance = tolerance
        self.metric = metric
        self.size = size

    def __call__(self, cv_results):
        frame = _results_frame(cv_results)
        score = frame[_column(frame, self.metric, "metric")].to_numpy(float)
        size = frame[_column(frame, self.size, "size")].to_numpy(float)
        ok = np.isfinite(score)
        if not ok.any():
            raise ValueError(f"No candidate has a finite {self.metric!r} score.")
        best = np.nanmax(score)
        eligible = np.flatnonzero(ok & (score >= best - self.tolerance))
        # Most compressed first; among ties the better score, then the first.
        order = np.lexsort((-score[eligible], -size[eligible]))
        return int(eligible[order[0]])

    def __repr__(self):
        return (
            f"smallest_within(tolerance={self.tolerance!r}, metric={self.metric!r}, "
            f"size={self.size!r})"
        )


def pareto_front(results, x="compression_ratio", y="accuracy"):
    """The candidates no other candidate beats on both ``x`` and ``y``.

    Both metrics are "greater is better".

    Parameters
    ----------
    results : dict or DataFrame
        ``GridSearchCV.cv_results_`` (``mean_test_<x>``, ``mean_test_<y>``) or a
        DataFrame with columns ``x`` and ``y`` (or ``mean_test_`` ones).
    x, y : str
        Metric names.

    Returns
    -------
    DataFrame
        The non-dominated rows, sorted by ``x``; the original row positions
        are in the ``candidate`` column.
    """
    frame = _results_frame(results)
    xcol, ycol = _column(frame, x, "x"), _column(frame, y, "y")
    xs, ys = frame[xcol].to_numpy(float), frame[ycol].to_numpy(float)
    finite = np.isfinite(xs) & np.isfinite(ys)
    keep = []
    for i in np.flatnonzero(finite):
        dominated = (
            finite
            & (xs >= xs[i])
            & (ys >= ys[i])
            & ((xs > xs[i]) | (ys > ys[i]))
        )
        if not dominated.any():
            keep.append(i)
    front = frame.iloc[keep].copy()
    front.insert(0, "candidate", keep)
    return front.sort_values(xcol, kind="stable").reset_index(drop=True)


def plot_tradeoff(results, x="compression_ratio", y="accuracy", *, label=None, ax=None):
    """Scatter every candidate, and mark and join the Pareto front.

    Parameters
    ----------
    results : dict or DataFrame
        As for :func:`pareto_front`.
    x, y : str
        Metric names (x is drawn on a log axis when it spans > 10x).
    label : str, optional
        Column whose values annotate the front's points (e.g. ``"setting"``).
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.figure import Figure

    frame = _results_frame(results)
    xcol, ycol = _column(frame, x, "x"), _column(frame, y, "y")
    front = pareto_front(frame, x=x, y=y)
    if ax is None:
        fig = Figure(figsize=(6.4, 4.4), layout="constrained")
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    ax.scatter(frame[xcol], frame[ycol], color="0.6", label="candidates")
    ax.plot(front[xcol], front[ycol], "o-", color="C3", label="Pareto front")
    if label is not None and label in front.columns:
        for _, row in front.iterrows():
            ax.annotate(str(row[label]), (row[xcol], row[ycol]), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
    xs = frame[xcol].to_numpy(float)
    xs = xs[np.isfinite(xs) & (xs > 0)]
    if xs.size and xs.max() / xs.min() > 10:
        ax.set_xscale("log")
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.grid(True, alpha=0.3)
    ax.legend()
    return fig


def compare_to_base(fitted, base, X, y, *, input_shape=None, latency=True):
    """Measure a fitted compressor against its base net on held-out data.

    The one place where "accuracy drop, size ratio, parameters, MACs, latency
    ratio" are computed, for the benchmarks and ``skcompress demo`` alike.

    Parameters
    ----------
    fitted : fitted compressor
    base : fitted skorch net
        The uncompressed net (same training data).
    X, y : held-out data
    input_shape : tuple, optional
        Shape of one sample; defaults to ``X.shape[1:]``.
    latency : bool, default=True
        Also time both nets (median of no-grad forwards, batch 256, 1 thread).

    Returns
    -------
    dict
        ``score``, ``drop_points``, ``size_bytes``, ``size_ratio``, ``params``,
        ``params_ratio``, ``macs``, ``macs_ratio`` and ``latency_ratio``.
    """
    from .accounting import count_macs, count_parameters, measure_latency

    shape = tuple(input_shape) if input_shape is not None else _one_sample_shape(X)
    module, base_module = _module(fitted), _module(base)
    base_score = float(base.score(X, y))
    score = float(fitted.score(X, y))
    params, base_params = count_parameters(module), count_parameters(base_module)
    macs, base_macs = count_macs(module, shape), count_macs(base_module, shape)
    row = {
        "score": score,
        "drop_points": 100.0 * (base_score - score),
        "size_bytes": int(fitted.size_bytes_),
        "size_ratio": fitted.original_size_bytes_ / fitted.size_bytes_,
        "params": int(params),
        "params_ratio": base_params / max(params, 1),
        "macs": int(macs),
        "macs_ratio": base_macs / max(macs, 1),
    }
    if latency:
        row["latency_ratio"] = measure_latency(base_module, shape) / measure_latency(
            module, shape
        )
    return row
