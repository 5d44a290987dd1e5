"""The same searches on a dask.distributed cluster give the serial results.

One ``LocalCluster`` on the loopback interface serves the whole module: two
worker *processes* of one thread each (``processes=True``). Processes rather
than threads because fits running in threads of one process share torch's
global random generator, so only process workers reproduce the serial run bit
for bit; dask's nanny also sets ``OMP_NUM_THREADS=1`` in them, so torch uses
one thread per worker (checked). Every search runs under a timeout and the
cluster is always closed.
"""

import logging
import threading

import numpy as np
import pytest
from joblib import parallel_config
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline

from skcompress.datasets import load_digits_images
from skcompress.decomposition import PCA

distributed = pytest.importorskip("distributed")
da = pytest.importorskip("dask.array")

from tests.compression.test_parallel import make_search, split_scores  # noqa: E402

TIMEOUT_S = 60


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        protocol="tcp",
        dashboard_address=None,
        silence_logs=logging.ERROR,
    )
    try:
        client = distributed.Client(cluster, timeout="30s")
        try:
            client.wait_for_workers(2, timeout=30)
            yield client
        finally:
            client.close(timeout=10)
    finally:
        cluster.close(timeout=10)


def on_dask(fit, timeout=TIMEOUT_S):
    """Run ``fit()`` with joblib's dask backend; fail (not hang) after ``timeout``.

    joblib's backend setting is per thread, so it is set inside the thread.
    """
    outcome = {}

    def target():
        try:
            with parallel_config(backend="dask"):
                outcome["value"] = fit()
        except BaseException as exc:  # re-raised in the test's thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        pytest.fail(f"the search on the dask cluster took more than {timeout} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def test_compressor_grid_on_dask_matches_serial(client):
    X, y = load_digits_images()
    X, y = X[:300], y[:300]
    serial = make_search(n_jobs=1).fit(X, y)  # torch: 1 thread (conftest)
    with distributed.get_task_stream(client) as tasks:
        parallel = on_dask(lambda: make_search(n_jobs=2).fit(X, y))

    assert len(tasks.data) > 0  # the fits ran on the cluster's workers
    assert_array_equal(
        split_scores(parallel, "accuracy"), split_scores(serial, "accuracy")
    )
    assert_array_equal(
        parallel.cv_results_["mean_test_accuracy"],
        serial.cv_results_["mean_test_accuracy"],
    )
    assert np.all(serial.cv_results_["mean_test_accuracy"] > 0.3)
    assert np.all(split_scores(parallel, "threads") == 1)


def test_reducer_grid_on_dask_matches_serial(client):
    X, y = load_digits(return_X_y=True)
    X, y = X[:600] / 16.0, y[:600]  # pixels in [0, 1]: lbfgs converges

    def search(n_jobs):
        pipe = Pipeline([("pca", PCA()), ("clf", LogisticRegression(max_iter=300))])
        grid = {"pca__n_components": [5, 10, 20]}
        return GridSearchCV(pipe, grid, cv=3, n_jobs=n_jobs).fit(X, y)

    serial = search(1)
    with distributed.get_task_stream(client) as tasks:
        parallel = on_dask(lambda: search(2))
    assert len(tasks.data) > 0
    assert_allclose(
        parallel.cv_results_["mean_test_score"],
        serial.cv_results_["mean_test_score"],
        rtol=0,
        atol=0,
    )
    assert parallel.best_params_ == serial.best_params_
    assert serial.best_score_ > 0.8


def test_dask_array_pca_computes_on_the_cluster(client):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(2000, 20)) * np.geomspace(5, 0.2, 20) + 1.0
    X_dask = da.from_array(X, chunks=(250, 20))
    with distributed.get_task_stream(client) as tasks:
        pca = PCA(n_components=4).fit(X_dask)
        Z = pca.transform(X_dask).compute()
    assert len(tasks.data) > 0
    ref = PCA(n_components=4, solver="full").fit(X)
    signs = np.sign(np.sum(pca.components_ * ref.components_, axis=1))
    assert_allclose(pca.components_ * signs[:, None], ref.components_, atol=1e-10)
    assert_allclose(Z * signs, ref.transform(X), atol=1e-10)
