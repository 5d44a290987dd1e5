import numpy as np
import pytest
import scipy.sparse as sp
from numpy.testing import assert_allclose
from sklearn.datasets import load_wine
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

from skcompress.decomposition import LDA


@pytest.fixture(scope="module")
def data():
    return load_wine(return_X_y=True)


@pytest.mark.parametrize("solver", ["svd", "eigen"])
def test_matches_sklearn(data, solver):
    X, y = data
    ours = LDA(n_components=2, solver=solver).fit(X, y)
    reference = LinearDiscriminantAnalysis(n_components=2, solver=solver).fit(X, y)
    assert_allclose(ours.transform(X), reference.transform(X), atol=1e-8)
    assert ours.compression_ratio_ == 13 / 2


def test_inverse_is_the_pseudo_inverse(data):
    X, y = data
    lda = LDA(n_components=2).fit(X, y)
    Z = lda.transform(X)
    X_back = lda.inverse_transform(Z)
    # Projecting the reconstruction gives the same codes back, and the
    # reconstruction is the least-norm preimage (orthogonal to ker W^T).
    assert_allclose(lda.transform(X_back), Z, atol=1e-8)
    assert_allclose(lda.inverse_scalings_, np.linalg.pinv(lda.scalings_))
    assert 0 < lda.reconstruction_error(X) < 1


def test_fraction(data):
    X, y = data
    lda = LDA(n_components=0.5).fit(X, y)
    assert lda.n_components_ == 1  # the first axis carries > 50% on wine
    assert lda.explained_variance_ratio_[0] >= 0.5


def test_errors(data):
    X, y = data
    with pytest.raises(
        ValueError, match=r"n_components=3 is too large .*n_classes - 1"
    ):
        LDA(n_components=3).fit(X, y)
    with pytest.raises(ValueError, match="requires y"):
        LDA().fit(X)
    with pytest.raises(ValueError, match="at least 2 classes"):
        LDA().fit(X, np.zeros(len(X)))
    with pytest.raises(TypeError, match=r"SVD\(center=False\)"):
        LDA().fit(sp.csr_matrix(X), y)
    with pytest.raises(ValueError, match="n_components"):
        LDA(n_components=0).fit(X, y)


def test_input_not_modified(data):
    X, y = data
    X0, y0 = X.copy(), y.copy()
    LDA(n_components=2).fit(X, y).transform(X)
    assert np.array_equal(X, X0) and np.array_equal(y, y0)
