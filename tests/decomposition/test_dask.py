"""PCA and SVD on dask arrays: equal to the numpy fit, lazy, never loads X whole."""

import subprocess
import sys

import numpy as np
import pytest
from numpy.testing import assert_allclose
from sklearn.decomposition import PCA as SklearnPCA
from sklearn.decomposition import TruncatedSVD

from skcompress.decomposition import LDA, LLE, PCA, SVD, LaplacianEigenmaps

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")
from dask.callbacks import Callback  # noqa: E402

N_SAMPLES, N_FEATURES, CHUNK = 2000, 20, 250


@pytest.fixture(scope="module")
def data():
    """A (2000, 20) table with a decaying spectrum, and a copy to detect writes."""
    rng = np.random.default_rng(0)
    scales = np.geomspace(10, 0.1, N_FEATURES)
    X = rng.normal(size=(N_SAMPLES, N_FEATURES)) * scales
    X = X @ np.linalg.qr(rng.normal(size=(N_FEATURES, N_FEATURES)))[0] + 3.0
    return X, X.copy()


@pytest.fixture
def X_dask(data):
    return da.from_array(data[0], chunks=(CHUNK, N_FEATURES))


def assert_same_subspace(A, B, atol=1e-8):
    """Rows of A and B span the same space: equal projection matrices."""
    assert_allclose(A.T @ A, B.T @ B, atol=atol)


def assert_same_up_to_sign(A, B, atol=1e-8):
    signs = np.sign(np.sum(A * B, axis=1))
    assert_allclose(A * signs[:, None], B, atol=atol)


class TaskRecorder(Callback):
    """Counts the tasks dask runs and the largest array any of them returns."""

    def __init__(self):
        super().__init__()
        self.n_tasks = 0
        self.largest_nbytes = 0

    def _posttask(self, key, result, dsk, state, worker_id):
        self.n_tasks += 1
        self.largest_nbytes = max(self.largest_nbytes, getattr(result, "nbytes", 0))


@pytest.mark.parametrize("solver", ["auto", "full", "randomized"])
def test_pca_matches_numpy(data, X_dask, solver):
    X, X_before = data
    pca = PCA(n_components=5, solver=solver, random_state=0).fit(X_dask)
    ref = PCA(n_components=5, solver="full").fit(X)

    assert pca.fit_solver_ == ("svd_compressed" if solver == "randomized" else "tsqr")
    assert pca.n_components_ == 5
    assert pca.n_features_in_ == N_FEATURES
    assert pca.compression_ratio_ == ref.compression_ratio_ == 4.0
    assert_same_subspace(pca.components_, ref.components_)
    assert_same_up_to_sign(pca.components_, ref.components_)
    assert_allclose(pca.explained_variance_ratio_, ref.explained_variance_ratio_)
    assert_allclose(pca.explained_variance_, ref.explained_variance_)
    assert_allclose(pca.singular_values_, ref.singular_values_)
    assert_allclose(pca.mean_, ref.mean_)
    assert_allclose(pca.noise_variance_, ref.noise_variance_)
    assert_allclose(pca.reconstruction_error(X_dask), ref.reconstruction_error(X))
    # The numpy array behind the dask array was never written to.
    assert_allclose(X, X_before, rtol=0, atol=0)


def test_pca_matches_scikit_learn_and_keeps_fraction(data, X_dask):
    X, _ = data
    pca = PCA(n_components=0.9).fit(X_dask)
    ref = SklearnPCA(n_components=0.9, svd_solver="full").fit(X)
    assert pca.n_components_ == ref.n_components_
    assert_same_subspace(pca.components_, ref.components_)
    assert_allclose(pca.explained_variance_ratio_, ref.explained_variance_ratio_)


def test_pca_transform_is_lazy_and_equals_numpy(data, X_dask):
    X, X_before = data
    pca = PCA(n_components=4, whiten=True).fit(X_dask)
    ref = PCA(n_components=4, whiten=True, solver="full").fit(X)
    signs = np.sign(np.sum(pca.components_ * ref.components_, axis=1))

    with TaskRecorder() as recorder:
        Z = pca.transform(X_dask)
        X_back = pca.inverse_transform(Z)
    assert recorder.n_tasks == 0  # building the graphs computed nothing
    assert isinstance(Z, da.Array) and isinstance(X_back, da.Array)
    assert Z.shape == (N_SAMPLES, 4) and X_back.shape == X.shape
    assert Z.chunks[0] == X_dask.chunks[0]  # one output block per input block

    assert_allclose(Z.compute() * signs, ref.transform(X), atol=1e-10)
    assert_allclose(X_back.compute(), ref.inverse_transform(ref.transform(X)))
    assert_allclose(pca.fit_transform(X_dask).compute(), Z.compute())
    assert_allclose(X, X_before, rtol=0, atol=0)


@pytest.mark.parametrize("solver", ["full", "randomized"])
def test_pca_fit_never_holds_x_whole(X_dask, solver):
    """No task of the fit returns an array anywhere near the size of X."""
    with TaskRecorder() as recorder:
        PCA(n_components=3, solver=solver, random_state=0).fit(X_dask)
    assert recorder.n_tasks > 0
    assert recorder.largest_nbytes <= X_dask.nbytes / 4


