import matplotlib
import numpy as np
import pytest
import torch
from skorch import NeuralNetClassifier
from torch import nn

from skcompress import plot_sensitivity, sensitivity
from skcompress.compression import LowRankCompressor, Pruner, Quantizer
from skcompress.datasets import load_digits_images
from skcompress.models import make_digits_net

matplotlib.use("Agg")

LAYERS = ["conv1", "conv2", "fc1", "fc2"]
SPARSITIES = [0.0, 0.5, 0.8, 0.95]
TINY = dict(module__channels=(4, 8), module__hidden=16)


@pytest.fixture(scope="module")
def split():
    """1000 training images, 300 held-out ones."""
    X, y = load_digits_images()
    return (X[:1000], y[:1000]), (X[1000:1300], y[1000:1300])


@pytest.fixture(scope="module")
def net(split):
    """A well-trained tiny CNN (~0.9 held-out accuracy)."""
    torch.set_num_threads(1)
    return make_digits_net(random_state=0, max_epochs=10, **TINY).fit(*split[0])


def _weights(net):
    return {name: sub.weight.detach().clone()
            for name, sub in net.module_.named_modules()
            if isinstance(sub, (nn.Conv2d, nn.Linear))}


class Recorder:
    """A scorer (accuracy) that keeps the effective weights of every net it scores."""

    def __init__(self):
        self.weights = []
        self.nets = []

    def __call__(self, net, X, y):
        self.weights.append(_weights(net))
        self.nets.append(net)
        return float(np.mean(net.predict(X) == y))


@pytest.fixture(scope="module")
def pruning(net, split):
    recorder = Recorder()
    table = sensitivity(Pruner(net, prefit=True), *split[1], values=SPARSITIES,
                        scoring=recorder)
    return table, recorder


def test_table_has_one_row_per_layer_and_value(pruning, net, split):
    table, _ = pruning
    assert table.columns.tolist() == ["layer", "param", "value", "score", "drop"]
    assert table.layer.tolist() == [name for name in LAYERS for _ in SPARSITIES]
    assert table.value.tolist() == SPARSITIES * len(LAYERS)
    assert set(table.param) == {"sparsity"}
    base = net.score(*split[1])
    assert table.attrs["base_score"] == pytest.approx(base)
    np.testing.assert_allclose(table["drop"], base - table["score"])
    assert table.attrs["n_weights"] == {
        name: w.numel() for name, w in _weights(net).items()}


def test_uncompressed_value_gives_the_base_score(pruning):
    table, _ = pruning
    at_zero = table[table.value == 0.0]
    assert (at_zero["drop"] == 0).all()  # sparsity 0 leaves the net as it was


def test_score_does_not_rise_with_sparsity(pruning):
    table, _ = pruning
    noise = 0.02  # 6 of 300 images
    for layer, rows in table.groupby("layer"):
        scores = rows.sort_values("value")["score"].to_numpy()
        assert (np.diff(scores) <= noise).all(), (layer, scores)
    # on a well-trained net, removing 95 % of any one layer costs accuracy
    assert (table[table.value == 0.95]["drop"] > noise).all()


def test_only_the_named_layer_is_compressed(pruning, net):
    table, recorder = pruning
    base = _weights(net)
    assert len(recorder.weights) == 1 + len(table)  # the base, then each row
    for weights, (_, row) in zip(recorder.weights[1:], table.iterrows()):
        changed = {name for name in base if not torch.equal(weights[name], base[name])}
        assert changed == (set() if row.value == 0 else {row.layer})
        zeros = float((weights[row.layer] == 0).float().mean())
        assert zeros == pytest.approx(row.value, abs=0.05)


def test_bits_8_is_close_to_the_base(net, split):
    table = sensitivity(Quantizer(net, method="uniform", prefit=True), *split[1],
                        param="bits", values=[8, 2], layers=["conv2", "fc1"])
    assert table.layer.tolist() == ["conv2", "conv2", "fc1", "fc1"]
    at_8 = table[table.value == 8]
    assert (at_8["drop"].abs() <= 0.01).all()
    assert (table[table.value == 2]["drop"].to_numpy()
            >= at_8["drop"].to_numpy() - 0.01).all()


def test_rank_factorizes_only_the_named_layer(net, split):
    recorder = Recorder()
    template = LowRankCompressor(net, prefit=True)
    table = sensitivity(template, *split[1], param="rank", values=[0.25],
                        layers=["fc1"], scoring=recorder)
    assert table.layer.tolist() == ["fc1"]
    module = recorder.nets[1].module_
    assert isinstance(module.fc1, nn.Sequential)
    assert [type(module.get_submodule(n)) for n in ("conv1", "conv2", "fc2")] == [
        nn.Conv2d, nn.Conv2d, nn.Linear]
    base = _weights(net)
    for name in ("conv1", "conv2", "fc2"):
        assert torch.equal(recorder.weights[1][name], base[name])


