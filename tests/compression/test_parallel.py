"""Parallel grid search over compressors: same scores, no thread oversubscription.

joblib's loky backend sets ``OMP_NUM_THREADS = cpu_count() // n_jobs`` in its
worker processes before they import torch, so torch already respects the
budget there. Worker threads (joblib's "threading" backend, in-process dask
workers) get no such variable and would each run torch with all the cores:
``BaseCompressor.fit`` limits them (``skcompress._threads.worker_threads``).
A skorch callback records ``torch.get_num_threads()`` at every epoch of every
fit, and a scorer brings the largest value back through ``cv_results_``.
"""

import os
import threading

import numpy as np
import pytest
import torch
from joblib import Parallel, cpu_count, delayed, parallel_config
from numpy.testing import assert_array_equal
from sklearn.model_selection import GridSearchCV
from skorch.callbacks import Callback

from skcompress import _threads
from skcompress.compression import Pruner
from skcompress.models import SeedTorch, make_digits_net

SPARSITIES = [0.3, 0.6, 0.9]


class RecordThreads(Callback):
    """Stores torch's intra-op thread count in the history, every epoch."""

    def on_epoch_end(self, net, **kwargs):
        net.history.record("torch_threads", torch.get_num_threads())


def max_threads_scorer(estimator, X, y):
    """Most torch threads any epoch of the fit used (base training included)."""
    return float(max(estimator.estimator_.history[:, "torch_threads"]))


SCORING = {"accuracy": "accuracy", "threads": max_threads_scorer}


def make_search(n_jobs):
    # lr and batch size chosen so that 2 epochs on 150 samples learn well above
    # chance (10 classes): equal scores then mean equal trained nets.
    net = make_digits_net(
        max_epochs=2,
        module__channels=(4, 8),
        module__hidden=16,
        lr=2e-2,
        batch_size=16,
        callbacks=[("seed", SeedTorch(0)), ("threads", RecordThreads())],
    )
    return GridSearchCV(
        Pruner(net, finetune_epochs=1, finetune_lr=4e-2, random_state=0),
        {"sparsity": SPARSITIES},
        cv=2,
        scoring=SCORING,
        refit=False,
        n_jobs=n_jobs,
    )


def split_scores(search, name):
    return np.array(
        [search.cv_results_[f"split{i}_test_{name}"] for i in range(search.n_splits_)]
    )


def loky_budget(n_jobs):
    """Threads joblib's loky gives each of ``n_jobs`` worker processes."""
    return int(os.environ.get("OMP_NUM_THREADS", max(cpu_count() // n_jobs, 1)))


@pytest.fixture
def torch_threads():
    """Set the main thread's torch threads for a test, then put them back."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


def test_budget_is_none_outside_workers_and_one_in_worker_threads(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert _threads.worker_thread_budget() is None
    budgets = Parallel(n_jobs=2, backend="threading")(
        delayed(_threads.worker_thread_budget)() for _ in range(2)
    )
    assert budgets == [1, 1]
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # an explicit budget is honoured
    budgets = Parallel(n_jobs=2, backend="threading")(
        delayed(_threads.worker_thread_budget)() for _ in range(2)
    )
    assert budgets == [3, 3]


def test_worker_threads_limits_then_restores(monkeypatch, torch_threads):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    torch_threads(2)
    barrier = threading.Barrier(2, timeout=30)

    def probe():
        before = torch.get_num_threads()
        with _threads.worker_threads():
            during = torch.get_num_threads()
            barrier.wait()  # both fits hold the limit at the same time
        return before, during

    results = Parallel(n_jobs=2, backend="threading")(
        delayed(probe)() for _ in range(2)
    )
    assert [during for _, during in results] == [1, 1]
    assert _threads._users == 0
    assert torch.get_num_threads() == 2  # the caller's thread was never touched
    # Threads started after the fits get the caller's setting back.
    fresh = Parallel(n_jobs=2, backend="threading")(
        delayed(torch.get_num_threads)() for _ in range(2)
    )
    assert fresh == [2, 2]


def test_loky_search_matches_serial_and_uses_its_share(data, torch_threads):
    X, y = data
    budget = loky_budget(2)
    # Same thread count in the serial run as in each worker, so that the two
    # runs do the same floating-point operations in the same order.
    torch_threads(budget)
    serial = make_search(n_jobs=1).fit(X, y)
    with parallel_config(backend="loky"):
        parallel = make_search(n_jobs=2).fit(X, y)

    assert_array_equal(
        split_scores(parallel, "accuracy"), split_scores(serial, "accuracy")
    )
    assert_array_equal(
        parallel.cv_results_["mean_test_accuracy"],
        serial.cv_results_["mean_test_accuracy"],
    )
    assert [p["sparsity"] for p in parallel.cv_results_["params"]] == SPARSITIES
    assert np.all(serial.cv_results_["mean_test_accuracy"] > 0.3)
    assert np.all(split_scores(parallel, "threads") == budget)


def test_threading_search_limits_torch_threads(data, torch_threads, monkeypatch):
    X, y = data
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    torch_threads(2)
    # The problem: joblib gives worker threads no budget, torch would use 2 each.
    plain = Parallel(n_jobs=2, backend="threading")(
        delayed(torch.get_num_threads)() for _ in range(2)
    )
    assert plain == [2, 2]

    with parallel_config(backend="threading"):
        search = make_search(n_jobs=2).fit(X, y)
    # Every epoch of every fit (base training and fine-tuning) ran on 1 thread.
    assert np.all(split_scores(search, "threads") == 1)
    assert torch.get_num_threads() == 2
    assert _threads._users == 0
    # Scores are not compared here: fits running in threads of one process
    # share torch's global random generator, so their batch order depends on
    # scheduling (so even their level is not stable enough to assert on).
    # Process-based workers (loky, dask) reproduce the serial run.
    scores = search.cv_results_["mean_test_accuracy"]
    assert np.all((scores >= 0) & (scores <= 1))
