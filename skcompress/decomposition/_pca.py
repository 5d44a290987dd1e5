"""Principal component analysis with a copy-free randomized fast path."""

from numbers import Integral, Real

import numpy as np
from scipy import sparse
from sklearn import config_context
from sklearn.base import BaseEstimator, _fit_context
from sklearn.decomposition import PCA as _SklearnPCA
from sklearn.utils._param_validation import Interval, StrOptions
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

__all__ = ["PCA"]


class PCA(ReducerMixin, BaseEstimator):
    """Principal component analysis.

    Linear reduction onto the directions of largest variance of the centred
    data. ``"full"``, ``"covariance_eigh"`` and ``"arpack"`` delegate to
    scikit-learn's :class:`~sklearn.decomposition.PCA`; ``"randomized"`` is a
    randomized range finder that centres implicitly, so it never copies ``X``
    (scikit-learn's randomized solver centres a copy), and stops its power
    iterations once they no longer change the answer (``iterated_power="auto"``).

    A :class:`dask.array.Array` (a table larger than memory, or spread over a
    cluster) is fitted with dask's exact tall-and-skinny QR
    (:func:`dask.array.linalg.tsqr`) or its randomized
    :func:`dask.array.linalg.svd_compressed`, centred lazily; ``transform`` and
    ``inverse_transform`` then return lazy dask arrays.

    Parameters
    ----------
    n_components : int or float, default=None
        Number of components to keep. An int in ``[1, min(n_samples,
        n_features)]``; a float in (0, 1) keeps the fewest components whose
        explained variance ratio adds up to at least that fraction, for every
        solver (the truncated solvers grow their rank until it is reached);
        ``None`` keeps ``min(n_samples, n_features)`` (minus one for arpack).

    whiten : bool, default=False
        Scale the projections to unit variance.

    solver : {"auto", "full", "covariance_eigh", "randomized", "arpack"}, \
            default="auto"
        "auto" uses scikit-learn's policy, except that where scikit-learn
        would run its randomized solver on a thin sketch
        (``8 * (n_components + n_oversamples) <= min(n_samples, n_features)``)
        this estimator runs its own (copy-free, adaptive; see ``randomized``);
        ``fit_solver_`` is then "randomized", else "sklearn-randomized". The
        other names mean what they mean in scikit-learn.
        For a dask array, "full" and "covariance_eigh" run the exact "tsqr",
        "randomized" runs "svd_compressed", "auto" picks "tsqr" up to 1000
        features (or when most of the spectrum is kept) and "svd_compressed"
        beyond; "arpack" is refused.

    iterated_power : int or "auto", default="auto"
        Power iterations of the randomized solver. "auto" iterates until one
        more pass raises the captured variance by less than ``tol`` times the
        variance left out, with at most 7 passes (5 passes, each a pass over
        the data, for a dask array).

    n_oversamples : int, default=10
        Extra random directions sampled by the randomized solver.

    tol : float, default=1e-3
        Stopping tolerance of the adaptive randomized solver (relative to the
        residual variance), and of arpack (passed to scikit-learn, where 0
        means machine precision, when ``solver="arpack"``).

    random_state : int, RandomState instance or None, default=None
        Seed of the randomized and arpack solvers.

    Attributes
    ----------
    components_ : ndarray of shape (n_components_, n_features_in_)
        Principal axes, sorted by decreasing explained variance.
    explained_variance_ : ndarray of shape (n_components_,)
        Variance (ddof=1) of the data along each component.
    explained_variance_ratio_ : ndarray of shape (n_components_,)
        Fraction of the total variance along each component.
    singular_values_ : ndarray of shape (n_components_,)
        Singular values of the centred data.
    mean_ : ndarray of shape (n_features_in_,)
        Column means of the training data.
    noise_variance_ : float
        Mean variance of the discarded directions (probabilistic PCA).
    n_components_ : int
        Number of components kept.
    compression_ratio_ : float
        ``n_features_in_ / n_components_``.
    fit_solver_ : str
        Solver actually used ("tsqr" or "svd_compressed" for a dask array).
    n_iter_ : int or None
        Power iterations run by the randomized solver.
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of the features seen during fit, when they are all strings.

    See Also
    --------
    SVD : Truncated SVD, centred or not, with sparse input.
    sklearn.decomposition.PCA : The estimator wrapped by the exact solvers.

    References
    ----------
    N. Halko, P. G. Martinsson and J. A. Tropp (2011), "Finding structure with
    randomness", SIAM Review 53(2).

    Examples
    --------
    >>> import numpy as np
    >>> from skcompress.decomposition import PCA
    >>> X = np.random.default_rng(0).normal(size=(100, 8))
    >>> pca = PCA(n_components=2, random_state=0).fit(X)
    >>> pca.transform(X).shape, pca.compression_ratio_
    ((100, 2), 4.0)
    >>> bool(0 < pca.reconstruction_error(X) < 1)
    True
    """

    _parameter_constraints: dict = {
        "n_components": [
            Interval(Integral, 1, None, closed="left"),
            Interval(Real, 0, 1, closed="neither"),
            None,
        ],
        "whiten": ["boolean"],
        "solver": [
            StrOptions({"auto", "full", "covariance_eigh", "randomized", "arpack"})
        ],
        "iterated_power": [
            Interval(Integral, 0, None, closed="left"),
            StrOptions({"auto"}),
        ],
        "n_oversamples": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        n_components=None,
        *,
        whiten=False,
        solver="auto",
        iterated_power="auto",
        n_oversamples=10,
        tol=1e-3,
        random_state=None,
    ):
        self.n_components = n_components
        self.whiten = whiten
        self.solver = solver
        self.iterated_power = iterated_power
        self.n_oversamples = n_oversamples
        self.tol = tol
        self.random_state = random_state

    def _accept_sparse(self):
        return ("csr", "csc")

    def _accept_dask(self):
        return True

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Fit the principal axes on ``X``.

        Parameters
        ----------
        X : {array-like, sparse matrix, dask array} of shape \
                (n_samples, n_features)
            Training data. Sparse input needs ``solver`` "auto", "arpack",
            "covariance_eigh" or "randomized" (none of which densifies it). A
            dask array is never loaded whole: see the class description.
        y : None
            Ignored.

        Returns
        -------
        self : PCA
            Fitted estimator.
        """
        if is_dask_array(X):
            return self._fit_dask(X)
        X = validate_data(
            self,
            X,
            accept_sparse=("csr", "csc"),
            dtype=[np.float64, np.float32],
            ensure_min_samples=2,
        )
        n_samples, n_features = X.shape
        upper = min(n_samples, n_features)
        if self.solver == "arpack":
            upper -= 1
            if upper < 1:
                raise ValueError(
                    "solver='arpack' needs min(n_samples, n_features) >= 2; "
                    f"got X of shape {X.shape}."
                )
        n_components = (
            upper
            if self.n_components is None
            else check_n_components(
                self.n_components, n_samples, n_features, upper=upper
            )
        )
        solver = self._choose_solver(X, n_components)
        if sparse.issparse(X) and solver == "full":
            raise TypeError(
                "PCA(solver='full') does not accept sparse input; use solver "
                "'arpack', 'covariance_eigh' or 'randomized', or SVD(center=False)."
            )
        self.fit_solver_ = solver
        self.n_iter_ = None
        if solver == "randomized":
            self._fit_randomized(X, n_components)
        elif solver == "sklearn-randomized":
            self._fit_sklearn(X, n_components, "randomized")
        else:
            self._fit_sklearn(X, n_components, solver)
        self.n_components_ = len(self.components_)
        return self

    def _fit_dask(self, X):
        X = check_dask_array(self, X, reset=True)
        n_samples, n_features = X.shape
        upper = min(n_samples, n_features)
        if self.solver == "arpack":
            raise ValueError(
                "solver='arpack' does not accept dask arrays; use solver 'auto', "
                "'full' (exact, dask's tsqr) or 'randomized' (svd_compressed)."
            )
        n_components = (
            upper
            if self.n_components is None
            else check_n_components(
                self.n_components, n_samples, n_features, upper=upper
            )
        )
        exact = {"auto": None, "randomized": False}.get(self.solver, True)
        solver = choose_dask_solver(exact, n_features, n_components, upper)
        mean, squares = dask_moments(X)
        total_variance = max(squares - n_samples * float(mean @ mean), 0.0) / max(
            n_samples - 1, 1
        )
        fraction = n_components if isinstance(n_components, float) else None
        if solver == "tsqr":
            rank = upper if fraction is not None else n_components
        else:
            rank = n_components if fraction is None else min(10, upper)

        def fit(rank):
            s, V, n_iter = dask_svd(
                X,
                rank,
                mean=mean,
                solver=solver,
                n_iter=self.iterated_power,
                n_oversamples=self.n_oversamples,
                random_state=self.random_state,
            )
            ratio = _variance_ratio(s, n_samples, total_variance)
            return (s, V, ratio, n_iter), ratio

        (s, V, ratio, n_iter), k = grow_rank(
            fit, fraction=fraction, start=rank, upper=upper
        )
        self._set_spectrum(s, V, ratio, mean, total_variance, k, X.shape, X.dtype)
        self.fit_solver_ = solver
        self.n_iter_ = n_iter
        self.n_components_ = len(self.components_)
        return self

    def _set_spectrum(self, s, V, ratio, mean, total_variance, k, shape, dtype):
        """Fitted attributes from the top ``k`` of a truncated spectrum."""
        n_samples, n_features = shape
        variance = s.astype(np.float64) ** 2 / max(n_samples - 1, 1)
        self.components_ = V[:k]
        self.singular_values_ = s[:k]
        self.explained_variance_ = variance[:k].astype(dtype)
        self.explained_variance_ratio_ = ratio[:k].astype(dtype)
        self.mean_ = mean.astype(dtype)
        rest = min(n_samples, n_features) - k
        self.noise_variance_ = (
            float(total_variance - variance[:k].sum()) / rest if rest > 0 else 0.0
        )

    def _choose_solver(self, X, n_components):
        """scikit-learn's "auto" policy with our randomized solver in its place."""
        if self.solver != "auto":
            return self.solver
        n_samples, n_features = X.shape
        if sparse.issparse(X):
            return "arpack" if isinstance(n_components, int) else "covariance_eigh"
        if n_features <= 1_000 and n_samples >= 10 * n_features:
            return "covariance_eigh"
        if max(X.shape) <= 500:
            return "full"
        if isinstance(n_components, int) and n_components < 0.8 * min(X.shape):
            # Ours pays off when the sketch is thin next to the data (measured:
            # 2-3x faster at 20000x2000, k=10..50); with a fat sketch
            # scikit-learn's LU-only iterations win, so delegate to them.
            if 8 * (n_components + self.n_oversamples) <= min(X.shape):
                return "randomized"
            return "sklearn-randomized"
        return "full"

    def _fit_randomized(self, X, n_components):
        mean, total_variance = column_mean_and_total_variance(X)
        fraction = n_components if isinstance(n_components, float) else None

        def fit(rank):
            s, V, n_iter = randomized_svd_implicit(
                X,
                rank,
                center=True,
                n_oversamples=self.n_oversamples,
                n_iter=self.iterated_power,
                tol=self.tol,
                random_state=self.random_state,
                mean=mean,
                total_variance=total_variance,
            )
            ratio = _variance_ratio(s, X.shape[0], total_variance)
            return (s, V, ratio, n_iter), ratio

        upper = min(X.shape)
        start = n_components if fraction is None else min(10, upper)
        (s, V, ratio, n_iter), k = grow_rank(
            fit, fraction=fraction, start=start, upper=upper
        )
        self._set_spectrum(s, V, ratio, mean, total_variance, k, X.shape, X.dtype)
        self.n_iter_ = n_iter

    def _fit_sklearn(self, X, n_components, solver):
        fraction = n_components if isinstance(n_components, float) else None

        def fit(rank):
            # X was validated in fit: skip scikit-learn's second finiteness
            # pass over it (measurable on tall data, see bench_reducers).
            with config_context(assume_finite=True):
                pca = _SklearnPCA(
                    n_components=rank,
                    svd_solver=solver,
                    tol=self.tol if solver == "arpack" else 0.0,
                    random_state=self.random_state,
                ).fit(X)
            return pca, pca.explained_variance_ratio_

        if fraction is None or solver in ("full", "covariance_eigh"):
            pca, _ = fit(n_components)  # scikit-learn takes the fraction itself
            k = pca.n_components_
        else:  # arpack cannot take a fraction: grow the rank until it is reached
            top = min(X.shape) - 1
            pca, k = grow_rank(fit, fraction=fraction, start=min(10, top), upper=top)
        self.components_ = pca.components_[:k]
        self.singular_values_ = pca.singular_values_[:k]
        self.explained_variance_ = pca.explained_variance_[:k]
        self.explained_variance_ratio_ = pca.explained_variance_ratio_[:k]
        self.mean_ = pca.mean_
        if k == pca.n_components_:
            self.noise_variance_ = float(pca.noise_variance_)
        else:
            total = pca.explained_variance_[0] / pca.explained_variance_ratio_[0]
            rest = min(X.shape) - k
            self.noise_variance_ = float(total - self.explained_variance_.sum()) / rest

    def _transform(self, X):
        Z = np.asarray(X @ self.components_.T)
        Z -= self.mean_ @ self.components_.T
        if self.whiten:
            Z /= np.sqrt(np.maximum(self.explained_variance_, 1e-300))
        return Z

    def _inverse_transform(self, Z):
        if self.whiten:
            Z = Z * np.sqrt(self.explained_variance_)
        return Z @ self.components_ + self.mean_


def _variance_ratio(singular_values, n_samples, total_variance):
    """Explained variance ratio of the components of the centred data."""
    variance = singular_values.astype(np.float64) ** 2 / max(n_samples - 1, 1)
    return variance / total_variance if total_variance > 0 else variance * 0
