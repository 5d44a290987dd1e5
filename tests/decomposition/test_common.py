import subprocess
import sys

from sklearn.utils.estimator_checks import parametrize_with_checks

from skcompress.decomposition import LDA, LLE, PCA, SVD, LaplacianEigenmaps


def _expected_failed_checks(estimator):
    return {}


@parametrize_with_checks(
    [
        PCA(n_components=2, random_state=0),
        SVD(n_components=2, random_state=0),
        SVD(n_components=2, center=True, random_state=0),
        LDA(n_components=1),
        LLE(n_components=2, n_neighbors=5, random_state=0),
        LaplacianEigenmaps(n_components=2, random_state=0),
    ],
    expected_failed_checks=_expected_failed_checks,
)
def test_sklearn_compatible(estimator, check):
    check(estimator)


def test_import_does_not_import_torch():
    code = (
        "import skcompress.decomposition, skcompress.cli, sys; "
        "assert 'torch' not in sys.modules, 'torch imported'; "
        "assert 'skorch' not in sys.modules, 'skorch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
