import numpy as np
import pytest
import scipy.sparse as sp
from numpy.testing import assert_allclose
from sklearn.manifold import LocallyLinearEmbedding

from skcompress.decomposition import LLE, PCA


@pytest.fixture(scope="module")
def X():
    # A noisy 2-d sheet rolled into 5 dimensions.
    rng = np.random.default_rng(0)
    t = rng.uniform(0, 3, size=(300, 2))
    return np.c_[
        np.cos(t[:, 0]), np.sin(t[:, 0]), t[:, 1], t[:, 0] * t[:, 1], t[:, 1] ** 2
    ] + 0.01 * rng.normal(size=(300, 5))


@pytest.fixture(scope="module")
def lle(X):
    return LLE(n_components=2, n_neighbors=12, random_state=0).fit(X)


def test_embedding_is_sklearns(X, lle):
    reference = LocallyLinearEmbedding(
        n_components=2, n_neighbors=12, random_state=0
    ).fit(X)
    assert_allclose(np.abs(lle.embedding_), np.abs(reference.embedding_), atol=1e-8)


def test_out_of_sample_on_training_points(X, lle):
    # Barycentric out-of-sample mapping reproduces the fit up to the
    # regularisation of the weights.
    scale = np.abs(lle.embedding_).max()
    assert np.abs(lle.transform(X) - lle.embedding_).max() < 0.05 * scale


def test_inverse_reconstructs_comparably_to_pca(X, lle):
    error = lle.reconstruction_error(X)
    assert 0 <= error < 0.1
    assert lle.inverse_transform(lle.transform(X[:5])).shape == (5, 5)
    assert PCA(n_components=2).fit(X).reconstruction_error(X) > 0


def test_errors(X):
    with pytest.raises(ValueError, match="n_neighbors > n_components"):
        LLE(n_components=3, n_neighbors=3).fit(X)
    with pytest.raises(ValueError, match="n_components"):
        LLE(n_components=6).fit(X)
    with pytest.raises(TypeError, match=r"SVD\(center=False\)"):
        LLE().fit(sp.csr_matrix(X))


def test_input_not_modified(X, lle):
    original = X.copy()
    lle.transform(X)
    LLE(n_components=2).fit(X)
    assert np.array_equal(X, original)
