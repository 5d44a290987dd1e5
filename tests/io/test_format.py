import copy
import io

import numpy as np
import pytest
import torch
import torch_pruning as tp
from skorch import NeuralNetRegressor
from torch import nn
from torch.nn.utils import parametrize

from skcompress.compression._constraints import Mask
from skcompress.compression._quantization import Codebook
from skcompress.datasets import load_digits_images
from skcompress.io import (
    FormatError,
    bake,
    decode_tensor,
    dumps,
    encode_tensor,
    load,
    loads,
    save,
    tensor_storage_report,
)
from skcompress.models import make_digits_net

DENSE_BYTES = 4 * 151_306  # DigitsCNN parameters, float32


class UniformQuant(nn.Module):
    """Per-output-channel uniform quantization with the documented formula."""

    def __init__(self, weight, bits=4, scale_factor=1.0):
        super().__init__()
        levels = 2 ** bits - 1
        lo = weight.amin(dim=tuple(range(1, weight.dim())))
        hi = weight.amax(dim=tuple(range(1, weight.dim())))
        scale = ((hi - lo) / levels).clamp_min(1e-8)
        self.register_buffer("scale", scale)
        self.register_buffer("zero_point", torch.round(-lo / scale))
        self.scale_factor = scale_factor
        self.levels = levels

    def _view(self, t, weight):
        return t.view(-1, *([1] * (weight.dim() - 1)))

    def forward(self, weight):
        scale, zp = self._view(self.scale, weight), self._view(self.zero_point, weight)
        q = torch.clamp(torch.round(weight / scale) + zp, 0, self.levels)
        return (q - zp).to(torch.float32) * scale

    def encoding_hint(self):
        return {"kind": "uniform", "bits": 4, "axis": 0,
                "scale": self.scale * self.scale_factor,
                "zero_point": self.zero_point}


class BinaryHint(nn.Module):
    def forward(self, weight):
        return weight

    def encoding_hint(self):
        return {"kind": "binary"}


class Block(nn.Module):
    """A custom block recording its constructor kwargs in ``_init_kwargs``."""

    def __init__(self, in_channels, out_channels, activation=nn.ReLU):
        super().__init__()
        self._init_kwargs = {"in_channels": in_channels,
                             "out_channels": out_channels, "activation": activation}
        self.depthwise = nn.Conv2d(in_channels, in_channels, 3, padding=1,
                                   groups=in_channels)
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1)
        self.act = activation()

    def forward(self, X):
        return self.act(self.pointwise(self.depthwise(X)))


class SoftmaxNet(nn.Module):
    def __init__(self, hidden=16):
        super().__init__()
        self.fc1 = nn.Linear(64, hidden)
        self.fc2 = nn.Linear(hidden, 10)

    def forward(self, X):
        X = torch.relu(self.fc1(X.reshape(len(X), -1)))
        return torch.softmax(self.fc2(X), dim=-1)


class Regressor(nn.Module):
    def __init__(self, hidden=8):
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(64, hidden), nn.Tanh(), nn.Linear(hidden, 1))

    def forward(self, X):
        return self.body(X)


class Wrapper:
    """Stands in for a fitted compressor."""

    def __init__(self, estimator_):
        self.estimator_ = estimator_


@pytest.fixture(scope="module")
def data():
    X, y = load_digits_images()
    return X[:600], y[:600]


@pytest.fixture(scope="module")
def trained(data):
    torch.set_num_threads(1)
    return make_digits_net(max_epochs=1).fit(*data)


def _copy_net(net):
    return copy.deepcopy(net)


def assert_round_trip(net, X, trusted=None):
    data = dumps(net)
    loaded = loads(data, trusted=trusted)
    np.testing.assert_array_equal(loaded.predict_proba(X), net.predict_proba(X))
    with torch.no_grad():
        np.testing.assert_array_equal(
            loaded.forward(X).numpy(), net.forward(X).numpy())
    assert not any(parametrize.is_parametrized(m) for m in loaded.module_.modules())
    return loaded, data


