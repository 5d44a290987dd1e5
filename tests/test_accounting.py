import importlib.util

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from skcompress.accounting import (
    count_macs,
    count_parameters,
    dense_size_bytes,
    measure_latency,
    model_report,
)
from skcompress.datasets import load_digits_images
from skcompress.io import dumps
from skcompress.models import DigitsCNN, ResidualCNN, make_digits_net

# DigitsCNN at (1, 8, 8), by hand:
# conv1: 32 * 8 * 8 outputs * (1 * 3 * 3)    = 18_432 MACs, 32 * 9 + 32    = 320
# conv2: 64 * 8 * 8 outputs * (32 * 3 * 3)   = 1_179_648,   64 * 288 + 64  = 18_496
# fc1:   128 * 1024                          = 131_072,     131_072 + 128  = 131_200
# fc2:   10 * 128                            = 1_280,       1_280 + 10     = 1_290
EXPECTED = {
    "conv1": (320, 18_432),
    "conv2": (18_496, 1_179_648),
    "fc1": (131_200, 131_072),
    "fc2": (1_290, 1_280),
}


class Mask(nn.Module):
    def __init__(self, mask):
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, weight):
        return weight * self.mask


class Wrapper:
    def __init__(self, estimator_):
        self.estimator_ = estimator_


@pytest.fixture(scope="module")
def net():
    torch.set_num_threads(1)
    X, y = load_digits_images()
    return make_digits_net(max_epochs=1).fit(X[:300], y[:300])


def test_model_report_digits_cnn_by_hand():
    report = model_report(DigitsCNN(), input_shape=(1, 8, 8))
    assert list(report.columns) == ["type", "parameters", "nonzeros",
                                    "bits_per_weight", "stored_bytes", "macs"]
    assert list(report.index) == [*EXPECTED, "total"]
    for name, (params, macs) in EXPECTED.items():
        assert report.loc[name, "parameters"] == params
        assert report.loc[name, "macs"] == macs
        # dense random weights are stored as float32: 32 bits each
        assert report.loc[name, "stored_bytes"] == 4 * params
        assert report.loc[name, "bits_per_weight"] == 32.0
    total = report.loc["total"]
    assert total["type"] == "total"
    assert total["parameters"] == 151_306 == count_parameters(DigitsCNN())
    assert total["macs"] == 1_330_432 == count_macs(DigitsCNN(), (1, 8, 8))
    assert total["stored_bytes"] == report["stored_bytes"].iloc[:-1].sum()
    assert report.loc["conv1", "type"] == "Conv2d"


def test_model_report_accepts_net_compressor_and_masks(net):
    module = net.module_
    mask = (torch.rand(module.fc1.weight.shape) < 0.1).float()
    expected_nonzeros = int(torch.count_nonzero(module.fc1.weight * mask))
    parametrize.register_parametrization(module.fc1, "weight", Mask(mask))
    try:
        for obj in (net, Wrapper(net), module):
            report = model_report(obj, input_shape=(1, 8, 8))
            assert report.loc["fc1", "nonzeros"] == expected_nonzeros + 128
            assert report.loc["fc1", "parameters"] == 131_200
            assert report.loc["fc1", "bits_per_weight"] < 8
        # storage accounting is within the header of the real file size
        assert 0 < len(dumps(net)) - report.loc["total", "stored_bytes"] < 800
        assert parametrize.is_parametrized(module.fc1, "weight")
    finally:
        parametrize.remove_parametrizations(module.fc1, "weight",
                                            leave_parametrized=False)


def test_model_report_without_input_shape():
    report = model_report(DigitsCNN())
    assert report["macs"].isna().all()
    mlp = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 2))
    report = model_report(mlp)
    assert report.loc["0", "macs"] == 24 and report.loc["total", "macs"] == 32
    assert report.loc["total", "parameters"] == 28 + 10


def test_macs_count_grouped_conv_and_leading_dims():
    conv = nn.Conv2d(4, 8, 3, padding=1, groups=2)
    assert count_macs(conv, (4, 5, 5)) == 8 * 25 * 2 * 9
    assert count_macs(nn.Linear(3, 2), (7, 3)) == 7 * 2 * 3


def test_dense_size_bytes_counts_effective_tensors_and_buffers(net):
    assert dense_size_bytes(net) == 4 * 151_306
    # ResidualCNN: BN running stats and num_batches_tracked are counted too
    module = ResidualCNN()
    n = sum(p.numel() for p in module.parameters())
    n += sum(b.numel() for b in module.buffers())
    assert dense_size_bytes(module) == 4 * n

    class LowRank(nn.Module):
        def forward(self, weight):
            return weight[:, :1] @ weight[:1, :]

    layer = nn.Linear(4, 3)
    parametrize.register_parametrization(layer, "weight", LowRank())
    assert dense_size_bytes(layer) == 4 * (12 + 3)


def test_measure_latency_restores_threads_and_mode(net):
    torch.set_num_threads(1)
    module = net.module_.train()
    seconds = measure_latency(net, (1, 8, 8), batch_size=16, repeats=3, warmup=1,
                              n_threads=2)
    assert 0 < seconds < 1
    assert torch.get_num_threads() == 1
    assert module.training
    with pytest.raises(ValueError, match="repeats"):
        measure_latency(net, (1, 8, 8), repeats=0)
    with pytest.raises(ValueError, match="input_shape"):
        measure_latency(net, None)


def test_report_does_not_modify_module(net):
    before = {k: v.clone() for k, v in net.module_.state_dict().items()}
    model_report(net, input_shape=(1, 8, 8))
    after = net.module_.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert np.isfinite(model_report(net, (1, 8, 8)).loc["total", "macs"])


@pytest.mark.parametrize("func", [count_macs, model_report, measure_latency])
def test_wrong_input_shape_is_named(net, func):
    # a batch dimension included by mistake: a ValueError naming the parameter,
    # not torch's conv2d error
    with pytest.raises(ValueError, match=r"input_shape=\(1, 1, 8, 8\)"):
        func(net, (1, 1, 8, 8))


def test_model_report_latency_columns(net):
    report = model_report(net, input_shape=(1, 8, 8), latency=True, batch_size=8)
    assert list(report.columns[-2:]) == ["torch_latency_ms", "onnx_latency_ms"]
    assert report[["torch_latency_ms", "onnx_latency_ms"]].iloc[:-1].isna().all().all()
    assert report.loc["total", "torch_latency_ms"] > 0
    if importlib.util.find_spec("onnxruntime") is None:
        assert np.isnan(report.loc["total", "onnx_latency_ms"])
        assert "pip install 'skcompress[deploy]'" in report.attrs["note"]
    else:
        assert report.loc["total", "onnx_latency_ms"] > 0
        assert "note" not in report.attrs
    without = model_report(net, input_shape=(1, 8, 8))
    assert "onnx_latency_ms" not in without.columns


def test_model_report_latency_without_the_deploy_extra(net, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnxruntime"
                        else real(name, *a))
    report = model_report(net, input_shape=(1, 8, 8), latency=True, batch_size=8)
    assert np.isnan(report.loc["total", "onnx_latency_ms"])
    assert report.attrs["note"] == (
        "no onnxruntime latency: onnxruntime not installed "
        "(pip install 'skcompress[deploy]')"
    )
