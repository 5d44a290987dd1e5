"""Shared pieces of the reducers: metrics mixin, validation and linear algebra."""

import numpy as np
from scipy import linalg, sparse
from sklearn.base import ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.neighbors import NearestNeighbors
from sklearn.utils import check_random_state
from sklearn.utils.extmath import svd_flip
from sklearn.utils.validation import check_is_fitted, validate_data

from ._dask import (
    check_dask_array,
    dask_row_map,
    dask_squared_error,
    is_dask_array,
    reject_dask,
)

__all__ = ["ReducerMixin"]

# Rows processed at a time when a metric needs dense reconstructions, so that
# reconstruction_error never holds a dense copy of a large (or sparse) X.
_CHUNK_ROWS = 4096


class ReducerMixin(ClassNamePrefixFeaturesOutMixin, TransformerMixin):
    """Uniform metrics and output names shared by every reducer.

    Subclasses implement ``fit``, ``_transform(X)`` and ``_inverse_transform(Z)``
    on validated arrays and set ``n_components_`` and ``n_features_in_``.
    Those that return True from ``_accept_dask`` (their ``_transform`` and
    ``_inverse_transform`` work row by row) get lazy ``transform`` /
    ``inverse_transform`` and a one-pass ``reconstruction_error`` on dask
    arrays; the others raise a TypeError for dask input.
    """

    @property
    def _n_features_out(self):
        return self.n_components_

    @property
    def compression_ratio_(self):
        """Number of input features per kept component."""
        check_is_fitted(self)
        return self.n_features_in_ / self.n_components_

    def transform(self, X):
        """Project ``X`` onto the learned components.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Data to reduce.

        Returns
        -------
        X_new : ndarray of shape (n_samples, n_components_)
            Reduced data; a lazy dask array for dask input.
        """
        check_is_fitted(self)
        if is_dask_array(X):
            X = self._check_dask(X)
            dtype = self._transform(np.zeros((1, X.shape[1]), X.dtype)).dtype
            return dask_row_map(self._transform, X, self.n_components_, dtype)
        X = validate_data(
            self,
            X,
            reset=False,
            accept_sparse=self._accept_sparse(),
            dtype=[np.float64, np.float32],
        )
        return self._transform(X)

    def inverse_transform(self, X):
        """Map reduced data back to the input space.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_components_)
            Reduced data, as returned by ``transform``.

        Returns
        -------
        X_original : ndarray of shape (n_samples, n_features_in_)
            Reconstruction of the data in the input space; a lazy dask array
            for dask input.
        """
        check_is_fitted(self)
        if is_dask_array(X):
            Z = self._check_dask(X.astype(float), n_features=self.n_components_)
            dtype = self._inverse_transform(np.zeros((1, Z.shape[1]))).dtype
            return dask_row_map(self._inverse_transform, Z, self.n_features_in_, dtype)
        Z = np.asarray(X, dtype=float)
        if Z.ndim != 2 or Z.shape[1] != self.n_components_:
            raise ValueError(
                f"inverse_transform expects an array with {self.n_components_} "
                f"columns (n_components_), got shape {Z.shape}."
            )
        return self._inverse_transform(Z)

    def reconstruction_error(self, X):
        """Relative Frobenius error of the round trip through the components.

        ``||X - inverse_transform(transform(X))||_F / ||X||_F``, computed a
        block of rows at a time (sparse ``X`` is never densified whole; a dask
        array is computed block by block, in one pass).

        Parameters
        ----------
        X : array-like, sparse matrix or dask array of shape \
                (n_samples, n_features)
            Data to reconstruct.

        Returns
        -------
        error : float
            Relative reconstruction error, 0 for a perfect reconstruction.
        """
        check_is_fitted(self)
        if is_dask_array(X):
            residual, total = dask_squared_error(
                lambda block: self._inverse_transform(self._transform(block)),
                self._check_dask(X),
            )
            return _relative_error(residual, total)
        X = validate_data(
            self,
            X,
            reset=False,
            accept_sparse=self._accept_sparse(),
            dtype=[np.float64, np.float32],
        )
        residual = total = 0.0
        for start in range(0, X.shape[0], _CHUNK_ROWS):
            block = X[start : start + _CHUNK_ROWS]
            approx = self._inverse_transform(self._transform(block))
            block = block.toarray() if sparse.issparse(block) else block
            residual += float(np.sum((block - approx) ** 2))
            total += float(np.sum(block.astype(np.float64) ** 2))
        return _relative_error(residual, total)

    def _accept_sparse(self):
        return False

    def _accept_dask(self):
        return False

    def _check_dask(self, X, *, n_features=None):
        """Check a dask array passed to a fitted reducer (lazily)."""
        if not self._accept_dask():
            reject_dask(X, type(self).__name__)
        if n_features is None:
            return check_dask_array(self, X, reset=False, ensure_min_samples=1)
        if X.ndim != 2 or X.shape[1] != n_features:
            raise ValueError(
                f"inverse_transform expects an array with {n_features} "
                f"columns (n_components_), got shape {X.shape}."
            )
        return X

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = bool(self._accept_sparse())
        return tags