def _masked(net, density=0.1, seed=0):
    net = _copy_net(net)
    gen = torch.Generator().manual_seed(seed)
    for layer in (net.module_.conv1, net.module_.conv2, net.module_.fc1,
                  net.module_.fc2):
        mask = (torch.rand(layer.weight.shape, generator=gen) < density).float()
        parametrize.register_parametrization(layer, "weight", Mask(mask))
    return net


def _codebook(net, n_values=16):
    """Set every weight to one of ``n_values`` nonzero values (or zero)."""
    net = _copy_net(net)
    with torch.no_grad():
        for layer in (net.module_.conv1, net.module_.conv2, net.module_.fc1,
                      net.module_.fc2):
            w = layer.weight
            edges = torch.quantile(w.abs().flatten()[:4096], 0.9)
            centroids = torch.linspace(-0.2, 0.2, n_values)
            idx = torch.bucketize(w, centroids).clamp(max=n_values - 1)
            w.copy_(torch.where(w.abs() >= edges, centroids[idx], 0.0))
    return net


def test_plain_round_trip_size_and_determinism(trained, data, tmp_path):
    loaded, data_bytes = assert_round_trip(trained, data[0])
    np.testing.assert_array_equal(loaded.predict(data[0]), trained.predict(data[0]))
    assert list(loaded.classes_) == list(range(10))
    assert loaded.batch_size == trained.batch_size
    path = tmp_path / "net.skc"
    assert save(trained, path) == len(data_bytes) == path.stat().st_size
    assert path.read_bytes() == data_bytes == dumps(trained)
    # dense weights cost their float32 bytes plus a small header
    assert DENSE_BYTES < len(data_bytes) < DENSE_BYTES + 600
    assert isinstance(load(str(path)), type(trained))
    buffer = io.BytesIO()
    assert save(trained, buffer) == len(data_bytes)
    np.testing.assert_array_equal(load(io.BytesIO(buffer.getvalue()))
                                  .predict_proba(data[0]),
                                  trained.predict_proba(data[0]))


def test_load_and_save_do_not_touch_global_rng(trained):
    data = dumps(trained)
    state = torch.get_rng_state()
    loads(data)
    dumps(trained)
    assert torch.equal(state, torch.get_rng_state())


def test_masked_net_round_trip_no_mutation_and_size(trained, data):
    net = _masked(trained)
    before = {k: v.clone() for k, v in net.module_.state_dict().items()}
    loaded, data_bytes = assert_round_trip(net, data[0])
    after = net.module_.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert parametrize.is_parametrized(net.module_.fc1, "weight")
    assert len(data_bytes) < DENSE_BYTES / 6
    report = tensor_storage_report(net.module_)
    assert report["fc1.weight"]["encoding"] == "sparse"
    assert report["fc1.bias"]["encoding"] == "dense"
    # loaded weights are the effective (masked) ones
    assert torch.equal(loaded.module_.fc1.weight, net.module_.fc1.weight)


def test_mask_then_codebook_is_sparse_with_indices(trained, data):
    """Deep Compression's constraints: positions + 4-bit symbols per nonzero."""
    net = _copy_net(trained)
    gen = torch.Generator().manual_seed(0)
    for layer in (net.module_.conv2, net.module_.fc1):
        w = layer.weight.detach()
        keep = torch.rand(w.shape, generator=gen) < 0.1
        centroids = torch.linspace(-0.2, 0.2, 16)
        indices = torch.bucketize(w, centroids).clamp(max=15)
        indices[~keep] = -1
        parametrize.register_parametrization(layer, "weight", Mask(keep),
                                             unsafe=True)
        parametrize.register_parametrization(layer, "weight",
                                             Codebook(centroids, indices, 4),
                                             unsafe=True)
    assert_round_trip(net, data[0])
    report = tensor_storage_report(net.module_)
    assert report["fc1.weight"]["encoding"] == "sparse"
    # 10% density: ~0.47 bits of positions + 0.1 * ~4 bits of symbols
    assert report["fc1.weight"]["bits_per_weight"] < 1.0


