"""Reducers: tabular feature compression as scikit-learn transformers.

Importing this package never imports torch.
"""

from ._compare import compare_reducers, plot_comparison
from ._laplacian import LaplacianEigenmaps
from ._lda import LDA
from ._lle import LLE
from ._pca import PCA
from ._svd import SVD

__all__ = [
    "LDA",
    "LLE",
    "PCA",
    "SVD",
    "LaplacianEigenmaps",
    "compare_reducers",
    "plot_comparison",
]