@pytest.fixture
def count_fits(monkeypatch):
    calls = []
    fit = NeuralNetClassifier.fit

    def counting_fit(self, X, y=None, **fit_params):
        calls.append(len(X))
        return fit(self, X, y, **fit_params)

    monkeypatch.setattr(NeuralNetClassifier, "fit", counting_fit)
    return calls


def test_base_is_fitted_once_per_fold(count_fits, split, tmp_path):
    X, y = split[1]
    net = make_digits_net(random_state=0, max_epochs=1, **TINY)
    template = Pruner(net, memory=str(tmp_path))
    table = sensitivity(template, X, y, values=[0.0, 0.9], layers=["fc1", "fc2"])
    assert count_fits == [len(X)]  # not once per (layer, value)
    assert len(table) == 4
    sensitivity(template, X, y, values=[0.5], layers=["fc1"])
    assert count_fits == [len(X)]  # the template's memory holds the base

    count_fits.clear()
    folds = sensitivity(Pruner(net), X, y, values=[0.0, 0.9], layers=["fc2"], cv=2)
    assert count_fits == [len(X) // 2, len(X) // 2]
    assert folds.layer.tolist() == ["fc2", "fc2"]
    assert folds["drop"].iloc[0] == 0


def test_prefit_base_is_never_refitted(count_fits, net, split):
    sensitivity(Pruner(net, prefit=True), *split[1], values=[0.5], layers=["fc1"],
                cv=2)
    assert count_fits == []


def test_user_estimator_is_not_modified(net, split):
    template = Pruner(net, sparsity=0.3, prefit=True, random_state=0)
    params = template.get_params(deep=False)
    before = _weights(net)
    sensitivity(template, *split[1], values=[0.9], layers=["conv2"])
    assert template.get_params(deep=False) == params
    assert template.get_params(deep=False)["estimator"] is net
    assert not hasattr(template, "estimator_")
    after = _weights(net)
    assert all(torch.equal(before[name], after[name]) for name in before)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        (dict(param="bits"), "param"),  # not a Pruner setting
        (dict(param="finetune_epochs"), "param"),  # shared, not compression
        (dict(param="nope"), "param"),
        (dict(values=[]), "values"),
        (dict(values=0.5), "values"),
        (dict(values=[0.5, 1.5]), "values"),  # sparsity must be < 1
        (dict(values=[0.5, 0.5]), "values"),
        (dict(layers=["conv1", "nope"]), "layers"),
        (dict(finetune_epochs=-1), "finetune_epochs"),
        (dict(param="granularity"), "values"),  # no default sweep
    ],
)
def test_bad_arguments_raise_naming_them(kwargs, name, net, split):
    with pytest.raises(ValueError, match=name):
        sensitivity(Pruner(net, prefit=True), *split[1], **kwargs)


def test_bad_bits_and_energy_raise(net, split):
    with pytest.raises(ValueError, match="values"):
        sensitivity(Quantizer(net, method="uniform", prefit=True), *split[1],
                    param="bits", values=[4, 1])  # symmetric needs 2 bits
    with pytest.raises(ValueError, match="energy"):
        sensitivity(LowRankCompressor(net, energy=0.9, prefit=True), *split[1],
                    param="rank", values=[0.5])


def test_plot_draws_one_line_per_layer(pruning):
    table, _ = pruning
    ax = plot_sensitivity(table)
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels == LAYERS + ["base"]
    first = ax.get_lines()[0]
    np.testing.assert_allclose(first.get_xdata(), SPARSITIES)
    np.testing.assert_allclose(
        first.get_ydata(), table[table.layer == "conv1"]["score"])
    assert ax.get_xlabel() == "sparsity"
    with pytest.raises(ValueError, match="df"):
        plot_sensitivity(table.drop(columns="score"))


def test_public_names_are_the_functions():
    import skcompress
    import skcompress._sensitivity  # noqa: F401  (a module must not shadow them)

    assert skcompress.sensitivity is sensitivity
    assert skcompress.plot_sensitivity is plot_sensitivity
    assert {"sensitivity", "plot_sensitivity"} <= set(skcompress.__all__)


def test_chained_template_compresses_the_inner_compressors_net(net, split):
    pruner = Pruner(net, sparsity=0.5, finetune_epochs=0, prefit=True).fit(*split[0])
    recorder = Recorder()
    table = sensitivity(Quantizer(pruner, method="uniform", prefit=True), *split[1],
                        param="bits", values=[4], layers=["fc1"], scoring=recorder)
    pruned, quantized = recorder.weights  # the base is the pruner's net
    assert table.attrs["base_score"] == pytest.approx(pruner.score(*split[1]))
    assert all(len(torch.unique(row)) <= 2**4 for row in quantized["fc1"])
    assert (quantized["fc1"][pruned["fc1"] == 0] == 0).all()  # zeros stay zero
    for name in ("conv1", "conv2", "fc2"):
        assert torch.equal(quantized[name], pruned[name])


def test_default_values_follow_param(net, split):
    table = sensitivity(Quantizer(net, method="uniform", prefit=True), *split[1],
                        param="bits", layers=["fc2"])
    assert table.value.tolist() == [8, 6, 4, 3, 2]
