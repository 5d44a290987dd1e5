"""Linear discriminant analysis as a supervised reducer."""

from numbers import Integral, Real

import numpy as np
from scipy import linalg
from sklearn.base import BaseEstimator, _fit_context
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import validate_data

from ._base import ReducerMixin, n_components_for_fraction, reject_sparse

__all__ = ["LDA"]


class LDA(ReducerMixin, BaseEstimator):
    """Linear discriminant analysis: project onto the class-separating axes.

    Wraps scikit-learn's
    :class:`~sklearn.discriminant_analysis.LinearDiscriminantAnalysis`
    (``solver`` "svd" or "eigen") and adds an ``inverse_transform``: the
    projection ``z = (x - mean_) @ scalings_`` is undone with its
    Moore-Penrose pseudo-inverse, ``x = z @ pinv(scalings_) + mean_``.

    Parameters
    ----------
    n_components : int or float, default=None
        Number of discriminant axes, at most ``n_classes - 1``; a float in
        (0, 1) keeps the fewest axes whose between-class explained variance
        ratio reaches it; ``None`` keeps ``n_classes - 1`` (or fewer when the
        data has fewer features).

    solver : {"svd", "eigen"}, default="svd"
        Solver of the wrapped estimator.

    shrinkage : "auto", float or None, default=None
        Ledoit-Wolf or fixed shrinkage, "eigen" solver only.

    tol : float, default=1e-4
        Rank threshold of the "svd" solver.

    Attributes
    ----------
    scalings_ : ndarray of shape (n_features_in_, n_components_)
        Projection matrix.
    inverse_scalings_ : ndarray of shape (n_components_, n_features_in_)
        Its pseudo-inverse, used by ``inverse_transform``.
    mean_ : ndarray of shape (n_features_in_,)
        Offset subtracted before projecting (zeros for "eigen").
    explained_variance_ratio_ : ndarray of shape (n_components_,)
        Between-class variance explained by each axis.
    classes_ : ndarray of shape (n_classes,)
        Class labels.
    lda_ : LinearDiscriminantAnalysis
        The fitted scikit-learn estimator.
    n_components_ : int
        Number of axes kept.
    compression_ratio_ : float
        ``n_features_in_ / n_components_``.
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of the features seen during fit, when they are all strings.

    See Also
    --------
    PCA : Unsupervised linear reduction.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from skcompress.decomposition import LDA
    >>> X, y = load_iris(return_X_y=True)
    >>> lda = LDA(n_components=2).fit(X, y)
    >>> lda.transform(X).shape, lda.compression_ratio_
    ((150, 2), 2.0)
    """

    _parameter_constraints: dict = {
        "n_components": [
            Interval(Integral, 1, None, closed="left"),
            Interval(Real, 0, 1, closed="neither"),
            None,
        ],
        "solver": [StrOptions({"svd", "eigen"})],
        "shrinkage": [StrOptions({"auto"}), Interval(Real, 0, 1, closed="both"), None],
        "tol": [Interval(Real, 0, None, closed="left")],
    }

    def __init__(self, n_components=None, *, solver="svd", shrinkage=None, tol=1e-4):
        self.n_components = n_components
        self.solver = solver
        self.shrinkage = shrinkage
        self.tol = tol

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Fit the discriminant axes.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data (dense).
        y : array-like of shape (n_samples,)
            Class labels, at least two classes. Required.

        Returns
        -------
        self : LDA
            Fitted estimator.
        """
        if y is None:
            raise ValueError(
                "LDA is supervised and requires y to be passed, but the target y "
                "is None: call fit(X, y) with the class labels."
            )
        reject_sparse(X, "LDA")
        X, y = validate_data(
            self, X, y, dtype=[np.float64, np.float32], ensure_min_samples=2
        )
        check_classification_targets(y)
        classes = np.unique(y)
        if len(classes) < 2:
            raise ValueError(
                f"LDA needs at least 2 classes in y; got 1 class ({classes[0]!r})."
            )
        max_components = min(len(classes) - 1, X.shape[1])
        if isinstance(self.n_components, Integral) and (
            self.n_components > max_components
        ):
            raise ValueError(
                f"n_components={self.n_components} is too large for LDA: it must be "
                f"<= min(n_classes - 1, n_features) = {max_components} "
                f"(n_classes={len(classes)}, n_features={X.shape[1]})."
            )
        self.lda_ = LinearDiscriminantAnalysis(
            solver=self.solver, shrinkage=self.shrinkage, tol=self.tol
        ).fit(X, y)
        ratio = self.lda_.explained_variance_ratio_
        available = min(max_components, self.lda_.scalings_.shape[1], len(ratio))
        if self.n_components is None:
            k = available
        elif isinstance(self.n_components, Integral):
            k = min(int(self.n_components), available)
        else:
            k = n_components_for_fraction(ratio[:available], self.n_components)
        self.classes_ = self.lda_.classes_
        self.scalings_ = self.lda_.scalings_[:, :k]
        self.explained_variance_ratio_ = ratio[:k]
        self.mean_ = self.lda_.xbar_ if self.solver == "svd" else np.zeros(X.shape[1])
        self.inverse_scalings_ = linalg.pinv(self.scalings_)
        self.n_components_ = k
        return self

    def _transform(self, X):
        return (X - self.mean_) @ self.scalings_

    def _inverse_transform(self, Z):
        return Z @ self.inverse_scalings_ + self.mean_

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        return tags
