import copy
import io
import itertools
import json
import math
import struct
import zlib

import numpy as np
import pytest
import torch
import torch_pruning as tp
from skorch import NeuralNetRegressor
from torch import nn
from torch.nn.utils import parametrize

from skcompress.datasets import load_digits_images
from skcompress.io import (
    FormatError,
    _cost,
    _decode_lines,
    _encode_lines,
    _gap_positions,
    _gap_symbols,
    _line_ranks,
    _pack_bits,
    _position_candidates,
    _range_decode,
    _range_encode,
    _unpack_bits,
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


class Mask(nn.Module):
    def __init__(self, mask):
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, weight):
        return weight * self.mask

    def encoding_hint(self):
        return {"kind": "sparse"}


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


def assert_round_trip(net, X):
    data = dumps(net)
    loaded = loads(data)
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


def test_entropy_coding_shrinks_sparse_codebook_file(trained, data):
    net = _codebook(trained)
    coded, plain = dumps(net), dumps(net, entropy_coding=False)
    assert len(coded) < len(plain)
    for blob in (coded, plain):
        np.testing.assert_array_equal(loads(blob).predict_proba(data[0]),
                                      net.predict_proba(data[0]))
    # 90% zeros + 16 values: Deep-Compression-level sizes
    assert len(coded) < DENSE_BYTES / 30
    report = tensor_storage_report(net.module_)
    assert report["fc1.weight"]["encoding"] in ("sparse", "codebook")
    assert report["fc1.weight"]["bits_per_weight"] < 1.2


def test_codebook_detected_without_hint():
    w = torch.tensor([0.25, -0.5, 1.0, 0.25] * 64).reshape(16, 16)
    encoding, meta, arrays = encode_tensor(w, entropy_coding=False)
    assert encoding == "codebook" and meta["index"]["bits"] == 2
    assert torch.equal(decode_tensor(encoding, meta, arrays, w.shape), w)


def test_binary_weight_costs_about_one_bit(trained, data):
    net = _copy_net(trained)
    with torch.no_grad():
        w = net.module_.fc1.weight
        scale = w.abs().mean(dim=1, keepdim=True)
        w.copy_(torch.where(w >= 0, scale, -scale))
    assert_round_trip(net, data[0])
    entry = tensor_storage_report(net.module_, entropy_coding=False)["fc1.weight"]
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
    entry = tensor_storage_report(net.module_, entropy_coding=False)["conv2.weight"]
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
    loaded, data_bytes = assert_round_trip(net, data[0])
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
    loaded, _ = assert_round_trip(net, X)
    np.testing.assert_array_equal(loaded.predict(X), net.predict(X))
    assert isinstance(loaded, NeuralNetRegressor)


def test_softmax_module_with_nll_loss(data):
    net = make_digits_net(max_epochs=1, module=SoftmaxNet, module__hidden=16,
                          criterion=nn.NLLLoss).fit(*data)
    loaded, _ = assert_round_trip(net, data[0])
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


