"""Truncated singular value decomposition, centred or not."""

from numbers import Integral, Real

import numpy as np
from scipy.sparse.linalg import LinearOperator, svds
from sklearn import config_context
from sklearn.base import BaseEstimator, _fit_context
from sklearn.decomposition import TruncatedSVD
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.extmath import svd_flip
from sklearn.utils.validation import validate_data

from ._base import (
    ReducerMixin,
    check_n_components,
    column_mean_and_total_variance,
    grow_rank,
    randomized_svd_implicit,
)
from ._dask import (
    check_dask_array,
    choose_dask_solver,
    dask_moments,
    dask_svd,
    is_dask_array,
)

__all__ = ["SVD"]


class SVD(ReducerMixin, BaseEstimator):
    """Truncated SVD of the data matrix, uncentred or centred.

    ``center=False`` is latent semantic analysis: it wraps scikit-learn's
    :class:`~sklearn.decomposition.TruncatedSVD` and works on sparse matrices
    without densifying them. ``center=True`` subtracts the column means
    implicitly, ``(X - 1 mu^T) Q = X Q - 1 (mu^T Q)``, so it is PCA (same
    subspace as :class:`PCA`) that still never densifies or copies ``X``.

    Besides the column view (``compression_ratio_``), the fit reports the
    storage view of keeping the whole factorised matrix ``U_k, S_k, V_k``:
    ``storage_ratio_ = n*d / (k*(n + d + 1))``.

    A :class:`dask.array.Array` is fitted without loading it: "randomized" runs
    dask's :func:`dask.array.linalg.svd_compressed` and "arpack" its exact
    tall-and-skinny QR (:func:`dask.array.linalg.tsqr`), on ``X`` centred
    lazily when ``center=True``; ``transform`` and ``inverse_transform`` then
    return lazy dask arrays.

    Parameters
    ----------
    n_components : int or float, default=2
        Number of singular triplets to keep; a float in (0, 1) keeps the
        fewest whose explained variance ratio (energy ratio when uncentred)
        reaches that fraction.

    center : bool, default=False
        Subtract the column means (implicitly) before the decomposition.

    algorithm : {"randomized", "arpack"}, default="randomized"
        Solver, as in :class:`~sklearn.decomposition.TruncatedSVD`. With
        ``center=True``, "randomized" is the adaptive copy-free range finder
        shared with :class:`PCA` and "arpack" runs on the implicitly centred
        operator. For a dask array, "randomized" is dask's ``svd_compressed``
        and "arpack" the exact ``tsqr`` (whole spectrum of a tall table).

    n_iter : int or "auto", default="auto"
        Power iterations of the randomized solver; "auto" means scikit-learn's
        default (5) when uncentred and the adaptive rule of :class:`PCA` when
        centred (5 for a dask array).

    n_oversamples : int, default=10
        Extra random directions sampled by the randomized solver.

    tol : float, default=0.0
        Tolerance of arpack (0 means machine precision).

    random_state : int, RandomState instance or None, default=None
        Seed of the solvers.

    Attributes
    ----------
    components_ : ndarray of shape (n_components_, n_features_in_)
        Right singular vectors.
    singular_values_ : ndarray of shape (n_components_,)
        Singular values (of the centred matrix when ``center=True``).
    explained_variance_ : ndarray of shape (n_components_,)
        Variance of the training projections on each component.
    explained_variance_ratio_ : ndarray of shape (n_components_,)
        ``explained_variance_`` over the total variance of the training data.
    mean_ : ndarray of shape (n_features_in_,) or None
        Column means subtracted, None when ``center=False``.
    n_components_ : int
        Number of components kept.
    compression_ratio_ : float
        ``n_features_in_ / n_components_`` (column view).
    storage_ratio_ : float
        ``n*d / (k*(n + d + 1))`` for the training matrix (storage view).
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of the features seen during fit, when they are all strings.

    See Also
    --------
    PCA : Principal component analysis with exact solvers.
    sklearn.decomposition.TruncatedSVD : The estimator wrapped when uncentred.

    Examples
    --------
    >>> import scipy.sparse as sp
    >>> from skcompress.decomposition import SVD
    >>> X = sp.random(200, 50, density=0.1, random_state=0, format="csr")
    >>> svd = SVD(n_components=5, random_state=0).fit(X)
    >>> svd.transform(X).shape, svd.compression_ratio_
    ((200, 5), 10.0)
    >>> round(svd.storage_ratio_, 2)
    7.97
    """

    _parameter_constraints: dict = {
        "n_components": [
            Interval(Integral, 1, None, closed="left"),
            Interval(Real, 0, 1, closed="neither"),
        ],
        "center": ["boolean"],
        "algorithm": [StrOptions({"randomized", "arpack"})],
        "n_iter": [Interval(Integral, 0, None, closed="left"), StrOptions({"auto"})],
        "n_oversamples": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        n_components=2,
        *,
        center=False,
        algorithm="randomized",
        n_iter="auto",
        n_oversamples=10,
        tol=0.0,
        random_state=None,
    ):
        self.n_components = n_components
        self.center = center
        self.algorithm = algorithm
        self.n_iter = n_iter
        self.n_oversamples = n_oversamples
        self.tol = tol
        self.random_state = random_state

    def _accept_sparse(self):
        return ("csr", "csc")

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Fit the truncated SVD on ``X``.

        Parameters
        ----------
        X : {array-like, sparse matrix, dask array} of shape \
                (n_samples, n_features)
            Training data; sparse input is never densified, a dask array never
            loaded whole.
        y : None
            Ignored.

        Returns
        -------
        self : SVD
            Fitted estimator.
        """
        moments = None  # one pass for a dask array, shared by every rank tried
        if is_dask_array(X):
            X = check_dask_array(self, X, reset=True)
            moments = dask_moments(X)
        else:
            X = validate_data(
                self,
                X,
                accept_sparse=("csr", "csc"),
                dtype=[np.float64, np.float32],
                ensure_min_samples=2,
            )
        n_samples, n_features = X.shape
        upper = min(n_samples, n_features) - (self.algorithm == "arpack")
        if upper < 1:
            raise ValueError(
                f"algorithm='arpack' needs min(n_samples, n_features) >= 2; got X of "
                f"shape {X.shape}."
            )
        n_components = check_n_components(
            self.n_components, n_samples, n_features, upper=upper
        )
        fraction = n_components if isinstance(n_components, float) else None
        rank = n_components if fraction is None else min(10, upper)
        if is_dask_array(X) and self.algorithm == "arpack" and fraction is not None:
            rank = upper  # tsqr yields the whole spectrum in one pass anyway

        def fit(rank):
            self._fit_rank(X, rank, moments)
            return None, self.explained_variance_ratio_

        _, k = grow_rank(fit, fraction=fraction, start=rank, upper=upper)
        if fraction is not None:
            for name in (
                "components_",
                "singular_values_",
                "explained_variance_",
                "explained_variance_ratio_",
            ):
                setattr(self, name, getattr(self, name)[:k])
        self.n_components_ = len(self.components_)
        k = self.n_components_
        self.storage_ratio_ = (
            n_samples * n_features / (k * (n_samples + n_features + 1))
        )
        return self

    def _fit_rank(self, X, rank, moments=None):
        if is_dask_array(X):
            self._fit_rank_dask(X, rank, moments)
            return
        if not self.center:
            n_iter = 5 if self.n_iter == "auto" else self.n_iter
            tsvd = TruncatedSVD(
                n_components=rank,
                algorithm=self.algorithm,
                n_iter=n_iter,
                n_oversamples=self.n_oversamples,
                tol=self.tol,
                random_state=self.random_state,
            )
            # X was validated in fit: skip scikit-learn's second pass over it.
            with config_context(assume_finite=True):
                tsvd.fit(X)
            self.mean_ = None
            self.components_ = tsvd.components_
            self.singular_values_ = tsvd.singular_values_
            self.explained_variance_ = tsvd.explained_variance_
            self.explained_variance_ratio_ = tsvd.explained_variance_ratio_
            return
        mean, total_variance = column_mean_and_total_variance(X)
        if self.algorithm == "randomized":
            s, V, _ = randomized_svd_implicit(
                X,
                rank,
                center=True,
                n_oversamples=self.n_oversamples,
                n_iter=self.n_iter,
                random_state=self.random_state,
                mean=mean,
                total_variance=total_variance,
            )
        else:
            s, V = _arpack_centered(X, mean, rank, self.tol, self.random_state)
        variance = s.astype(np.float64) ** 2 / max(X.shape[0] - 1, 1)
        self.mean_ = mean.astype(X.dtype)
        self.components_ = V
        self.singular_values_ = s
        self.explained_variance_ = variance.astype(X.dtype)
        ratio = variance / total_variance if total_variance > 0 else 0 * variance
        self.explained_variance_ratio_ = ratio.astype(X.dtype)

    def _fit_rank_dask(self, X, rank, moments):
        n_samples, n_features = X.shape
        mean, squares = moments
        exact = self.algorithm == "arpack"
        s, V, _ = dask_svd(
            X,
            rank,
            mean=mean if self.center else None,
            solver=choose_dask_solver(exact, n_features, rank, min(X.shape)),
            n_iter=self.n_iter,
            n_oversamples=self.n_oversamples,
            random_state=self.random_state,
        )
        s64 = s.astype(np.float64)
        if self.center:  # variances with ddof=1, as for the numpy input
            variance = s64**2 / max(n_samples - 1, 1)
            total = (squares - n_samples * float(mean @ mean)) / max(n_samples - 1, 1)
        else:  # TruncatedSVD's: variance of X @ V.T and of X, ddof=0
            variance = s64**2 / n_samples - (V @ mean) ** 2
            total = squares / n_samples - float(mean @ mean)
        total = max(total, 0.0)
        self.mean_ = mean.astype(X.dtype) if self.center else None
        self.components_ = V
        self.singular_values_ = s
        self.explained_variance_ = variance.astype(X.dtype)
        ratio = variance / total if total > 0 else 0 * variance
        self.explained_variance_ratio_ = ratio.astype(X.dtype)

    def _accept_dask(self):
        return True

    def _transform(self, X):
        Z = np.asarray(X @ self.components_.T)
        if self.mean_ is not None:
            Z -= self.mean_ @ self.components_.T
        return Z

    def _inverse_transform(self, Z):
        X = Z @ self.components_
        if self.mean_ is not None:
            X += self.mean_
        return X


def _arpack_centered(X, mean, rank, tol, random_state):
    """ARPACK on the implicitly centred operator ``X - 1 mean^T``."""
    n_samples, n_features = X.shape
    ones = np.ones(n_samples)

    def matvec(v):
        return np.asarray(X @ v).ravel() - mean @ np.ravel(v)

    def rmatvec(u):
        u = np.ravel(u)
        return np.asarray(X.T @ u).ravel() - mean * (ones @ u)

    def matmat(M):
        return np.asarray(X @ M) - mean @ M

    def rmatmat(M):
        return np.asarray(X.T @ M) - np.outer(mean, M.sum(axis=0))

    operator = LinearOperator(
        (n_samples, n_features),
        matvec=matvec,
        rmatvec=rmatvec,
        matmat=matmat,
        rmatmat=rmatmat,
        dtype=np.float64,
    )
    v0 = check_random_state(random_state).uniform(-1, 1, size=min(X.shape))
    U, s, Vt = svds(operator, k=rank, tol=tol, v0=v0)
    order = np.argsort(s)[::-1]
    U, s, Vt = U[:, order], s[order], Vt[order]
    _, Vt = svd_flip(U, Vt, u_based_decision=False)
    return s, Vt
