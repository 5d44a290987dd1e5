"""The demo runner on a tiny base net: files, Pareto marks, honest choice."""

import importlib.util

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import train_test_split

from skcompress.datasets import load_digits_images
from skcompress.demo import (
    OUTPUT_FILES,
    _fit_candidate,
    candidates,
    plot_demo,
    run_demo,
)
from skcompress.io import load
from skcompress.models import make_digits_net
from skcompress.search import pareto_front, smallest_within

TINY = dict(max_epochs=3, module__channels=(4, 8), module__hidden=16)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    lines = []
    results = run_demo(out, quick=True, techniques=["prune weight", "quantize"],
                       base_params=TINY, progress=False, log=lines.append)
    return out, results, "\n".join(lines)


def test_writes_the_four_files(demo):
    out, results, _ = demo
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUT_FILES)
    csv = pd.read_csv(out / "results.csv")
    assert list(csv["technique"]) == ["base", "prune weight", "quantize"]
    np.testing.assert_allclose(csv["size_ratio"], results["size_ratio"])
    assert (out / "tradeoff.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (out / "report.md").read_text()
    assert "prune weight" in report and "model.skc" in report


def test_table_marks_the_pareto_front_and_the_choice(demo):
    _, results, printed = demo
    front = pareto_front(results, x="size_ratio", y="accuracy")["candidate"]
    assert set(np.flatnonzero(results["pareto"])) == set(front)
    chosen = smallest_within(0.005, metric="accuracy", size="size_ratio")(results)
    assert np.flatnonzero(results["chosen"]).tolist() == [chosen]
    # A chosen row is always on the front; its line starts with ">*".
    assert results.loc[chosen, "pareto"]
    marked = [line for line in printed.splitlines() if line.lstrip().startswith(">*")]
    assert len(marked) == 1 and results.loc[chosen, "setting"] in marked[0]
    stars = [line for line in printed.splitlines() if line[:2].strip().endswith("*")]
    assert len(stars) == results["pareto"].sum()


def test_sizes_are_file_bytes_and_saved_model_predicts_the_same(demo):
    out, results, _ = demo
    chosen = int(np.flatnonzero(results["chosen"])[0])
    model = out / "model.skc"
    assert model.stat().st_size == results.loc[chosen, "size_bytes"]
    assert results.loc[1:, "size_ratio"].gt(1).all()  # real compression
    # Refit the chosen candidate independently (same seeds): the saved file
    # predicts exactly like it, and scores the accuracy in the table.
    X, y = load_digits_images()
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, stratify=y,
                                          random_state=0)
    base = make_digits_net(random_state=0, **TINY).fit(Xtr, ytr)
    key = tuple(results.loc[chosen, ["technique", "setting"]])
    if key == ("base", "uncompressed"):
        reference = base
    else:
        candidate = next(c for c in candidates(quick=True) if c.key == key)
        reference = _fit_candidate(candidate, base, Xtr, ytr, 0, {})
    loaded = load(model)
    np.testing.assert_array_equal(loaded.predict(Xte), reference.predict(Xte))
    assert loaded.score(Xte, yte) == results.loc[chosen, "accuracy"]


def test_grid_covers_every_technique():
    names = {c.technique for c in candidates()}
    assert names == {"low-rank", "prune weight", "prune filter", "quantize",
                     "binarize", "prune+quantize", "distill", "variational"}
    assert {c.technique for c in candidates(quick=True)} == names
    chain = next(c for c in candidates() if c.technique == "prune+quantize")
    # The chain reuses the weight-pruning row of the same sparsity.
    assert chain.inner in candidates()


def test_unknown_technique_and_unwritable_out(tmp_path):
    with pytest.raises(ValueError, match="Unknown technique.*'pruning'"):
        run_demo(tmp_path, techniques=["pruning"], progress=False)
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OSError, match="cannot write the report"):
        run_demo(blocker / "sub", techniques=["quantize"], progress=False)


def test_onnx_latency_column(demo):
    _, results, printed = demo
    assert "onnx ratio" in printed
    if importlib.util.find_spec("onnxruntime") is None:
        assert results["onnx_latency_ratio"].isna().all()
        assert "no onnxruntime latency" in printed
    else:
        assert results["onnx_latency_ms"].gt(0).all()
        assert results.loc[0, "onnx_latency_ratio"] == 1.0
        # the base is timed again next to each candidate: a ratio, not noise
        assert results["onnx_latency_ratio"].between(0.05, 20).all()


def test_tradeoff_plot_labels_every_point_inside_the_axes(demo):
    _, results, _ = demo
    # a crowded frame: two points on the same spot, one at each edge
    frame = pd.concat([results, results.iloc[[1]]], ignore_index=True)
    frame["chosen"] = np.arange(len(frame)) == 1
    fig = plot_demo(frame, tolerance=0.005)
    [ax] = fig.axes
    assert ax.get_title().startswith("skcompress demo: accuracy vs file size")
    fig.canvas.draw()
    box = ax.get_window_extent()
    numbered = []
    for text in ax.texts:
        numbered += [int(n) for n in text.get_text().split(", ")]
        extent = text.get_window_extent()
        assert box.x0 <= extent.x0 and extent.x1 <= box.x1
        assert box.y0 <= extent.y0 and extent.y1 <= box.y1
    assert sorted(numbered) == list(range(len(frame)))
    [legend] = fig.legends
    entries = [t.get_text() for t in legend.get_texts()]
    assert entries[0] == " 0  base  uncompressed"
    assert len(entries) == len(frame) + 3  # + front, saved model, tolerance band


def test_base_training_shows_its_epochs(capsys):
    from skcompress.demo import _epoch_bar

    X, y = load_digits_images()
    net = make_digits_net(random_state=0, **{**TINY, "max_epochs": 2})
    callbacks = net.callbacks
    with _epoch_bar(net, enabled=True):
        net.fit(X[:200], y[:200])
    err = capsys.readouterr().err
    assert "training the base CNN" in err and "2/2" in err and "loss" in err
    assert net.callbacks is callbacks  # the trained net keeps its own callbacks
    assert "epoch_bar" not in dict(net.callbacks_)
