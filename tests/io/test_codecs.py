"""Round trips of each codec of the file format, and their size guarantees."""

import math

import numpy as np
import pytest

from skcompress.io import FormatError
from skcompress.io.codecs import ans, bits, positions, zstd
from skcompress.io.tensors import decode, encode


@pytest.mark.parametrize("width", [1, 2, 4, 8])
@pytest.mark.parametrize("count", [0, 1, 7, 13, 1000])
def test_bits_round_trip(width, count):
    symbols = np.random.default_rng(width * count).integers(0, 1 << width, count)
    packed = bits.pack(symbols, width)
    assert packed.size == bits.packed_size(count, width) == math.ceil(count * width / 8)
    np.testing.assert_array_equal(bits.unpack(packed, width, count), symbols)
    with pytest.raises(FormatError):
        bits.unpack(packed.tobytes() + b"\0", width, count)


@pytest.mark.parametrize("n_symbols,count",
                         [(2, 1), (8, 5000), (16, 70000), (256, 3000)])
def test_ans_round_trip_reaches_the_entropy(n_symbols, count):
    rng = np.random.default_rng(count)
    p = rng.dirichlet(np.ones(n_symbols))
    symbols = rng.choice(n_symbols, size=count, p=p)
    freq, words = ans.encode(symbols, n_symbols)
    np.testing.assert_array_equal(ans.decode(freq, words, count), symbols)
    counts = np.bincount(symbols, minlength=n_symbols)
    nz = counts[counts > 0]
    entropy_bytes = -(nz * np.log2(nz / count)).sum() / 8
    assert words.nbytes <= 1.01 * entropy_bytes + 8


def test_ans_many_streams_decode_in_order():
    rng = np.random.default_rng(0)
    parts = [rng.integers(0, k, n) for k, n in ((3, 100), (5, 0), (9, 1000))]
    models = [ans.model(ans.frequencies(p, k) + 1) for p, k in zip(parts, (3, 5, 9))]
    words = ans.encode_many(list(zip(parts, models)))
    decoded = ans.decode_many(words, [(len(p), m) for p, m in zip(parts, models)])
    for got, want in zip(decoded, parts):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("shape,density", [
    ((64, 2048), 0.1), ((32, 16, 3, 3), 0.05), ((10,), 0.5), ((5, 7), 0.0),
    ((300, 600), 0.3), ((3, 1000), 0.001), ((1,), 1.0), ((4, 4), 1.0),
    ((2, 70000), 0.0005),  # gaps longer than an escape
    ((512, 300), 0.05), ((512, 300), 0.5), ((600, 300), 0.0),  # byte models
    ((1, 300000), 0.001),
])
def test_positions_round_trip(shape, density):
    rng = np.random.default_rng(sum(shape))
    mask = rng.random(shape) < density
    if len(shape) > 1 and density < 1:
        mask[0] = False  # a dead unit
        mask[:, :2] = False  # dead inputs
    meta, streams = positions.encode(mask, shape)
    got = positions.decode(meta, streams[0], streams[1], shape, int(mask.sum()))
    np.testing.assert_array_equal(got, np.flatnonzero(mask))


@pytest.mark.parametrize("shape", [(64,), (10, 7), (7, 10), (8, 3, 3, 3), (1, 1),
                                   (300, 2), (2, 300)])
def test_positions_of_all_zeros_are_what_the_search_picks(shape):
    mask = np.zeros(shape, dtype=bool)
    meta, streams = positions.encode(mask, shape)
    assert (meta, streams) == positions._searched(mask, shape)
    assert positions.decode(meta, streams[0], streams[1], shape, 0).size == 0


def test_positions_cost_about_their_line_entropy():
    """Lines of different densities each cost about l * H(k / l) bits."""
    rng = np.random.default_rng(0)
    densities = np.repeat([0.01, 0.05, 0.2, 0.4], 32)[:, None]
    mask = rng.random((128, 2048)) < densities
    meta, streams = positions.encode(mask, mask.shape)
    stored = sum(len(s) for s in streams)
    k = mask.sum(axis=1)
    p = k / 2048
    ideal = -(2048 * (p * np.log2(p) + (1 - p) * np.log2(1 - p))).sum() / 8
    iid = mask.size * -(mask.mean() * np.log2(mask.mean()) + (1 - mask.mean())
                        * np.log2(1 - mask.mean())) / 8
    assert stored < 1.03 * ideal + 300
    assert stored < 0.93 * iid  # per-line models beat one model per tensor


def test_positions_reject_counts_that_do_not_add_up():
    mask = np.random.default_rng(1).random((8, 50)) < 0.2
    meta, streams = positions.encode(mask, mask.shape)
    with pytest.raises(FormatError, match="add up"):
        positions.decode(meta, streams[0], streams[1], mask.shape,
                         int(mask.sum()) + 1)


@pytest.mark.parametrize("density,model", [(0.05, "gaps"), (0.5, "bitmap")])
def test_large_tensors_use_byte_models_within_a_few_percent(density, model):
    shape = (512, 300)  # over ZSTD_MIN_CELLS
    mask = np.random.default_rng(3).random(shape) < density
    meta, streams = positions.encode(mask, shape)
    assert meta == {"model": model} and streams[1] == b""
    _, lines = positions._searched(mask, shape)
    assert sum(map(len, streams)) < 1.03 * sum(map(len, lines))


def _gap_frame(symbols):
    return zstd.compress(np.asarray(symbols, dtype=np.uint8).tobytes())


