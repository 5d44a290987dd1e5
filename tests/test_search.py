import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from skcompress.search import SCORERS, pareto_front, plot_tradeoff, smallest_within

RESULTS = {
    "params": [{"s": 0.0}, {"s": 0.5}, {"s": 0.8}, {"s": 0.9}, {"s": 0.95}],
    "mean_test_accuracy": [0.990, 0.991, 0.987, 0.984, 0.90],
    "mean_test_compression_ratio": [1.0, 2.0, 5.0, 9.0, 8.0],
}


def test_pareto_front_keeps_exactly_the_non_dominated():
    front = pareto_front(RESULTS)
    # s=0.0 is dominated by s=0.5 (more accurate and smaller); s=0.95 by s=0.9.
    assert front["candidate"].tolist() == [1, 2, 3]
    assert front["mean_test_compression_ratio"].is_monotonic_increasing
    # Brute-force reference: no kept point is dominated, every dropped one is.
    acc = np.array(RESULTS["mean_test_accuracy"])
    ratio = np.array(RESULTS["mean_test_compression_ratio"])
    for i in range(len(acc)):
        dominated = np.any((acc >= acc[i]) & (ratio >= ratio[i])
                           & ((acc > acc[i]) | (ratio > ratio[i])))
        assert (i in front["candidate"].tolist()) == (not dominated)


def test_pareto_front_accepts_dataframe_with_plain_columns():
    frame = pd.DataFrame({"accuracy": [0.9, 0.95, 0.8], "compression_ratio": [3, 2, 1]})
    assert pareto_front(frame)["candidate"].tolist() == [1, 0]


def test_pareto_front_names_missing_metric():
    with pytest.raises(ValueError, match="mean_test_speedup"):
        pareto_front(RESULTS, x="speedup")


@pytest.mark.parametrize(
    "tolerance, expected", [(0.0, 1), (0.004, 2), (0.007, 3), (0.2, 3)]
)
def test_smallest_within_picks_most_compressed_within_tolerance(tolerance, expected):
    assert smallest_within(tolerance)(RESULTS) == expected


def test_smallest_within_other_metric_names():
    results = {"mean_test_r2": [0.5, 0.49], "mean_test_neg_parameters": [-100, -10]}
    rule = smallest_within(0.02, metric="r2", size="neg_parameters")
    assert rule(results) == 1


def test_smallest_within_validates():
    with pytest.raises(ValueError, match="tolerance"):
        smallest_within(-1)
    with pytest.raises(ValueError, match="size='compression_ratio'"):
        smallest_within()({"mean_test_accuracy": [0.9]})


def test_plot_tradeoff_returns_figure_with_front():
    fig = plot_tradeoff(RESULTS)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    line = ax.get_lines()[0]
    assert list(line.get_xdata()) == [2.0, 5.0, 9.0]


@pytest.mark.parametrize("name", sorted(SCORERS))
def test_scorers_refuse_non_compressors(name):
    from sklearn.linear_model import LogisticRegression

    X = np.zeros((4, 1, 8, 8), dtype=np.float32)
    with pytest.raises(TypeError, match="compressor"):
        SCORERS[name](LogisticRegression(), X, np.zeros(4))
