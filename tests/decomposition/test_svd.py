import numpy as np
import pytest
import scipy.sparse as sp
from numpy.testing import assert_allclose
from sklearn.decomposition import TruncatedSVD

from skcompress.decomposition import PCA, SVD


@pytest.fixture(scope="module")
def X_sparse():
    rng = np.random.default_rng(0)
    X = sp.random(300, 80, density=0.1, format="csr", random_state=0)
    X.data = rng.exponential(size=X.nnz) * 10
    return X


@pytest.fixture(scope="module")
def X_dense():
    rng = np.random.default_rng(1)
    scales = np.r_[9.0, 7.0, 5.0, 3.0, np.full(26, 0.2)]
    return rng.normal(size=(400, 30)) * scales + np.arange(30)


def _projector(components):
    return components.T @ components


@pytest.mark.parametrize("algorithm", ["randomized", "arpack"])
def test_uncentred_equals_truncated_svd_on_sparse(X_sparse, algorithm):
    ours = SVD(n_components=5, algorithm=algorithm, random_state=0).fit(X_sparse)
    reference = TruncatedSVD(n_components=5, algorithm=algorithm, random_state=0)
    Z_ref = reference.fit_transform(X_sparse)
    assert_allclose(ours.components_, reference.components_, atol=1e-10)
    assert_allclose(ours.singular_values_, reference.singular_values_, rtol=1e-10)
    assert_allclose(ours.transform(X_sparse), Z_ref, atol=1e-8)
    assert sp.issparse(X_sparse)  # worked on the sparse matrix as given


@pytest.mark.parametrize("algorithm", ["randomized", "arpack"])
def test_centred_spans_the_pca_subspace(X_dense, algorithm):
    pca = PCA(n_components=4, solver="full").fit(X_dense)
    svd = SVD(n_components=4, center=True, algorithm=algorithm, random_state=0)
    svd.fit(X_dense)
    assert_allclose(_projector(svd.components_), _projector(pca.components_), atol=1e-6)
    # ... so it compresses exactly like PCA.
    assert_allclose(
        svd.reconstruction_error(X_dense), pca.reconstruction_error(X_dense), rtol=1e-8
    )
    assert_allclose(svd.explained_variance_ratio_, pca.explained_variance_ratio_)


def test_centred_sparse_equals_pca_on_dense_copy(X_sparse):
    dense = X_sparse.toarray()
    pca = PCA(n_components=3, solver="full").fit(dense)
    exact = SVD(n_components=3, center=True, algorithm="arpack", random_state=0)
    exact.fit(X_sparse)
    assert_allclose(
        _projector(exact.components_), _projector(pca.components_), atol=1e-8
    )
    fast = SVD(n_components=3, center=True, random_state=0).fit(X_sparse)
    assert fast.reconstruction_error(X_sparse) <= 1.005 * pca.reconstruction_error(
        dense
    )


def test_storage_ratio(X_sparse):
    svd = SVD(n_components=7, random_state=0).fit(X_sparse)
    n, d = X_sparse.shape
    assert svd.storage_ratio_ == pytest.approx(n * d / (7 * (n + d + 1)))
    assert svd.compression_ratio_ == pytest.approx(d / 7)


def test_fraction_of_energy(X_dense):
    svd = SVD(n_components=0.95, center=True, random_state=0).fit(X_dense)
    pca = PCA(n_components=0.95, solver="full").fit(X_dense)
    assert svd.n_components_ == pca.n_components_


def test_sparse_reconstruction_error_matches_dense(X_sparse):
    svd = SVD(n_components=5, random_state=0).fit(X_sparse)
    dense = X_sparse.toarray()
    expected = np.linalg.norm(
        dense - svd.inverse_transform(svd.transform(dense))
    ) / np.linalg.norm(dense)
    assert svd.reconstruction_error(X_sparse) == pytest.approx(expected, rel=1e-10)


def test_input_not_modified(X_sparse, X_dense):
    for X in (X_sparse, X_dense):
        original = X.copy()
        svd = SVD(n_components=3, center=True, random_state=0).fit(X)
        svd.transform(X)
        diff = original - X
        assert abs(diff).max() == 0


@pytest.mark.parametrize(
    "params", [{"n_components": 0}, {"n_components": 31}, {"n_components": 2.0}]
)
def test_bad_n_components(X_dense, params):
    with pytest.raises(ValueError, match="n_components"):
        SVD(**params).fit(X_dense)


def test_unknown_algorithm(X_dense):
    with pytest.raises(ValueError, match="algorithm"):
        SVD(algorithm="lapack").fit(X_dense)
