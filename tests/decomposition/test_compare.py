import matplotlib
import numpy as np
import pytest
from matplotlib.figure import Figure
from numpy.testing import assert_allclose
from sklearn.datasets import load_diabetes, load_wine
from sklearn.preprocessing import StandardScaler

from skcompress.decomposition import LDA, PCA, SVD, compare_reducers, plot_comparison
from skcompress.decomposition._compare import COLUMNS


@pytest.fixture(scope="module")
def wine():
    X, y = load_wine(return_X_y=True)
    return StandardScaler().fit_transform(X), y


@pytest.fixture(scope="module")
def table(wine):
    X, y = wine
    return compare_reducers(
        X, y, reducers=[PCA(random_state=0), LDA()], n_components=(1, 2, 5), cv=3
    )


def test_one_row_per_method_and_k(table):
    assert list(table.columns) == COLUMNS
    assert list(zip(table["method"], table["n_components"])) == [
        ("PCA", 1),
        ("PCA", 2),
        ("PCA", 5),
        ("LDA", 1),
        ("LDA", 2),
        ("LDA", 5),
    ]
    assert_allclose(table["compression_ratio"].iloc[:3], [13, 6.5, 2.6])


def test_lda_above_n_classes_minus_one_is_skipped_with_a_note(table):
    skipped = table[(table["method"] == "LDA") & (table["n_components"] == 5)].iloc[0]
    assert "n_classes - 1 = 2" in skipped["note"]
    assert np.isnan(skipped["score"]) and np.isnan(skipped["reconstruction_error"])


def test_metrics_are_sensible(table):
    pca = table[table["method"] == "PCA"]
    # More components: lower held-out error, more explained variance.
    assert pca["reconstruction_error"].is_monotonic_decreasing
    assert pca["explained_variance"].is_monotonic_increasing
    assert table["explained_variance"][table["method"] == "LDA"].isna().all()
    ran = table[table["note"] == ""]
    assert ran["score"].between(0, 1).all()
    assert (ran["fit_time"] > 0).all() and (ran["transform_time"] > 0).all()
    # LDA is the supervised one: 2 axes separate wine's classes well.
    assert ran.set_index(["method", "n_components"]).loc[("LDA", 2), "score"] > 0.9


def test_without_y_supervised_methods_are_skipped(wine):
    X, _ = wine
    table = compare_reducers(X, reducers=[PCA(), LDA()], n_components=(2,), cv=2)
    assert table.loc[1, "note"] == "skipped: supervised, needs y"
    assert np.isnan(table.loc[0, "score"])
    assert table.loc[0, "reconstruction_error"] > 0


def test_regression_target_uses_ridge_r2():
    X, y = load_diabetes(return_X_y=True)
    table = compare_reducers(X, y, reducers={"svd": SVD()}, n_components=(3,), cv=3)
    assert table.loc[0, "method"] == "svd"
    assert -1 < table.loc[0, "score"] < 1  # r2 scale, not accuracy


def test_plot_comparison_returns_figure_without_pyplot(table):
    backend = matplotlib.get_backend()
    fig = plot_comparison(table)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 2
    assert len(fig.axes[0].lines) == 2  # one line per method that ran
    assert matplotlib.get_backend() == backend


def test_input_not_modified(wine):
    X, y = wine
    X0, y0 = X.copy(), y.copy()
    compare_reducers(X, y, reducers=[PCA()], n_components=(2,), cv=2)
    assert np.array_equal(X, X0) and np.array_equal(y, y0)
