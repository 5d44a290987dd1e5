import argparse
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from skcompress.cli import main


def test_compare_builtin_writes_table_and_plot(tmp_path, capsys):
    out = tmp_path / "report"
    status = main(
        [
            "compare",
            "--dataset",
            "wine",
            "--methods",
            "PCA,LDA",
            "--n-components",
            "2,3",
            "--cv",
            "2",
            "--out",
            str(out),
        ]
    )
    assert status == 0
    table = pd.read_csv(out / "comparison.csv")
    assert list(zip(table["method"], table["n_components"])) == [
        ("PCA", 2),
        ("PCA", 3),
        ("LDA", 2),
        ("LDA", 3),
    ]
    assert (out / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    captured = capsys.readouterr()
    assert "reconstruction_error" in captured.out
    assert "compare" in captured.err  # progress on stderr


@pytest.fixture
def csv_path(tmp_path):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(40, 4)), columns=list("abcd"))
    frame["label"] = np.arange(40) % 2
    path = tmp_path / "data.csv"
    frame.to_csv(path, index=False)
    return path


def test_compare_csv(csv_path, tmp_path, capsys):
    status = main(
        ["compare", "--csv", str(csv_path), "--target", "label", "--methods", "PCA"]
        + ["--n-components", "2", "--cv", "2", "--out", str(tmp_path / "o")]
    )
    assert status == 0
    assert (tmp_path / "o" / "comparison.csv").exists()


def _error_line(capsys):
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1
    return err


def test_missing_csv(tmp_path, capsys):
    status = main(["compare", "--csv", str(tmp_path / "nope.csv"), "--out", "x"])
    assert status == 1
    assert "CSV file not found" in _error_line(capsys)


def test_missing_target_column(csv_path, tmp_path, capsys):
    status = main(["compare", "--csv", str(csv_path), "--target", "species"])
    assert status == 1
    err = _error_line(capsys)
    assert "'species'" in err and "label" in err


def test_non_numeric_columns_are_named(tmp_path, capsys):
    path = tmp_path / "mixed.csv"
    pd.DataFrame(
        {"x": [1.0, 2.0, 3.0], "colour": ["r", "g", "b"], "y": [0, 1, 0]}
    ).to_csv(path, index=False)
    status = main(["compare", "--csv", str(path), "--target", "y"])
    assert status == 1
    assert "non-numeric feature column(s) in mixed.csv: colour" in _error_line(capsys)


@pytest.mark.parametrize(
    "argv",
    [
        ["compare", "--dataset", "iris"],
        ["compare", "--methods", "TSNE"],
        ["compare", "--n-components", "0"],
    ],
)
def test_usage_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_console_entry_point_reports_without_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "skcompress", "compare", "--csv", "missing.csv"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "skcompress compare: error: CSV file not found: missing.csv"
    )


# ------------------------------------------------------------ demo, compress
TINY_NET = dict(max_epochs=2, module__channels=(4, 8), module__hidden=16)


@pytest.fixture(scope="module")
def saved_net(tmp_path_factory):
    """A tiny fitted digits net saved with skcompress.save, and 300 samples."""
    from skcompress.datasets import load_digits_images
    from skcompress.io import save
    from skcompress.models import make_digits_net

    folder = tmp_path_factory.mktemp("compress")
    X, y = load_digits_images()
    X, y = X[:300], y[:300]
    net = make_digits_net(random_state=0, **TINY_NET).fit(X, y)
    save(net, folder / "net.skc")
    np.savez(folder / "data.npz", X=X, y=y)
    return folder


def test_help_documents_every_subcommand(capsys):
    from skcompress.cli import build_parser

    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    subparsers = next(
        a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)
    )
    assert set(subparsers.choices) == {"demo", "compress", "compare"}
    helps = {c.dest: c.help for c in subparsers._choices_actions}
    for name, sub in subparsers.choices.items():
        assert helps[name] and helps[name] in " ".join(text.split())
        assert len(sub.description) > 100


