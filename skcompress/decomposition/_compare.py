"""Side-by-side comparison of reducers: size, fidelity, downstream score, time."""

import time

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import get_scorer
from sklearn.model_selection import check_cv
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils import get_tags
from sklearn.utils.multiclass import type_of_target
from sklearn.utils.validation import check_array

from ._laplacian import LaplacianEigenmaps
from ._lda import LDA
from ._lle import LLE
from ._pca import PCA
from ._svd import SVD

__all__ = ["compare_reducers", "plot_comparison"]

COLUMNS = [
    "method",
    "n_components",
    "compression_ratio",
    "reconstruction_error",
    "explained_variance",
    "score",
    "score_std",
    "fit_time",
    "transform_time",
    "note",
]


def default_reducers(random_state=0):
    """The five reducers with their defaults, keyed by name."""
    return {
        "PCA": PCA(random_state=random_state),
        "SVD": SVD(center=False, random_state=random_state),
        "LDA": LDA(),
        "LLE": LLE(random_state=random_state),
        "LaplacianEigenmaps": LaplacianEigenmaps(random_state=random_state),
    }


def compare_reducers(
    X,
    y=None,
    reducers=None,
    n_components=(2, 5, 10),
    scoring=None,
    cv=5,
    *,
    verbose=False,
):
    """Compare reducers on the same data, one row per (method, k).

    Each reducer is fitted on the training part of every cross-validation
    fold; the held-out part gives the reconstruction error and the score of a
    simple downstream estimator (standardised ``LogisticRegression`` when
    ``y`` is a classification target, ``Ridge`` when it is continuous, as
    told by :func:`~sklearn.utils.multiclass.type_of_target`, where a float
    target with more than 20 distinct values counts as continuous) trained on
    the reduced training part. Metrics are means over folds.

    A (method, k) that cannot run (k above what the method allows, e.g. LDA
    with k > n_classes - 1, or a supervised method without ``y``) gives a
    row with a ``note`` and NaN metrics instead of an error.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        Data.
    y : array-like of shape (n_samples,), default=None
        Target. Without it there is no downstream score and supervised
        reducers are skipped.
    reducers : dict or list of estimators, default=None
        ``{name: estimator}`` or a list (named by class). ``None`` means the
        five reducers of this package with their defaults.
    n_components : iterable of int, default=(2, 5, 10)
        Values of k to try.
    scoring : str or callable, default=None
        Scorer of the downstream estimator; ``None`` means "accuracy" for
        classification and "r2" for regression.
    cv : int or cross-validation generator, default=5
        Folds, as in :func:`~sklearn.model_selection.check_cv`.
    verbose : bool, default=False
        Show a progress bar on stderr.

    Returns
    -------
    table : pandas.DataFrame
        Columns ``method, n_components, compression_ratio,
        reconstruction_error, explained_variance, score, score_std,
        fit_time, transform_time, note``. ``explained_variance`` is the
        summed explained variance ratio where the method defines one (PCA,
        SVD); times are mean seconds per fold of the reducer alone.

    Examples
    --------
    >>> from sklearn.datasets import load_wine
    >>> from skcompress.decomposition import PCA, LDA, compare_reducers
    >>> X, y = load_wine(return_X_y=True)
    >>> table = compare_reducers(X, y, reducers=[PCA(), LDA()],
    ...                          n_components=(2, 3), cv=3)
    >>> print(table.loc[3, "note"])
    skipped: n_components=3 > n_classes - 1 = 2
    """
    X = check_array(X, dtype=[np.float64, np.float32])
    task = None
    if y is not None:
        y = np.asarray(y)
        target_type = type_of_target(y)
        # type_of_target calls integral floats with many values (e.g. the
        # diabetes target) "multiclass"; those are regression targets.
        many_float_values = y.dtype.kind == "f" and len(np.unique(y)) > 20
        if target_type in ("binary", "multiclass") and not many_float_values:
            task = "classification"
        elif target_type == "multiclass" and many_float_values:
            task = "regression"
        elif target_type == "continuous":
            task = "regression"
        else:
            raise ValueError(
                f"y must be a binary, multiclass or continuous target; got "
                f"{target_type!r}."
            )
    if reducers is None:
        reducers = default_reducers()
    elif not isinstance(reducers, dict):
        reducers = {type(r).__name__: r for r in reducers}
    if task == "classification":
        downstream = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
        scorer = get_scorer(scoring or "accuracy")
    else:
        downstream = make_pipeline(StandardScaler(), Ridge())
        scorer = get_scorer(scoring or "r2") if task else None
    splitter = check_cv(cv, y, classifier=task == "classification")
    folds = list(splitter.split(X, y))
    n_train = min(len(train) for train, _ in folds)
    n_classes = len(np.unique(y)) if task == "classification" else None

    jobs = [(name, int(k)) for name in reducers for k in n_components]
    if verbose:
        from tqdm.auto import tqdm

        jobs = tqdm(jobs, desc="compare", unit="run")
    rows = []
    for name, k in jobs:
        if verbose:
            jobs.set_postfix_str(f"{name} k={k}")
        reducer = reducers[name]
        note = _cannot_run(reducer, k, X, y, n_train, n_classes)
        if note:
            rows.append({"method": name, "n_components": k, "note": note})
            continue
        rows.append(_evaluate(name, reducer, k, X, y, folds, downstream, scorer))
    return pd.DataFrame(rows, columns=COLUMNS)