@pytest.mark.parametrize("algorithm", ["randomized", "arpack"])
def test_uncentred_svd_matches_truncated_svd(data, X_dask, algorithm):
    X, _ = data
    svd = SVD(n_components=5, algorithm=algorithm, random_state=0).fit(X_dask)
    ref = TruncatedSVD(n_components=5, algorithm="arpack", random_state=0).fit(X)
    assert svd.mean_ is None
    assert_allclose(svd.singular_values_, ref.singular_values_)
    assert_same_subspace(svd.components_, ref.components_)
    assert_same_up_to_sign(svd.components_, ref.components_)
    assert_allclose(svd.explained_variance_, ref.explained_variance_, rtol=1e-6)
    assert_allclose(
        svd.explained_variance_ratio_, ref.explained_variance_ratio_, rtol=1e-6
    )
    assert svd.storage_ratio_ == pytest.approx(
        N_SAMPLES * N_FEATURES / (5 * (N_SAMPLES + N_FEATURES + 1))
    )

    Z = svd.transform(X_dask)
    assert isinstance(Z, da.Array)
    signs = np.sign(np.sum(svd.components_ * ref.components_, axis=1))
    assert_allclose(Z.compute() * signs, ref.transform(X), atol=1e-9)
    numpy_svd = SVD(n_components=5, algorithm="arpack", random_state=0).fit(X)
    assert_allclose(svd.reconstruction_error(X_dask), numpy_svd.reconstruction_error(X))


def test_centred_svd_matches_numpy_and_fraction(data, X_dask):
    X, _ = data
    svd = SVD(n_components=0.95, center=True, random_state=0).fit(X_dask)
    ref = SVD(n_components=0.95, center=True, algorithm="arpack").fit(X)
    assert svd.n_components_ == ref.n_components_
    assert_same_subspace(svd.components_, ref.components_)
    assert_allclose(svd.explained_variance_ratio_, ref.explained_variance_ratio_)
    assert_allclose(svd.mean_, ref.mean_)
    X_back = svd.inverse_transform(svd.transform(X_dask))
    assert isinstance(X_back, da.Array)
    assert_allclose(X_back.compute(), ref.inverse_transform(ref.transform(X)))


def test_float32_and_integer_input(data):
    X, _ = data
    X32 = da.from_array(X.astype(np.float32), chunks=(CHUNK, N_FEATURES))
    pca = PCA(n_components=3).fit(X32)
    assert pca.components_.dtype == np.float32
    assert pca.transform(X32).dtype == np.float32
    ref = PCA(n_components=3, solver="full").fit(X.astype(np.float32))
    assert_same_subspace(pca.components_, ref.components_, atol=1e-4)

    Xint = da.from_array(np.rint(X).astype(np.int64), chunks=(CHUNK, N_FEATURES))
    pca = PCA(n_components=3).fit(Xint)
    ref = PCA(n_components=3, solver="full").fit(np.rint(X))
    assert_same_subspace(pca.components_, ref.components_)


def test_column_chunked_input_is_accepted(data):
    X, _ = data
    X_blocks = da.from_array(X, chunks=(500, 7))  # chunked along both axes
    pca = PCA(n_components=5).fit(X_blocks)
    ref = PCA(n_components=5, solver="full").fit(X)
    assert_same_subspace(pca.components_, ref.components_)
    Z = pca.transform(X_blocks)
    signs = np.sign(np.sum(pca.components_ * ref.components_, axis=1))
    assert_allclose(Z.compute() * signs, ref.transform(X), atol=1e-10)


@pytest.mark.parametrize(
    "reducer", [LDA(), LLE(n_components=2), LaplacianEigenmaps(n_components=2)]
)
def test_other_reducers_refuse_dask_naming_pca_and_svd(X_dask, reducer):
    y = np.arange(N_SAMPLES) % 3
    with pytest.raises(TypeError, match=r"does not accept dask.*PCA and SVD"):
        reducer.fit(X_dask, y)


def test_numpy_fitted_lda_refuses_dask_transform(data, X_dask):
    X, _ = data
    lda = LDA().fit(X, np.arange(N_SAMPLES) % 3)
    with pytest.raises(TypeError, match="LDA does not accept dask arrays"):
        lda.transform(X_dask)


def test_bad_dask_input_errors(data, X_dask):
    X, _ = data
    with pytest.raises(ValueError, match="solver='arpack' does not accept dask"):
        PCA(n_components=2, solver="arpack").fit(X_dask)
    with pytest.raises(ValueError, match="n_components=30 must be <= 20"):
        PCA(n_components=30).fit(X_dask)
    pca = PCA(n_components=2).fit(X_dask)
    with pytest.raises(ValueError, match="X has 19 features, but PCA is expecting 20"):
        pca.transform(X_dask[:, :19])
    with pytest.raises(ValueError, match="expects an array with 2 columns"):
        pca.inverse_transform(X_dask[:, :3])
    unknown = X_dask[X_dask[:, 0] > 0]
    with pytest.raises(ValueError, match="unknown chunk sizes"):
        PCA(n_components=2).fit(unknown)
    bad = X.copy()
    bad[5, 3] = np.nan
    with pytest.raises(ValueError, match="NaN or infinity"):
        PCA(n_components=2).fit(da.from_array(bad, chunks=(CHUNK, N_FEATURES)))
    with pytest.raises(ValueError, match="2-D"):
        PCA(n_components=2).fit(da.zeros((10,), chunks=5))


def test_importing_reducers_imports_neither_dask_nor_torch():
    code = (
        "import sys, skcompress.decomposition; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'dask', 'torch'}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
