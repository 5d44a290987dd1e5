import numpy as np
import pytest
import scipy.sparse as sp
from numpy.testing import assert_allclose
from sklearn.manifold import SpectralEmbedding

from skcompress.decomposition import LaplacianEigenmaps


@pytest.fixture(scope="module")
def X():
    rng = np.random.default_rng(0)
    centres = rng.normal(scale=3, size=(3, 6))
    return np.concatenate([c + rng.normal(size=(60, 6)) for c in centres])


@pytest.fixture(scope="module")
def le(X):
    return LaplacianEigenmaps(n_components=2, random_state=0).fit(X)


def test_embedding_is_sklearns(X, le):
    reference = SpectralEmbedding(
        n_components=2, affinity="rbf", gamma=le.gamma_, random_state=0
    ).fit(X)
    assert_allclose(le.embedding_, reference.embedding_)


def test_nystrom_reproduces_fit_on_training_points(X, le):
    assert_allclose(le.transform(X), le.embedding_, rtol=1e-6, atol=1e-9)


def test_nystrom_near_training_points(X, le):
    # A point just off a training point also weighs that point itself (the
    # training graph has no self-loops), so it lands close, not exactly on it.
    rng = np.random.default_rng(1)
    moved = le.transform(X + 1e-4 * rng.normal(size=X.shape))
    scale = np.abs(le.embedding_).max()
    assert np.abs(moved - le.embedding_).max() < 0.05 * scale


def test_nearest_neighbors_affinity(X):
    le = LaplacianEigenmaps(
        n_components=2, affinity="nearest_neighbors", n_neighbors=70, random_state=0
    ).fit(X)
    Z = le.transform(X)
    # Not exact (the training graph is symmetrised) but close.
    corr = [abs(np.corrcoef(Z[:, j], le.embedding_[:, j])[0, 1]) for j in range(2)]
    assert min(corr) > 0.95


def test_inverse_transform(X, le):
    assert 0 <= le.reconstruction_error(X) < 1
    assert le.inverse_transform(le.transform(X[:4])).shape == (4, 6)


def test_errors(X):
    with pytest.raises(ValueError, match="n_components"):
        LaplacianEigenmaps(n_components=7).fit(X)
    with pytest.raises(ValueError, match="affinity"):
        LaplacianEigenmaps(affinity="cosine").fit(X)
    with pytest.raises(TypeError, match=r"SVD\(center=False\)"):
        LaplacianEigenmaps().fit(sp.csr_matrix(X))


def test_input_not_modified(X, le):
    original = X.copy()
    le.transform(X)
    le.reconstruction_error(X)
    assert np.array_equal(X, original)