def _cannot_run(reducer, k, X, y, n_train, n_classes):
    if get_tags(reducer).target_tags.required and y is None:
        return "skipped: supervised, needs y"
    if isinstance(reducer, LDA) and n_classes is not None and k > n_classes - 1:
        return f"skipped: n_components={k} > n_classes - 1 = {n_classes - 1}"
    if isinstance(reducer, LDA) and n_classes is None and y is not None:
        return "skipped: LDA needs a classification target"
    upper = min(n_train, X.shape[1])
    if k > upper:
        return f"skipped: n_components={k} > min(n_samples, n_features) = {upper}"
    return ""


def _evaluate(name, reducer, k, X, y, folds, downstream, scorer):
    errors, variances, scores, fit_times, transform_times = [], [], [], [], []
    for train, test in folds:
        model = clone(reducer).set_params(n_components=k)
        y_train = None if y is None else y[train]
        try:
            start = time.perf_counter()
            model.fit(X[train], y_train)
            fit_times.append(time.perf_counter() - start)
            start = time.perf_counter()
            Z_train = model.transform(X[train])
            Z_test = model.transform(X[test])
            transform_times.append(time.perf_counter() - start)
        except ValueError as exc:  # a fold the method cannot handle
            return {"method": name, "n_components": k, "note": f"skipped: {exc}"}
        errors.append(model.reconstruction_error(X[test]))
        if hasattr(model, "explained_variance_ratio_") and not isinstance(model, LDA):
            variances.append(float(np.sum(model.explained_variance_ratio_)))
        if scorer is not None:
            fitted = clone(downstream).fit(Z_train, y[train])
            scores.append(scorer(fitted, Z_test, y[test]))
    return {
        "method": name,
        "n_components": k,
        "compression_ratio": X.shape[1] / model.n_components_,
        "reconstruction_error": float(np.mean(errors)),
        "explained_variance": float(np.mean(variances)) if variances else np.nan,
        "score": float(np.mean(scores)) if scores else np.nan,
        "score_std": float(np.std(scores)) if scores else np.nan,
        "fit_time": float(np.mean(fit_times)),
        "transform_time": float(np.mean(transform_times)),
        "note": "",
    }


def plot_comparison(df):
    """Plot reconstruction error and downstream score against compression ratio.

    Uses :class:`matplotlib.figure.Figure` directly (no pyplot state), so it
    works with any backend, Agg included.

    Parameters
    ----------
    df : pandas.DataFrame
        Output of :func:`compare_reducers`.

    Returns
    -------
    fig : matplotlib.figure.Figure
        Two panels: error vs ratio and score vs ratio, one line per method.

    Examples
    --------
    >>> from sklearn.datasets import load_wine
    >>> from skcompress.decomposition import PCA, compare_reducers, plot_comparison
    >>> X, y = load_wine(return_X_y=True)
    >>> fig = plot_comparison(compare_reducers(X, y, reducers=[PCA()], cv=3))
    >>> len(fig.axes)
    2
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), layout="constrained")
    ax_error, ax_score = fig.subplots(1, 2)
    ran = df[df["note"].fillna("") == ""]
    for method, rows in ran.groupby("method", sort=False):
        rows = rows.sort_values("compression_ratio")
        ax_error.plot(
            rows["compression_ratio"], rows["reconstruction_error"], "o-", label=method
        )
        ax_score.plot(rows["compression_ratio"], rows["score"], "o-", label=method)
    ax_error.set(
        xlabel="compression ratio (features / components)",
        ylabel="relative reconstruction error (held out)",
        title="Fidelity",
    )
    ax_score.set(
        xlabel="compression ratio (features / components)",
        ylabel="downstream score (cross-validated)",
        title="Usefulness",
    )
    from matplotlib.ticker import LogLocator, ScalarFormatter

    for ax in (ax_error, ax_score):
        ax.set_xscale("log")
        # plain numbers (2, 3, 5) rather than 2x10^0 on a short log axis
        ax.xaxis.set_major_locator(LogLocator(subs=(1, 2, 3, 5)))
        ax.xaxis.set_minor_locator(LogLocator(subs="all"))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter("")
        ax.grid(True, alpha=0.3)
        ax.margins(0.08)
    if len(ran):
        # below the panels, so that it never covers a point
        handles, labels = ax_score.get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center",
                   ncol=min(len(labels), 5), fontsize="small")
    return fig
