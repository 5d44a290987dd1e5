import os

import numpy as np
import pytest
import torch
from skorch import NeuralNetClassifier
from torch import nn

import skcompress
from skcompress.accounting import count_macs, count_parameters
from skcompress.compression import LowRankCompressor
from skcompress.compression._lowrank import (
    choose_rank,
    factorize_conv_channel,
    factorize_conv_tucker,
    factorize_linear,
)

from .helpers import LrSpy


def lowrank(fitted_net, data, **params):
    params = {"prefit": True, "finetune_epochs": 1, "random_state": 0, **params}
    return LowRankCompressor(fitted_net, **params).fit(*data)


# ------------------------------------------------------------- mechanics
def test_full_rank_factorizations_are_exact():
    torch.manual_seed(0)
    linear = nn.Linear(12, 7)
    x = torch.randn(5, 12)
    torch.testing.assert_close(factorize_linear(linear, 7)(x), linear(x))
    conv = nn.Conv2d(6, 10, 3, stride=2, padding=2, dilation=2)
    x = torch.randn(2, 6, 9, 9)
    channel = factorize_conv_channel(conv, 10)
    tucker = factorize_conv_tucker(conv, (10, 6))
    torch.testing.assert_close(channel(x), conv(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(tucker(x), conv(x), rtol=1e-5, atol=1e-5)
    for factorized in (channel[0], tucker[1]):  # geometry kept on the k x k conv
        assert factorized.stride == (2, 2) and factorized.padding == (2, 2)
        assert factorized.dilation == (2, 2)


def test_truncated_svd_is_the_best_rank_r_approximation():
    torch.manual_seed(0)
    linear = nn.Linear(20, 16, bias=False)
    first, second = factorize_linear(linear, 4)
    W = linear.weight.detach().double()
    S = torch.linalg.svdvals(W)
    error = torch.linalg.norm(W - (second.weight @ first.weight).double())
    # Eckart-Young: the error is the norm of the dropped singular values
    assert error.item() == pytest.approx(torch.linalg.norm(S[4:]).item(), rel=1e-5)
    assert first.weight.shape == (4, 20) and second.weight.shape == (16, 4)


def test_choose_rank():
    s = np.array([4.0, 2.0, 1.0, 1.0])
    assert choose_rank(3, s, name="fc") == 3
    assert choose_rank(0.5, s, name="fc") == 2
    assert choose_rank(1.0, s, name="fc") == 4
    assert choose_rank(0.01, s, name="fc") == 1
    assert choose_rank(("energy", 0.5), s, name="fc") == 1  # 16 / 22
    assert choose_rank(("energy", 0.9), s, name="fc") == 2  # 20 / 22
    assert choose_rank(("energy", 0.95), s, name="fc") == 3  # 21 / 22
    assert choose_rank(("energy", 1.0), s, name="fc") == 4
    with pytest.raises(ValueError, match="rank=5 for layer 'fc' exceeds"):
        choose_rank(5, s, name="fc")


# ------------------------------------------------------------- estimator
def test_full_rank_leaves_the_net_as_it_is(fitted_net, data):
    with pytest.warns(UserWarning, match="factorized no layer"):
        compressor = lowrank(fitted_net, data, rank=1.0, finetune_epochs=0)
    assert compressor.factorized_layers_ == {}
    assert set(compressor.skipped_layers_) == {"conv1", "conv2", "fc1"}
    np.testing.assert_allclose(
        compressor.transform(data[0]), fitted_net.forward(data[0]).numpy(), rtol=1e-6
    )


@pytest.mark.parametrize("method", ["channel", "tucker"])
def test_factorized_net_is_smaller_and_round_trips(
    fitted_net, data, method, tmp_path, state, assert_same_state
):
    before = state(fitted_net)
    compressor = lowrank(fitted_net, data, rank=0.25, method=method)
    assert_same_state(before, fitted_net)
    base, small = fitted_net.module_, compressor.estimator_.module_
    assert count_parameters(small) < count_parameters(base)
    assert count_macs(small, (1, 8, 8)) < count_macs(base, (1, 8, 8))
    assert isinstance(small.fc1, nn.Sequential)
    assert small.fc1[0].bias is None and small.fc1[0].out_features == 4
    assert isinstance(small.fc2, nn.Linear)  # output layer kept
    assert "conv2" in compressor.factorized_layers_
    path = tmp_path / "lowrank.skc"
    skcompress.save(compressor, path)
    assert compressor.size_bytes_ == os.path.getsize(path)
    assert compressor.compression_ratio_ > 1
    loaded = skcompress.load(path)
    np.testing.assert_allclose(
        loaded.predict_proba(data[0]), compressor.predict_proba(data[0]), rtol=1e-6
    )


def test_per_layer_ranks_and_energy(fitted_net, data):
    compressor = lowrank(fitted_net, data, rank={"fc1": 3, "conv2": 0.25})
    assert compressor.factorized_layers_ == {"fc1": 3, "conv2": 2}
    assert not isinstance(compressor.estimator_.module_.conv1, nn.Sequential)
    mixed = lowrank(fitted_net, data, rank={"fc1": 2}, energy=0.5, finetune_epochs=0)
    assert mixed.factorized_layers_["fc1"] == 2
    assert set(mixed.factorized_layers_) | set(mixed.skipped_layers_) == {
        "conv1", "conv2", "fc1"
    }
    weight = fitted_net.module_.fc1.weight.detach().double()
    energy = torch.linalg.svdvals(weight) ** 2
    share = torch.cumsum(energy, 0) / energy.sum()
    expected = int((share < 0.5).sum()) + 1
    by_energy = lowrank(fitted_net, data, rank=None, energy=0.5, layers=["fc1"],
                        finetune_epochs=0)
    assert by_energy.factorized_layers_ == {"fc1": expected}


def test_layers_that_would_not_shrink_stay_dense(fitted_net, data):
    with pytest.warns(UserWarning, match="factorized no layer"):
        compressor = lowrank(fitted_net, data, rank={"conv1": 4}, finetune_epochs=0)
    assert compressor.factorized_layers_ == {}
    assert "not fewer than the dense" in compressor.skipped_layers_["conv1"]


class Grouped(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.grouped = nn.Conv2d(4, 8, 3, padding=1, groups=2)
        self.fc = nn.Linear(8 * 64, 64)
        self.out = nn.Linear(64, 10)

    def forward(self, X):
        X = torch.relu(self.grouped(torch.relu(self.conv(X))))
        return self.out(torch.relu(self.fc(X.flatten(1))))


def test_grouped_convolutions_are_skipped(data):
    net = NeuralNetClassifier(Grouped, criterion=nn.CrossEntropyLoss, max_epochs=1,
                              train_split=None, verbose=0)
    compressor = LowRankCompressor(net, rank=2, finetune_epochs=1).fit(*data)
    assert "groups=2" in compressor.skipped_layers_["grouped"]
    assert compressor.factorized_layers_["fc"] == 2


@pytest.mark.parametrize(
    "params, match",
    [
        ({"rank": 0}, "rank"),
        ({"rank": -2}, "rank"),
        ({"rank": 1.5}, "rank"),
        ({"rank": 5}, r"rank=5 for layer 'conv1' exceeds its full rank 4"),
        ({"rank": {"fc1": 17}}, r"rank=17 for layer 'fc1' exceeds its full rank 16"),
        ({"rank": 9, "method": "tucker"}, r"rank=9 for layer 'conv1' exceeds its"),
        ({"rank": {"nope": 2}}, "rank"),
        ({"rank": {"fc1": 0}}, r"rank\['fc1'\]"),
        ({"rank": None}, "energy"),
        ({"energy": 0.0}, "energy"),
        ({"method": "cp"}, "method"),
    ],
)
def test_bad_params_raise_and_leave_the_net_alone(
    fitted_net, data, params, match, state, assert_same_state
):
    before = state(fitted_net)
    compressor = LowRankCompressor(fitted_net, prefit=True, **params)
    with pytest.raises(ValueError, match=match):
        compressor.fit(*data)
    assert not hasattr(compressor, "estimator_")
    assert not hasattr(compressor, "factorized_layers_")
    assert_same_state(before, fitted_net)


def _pointwise(module):
    return {name for name, sub in module.named_modules()
            if isinstance(sub, nn.Conv2d) and sub.kernel_size == (1, 1)}


def test_pointwise_convolutions_stay_dense_by_default(data):
    """MobileNetV2's 1x1 expansions and projections already are the low-rank
    factors of its blocks: the default leaves them (and every other 1x1
    conv) dense, says why, and factorizes them only when named."""
    from skcompress.models import make_mobilenet_net

    X, y = data[0][:64], data[1][:64]
    net = make_mobilenet_net(module__width_mult=0.1, module__in_channels=1,
                             max_epochs=1, random_state=0).fit(X, y)
    pointwise = _pointwise(net.module_)
    assert pointwise
    # most of its weights are in 1x1 convs: the user is told the net shrinks little
    with pytest.warns(UserWarning, match="weights of 1x1 convolutions dense"):
        default = LowRankCompressor(net, rank=0.5, prefit=True, finetune_epochs=0,
                                    random_state=0).fit(X, y)
    assert not pointwise & set(default.factorized_layers_)
    assert {name for name, why in default.skipped_layers_.items()
            if why.startswith("1x1 convolution")} == pointwise
    assert set(default.factorized_layers_) == {"features.0.0"}  # the 3x3 stem
    for name in pointwise:  # still plain convolutions
        assert isinstance(default.estimator_.module_.get_submodule(name), nn.Conv2d)

    named = sorted(pointwise)[:2]
    chosen = LowRankCompressor(net, rank=dict.fromkeys(named, 1), prefit=True,
                               finetune_epochs=0, random_state=0).fit(X, y)
    assert set(chosen.factorized_layers_) == set(named)
    every = LowRankCompressor(net, rank=0.5, layers="all", prefit=True,
                              finetune_epochs=0, random_state=0).fit(X, y)
    assert pointwise & set(every.factorized_layers_)




def test_finetuning_peaks_at_half_the_nets_lr(data):
    from skcompress.compression._base import FINETUNE_LR_FACTOR, scheduled_lr
    from skcompress.compression._lowrank import LOWRANK_LR_FACTOR
    from skcompress.models import make_digits_net

    assert LOWRANK_LR_FACTOR == 2 * FINETUNE_LR_FACTOR
    X, y = data[0][:96], data[1][:96]
    net = make_digits_net(max_epochs=1, lr=0.004, batch_size=32,
                          module__channels=(4, 8), module__hidden=16,
                          callbacks=[("spy", LrSpy())], random_state=0).fit(X, y)
    fitted = LowRankCompressor(net, prefit=True, finetune_epochs=2,
                               random_state=0).fit(X, y)
    lrs = dict(fitted.estimator_.callbacks_)["spy"].lrs_[3:]  # after the base's
    steps = 2 * 3
    np.testing.assert_allclose(lrs, [scheduled_lr(0.002, s, steps)
                                     for s in range(steps)])
    assert net.lr == fitted.estimator_.lr == 0.004  # the nets keep their lr
    explicit = LowRankCompressor(net, finetune_lr=0.01, prefit=True)
    assert explicit._lr_schedule(net, 2).lr == 0.01
