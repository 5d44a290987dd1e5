"""Dask arrays for PCA and SVD: tables larger than one machine's memory.

``PCA`` and ``SVD`` accept a :class:`dask.array.Array`. They fit with one pass
over ``X`` for the column means and the total variance, then dask's exact
tall-and-skinny QR (:func:`dask.array.linalg.tsqr`) or its randomized
:func:`dask.array.linalg.svd_compressed`, on ``X - mean`` centred lazily
(block by block, as the decomposition reads it). Only the small factors come
back to the client: the singular values and the right singular vectors; the
left vectors, as long as ``X``, are never computed. ``transform`` and
``inverse_transform`` return lazy dask arrays, computed block by block with the
very functions the numpy path uses.

dask is imported only when a dask array is passed: importing the reducers
never imports it.
"""

import sys

import numpy as np
from sklearn.utils import check_random_state
from sklearn.utils.extmath import svd_flip

__all__ = [
    "check_dask_array",
    "dask_moments",
    "dask_row_map",
    "dask_squared_error",
    "dask_svd",
    "is_dask_array",
    "reject_dask",
]

# "auto" picks the exact tsqr up to this many columns: each block's R factor
# is n_features x n_features, and every block must hold whole rows.
_TSQR_MAX_FEATURES = 1_000
# Power iterations of svd_compressed when ``n_iter`` / ``iterated_power`` is
# "auto": scikit-learn's TruncatedSVD default.
_AUTO_POWER_ITERATIONS = 5


def is_dask_array(X):
    """Whether ``X`` is a dask array, without importing dask."""
    module = sys.modules.get("dask.array")
    return module is not None and isinstance(X, module.Array)


def reject_dask(X, estimator_name):
    """Raise a TypeError naming the reducers that do accept dask arrays."""
    if is_dask_array(X):
        raise TypeError(
            f"{estimator_name} does not accept dask arrays; PCA and SVD do (they "
            "fit with dask's tsqr or svd_compressed without loading X into "
            f"memory). To use {estimator_name}, load X first with X.compute()."
        )


def check_dask_array(estimator, X, *, reset, ensure_min_samples=2):
    """Lazy counterpart of ``validate_data`` for a dask array.

    Checks the shape (2-D, known chunk sizes, at least ``ensure_min_samples``
    rows) and ``n_features_in_`` (set when ``reset``, compared otherwise), and
    casts non-float dtypes to float64 lazily. Finiteness is checked by the
    fit's first pass (:func:`dask_moments`), which reads every value anyway.
    """
    name = type(estimator).__name__
    if X.ndim != 2:
        raise ValueError(f"{name} expects a 2-D dask array X, got {X.ndim} dimensions.")
    if any(np.isnan(size) for size in X.shape):
        raise ValueError(
            f"{name}: X has unknown chunk sizes (shape {X.shape}); call "
            "X.compute_chunk_sizes() (or X.to_dask_array(lengths=True) for a "
            "dask DataFrame) first."
        )
    if X.dtype not in (np.float32, np.float64):
        X = X.astype(np.float64)
    n_samples, n_features = X.shape
    if n_samples < ensure_min_samples:
        raise ValueError(
            f"Found array with {n_samples} sample(s) (shape={X.shape}) while a "
            f"minimum of {ensure_min_samples} is required by {name}."
        )
    if reset:
        estimator.n_features_in_ = n_features
        if hasattr(estimator, "feature_names_in_"):
            del estimator.feature_names_in_
    elif n_features != estimator.n_features_in_:
        raise ValueError(
            f"X has {n_features} features, but {name} is expecting "
            f"{estimator.n_features_in_} features as input."
        )
    return X


def dask_moments(X):
    """Column means and the sum of squares of ``X`` (float64), in one pass.

    Raises a ValueError when ``X`` holds NaN or infinity (the sum of squares
    is then not finite), as ``validate_data`` does for numpy input.
    """
    import dask

    mean, squares = dask.compute(
        X.mean(axis=0, dtype=np.float64),
        (X.astype(np.float64) ** 2).sum(),
    )
    if not np.isfinite(squares):
        raise ValueError("Input X contains NaN or infinity.")
    return np.asarray(mean, dtype=np.float64), float(squares)


def choose_dask_solver(exact, n_features, n_components, upper):
    """``"tsqr"`` (exact) or ``"svd_compressed"`` (randomized).

    ``exact`` is True or False when the user chose, None for "auto": exact
    unless the table is wide and only a part of the spectrum is wanted.
    """
    if exact is None:
        partial = isinstance(n_components, float) or n_components < 0.8 * upper
        exact = n_features <= _TSQR_MAX_FEATURES or not partial
    return "tsqr" if exact else "svd_compressed"


def dask_svd(X, rank, *, mean, solver, n_iter, n_oversamples, random_state):
    """Top singular values and right vectors of ``X - 1 mean^T``.

    ``mean=None`` decomposes ``X`` itself. The centring is lazy: each block is
    centred when the decomposition reads it. Only ``s`` and ``Vt`` are
    computed, together, in one graph; signs follow ``svd_flip`` on ``Vt`` as in
    scikit-learn's PCA.

    Returns
    -------
    singular_values : ndarray of shape (rank,)
    components : ndarray of shape (rank, n_features)
    n_iter : int or None
        Power iterations of svd_compressed, None for tsqr.
    """
    import dask
    import dask.array as da

    Xc = X if mean is None else X - mean.astype(X.dtype)
    if solver == "tsqr":
        # tsqr needs blocks of whole rows; a column-chunked X is rechunked
        # lazily (tall-and-skinny tables usually are chunked by rows already).
        _, s, Vt = da.linalg.tsqr(Xc.rechunk({1: -1}), compute_svd=True)
        n_iter = None
    else:
        n_iter = _AUTO_POWER_ITERATIONS if n_iter == "auto" else int(n_iter)
        seed = check_random_state(random_state).randint(np.iinfo(np.int32).max)
        # "QR" re-orthonormalises between passes (Halko et al.'s stable
        # variant); the plain power iteration loses the small directions.
        _, s, Vt = da.linalg.svd_compressed(
            Xc,
            rank,
            iterator="QR",
            n_power_iter=n_iter,
            n_oversamples=n_oversamples,
            seed=seed,
        )
    s, Vt = dask.compute(s, Vt)
    s, Vt = np.asarray(s)[:rank], np.asarray(Vt)[:rank]
    _, Vt = svd_flip(None, Vt, u_based_decision=False)
    return s, Vt, n_iter


def dask_row_map(function, X, n_columns, dtype):
    """Apply the row-wise numpy ``function`` lazily to each block of rows."""
    X = X.rechunk({1: -1})
    return X.map_blocks(
        function, chunks=(X.chunks[0], (n_columns,)), dtype=np.dtype(dtype)
    )


def dask_squared_error(round_trip, X):
    """``(sum ||x - round_trip(x)||^2, sum ||x||^2)`` over the rows of ``X``.

    Computed block by block in one pass; no block is kept once summed.
    """

    def block_sums(block):
        approx = round_trip(block)
        residual = np.sum((block - approx) ** 2, dtype=np.float64)
        total = np.sum(block.astype(np.float64) ** 2)
        return np.array([[residual, total]])

    X = X.rechunk({1: -1})
    sums = X.map_blocks(
        block_sums, chunks=((1,) * X.numblocks[0], (2,)), dtype=np.float64
    )
    residual, total = sums.sum(axis=0).compute()
    return float(residual), float(total)
