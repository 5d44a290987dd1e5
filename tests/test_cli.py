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
