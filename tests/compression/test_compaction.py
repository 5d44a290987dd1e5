import io

import numpy as np
import pytest
import torch
from torch import nn

from skcompress import load, save
from skcompress.blocks import DepthwiseSeparableConv2d
from skcompress.compression import Compactor
from skcompress.compression._compaction import convert_conv, separable_factors
from skcompress.models import make_digits_net


@pytest.fixture(scope="module")
def net(data):
    X, y = data
    return make_digits_net(max_epochs=4, module__channels=(8, 16),
                           module__hidden=32).fit(X, y)


@pytest.fixture(scope="module")
def compacted(data, net):
    X, y = data
    before = {k: v.clone() for k, v in net.module_.state_dict().items()}
    compactor = Compactor(net, prefit=True, finetune_epochs=2, random_state=0).fit(X, y)
    after = net.module_.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # user's net intact
    return compactor


@pytest.mark.parametrize("k", [3, 5])
def test_separable_factors_are_the_rank_one_fit_of_each_slice(k):
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(6, 4, k, k, generator=gen)
    depthwise, pointwise = separable_factors(weight)
    assert depthwise.shape == (4, 1, k, k) and pointwise.shape == (6, 4, 1, 1)
    approx = pointwise * depthwise.transpose(0, 1)  # (out, in, k, k)
    # Eckart-Young: the error is the energy beyond the first singular value
    singular = torch.linalg.svdvals(weight.transpose(0, 1).reshape(4, 6, k * k))
    expected = (singular[:, 1:] ** 2).sum()
    torch.testing.assert_close(((weight - approx) ** 2).sum(), expected,
                               rtol=1e-4, atol=1e-4)
    # exact on kernels that are rank one per input channel
    exact = torch.einsum("oc,ckl->ockl", torch.randn(6, 4, generator=gen),
                         torch.randn(4, k, k, generator=gen))
    d, p = separable_factors(exact)
    torch.testing.assert_close(p * d.transpose(0, 1), exact, atol=1e-5, rtol=1e-5)


def test_svd_initialisation_beats_random_on_the_conv_output(data, net):
    X, _ = data
    module = net.module_
    with torch.no_grad():
        inputs = module.relu1(module.conv1(torch.as_tensor(X)))
        target = module.conv2(inputs)
        svd = convert_conv(module.conv2)

        def error(block):
            return float((block(inputs) - target).norm() / target.norm())

        random_errors = []
        for seed in range(5):
            torch.manual_seed(seed)
            random = DepthwiseSeparableConv2d(8, 16, 3)
            random.pointwise.bias.copy_(module.conv2.bias)  # same bias: fair
            random_errors.append(error(random))
        assert error(svd) < 0.8 * min(random_errors)


def test_conv_macs_drop_and_report(compacted, net):
    report = compacted.conversion_report_
    assert compacted.converted_layers_ == ["conv2"]
    assert not report.loc["conv1", "converted"]
    assert "in_channels=1" in report.loc["conv1", "reason"]
    module = compacted.estimator_.module_
    assert isinstance(module.conv2, DepthwiseSeparableConv2d)
    # closed forms, per sample of 8x8 (padding keeps 8x8)
    cin, cout, pixels = 8, 16, 64
    assert report.loc["conv2", "macs_before"] == pixels * cout * cin * 9
    assert report.loc["conv2", "macs_after"] == pixels * (cin * 9 + cin * cout)
    assert report.loc["conv2", "params_before"] == cout * cin * 9 + cout
    assert report.loc["conv2", "params_after"] == cin * 9 + cin * cout + cout
    assert report.loc["conv1", "macs_after"] == report.loc["conv1", "macs_before"]
    total = report.loc["total"]
    assert total["macs_after"] < total["macs_before"]
    assert compacted.conv_macs_ratio_ == pytest.approx(
        total["macs_before"] / total["macs_after"])
    # trained by distillation after the rewrite, for finetune_epochs
    assert len(compacted.estimator_.history) == len(net.history) + 2
    assert type(compacted.estimator_.criterion_) is nn.CrossEntropyLoss


def test_saved_file_round_trips(compacted, data):
    X, _ = data
    buffer = io.BytesIO()
    n_bytes = save(compacted, buffer)
    assert n_bytes == compacted.size_bytes_
    loaded = load(io.BytesIO(buffer.getvalue()))
    assert isinstance(loaded.module_.conv2, DepthwiseSeparableConv2d)
    np.testing.assert_array_equal(loaded.predict(X), compacted.predict(X))
    np.testing.assert_allclose(loaded.predict_proba(X), compacted.predict_proba(X),
                               rtol=1e-6, atol=1e-6)


def test_same_random_state_same_weights(data, net, compacted):
    X, y = data
    again = Compactor(net, prefit=True, finetune_epochs=2, random_state=0).fit(X, y)
    for a, b in zip(again.estimator_.module_.parameters(),
                    compacted.estimator_.module_.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("layers, match", [
    (["conv1"], "in_channels=1"),
    (["fc1"], "fc1"),
])
def test_bad_layers(data, net, layers, match):
    X, y = data
    with pytest.raises(ValueError, match=match):
        Compactor(net, prefit=True, layers=layers).fit(X, y)


@pytest.mark.parametrize("params, match", [
    ({"temperature": 0}, "temperature"),
    ({"alpha": 2.0}, "alpha"),
    ({"layers": "conv2"}, "layers"),
])
def test_bad_parameters(data, net, params, match):
    X, y = data
    with pytest.raises(ValueError, match=match):
        Compactor(net, prefit=True, **params).fit(X, y)


def test_the_original_net_teaches_with_its_batchnorm_recalibrated(data, monkeypatch):
    """Its logits come from the net with BatchNorm statistics recomputed on X,
    not from running statistics that lag the weights."""
    import copy

    from skcompress.compression import _compaction
    from skcompress.compression._base import recalibrate_batchnorm
    from skcompress.models import make_resnet_net

    X, y = data[0][:96], data[1][:96]
    net = make_resnet_net(8, module__width=4, module__in_channels=1,
                          max_epochs=1, random_state=0).fit(X, y)
    with torch.no_grad():
        for m in net.module_.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.add_(0.5)
                m.running_var.mul_(3.0)
    before = {k: v.clone() for k, v in net.module_.state_dict().items()}
    expected = copy.deepcopy(net)
    recalibrate_batchnorm(expected, X, y)
    seen = []
    original = _compaction.teacher_logits

    def spy(teacher, X):
        seen.append({k: v.clone() for k, v in teacher.module_.state_dict().items()})
        return original(teacher, X)

    monkeypatch.setattr(_compaction, "teacher_logits", spy)
    Compactor(net, prefit=True, finetune_epochs=0, random_state=0).fit(X, y)
    (state,) = seen
    for key, value in expected.module_.state_dict().items():
        torch.testing.assert_close(state[key], value, rtol=0, atol=0)
    after = net.module_.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # user's net