def test_unhinted_tensors_are_dense_fp16_or_sparse():
    w = torch.tensor([0.25, -0.5, 1.0, 0.25] * 64).reshape(16, 16)
    encoding, meta, streams = encode_tensor(w)
    assert encoding == "fp16"  # exact halves: no hint, no codebook search
    assert torch.equal(decode_tensor(encoding, meta, streams, w.shape), w)
    w = torch.randn(16, 16)
    assert encode_tensor(w)[0] == "dense"
    w[:, 4:] = 0
    encoding, meta, streams = encode_tensor(w)
    assert encoding == "sparse"
    assert torch.equal(decode_tensor(encoding, meta, streams, w.shape), w)


def test_binary_weight_costs_about_one_bit(trained, data):
    net = _copy_net(trained)
    with torch.no_grad():
        w = net.module_.fc1.weight
        scale = w.abs().mean(dim=1, keepdim=True)
        w.copy_(torch.where(w >= 0, scale, -scale))
    parametrize.register_parametrization(net.module_.fc1, "weight", BinaryHint(),
                                         unsafe=True)
    assert_round_trip(net, data[0])
    entry = tensor_storage_report(net.module_)["fc1.weight"]
    assert entry["encoding"] == "binary"
    n = net.module_.fc1.weight.numel()
    assert entry["stored_bytes"] == n // 8 + 4 * 128
    assert entry["stored_bytes"] < 1.1 * (4 * n) / 32


@pytest.mark.parametrize("scale_factor", [1.0, 1.001])
def test_uniform_hint_used_and_verified(trained, data, scale_factor):
    net = _copy_net(trained)
    weight = net.module_.conv2.weight.detach()
    parametrize.register_parametrization(
        net.module_.conv2, "weight", UniformQuant(weight, scale_factor=scale_factor))
    assert_round_trip(net, data[0])
    entry = tensor_storage_report(net.module_)["conv2.weight"]
    if scale_factor == 1.0:
        assert entry["encoding"] == "uniform"
        assert entry["bits_per_weight"] < 4.5
    else:  # a wrong hint is ignored and the tensor is still stored exactly
        assert entry["encoding"] != "uniform"


def test_low_rank_and_custom_block_round_trip(trained, data):
    net = _copy_net(trained)
    fc1 = net.module_.fc1
    rank = 8
    U, S, Vh = torch.linalg.svd(fc1.weight.detach(), full_matrices=False)
    first = nn.Linear(fc1.in_features, rank, bias=False)
    second = nn.Linear(rank, fc1.out_features)
    with torch.no_grad():
        first.weight.copy_(S[:rank, None] * Vh[:rank])
        second.weight.copy_(U[:, :rank])
        second.bias.copy_(fc1.bias)
    net.module_.fc1 = nn.Sequential(first, second)
    net.module_.conv2 = Block(32, 64, activation=nn.Identity)
    with pytest.raises(FormatError, match=r"Block.*trusted=\[Block\]"):
        loads(dumps(net))
    loaded, data_bytes = assert_round_trip(net, data[0], trusted=[Block])
    assert isinstance(loaded.module_.fc1, nn.Sequential)
    assert loaded.module_.fc1[0].weight.shape == (rank, fc1.in_features)
    assert isinstance(loaded.module_.conv2, Block)
    assert isinstance(loaded.module_.conv2.act, nn.Identity)
    assert len(data_bytes) < 0.3 * DENSE_BYTES


@pytest.mark.parametrize("arch", ["cnn", "residual"])
def test_torch_pruning_shrunk_net_round_trip(data, arch):
    net = make_digits_net(max_epochs=1, arch=arch).fit(*data)
    model = net.module_
    graph = tp.DependencyGraph().build_dependency(
        model, example_inputs=torch.zeros(1, 1, 8, 8))
    group = graph.get_pruning_group(model.conv1, tp.prune_conv_out_channels,
                                    idxs=list(range(16)))
    group.prune()
    assert model.conv1.out_channels == 16
    loaded, _ = assert_round_trip(net, data[0])
    assert loaded.module_.conv1.weight.shape[0] == 16
    assert loaded.module_.conv2.in_channels == 16


def test_regressor_round_trip(data):
    X = data[0].reshape(len(data[0]), -1)
    y = data[1].astype(np.float32)[:, None]
    net = NeuralNetRegressor(Regressor, module__hidden=8, max_epochs=2, lr=0.05,
                             train_split=None, verbose=0).fit(X, y)
    loaded, _ = assert_round_trip(net, X, trusted=[Regressor])
    np.testing.assert_array_equal(loaded.predict(X), net.predict(X))
    assert isinstance(loaded, NeuralNetRegressor)