def _relative_error(residual, total):
    if total == 0.0:
        return 0.0 if residual == 0.0 else float("inf")
    return float(np.sqrt(residual / total))


def check_n_components(n_components, n_samples, n_features, *, upper=None):
    """Check ``n_components`` against the data and return it.

    ``upper`` is the largest valid integer (``min(n_samples, n_features)`` by
    default). Floats must lie in (0, 1) (the interval constraint already
    ensures that); integers must lie in [1, upper].
    """
    if upper is None:
        upper = min(n_samples, n_features)
    if isinstance(n_components, (float, np.floating)):
        return float(n_components)
    if n_components > upper:
        raise ValueError(
            f"n_components={n_components} must be <= {upper} "
            f"(min(n_samples, n_features) = min({n_samples}, {n_features}))."
        )
    return int(n_components)


def reject_sparse(X, estimator_name):
    """Raise a TypeError naming the reducers that do accept sparse (or dask) input.

    Called first by the dense-only reducers' ``fit``; dask arrays are refused
    here too, before ``validate_data`` would load them whole into memory.
    """
    reject_dask(X, estimator_name)
    if sparse.issparse(X):
        raise TypeError(
            f"{estimator_name} does not accept sparse input; densify X with "
            "X.toarray(), or use SVD(center=False), which works on sparse "
            "matrices without densifying them."
        )


def n_components_for_fraction(explained_variance_ratio, fraction):
    """Smallest k whose cumulative explained variance ratio reaches ``fraction``."""
    cumulative = np.cumsum(explained_variance_ratio)
    k = int(np.searchsorted(cumulative, fraction - 1e-12) + 1)
    return min(k, len(explained_variance_ratio))


def grow_rank(fit, *, fraction, start, upper):
    """Fit at doubling ranks until the explained variance reaches ``fraction``.

    For solvers that compute a fixed number of components: ``fit(rank)`` is
    called at ``start``, ``2 * start``, ... (capped at ``upper``) until the
    explained variance ratio of the components it found adds up to
    ``fraction``, or ``rank == upper``.

    Parameters
    ----------
    fit : callable
        ``fit(rank) -> (result, explained_variance_ratio)``.
    fraction : float in (0, 1) or None
        ``None``: one call, at ``start``.
    start, upper : int
        First and largest rank.

    Returns
    -------
    result
        The last call's.
    k : int
        Components to keep: ``start`` when ``fraction`` is None, else the
        fewest reaching it (:func:`n_components_for_fraction`).

    Examples
    --------
    >>> import numpy as np
    >>> ratio = np.array([0.5, 0.2, 0.1, 0.1, 0.05, 0.05])
    >>> ranks = []
    >>> def fit(rank):
    ...     ranks.append(rank)
    ...     return rank, ratio[:rank]
    >>> grow_rank(fit, fraction=0.85, start=1, upper=6), ranks
    ((4, 4), [1, 2, 4])
    """
    rank = start
    while True:
        result, ratio = fit(rank)
        if fraction is None or rank >= upper or np.sum(ratio) >= fraction:
            break
        rank = min(2 * rank, upper)
    k = rank if fraction is None else n_components_for_fraction(ratio, fraction)
    return result, k


def column_mean_and_total_variance(X):
    """Column means and the total variance (sum of column variances, ddof=1).

    Computed without forming ``X - mean`` so it works on sparse X too.
    """
    n_samples = X.shape[0]
    mean = np.asarray(X.mean(axis=0), dtype=np.float64).ravel()
    if sparse.issparse(X):
        squares = float(X.multiply(X).sum())
    else:
        squares = float(np.einsum("ij,ij->", X, X, dtype=np.float64))
    total = (squares - n_samples * float(mean @ mean)) / max(n_samples - 1, 1)
    return mean, max(total, 0.0)