@pytest.mark.parametrize("width", range(1, 9))
def test_bit_packing_round_trip(width):
    values = np.random.default_rng(width).integers(0, 2 ** width, 1001).astype(
        np.uint8)
    packed = _pack_bits(values, width)
    assert packed.size == -(-1001 * width // 8)
    np.testing.assert_array_equal(_unpack_bits(packed, width, 1001), values)


@pytest.mark.parametrize("width", [2, 4, 8])
def test_gap_coding_round_trip_with_long_gaps(width):
    positions = np.array([0, 1, 5, 300, 301, 5000, 70_000])
    symbols = _gap_symbols(positions, width)
    assert symbols.max() <= 2 ** width - 1
    np.testing.assert_array_equal(_gap_positions(symbols, width), positions)


def test_fp16_and_raw_encodings():
    w = torch.tensor([0.5, 0.25, -1.5, 3.0, 7.0, 0.125, 2.0, 6.5] * 40)
    w = w + torch.arange(320) * 2.0 ** -4  # many distinct fp16-exact values
    encoding, meta, arrays = encode_tensor(w, entropy_coding=False)
    assert encoding == "dense" and meta["values"] == "fp16"
    assert torch.equal(decode_tensor(encoding, meta, arrays, w.shape), w)
    counter = torch.tensor(17, dtype=torch.int64)
    encoding, meta, arrays = encode_tensor(counter)
    assert encoding == "raw"
    assert torch.equal(decode_tensor(encoding, meta, arrays, ()), counter)


# -- broken files ------------------------------------------------------------


def _rewrite_header(data, edit):
    """Re-pack ``data`` with ``edit(header)`` applied and valid checksums."""
    prefix = struct.Struct("<4sBBIII")
    magic, version, codec, stored_len, raw_len, _ = prefix.unpack_from(data)
    from skcompress.io import _decompress_header

    stored = data[prefix.size:prefix.size + stored_len]
    header = json.loads(_decompress_header(codec, stored, raw_len))
    edit(header)
    text = json.dumps(header).encode()
    return prefix.pack(magic, version, 0, len(text), len(text),
                       zlib.crc32(text)) + text + data[prefix.size + stored_len:]


@pytest.fixture(scope="module")
def small_file(data):
    return dumps(make_digits_net(max_epochs=1, module__hidden=8).fit(*data))


def test_rewritten_header_still_loads(small_file, data):
    same = _rewrite_header(small_file, lambda h: None)
    np.testing.assert_array_equal(loads(same).predict_proba(data[0][:20]),
                                  loads(small_file).predict_proba(data[0][:20]))


@pytest.mark.parametrize("cut", [3, 10, 40, -1, -100])
def test_truncated_file(small_file, cut):
    with pytest.raises(FormatError, match="truncated|too short|checksum"):
        loads(small_file[:cut])


@pytest.mark.parametrize("where", [5, 30, -10, -1000])
def test_corrupted_byte(small_file, where):
    data = bytearray(small_file)
    data[where] ^= 0xFF
    with pytest.raises(FormatError):
        loads(bytes(data))


def test_bad_magic_and_trailing_bytes(small_file):
    with pytest.raises(FormatError, match="magic"):
        loads(b"PK\x03\x04" + small_file[4:])
    with pytest.raises(FormatError, match="trailing"):
        loads(small_file + b"\0")


@pytest.mark.parametrize("path", ["os:system", "builtins:eval", "os.system",
                                  "subprocess:Popen", "antigravity:x"])
def test_tampered_module_class_is_refused(small_file, path):
    def edit(header):
        header["module"]["class"] = path

    with pytest.raises(FormatError, match="refusing|not imported|invalid class"):
        loads(_rewrite_header(small_file, edit))


def test_tampered_net_and_kwarg_classes_are_refused(small_file):
    def net_class(header):
        header["net"]["class"] = "builtins:dict"

    def kwarg_class(header):
        header["module"]["kwargs"]["hidden"] = {"__class__": "builtins:eval"}

    def junk(header):
        header["tensors"][0]["arrays"] = {"values": 999}

    for edit in (net_class, kwarg_class):
        with pytest.raises(FormatError, match="refusing"):
            loads(_rewrite_header(small_file, edit))
    with pytest.raises(FormatError, match="invalid skcompress file"):
        loads(_rewrite_header(small_file, junk))


# -- version 2: lines positions, range-coded indices, header dictionary -------


def _structured_weight(seed=0):
    """A magnitude-pruned-like layer: dead rows and columns, uneven densities."""
    rng = np.random.RandomState(seed)
    w = rng.randn(48, 200).astype(np.float32)
    row_density = rng.uniform(0.0, 0.3, size=(48, 1))
    col_density = rng.uniform(0.0, 1.0, size=(1, 200))
    w *= rng.uniform(size=w.shape) < row_density * col_density * 2
    w[:10] = 0  # dead output units
    w[:, 50:80] = 0  # dead input features
    return torch.from_numpy(w)


@pytest.mark.parametrize("transpose", [False, True])
def test_lines_positions_round_trip_exactly(transpose):
    w = _structured_weight().numpy()
    mask = (w != 0).ravel()
    meta, arrays = _encode_lines(mask, w.shape, transpose)
    positions = _decode_lines(meta, arrays, w.shape, int(mask.sum()))
    np.testing.assert_array_equal(positions, np.flatnonzero(mask))
    # each line is stored at its own entropy: log2 C(l, k) bits, to the byte
    # per block of lines
    view = mask.reshape(w.shape).T if transpose else mask.reshape(w.shape)
    length = int(view.any(axis=0).sum())
    bits = sum(math.log2(math.comb(length, int(k)))
               for k in view.sum(axis=1))
    assert arrays["positions"].size <= np.ceil(bits / 8) + 1


def test_sparse_tensor_uses_lines_and_beats_iid_coding():
    w = _structured_weight()
    encoding, meta, arrays = encode_tensor(w)
    assert encoding == "sparse" and meta["positions"] == "lines"
    assert torch.equal(decode_tensor(encoding, meta, arrays, w.shape), w)
    mask = (w != 0).numpy().ravel()
    lines = _cost({k: arrays[k] for k in ("positions", "line_counts", "columns")},
                  True)
    best = min(_cost(a, True) for _, a in _position_candidates(mask, True, w.shape))
    assert lines == best  # the cheapest candidate was picked
    # bitmask and gap streams (zlib / LZMA) code the mask as one i.i.d. source
    iid = min(_cost(a, True) for _, a in _position_candidates(mask, True))
    assert lines < 0.9 * iid


@pytest.mark.parametrize("method", [None, "comb", "table"])
def test_line_ranks_are_colex_ranks(method):
    # reference: the index of each k-subset of range(7) in colexicographic
    # order, which is what the combinatorial number system ranks
    length = 7
    subsets = [c for k in range(length + 1)
               for c in itertools.combinations(range(length), k)]
    sub = np.zeros((len(subsets), length), dtype=bool)
    for row, c in enumerate(subsets):
        sub[row, list(c)] = True
    ranks = _line_ranks(sub, sub.sum(axis=1), method)
    for k in range(length + 1):
        same_k = [i for i, c in enumerate(subsets) if len(c) == k]
        colex = sorted(same_k, key=lambda i: subsets[i][::-1])
        assert [ranks[i] for i in colex] == list(range(math.comb(length, k)))


@pytest.mark.parametrize("shape", [(0, 5), (3, 0), (1, 1), (40, 300), (2, 3000)])
def test_line_ranks_methods_agree(shape):
    # both exact ways, on dense and sparse lines, down to big integers
    rng = np.random.RandomState(0)
    for density in (0.01, 0.5, 0.97):
        sub = rng.uniform(size=shape) < density
        counts = sub.sum(axis=1)
        assert (_line_ranks(sub, counts, "comb")
                == _line_ranks(sub, counts, "table")
                == _line_ranks(sub, counts))


@pytest.mark.parametrize("shape", [(0,), (7,), (1, 1), (5, 3, 2), (3, 40)])
@pytest.mark.parametrize("density", [0.0, 0.2, 1.0])
def test_lines_edge_cases(shape, density):
    size = int(np.prod(shape))
    mask = np.random.RandomState(1).uniform(size=size) < density
    for transpose in (False, True):
        if size == 0:
            continue
        meta, arrays = _encode_lines(mask, shape, transpose)
        np.testing.assert_array_equal(
            _decode_lines(meta, arrays, shape, int(mask.sum())), np.flatnonzero(mask))


def test_tampered_lines_streams_raise_format_error():
    w = _structured_weight()
    encoding, meta, arrays = encode_tensor(w)
    broken = [
        {**arrays, "positions": arrays["positions"][:-3]},
        {**arrays, "line_counts": arrays["line_counts"][:-1]},
        {**arrays, "line_counts": arrays["line_counts"] + np.uint8(1)},
        {**arrays, "columns": arrays["columns"][:-1]},
    ]
    for streams in broken:
        with pytest.raises(FormatError):
            decode_tensor(encoding, meta, streams, w.shape)


@pytest.mark.parametrize("width", [1, 2, 4, 8])
@pytest.mark.parametrize("count", [0, 1, 3, 2000])
def test_range_coding_round_trip_near_entropy(width, count):
    rng = np.random.RandomState(width)
    p = rng.dirichlet(np.ones(1 << width))
    symbols = rng.choice(1 << width, size=count, p=p).astype(np.uint8)
    stream = _range_encode(symbols, width)
    np.testing.assert_array_equal(_range_decode(stream, width, count), symbols)
    if count == 2000:
        freq = np.bincount(symbols, minlength=1 << width) / count
        entropy = -(freq[freq > 0] * np.log2(freq[freq > 0])).sum() * count / 8
        # order-0 entropy plus the cost of learning 2**width - 1 node models
        assert stream.size <= entropy + 2 * (1 << width) + 8


def test_codebook_indices_are_range_coded_when_smaller():
    rng = np.random.RandomState(0)
    centroids = np.linspace(-1, 1, 16).astype(np.float32)
    p = np.exp(-np.linspace(-2, 2, 16) ** 2)
    w = torch.from_numpy(centroids[rng.choice(16, size=(64, 64), p=p / p.sum())])
    encoding, meta, arrays = encode_tensor(w)
    assert encoding == "codebook" and meta["index"]["format"] == "range"
    assert torch.equal(decode_tensor(encoding, meta, arrays, w.shape), w)


def test_header_uses_the_preset_dictionary_and_version_1_still_loads(small_file,
                                                                     data):
    prefix = struct.Struct("<4sBBIII")
    _, version, codec, *_ = prefix.unpack_from(small_file)
    assert version == 2 and codec == 3  # "zlib-dict"

    def as_version_1(header):
        header["format"] = 1

    old = bytearray(_rewrite_header(small_file, as_version_1))
    old[4] = 1
    net = loads(bytes(old))
    np.testing.assert_array_equal(net.predict(data[0]),
                                  loads(small_file).predict(data[0]))
    old[4] = 3
    with pytest.raises(FormatError, match="version"):
        loads(bytes(old))


def test_small_iid_mask_is_range_coded_near_its_entropy():
    rng = np.random.RandomState(3)
    w = torch.from_numpy((rng.randn(32, 64) * (rng.uniform(size=(32, 64)) < 0.1))
                         .astype(np.float32))
    encoding, meta, arrays = encode_tensor(w)
    assert encoding == "sparse" and meta["positions"] in ("range", "lines")
    assert torch.equal(decode_tensor(encoding, meta, arrays, w.shape), w)
    mask = (w != 0).numpy().ravel()
    candidates = dict(
        (m["positions"], a) for m, a in _position_candidates(mask, True))
    density = mask.mean()
    entropy = -mask.size * (density * np.log2(density)
                            + (1 - density) * np.log2(1 - density)) / 8
    assert candidates["range"]["positions"].size <= entropy + 8
    assert np.array_equal(
        _range_decode(candidates["range"]["positions"], 1, mask.size), mask)


def test_encoding_cache_returns_independent_equal_results():
    import skcompress.io as skio

    w = torch.randn(32, 16)
    first = skio.encode_tensor(w)
    second = skio.encode_tensor(w)
    assert first[0] == second[0]
    assert first[2].keys() == second[2].keys()
    for name in first[2]:
        np.testing.assert_array_equal(first[2][name], second[2][name])
        assert first[2][name] is not second[2][name]
    # Mutating what a caller got never reaches the cache.
    for array in first[2].values():
        array[...] = 0
    third = skio.encode_tensor(w)
    assert torch.equal(skio.decode_tensor(third[0], third[1], third[2], w.shape), w)
