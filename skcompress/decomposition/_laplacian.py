"""Laplacian eigenmaps with an out-of-sample (Nystrom) transform."""

from numbers import Integral, Real

import numpy as np
from scipy import sparse
from scipy.spatial.distance import cdist
from sklearn.base import BaseEstimator, _fit_context
from sklearn.manifold import SpectralEmbedding
from sklearn.neighbors import NearestNeighbors
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import validate_data

from ._base import (
    BarycentricInverseMixin,
    ReducerMixin,
    check_n_components,
    reject_sparse,
)

__all__ = ["LaplacianEigenmaps"]


class LaplacianEigenmaps(BarycentricInverseMixin, ReducerMixin, BaseEstimator):
    """Laplacian eigenmaps (spectral embedding) that can embed new points.

    The embedding is computed by scikit-learn's
    :class:`~sklearn.manifold.SpectralEmbedding`; its columns ``y`` solve
    ``W y = mu D y`` (``W`` the affinity without self-loops, ``D`` its degree
    matrix), with ``mu = 1 - lambda`` for the normalised Laplacian's
    eigenvalue ``lambda``. ``mu`` is recovered from the fitted embedding by a
    Rayleigh quotient, and a new point ``x`` is embedded by the Nystrom
    extension of that equation:
    ``y(x) = sum_j w(x, x_j) y_j / (mu * sum_j w(x, x_j))``, which returns the
    training embedding on the training points. A query equal to a training
    point leaves that point (once) out of its own sum, as the training graph
    has no self-loops. ``inverse_transform`` is barycentric, as for :class:`LLE`.

    Parameters
    ----------
    n_components : int, default=2
        Embedding dimension.

    affinity : {"rbf", "nearest_neighbors"}, default="rbf"
        Graph weights: a Gaussian kernel (the Nystrom extension is then exact
        on the training points), or a symmetrised k-nearest-neighbour graph.

    gamma : float, default=None
        Kernel coefficient of "rbf"; ``None`` means
        ``1 / (n_features * X.var())``.

    n_neighbors : int, default=None
        Neighbours of the "nearest_neighbors" graph; ``None`` means
        ``max(n_samples // 10, 1)`` as in scikit-learn. Also the neighbours
        used by ``inverse_transform`` (10 when ``None``).

    eigen_solver : {"arpack", "lobpcg", "amg"}, default=None
        Eigen solver of the wrapped estimator.

    random_state : int, RandomState instance or None, default=None
        Seed of the eigen solver.

    Attributes
    ----------
    embedding_ : ndarray of shape (n_samples, n_components)
        Embedding of the training data.
    eigenvalues_ : ndarray of shape (n_components,)
        ``mu = 1 - lambda`` for each embedding column.
    gamma_ : float or None
        Kernel coefficient used ("rbf").
    n_neighbors_ : int or None
        Graph neighbours used ("nearest_neighbors").
    spectral_ : SpectralEmbedding
        The fitted scikit-learn estimator.
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
    LLE : Locally linear embedding.

    References
    ----------
    Y. Bengio et al. (2004), "Out-of-sample extensions for LLE, Isomap, MDS,
    Eigenmaps, and spectral clustering", NIPS 16.

    Examples
    --------
    >>> import numpy as np
    >>> from skcompress.decomposition import LaplacianEigenmaps
    >>> X = np.random.default_rng(0).normal(size=(50, 4))
    >>> le = LaplacianEigenmaps(n_components=2, random_state=0).fit(X)
    >>> np.allclose(le.transform(X), le.embedding_, atol=1e-6)
    True
    """

    _parameter_constraints: dict = {
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "affinity": [StrOptions({"rbf", "nearest_neighbors"})],
        "gamma": [Interval(Real, 0, None, closed="neither"), None],
        "n_neighbors": [Interval(Integral, 1, None, closed="left"), None],
        "eigen_solver": [StrOptions({"arpack", "lobpcg", "amg"}), None],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        n_components=2,
        *,
        affinity="rbf",
        gamma=None,
        n_neighbors=None,
        eigen_solver=None,
        random_state=None,
    ):
        self.n_components = n_components
        self.affinity = affinity
        self.gamma = gamma
        self.n_neighbors = n_neighbors
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
        self : LaplacianEigenmaps
            Fitted estimator.
        """
        reject_sparse(X, "LaplacianEigenmaps")
        X = validate_data(self, X, dtype=[np.float64, np.float32], ensure_min_samples=3)
        n_samples, n_features = X.shape
        # The trivial constant eigenvector is dropped, so at most n - 1 remain.
        k = check_n_components(
            self.n_components,
            n_samples,
            n_features,
            upper=min(n_samples - 1, n_features),
        )
        self.gamma_ = self.n_neighbors_ = None
        if self.affinity == "rbf":
            variance = float(X.var())
            self.gamma_ = (
                self.gamma
                if self.gamma is not None
                else 1.0 / (n_features * variance)
                if variance > 0
                else 1.0
            )
        else:
            self.n_neighbors_ = min(
                self.n_neighbors or max(n_samples // 10, 1), n_samples - 1
            )
        self.spectral_ = SpectralEmbedding(
            n_components=k,
            affinity=self.affinity,
            gamma=self.gamma_,
            n_neighbors=self.n_neighbors_,
            eigen_solver=self.eigen_solver,
            random_state=self.random_state,
        ).fit(X)
        self.embedding_ = self.spectral_.embedding_
        W = sparse.csr_matrix(self.spectral_.affinity_matrix_, dtype=np.float64)
        W.setdiag(0)
        W.eliminate_zeros()
        degree = np.asarray(W.sum(axis=1)).ravel()
        Y = self.embedding_
        self.eigenvalues_ = np.einsum("ij,ij->j", Y, np.asarray(W @ Y)) / np.einsum(
            "ij,i,ij->j", Y, degree, Y
        )
        self._X_train = X
        if self.affinity == "nearest_neighbors":
            self._graph_nn = NearestNeighbors(n_neighbors=self.n_neighbors_).fit(X)
        self.n_components_ = k
        self.n_neighbors_inverse_ = min(self.n_neighbors or 10, n_samples)
        self._fit_inverse(X, self.embedding_)
        return self

    def _weights(self, X):
        """Affinities between query rows and training points, no self-loops."""
        if self.affinity == "rbf":
            # cdist subtracts coordinates, so a copy of a training point is at
            # distance exactly 0 (the BLAS expansion of euclidean_distances
            # is not exact).
            sq = cdist(X, self._X_train, "sqeuclidean")
            weights = np.exp(-self.gamma_ * sq)
            # Drop one coincident training point per query (the point itself),
            # keeping any duplicates, which are neighbours in the graph.
            rows = np.flatnonzero((sq == 0.0).any(axis=1))
            weights[rows, np.argmax(sq[rows] == 0.0, axis=1)] = 0.0
            return weights
        distances, indices = self._graph_nn.kneighbors(
            X, n_neighbors=min(self.n_neighbors_ + 1, len(self._X_train))
        )
        weights = np.zeros((len(X), len(self._X_train)))
        for row, (dist, idx) in enumerate(zip(distances, indices)):
            if dist[0] == 0.0:  # a training point: leave itself out
                idx = idx[1:]
            idx = idx[: self.n_neighbors_]
            weights[row, idx] = 1.0
        return weights

    def _transform(self, X):
        weights = self._weights(X)
        degree = weights.sum(axis=1, keepdims=True)
        degree[degree == 0] = 1.0  # isolated query: embed at the origin
        return (weights @ self.embedding_) / degree / self.eigenvalues_