def test_compress_round_trip(saved_net, tmp_path, capsys):
    from sklearn.model_selection import train_test_split

    from skcompress.compression import Pruner
    from skcompress.io import load

    model, data = saved_net / "net.skc", saved_net / "data.npz"
    before = model.read_bytes()
    out = tmp_path / "pruned.skc"
    status = main(
        ["compress", "--model", str(model), "--technique", "pruner", "--set",
         "sparsity=0.8", "--set", "finetune_epochs=1", "--set", "finetune_lr=1e-3",
         "--npz", str(data), "--output", str(out)]
    )
    assert status == 0
    printed = capsys.readouterr().out
    assert model.read_bytes() == before  # the user's file is untouched
    size = out.stat().st_size
    assert f"file size : {len(before)} -> {size} bytes" in printed
    assert f"({len(before) / size:.2f}x smaller" in printed

    # The same compressor built by hand on the same split gives the same net.
    with np.load(data) as arrays:
        X, y = arrays["X"], arrays["y"]
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, stratify=y,
                                          random_state=0)
    reference = Pruner(load(model), sparsity=0.8, finetune_epochs=1,
                       finetune_lr=1e-3, prefit=True, random_state=0).fit(Xtr, ytr)
    assert reference.size_bytes_ == size
    compressed = load(out)
    np.testing.assert_array_equal(compressed.predict(Xte), reference.predict(Xte))
    assert f"-> {compressed.score(Xte, yte):.4f} on {len(Xte)} held-out" in printed
    weights = [compressed.module_.conv1.weight, compressed.module_.conv2.weight,
               compressed.module_.fc1.weight]
    zeros = sum(int((w == 0).sum()) for w in weights)
    assert zeros / sum(w.numel() for w in weights) == pytest.approx(0.8, abs=0.01)


@pytest.mark.parametrize(
    "settings, message",
    [
        (["--set", "sparsity=2"], "'sparsity' parameter of Pruner"),
        (["--set", "nonsense=1"], "unknown setting(s) nonsense for Pruner"),
        (["--set", "sparsity"], "expected key=value"),
        (["--technique", "pruning"], "invalid choice: 'pruning'"),
    ],
)
def test_compress_bad_settings_exit_2(settings, message, saved_net, tmp_path, capsys):
    argv = ["compress", "--model", str(saved_net / "net.skc"), "--output",
            str(tmp_path / "o.skc")]
    if "--technique" not in settings:
        argv += ["--technique", "pruner"]
    with pytest.raises(SystemExit) as exc:
        main(argv + settings)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "usage: skcompress compress" in err and message in err
    assert "Traceback" not in err
    assert not (tmp_path / "o.skc").exists()


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "model file not found"),
        (b"not a model at all", "not a skcompress file (bad magic number)"),
        (b"", "not a skcompress file"),
    ],
)
def test_compress_unreadable_model_exits_1(content, message, tmp_path, capsys):
    model = tmp_path / "model.skc"
    if content is not None:
        model.write_bytes(content)
    status = main(["compress", "--model", str(model), "--technique", "quantizer",
                   "--output", str(tmp_path / "o.skc")])
    assert status == 1
    assert message in _error_line(capsys)


def test_compress_unwritable_output_exits_1(saved_net, tmp_path, capsys):
    status = main(["compress", "--model", str(saved_net / "net.skc"),
                   "--technique", "quantizer", "--output",
                   str(tmp_path / "missing" / "o.skc")])
    assert status == 1
    assert "--output folder" in _error_line(capsys)


def test_compress_npz_without_y_exits_1(saved_net, tmp_path, capsys):
    path = tmp_path / "bad.npz"
    np.savez(path, X=np.zeros((10, 1, 8, 8), np.float32))
    status = main(["compress", "--model", str(saved_net / "net.skc"),
                   "--technique", "quantizer", "--npz", str(path), "--output",
                   str(tmp_path / "o.skc")])
    assert status == 1
    assert "bad.npz has no array(s) y" in _error_line(capsys)


@pytest.fixture
def fake_run_demo(monkeypatch):
    """Record run_demo's arguments instead of training (the real run is
    tested in tests/test_demo.py)."""
    calls = []
    monkeypatch.setattr("skcompress.demo.run_demo",
                        lambda out, **kwargs: calls.append((out, kwargs)))
    return calls


def test_demo_passes_its_options(fake_run_demo, tmp_path, capsys):
    status = main(["demo", "--quick", "--techniques", "prune-weight,quantize",
                   "--tolerance", "1", "--no-progress", "--out", str(tmp_path / "r")])
    assert status == 0
    [(out, kwargs)] = fake_run_demo
    assert out == tmp_path / "r" and out.is_dir()
    assert kwargs["quick"] and not kwargs["progress"]
    assert kwargs["techniques"] == ["prune weight", "quantize"]
    assert kwargs["tolerance"] == pytest.approx(0.01)
    assert kwargs["n_threads"] == 1