@pytest.mark.parametrize("meta,side,words,nnz,match", [
    ({"model": "bitmap"}, zstd.compress(b"\xff" * 19200), b"", 5, "nnz"),
    ({"model": "bitmap"}, zstd.compress(b"\x00" * 100), b"", 0, "expected size"),
    ({"model": "gaps"}, _gap_frame([0, 1, 2]), b"", 4, "expected size"),
    ({"model": "gaps"}, _gap_frame([0, 255, 255]), b"", 1, "nonzero count"),
    ({"model": "gaps"}, _gap_frame([254] + [255] * 602 + [254]), b"", 2, "past"),
    ({"model": "gaps"}, _gap_frame([0]), b"\0\0\0\0", 1, "second stream"),
    ({"model": "gaps", "transpose": True}, _gap_frame([0]), b"", 1, "unknown"),
])
def test_byte_coded_positions_reject_crafted_streams(meta, side, words, nnz, match):
    with pytest.raises(FormatError, match=match):
        positions.decode(meta, side, words, (512, 300), nnz)


def test_byte_models_are_refused_for_small_tensors():
    with pytest.raises(FormatError, match="not for"):
        positions.decode({"model": "bitmap"}, zstd.compress(b"\0" * 8), b"",
                         (8, 8), 0)


def test_zstd_checks_the_declared_size_before_decoding():
    frame = zstd.compress(b"x" * 1000)
    assert zstd.decompress(frame, 1000) == b"x" * 1000
    with pytest.raises(FormatError, match="expected size"):
        zstd.decompress(frame, 999)
    with pytest.raises(FormatError):
        zstd.decompress(b"not a frame", 10)


@pytest.mark.parametrize("hint", [
    None, {"kind": "sparse"}, {"kind": "binary"}, {"kind": "codebook"},
])
def test_tensor_encodings_round_trip(hint):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((32, 8, 3, 3)).astype(np.float32)
    if hint and hint["kind"] == "binary":
        w = np.where(w >= 0, 1, -1).astype(np.float32) * rng.random((32, 1, 1, 1)
                                                                    ).astype(np.float32)
    if hint and hint["kind"] == "codebook":
        w = rng.choice(np.float32([-0.5, -0.1, 0.2, 0.7]), size=w.shape)
    if hint and hint["kind"] == "sparse":
        w[rng.random(w.shape) < 0.8] = 0
    encoded = encode(w, [hint] if hint else [])
    if hint:
        assert encoded.encoding == hint["kind"]
    out = decode(encoded.encoding, encoded.meta, encoded.streams, w.shape, "float32")
    assert np.array_equal(out, w)


def test_uniform_grid_round_trip_and_wrong_grid_falls_back():
    rng = np.random.default_rng(0)
    scale = rng.random(16).astype(np.float32) + 0.1
    zero_point = rng.integers(-3, 3, 16)
    q = rng.integers(0, 16, (16, 40))
    w = (q - zero_point[:, None]).astype(np.float32) * scale[:, None]
    hint = {"kind": "uniform", "scale": scale, "zero_point": zero_point}
    encoded = encode(w, [hint])
    assert encoded.encoding == "uniform"
    out = decode("uniform", encoded.meta, encoded.streams, w.shape, "float32")
    assert np.array_equal(out, w)
    wrong = encode(w, [{**hint, "scale": scale * 1.001}])
    assert wrong.encoding == "dense"  # a wrong hint is never trusted


def test_large_tensor_with_dead_units_is_line_coded_with_ans_values():
    """A pruned fc layer of 400,000 cells: 1 % of the weights, all in 280 of
    its 500 units and 430 of its 800 inputs. The enumerative line model
    (over the kept units) saves more than LINE_GAIN over the byte models, so
    the positions are line-coded and the values ANS-coded too."""
    rng = np.random.default_rng(0)
    shape = (500, 800)
    rows = rng.choice(500, 280, replace=False)
    cols = rng.choice(800, 430, replace=False)
    block = rng.random((280, 430)) < 0.03
    mask = np.zeros(shape, dtype=bool)
    mask[np.ix_(rows, cols)] = block
    assert mask.size >= positions.ZSTD_MIN_CELLS
    byte_meta, byte_streams = positions._byte_models(mask)
    meta, streams = positions.encode(mask, shape)
    assert meta["model"] == "enumerative"
    assert sum(map(len, streams)) < (1 - positions.LINE_GAIN) * sum(
        map(len, byte_streams))
    assert np.array_equal(
        positions.decode(meta, streams[0], streams[1], shape, int(mask.sum())),
        np.flatnonzero(mask))
    # the values of such a tensor (not uniform: entropy-coded): ANS, exact
    centroids = np.array([-0.5, -0.1, 0.1, 0.5], dtype=np.float32)
    values = centroids[rng.choice(4, shape, p=[0.05, 0.45, 0.45, 0.05])]
    hints = [{"kind": "sparse"}, {"kind": "codebook"}]
    w = np.where(mask, values, 0).astype(np.float32)
    encoded = encode(w, hints)
    assert encoded.encoding == "sparse"
    assert encoded.meta["positions"]["model"] == "enumerative"
    assert encoded.meta["values"]["sym"]["codec"] == "ans"
    np.testing.assert_array_equal(
        decode(encoded.encoding, encoded.meta, encoded.streams, shape, "float32"), w)
    # as many nonzeros at iid positions: byte-coded positions, zstd values
    iid = np.where(rng.random(shape) < mask.mean(), values, 0).astype(np.float32)
    encoded = encode(iid, hints)
    assert encoded.meta["positions"]["model"] in ("gaps", "bitmap")
    assert encoded.meta["values"]["sym"]["codec"] == "zstd"
    np.testing.assert_array_equal(
        decode(encoded.encoding, encoded.meta, encoded.streams, shape, "float32"),
        iid)