def test_softmax_module_with_nll_loss(data):
    net = make_digits_net(max_epochs=1, module=SoftmaxNet, module__hidden=16,
                          criterion=nn.NLLLoss).fit(*data)
    loaded, _ = assert_round_trip(net, data[0], trusted=[SoftmaxNet])
    assert loaded.criterion is nn.NLLLoss
    np.testing.assert_allclose(loaded.predict_proba(data[0]).sum(axis=1), 1,
                               rtol=1e-5)


def test_nested_compressor_is_saved_through_estimator(trained):
    assert dumps(Wrapper(Wrapper(trained))) == dumps(trained)
    with pytest.raises(TypeError, match="obj must be"):
        dumps(object())


def test_bake_leaves_input_parametrized(trained):
    net = _masked(trained)
    baked = bake(net.module_)
    assert parametrize.is_parametrized(net.module_.fc1)
    assert not parametrize.is_parametrized(baked.fc1)
    assert torch.equal(baked.fc1.weight, net.module_.fc1.weight)


def test_fit_encodes_once_and_keeps_no_file_bytes(trained, data, tmp_path,
                                                  monkeypatch):
    import skcompress.io
    from skcompress.compression import Quantizer
    from skcompress.io import writer

    X, y = data
    calls = []
    original = writer.encode_net
    for owner in (writer, skcompress.io):  # save's and the fit's
        monkeypatch.setattr(owner, "encode_net",
                            lambda obj: calls.append(1) or original(obj))
    fitted = Quantizer(trained, bits=4, prefit=True, finetune_epochs=0).fit(X, y)
    assert calls == [1]  # size_bytes_ and report_ from one encoding
    # the fitted compressor holds no copy of its file: save encodes again
    assert not any(isinstance(v, (bytes, writer.EncodedNet))
                   for v in vars(fitted).values())
    path = tmp_path / "q.skc"
    assert save(fitted, path) == fitted.size_bytes_ == path.stat().st_size
    assert calls == [1, 1]
    encoding = original(fitted)
    assert path.read_bytes() == encoding.data  # deterministic
    assert fitted.report_.loc["total", "stored_bytes"] == int(
        encoding.tensors["stored_bytes"].sum())
    # once the net changes, save encodes what is there now
    with torch.no_grad():
        fitted.estimator_.module_.fc2.bias.add_(1.0)
    data_now = dumps(fitted)
    assert data_now != encoding.data
    np.testing.assert_array_equal(loads(data_now).predict_proba(X[:20]),
                                  fitted.predict_proba(X[:20]))


def test_older_versions_are_refused_with_their_number(trained):
    data = bytearray(dumps(trained))
    for version in (1, 2):
        data[4] = version
        with pytest.raises(FormatError, match=f"version {version}"):
            loads(bytes(data))


def test_format_error_is_public():
    import skcompress

    assert skcompress.FormatError is FormatError
    assert issubclass(FormatError, ValueError)


@pytest.mark.parametrize("method", ["uniform", "kmeans"])
def test_constraint_described_tensors_decode_to_the_effective_weights(
        trained, data, method):
    """Stored from the constraint's own integers / indices, never recomputed:
    the decoded tensors are the effective weights, bit for bit."""
    from skcompress.compression import Pruner, Quantizer
    from skcompress.io import encode_net

    X, y = data
    inner = Pruner(trained, sparsity=0.8, prefit=True, finetune_epochs=0)
    fitted = Quantizer(inner if method == "kmeans" else trained, bits=4,
                       method=method, prefit=method == "uniform",
                       finetune_epochs=1, random_state=0).fit(X, y)
    table = encode_net(fitted).tensors
    assert set(table.loc[["conv2.weight", "fc1.weight"], "encoding"]) <= {
        "uniform", "codebook", "sparse"}
    effective = bake(fitted.estimator_.module_).state_dict()
    loaded = loads(dumps(fitted)).module_.state_dict()
    for name, value in effective.items():
        assert torch.equal(loaded[name], value), name
