"""Smoke test of examples/*.py: each runs as a script (quick mode) and its
output has the property it claims."""

import re
import runpy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from skcompress.io import load
from skcompress.search import smallest_within

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture
def run_example(tmp_path, monkeypatch, capsys):
    """Run ``examples/<name>.py`` as ``__main__`` in a temporary folder."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SKCOMPRESS_EXAMPLE_QUICK", "1")

    def run(name):
        namespace = runpy.run_path(str(EXAMPLES / f"{name}.py"), run_name="__main__")
        return namespace, capsys.readouterr().out

    return run


def test_every_example_is_tested():
    tested = {"compare_reducers", "grid_search_pruning", "deep_compression",
              "distillation"}
    assert {p.stem for p in EXAMPLES.glob("*.py")} == tested
    for path in EXAMPLES.glob("*.py"):
        assert "SKCOMPRESS_EXAMPLE_QUICK" in path.read_text().split('"""')[1]


def test_compare_reducers(run_example, tmp_path):
    _, out = run_example("compare_reducers")
    table = pd.read_csv(tmp_path / "reducers.csv")
    assert sorted(set(table["method"])) == ["PCA", "SVD"]
    np.testing.assert_allclose(table["compression_ratio"], 30 / table["n_components"])
    for _, group in table.groupby("method"):
        assert group["reconstruction_error"].is_monotonic_decreasing
    assert "wrote reducers.csv" in out


def test_grid_search_pruning(run_example, tmp_path):
    ns, out = run_example("grid_search_pruning")
    search = ns["search"]
    rule = smallest_within(0.01, metric="accuracy", size="compression_ratio")
    assert search.best_index_ == rule(search.cv_results_)
    assert f"chosen: sparsity={search.best_params_['prune__sparsity']}" in out
    # memory=: one base net per fold plus the refit, not one per candidate.
    assert ns["n_bases"] == 3 + 1
    assert len(pd.read_csv(tmp_path / "cv_results.csv")) == 4


def test_deep_compression(run_example, tmp_path):
    ns, out = run_example("deep_compression")
    path = tmp_path / "digits_pruned_4bit.skc"
    printed = int(re.search(r"(\d+) bytes on disk", out).group(1))
    assert printed == path.stat().st_size == ns["chain"].size_bytes_
    assert ns["sparsity"] >= 0.89
    chain = ns["chain"]
    assert chain.original_size_bytes_ / printed == pytest.approx(
        chain.compression_ratio_
    )
    np.testing.assert_array_equal(load(path).predict(ns["Xte"]),
                                  chain.predict(ns["Xte"]))


def test_distillation(run_example, tmp_path):
    ns, out = run_example("distillation")
    path = tmp_path / "digits_student.skc"
    assert f"wrote digits_student.skc: {path.stat().st_size} bytes" in out
    assert 10 * ns["student_params"] <= ns["teacher_params"]
    np.testing.assert_array_equal(load(path).predict(ns["Xte"]),
                                  ns["distiller"].predict(ns["Xte"]))