def randomized_svd_implicit(
    X,
    n_components,
    *,
    center,
    n_oversamples=10,
    n_iter="auto",
    max_iter=7,
    tol=1e-3,
    random_state=None,
    mean=None,
    total_variance=None,
):
    """Randomized truncated SVD of ``X`` or of ``X - 1 mean^T`` without a copy.

    Halko et al.'s range finder with QR-normalised power iterations. The
    centring is applied implicitly, ``(X - 1 mu^T) Q = X Q - 1 (mu^T Q)``, so
    dense ``X`` is never copied and sparse ``X`` is never densified.

    With ``n_iter="auto"`` the power iterations stop as soon as one more
    iteration raises the variance captured by the top ``n_components``
    directions by less than ``tol`` times the variance still left out (at most
    ``max_iter`` iterations). Each iteration already computes ``B = Q^T X``,
    whose SVD is exactly the answer that stopping there would give, so the
    check costs only a small (n_features, n_components + n_oversamples) SVD.

    Returns
    -------
    singular_values : ndarray of shape (n_components,)
    components : ndarray of shape (n_components, n_features)
        Right singular vectors, signs fixed by ``svd_flip`` on ``components``.
    n_iter : int
        Power iterations actually run.
    """
    random_state = check_random_state(random_state)
    n_samples, n_features = X.shape
    dtype = X.dtype if X.dtype in (np.float32, np.float64) else np.float64
    if center and mean is None:
        mean, total_variance = column_mean_and_total_variance(X)
    if not center:
        mean = None
    size = min(n_components + n_oversamples, n_samples, n_features)
    mu = None if mean is None else mean.astype(dtype, copy=False)

    def right(M):  # (X - 1 mu^T) @ M
        Y = X @ M
        if mu is not None:
            Y -= mu @ M
        return np.asarray(Y)

    def left(Q):  # (X - 1 mu^T)^T @ Q
        Z = np.asarray(X.T @ Q)
        if mu is not None:
            Z -= np.outer(mu, Q.sum(axis=0))
        return Z

    omega = random_state.standard_normal(size=(n_features, size)).astype(dtype)
    Q, _ = linalg.qr(right(omega), mode="economic", check_finite=False)
    iterations = max_iter if n_iter == "auto" else int(n_iter)
    captured_prev = None
    done = 0
    while True:
        Bt = left(Q)  # = B^T with B = Q^T (X - 1 mu^T)
        if done == iterations:
            break
        if n_iter == "auto":
            # Squared singular values of B are the eigenvalues of B B^T (l x l):
            # cheaper than an SVD and precise enough for a stopping test.
            eigenvalues = linalg.eigvalsh(Bt.T @ Bt, check_finite=False)[::-1]
            captured = float(np.sum(eigenvalues[:n_components], dtype=np.float64))
            if captured_prev is not None:
                if total_variance is None:
                    total_variance = _total_squares(X, mu) / max(n_samples - 1, 1)
                left_out = total_variance * max(n_samples - 1, 1) - captured
                if captured - captured_prev <= tol * max(left_out, 0.0):
                    break
            captured_prev = captured
        # LU is the cheaper normalisation (as in scikit-learn); only Q, whose
        # orthonormality the stopping test relies on, needs a QR.
        Bt, _ = linalg.lu(Bt, permute_l=True, check_finite=False)
        Q, _ = linalg.qr(right(Bt), mode="economic", check_finite=False)
        done += 1
    Ub, s, Vt = linalg.svd(Bt.T, full_matrices=False, check_finite=False)
    Ub, Vt = svd_flip(Ub, Vt, u_based_decision=False)
    return s[:n_components], Vt[:n_components], done


def _total_squares(X, mu):
    if sparse.issparse(X):
        squares = float(X.multiply(X).sum())
    else:
        squares = float(np.einsum("ij,ij->", X, X, dtype=np.float64))
    if mu is not None:
        squares -= X.shape[0] * float(mu @ mu)
    return squares


def barycentric_weights(X, neighbors, reg=1e-3):
    """Weights that best rebuild each row of ``X`` from its ``neighbors``.

    ``neighbors`` has shape (n_samples, n_neighbors, n_dims); the weights of
    each row sum to one (the barycentre constraint of LLE), with Tikhonov
    regularisation ``reg`` relative to the trace of the local Gram matrix.
    """
    n_samples, n_neighbors, _ = neighbors.shape
    weights = np.empty((n_samples, n_neighbors))
    ones = np.ones(n_neighbors)
    for i in range(n_samples):
        diff = neighbors[i] - X[i]
        gram = diff @ diff.T
        trace = np.trace(gram)
        gram.flat[:: n_neighbors + 1] += reg * trace if trace > 0 else reg
        w = linalg.solve(gram, ones, assume_a="pos", check_finite=False)
        weights[i] = w / w.sum()
    return weights


class BarycentricInverseMixin:
    """``inverse_transform`` for non-linear embeddings.

    A reduced point is written as the barycentre of its nearest training
    embeddings (same weights as LLE's); the same weights applied to those
    training points in the input space give the reconstruction.
    """

    def _fit_inverse(self, X, embedding):
        self._X_fit = np.asarray(X)
        self._embedding_nn = NearestNeighbors(
            n_neighbors=min(self.n_neighbors_inverse_, len(embedding))
        ).fit(embedding)

    def _inverse_transform(self, Z):
        nn = self._embedding_nn
        indices = nn.kneighbors(Z, return_distance=False)
        weights = barycentric_weights(Z, nn._fit_X[indices])
        return np.einsum("ij,ijk->ik", weights, self._X_fit[indices])
