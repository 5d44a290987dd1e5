"""Locally linear embedding with out-of-sample transform and inverse."""

from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, _fit_context
from sklearn.manifold import LocallyLinearEmbedding
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import validate_data

from ._base import (
    BarycentricInverseMixin,
    ReducerMixin,
    check_n_components,
    reject_sparse,
)

__all__ = ["LLE"]


class LLE(BarycentricInverseMixin, ReducerMixin, BaseEstimator):
    """Locally linear embedding.

    Wraps scikit-learn's :class:`~sklearn.manifold.LocallyLinearEmbedding`,
    whose ``transform`` already maps new points (each as the barycentre of
    its training neighbours, carried to the embedding). ``inverse_transform``
    runs the same construction backwards: a reduced point is written as the
    barycentre of its nearest training embeddings, and those weights applied
    to the training points give its reconstruction, so the reconstruction
    error can be compared with the linear reducers'.

    Parameters
    ----------
    n_components : int, default=2
        Embedding dimension, below ``min(n_samples, n_features)``.

    n_neighbors : int, default=None
        Neighbours used to fit the embedding and to map new points; ``None``
        means ``max(10, n_components + 1)``. Must exceed ``n_components``.

    reg : float, default=1e-3
        Regularisation of the barycentric weights.

    method : {"standard", "modified", "hessian", "ltsa"}, default="standard"
        LLE variant.

    eigen_solver : {"auto", "arpack", "dense"}, default="auto"
        Eigen solver of the wrapped estimator.

    random_state : int, RandomState instance or None, default=None
        Seed of the arpack solver.

    Attributes
    ----------
    embedding_ : ndarray of shape (n_samples, n_components)
        Embedding of the training data.
    lle_ : LocallyLinearEmbedding
        The fitted scikit-learn estimator.
    n_neighbors_inverse_ : int
        Neighbours used by ``inverse_transform``.
    reconstruction_error_ : float
        Embedding cost reported by scikit-learn (not the input-space error of
        ``reconstruction_error``).
    n_components_ : int
        Embedding dimension.
    compression_ratio_ : float
        ``n_features_in_ / n_components_``.
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of the features seen during fit, when they are all strings.

    See Also
    --------
    LaplacianEigenmaps : Spectral embedding with a Nystrom transform.

    Examples
    --------
    >>> import numpy as np
    >>> from skcompress.decomposition import LLE
    >>> X = np.random.default_rng(0).normal(size=(60, 5))
    >>> lle = LLE(n_components=2, n_neighbors=8, random_state=0).fit(X)
    >>> lle.transform(X[:3]).shape, lle.inverse_transform(lle.transform(X[:3])).shape
    ((3, 2), (3, 5))
    """

    _parameter_constraints: dict = {
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "n_neighbors": [Interval(Integral, 1, None, closed="left"), None],
        "reg": [Interval(Real, 0, None, closed="left")],
        "method": [StrOptions({"standard", "modified", "hessian", "ltsa"})],
        "eigen_solver": [StrOptions({"auto", "arpack", "dense"})],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        n_components=2,
        *,
        n_neighbors=None,
        reg=1e-3,
        method="standard",
        eigen_solver="auto",
        random_state=None,
    ):
        self.n_components = n_components
        self.n_neighbors = n_neighbors
        self.reg = reg
        self.method = method
        self.eigen_solver = eigen_solver
        self.random_state = random_state

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Fit the embedding on ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data (dense).
        y : None
            Ignored.

        Returns
        -------
        self : LLE
            Fitted estimator.
        """
        reject_sparse(X, "LLE")
        X = validate_data(self, X, dtype=[np.float64, np.float32], ensure_min_samples=2)
        n_samples, n_features = X.shape
        k = check_n_components(self.n_components, n_samples, n_features)
        # LLE needs more neighbours than dimensions and fewer than samples.
        n_neighbors = min(self.n_neighbors or max(10, k + 1), n_samples - 1)
        if n_neighbors <= k:
            raise ValueError(
                f"LLE needs n_neighbors > n_components and n_neighbors < n_samples; "
                f"got n_neighbors={self.n_neighbors}, n_components={k}, "
                f"n_samples={n_samples}."
            )
        self.lle_ = LocallyLinearEmbedding(
            n_components=k,
            n_neighbors=n_neighbors,
            reg=self.reg,
            method=self.method,
            eigen_solver=self.eigen_solver,
            random_state=self.random_state,
        ).fit(X)
        self.embedding_ = self.lle_.embedding_
        self.reconstruction_error_ = self.lle_.reconstruction_error_
        self.n_components_ = k
        self.n_neighbors_inverse_ = n_neighbors
        self._fit_inverse(X, self.embedding_)
        return self

    def _transform(self, X):
        return self.lle_.transform(X)