def test_demo_unwritable_out_fails_before_training(fake_run_demo, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    status = main(["demo", "--out", str(blocker / "report")])
    assert status == 1
    assert "cannot write the report into" in _error_line(capsys)
    assert fake_run_demo == []


@pytest.mark.parametrize(
    "argv", [["demo", "--techniques", "pruning"], ["demo", "--tolerance", "-1"]]
)
def test_demo_usage_errors_exit_2(argv, fake_run_demo, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "usage: skcompress demo" in err and "Traceback" not in err
    assert fake_run_demo == []


@pytest.mark.parametrize(
    "text, value",
    [("sparsity=0.9", 0.9), ("bits=4", 4), ("scale=False", False),
     ("rank=none", None), ("method=tucker", "tucker"), ("finetune_lr=1e-3", 1e-3)],
)
def test_set_values_are_typed(text, value):
    from skcompress.cli import _setting

    key, parsed = _setting(text)
    assert key == text.partition("=")[0]
    assert parsed == value and type(parsed) is type(value)


# ------------------------------------------------- the exit-code contract
def _usage_error(argv, capsys):
    """Run ``argv``; it must exit 2 with usage and a one-line error."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "usage: skcompress" in err and "Traceback" not in err
    [line] = [x for x in err.splitlines() if "error:" in x]
    return line


WINE = ["compare", "--dataset", "wine", "--methods", "PCA"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (WINE + ["--cv", "0"], "argument --cv: expected an integer >= 2, got '0'"),
        (WINE + ["--cv", "1"], "argument --cv: expected an integer >= 2, got '1'"),
        (WINE + ["--cv", "1000"], "--cv 1000 is more folds than the 178 samples"),
        (WINE + ["--n-components", "1000"],
         "--n-components: every k (1000) is above min(training samples, "
         "features) = 13"),
        (["compare", "--dataset", "wine", "--methods", "LDA", "--n-components",
          "5", "--cv", "2"], "no (method, k) could run on wine: skipped: "
         "n_components=5 > n_classes - 1 = 2"),
        (["compare", "--target", "y"], "--target needs --csv"),
    ],
)
def test_compare_usage_errors_exit_2_before_any_work(argv, message, tmp_path,
                                                     monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert message in _usage_error(argv, capsys)
    assert not (tmp_path / "skcompress-report" / "comparison.csv").exists()


@pytest.mark.parametrize("where", ["file", "under-a-file"])
def test_compare_unwritable_out_exits_1_before_computing(where, tmp_path,
                                                         monkeypatch, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    out = blocker if where == "file" else blocker / "report"

    def must_not_run(*args, **kwargs):
        raise AssertionError("compare_reducers ran before --out was checked")

    monkeypatch.setattr("skcompress.decomposition.compare_reducers", must_not_run)
    status = main(WINE + ["--out", str(out)])
    assert status == 1
    err = _error_line(capsys)
    assert f"cannot write the report into {str(out)!r}" in err
    if where == "file":
        assert "it is a file, not a folder" in err


def test_compare_scales_by_default(tmp_path, capsys):
    argv = WINE + ["--n-components", "2", "--cv", "3", "--out"]
    assert main(argv + [str(tmp_path / "s")]) == 0
    assert "standardized" in capsys.readouterr().err
    assert main(argv + [str(tmp_path / "u"), "--no-scale"]) == 0
    assert "unscaled" in capsys.readouterr().err
    scaled = pd.read_csv(tmp_path / "s" / "comparison.csv").iloc[0]
    raw = pd.read_csv(tmp_path / "u" / "comparison.csv").iloc[0]
    # Unscaled, proline (values ~1000) is 99.98% of the variance and 2
    # components tell the cultivars apart poorly; standardized, they do well.
    assert raw["explained_variance"] > 0.999 and raw["score"] < 0.8
    assert scaled["explained_variance"] < 0.7 and scaled["score"] > 0.9


def _compress_argv(saved_net, tmp_path, *extra):
    return ["compress", "--model", str(saved_net / "net.skc"), "--npz",
            str(saved_net / "data.npz"), "--output", str(tmp_path / "o.skc"),
            *extra]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--technique", "lowrank", "--set", "rank=100000"],
         "--set: rank=100000 for layer 'conv1' exceeds its full rank"),
        (["--technique", "quantizer", "--set", "bits=1", "--set", "method=uniform"],
         "--set: bits=1 with method='uniform'"),
        (["--technique", "pruner", "--set", "criterion=bn_scale"],
         "--set: criterion='bn_scale' scores whole channels"),
        (["--technique", "pruner", "--random-state", "-1"],
         "argument --random-state: expected an integer in [0, 4294967295], "
         "got '-1'"),
    ],
)
def test_compress_values_refused_at_fit_exit_2(extra, message, saved_net, tmp_path,
                                               capsys):
    assert message in _usage_error(_compress_argv(saved_net, tmp_path, *extra),
                                   capsys)
    assert not (tmp_path / "o.skc").exists()


def test_demo_negative_seed_exits_2(fake_run_demo, capsys):
    line = _usage_error(["demo", "--random-state", "-1"], capsys)
    assert "argument --random-state: expected an integer in [0, " in line
    assert fake_run_demo == []


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("garbage.npz", b"garbage, not numpy", "is not a .npz file (no zip header)"),
        ("zip.npz", b"PK\x03\x04" + bytes(60), "cannot read"),
        ("X.npy", None, "holds one array (a .npy file), not X and y"),
    ],
)
def test_compress_unreadable_npz_exits_1(name, content, message, saved_net,
                                         tmp_path, capsys):
    path = tmp_path / name
    if content is None:
        np.save(path, np.zeros((10, 1, 8, 8), np.float32))
    else:
        path.write_bytes(content)
    status = main(["compress", "--model", str(saved_net / "net.skc"),
                   "--technique", "quantizer", "--npz", str(path), "--output",
                   str(tmp_path / "o.skc")])
    assert status == 1
    assert message in _error_line(capsys)
    assert not (tmp_path / "o.skc").exists()


def test_compress_warns_when_the_output_is_not_smaller(saved_net, tmp_path, capsys):
    first, second = tmp_path / "q.skc", tmp_path / "qq.skc"
    argv = ["--technique", "binarizer", "--set", "finetune_epochs=0",
            "--npz", str(saved_net / "data.npz")]
    assert main(["compress", "--model", str(saved_net / "net.skc"), "--output",
                 str(first), *argv]) == 0
    assert "warning" not in capsys.readouterr().err
    assert main(["compress", "--model", str(first), "--output", str(second),
                 *argv]) == 0
    err = capsys.readouterr().err
    # binarizing binary weights again saves nothing: the file does not shrink
    assert second.stat().st_size >= first.stat().st_size
    assert "warning:" in err and "looks already compressed" in err


def test_compress_onnx(saved_net, tmp_path, capsys):
    ort = pytest.importorskip("onnxruntime")
    onnx_path = tmp_path / "q.onnx"
    status = main(_compress_argv(saved_net, tmp_path, "--technique", "quantizer",
                                 "--set", "method=uniform", "--set", "bits=8",
                                 "--set", "finetune_epochs=0", "--onnx",
                                 str(onnx_path)))
    assert status == 0
    assert f"wrote {onnx_path} (qdq-int8 ONNX graph" in capsys.readouterr().out
    from skcompress.io import load

    with np.load(saved_net / "data.npz") as arrays:
        X = arrays["X"][:32]
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    [logits] = session.run(None, {"input": X})
    expected = load(tmp_path / "o.skc").forward(X).numpy()
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)


def test_compress_onnx_path_checked_before_work(saved_net, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    status = main(_compress_argv(saved_net, tmp_path, "--technique", "quantizer",
                                 "--onnx", str(tmp_path / "missing" / "q.onnx")))
    assert status == 1
    assert "--onnx folder" in _error_line(capsys)
    assert not (tmp_path / "o.skc").exists()


def test_compress_shows_fine_tuning_epochs_on_a_terminal(saved_net, tmp_path,
                                                         monkeypatch, capsys):
    argv = ["--technique", "pruner", "--set", "sparsity=0.8", "--set",
            "finetune_epochs=2", "--set", "n_steps=1"]
    assert main(_compress_argv(saved_net, tmp_path, *argv)) == 0
    plain = (tmp_path / "o.skc").read_bytes()
    assert "fine-tuning:" not in capsys.readouterr().err  # not a terminal
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    (tmp_path / "o.skc").unlink()
    assert main(_compress_argv(saved_net, tmp_path, *argv)) == 0
    err = capsys.readouterr().err
    assert "fine-tuning: " in err and "2epoch" in err and "loss" in err
    # the bar changes nothing in the result
    assert (tmp_path / "o.skc").read_bytes() == plain
