"""Memory and CPU bombs: sizes must be refused before anything is allocated
or decoded, and decoding must stay linear (issue 10, "Memory bombs", "CPU
bomb"). Every case runs in a forked child: at most 2 s, at most 200 MB more
than before the case, and the allocations of a bomb that gets through fail
(``MemoryError``) instead of exhausting the machine."""

import io
import os
import stat
import zlib

import numpy as np
import pytest

from skcompress.io import FormatError, container, load
from skcompress.io.codecs import zstd

from .helpers import (
    acceptable,
    check_format_error,
    entry,
    join_streams,
    load_case,
    loads_case,
    pack,
    run_case,
    run_cases,
    split_streams,
    unpack,
    zstd_frame,
    zstd_streams,
)


def _resize(header, *, hidden=None, channels=None, image_size=None):
    """Module kwargs of the DigitsCNN changed, every tensor shape made to match
    the module they describe (the streams are left as they are)."""
    kwargs = header["module"].setdefault("kwargs", {})
    hidden = kwargs.get("hidden", 128) if hidden is None else hidden
    c1, c2 = kwargs.get("channels", [32, 64]) if channels is None else channels
    size = kwargs.get("image_size", 8) if image_size is None else image_size
    kwargs.update(hidden=hidden, channels=[c1, c2], image_size=size)
    shapes = {"conv1.weight": [c1, 1, 3, 3], "conv1.bias": [c1],
              "conv2.weight": [c2, c1, 3, 3], "conv2.bias": [c2],
              "fc1.weight": [hidden, c2 * (size // 2) ** 2], "fc1.bias": [hidden],
              "fc2.weight": [10, hidden], "fc2.bias": [10]}
    for item in header["tensors"]:
        item["shape"] = shapes[item["name"]]
    return header


# ------------------------------------------------------------- 2a, 2b, 2c
@pytest.mark.parametrize("base", ["dense", "pruned_kmeans", "uniform"])
def test_huge_layers_are_refused_before_allocation(bases, base):
    data = bases[base].data
    cases, what = [], []

    def add(label, header, blob, **kwargs):
        what.append(label)
        cases.append(loads_case(pack(header, blob), **kwargs))

    # (a) fc1.weight 10000 x 10000 (400 MB), the module kwargs to match
    header, blob = unpack(data)
    add("fc1 10000x10000", _resize(header, hidden=10000, channels=[32, 400],
                                   image_size=10), blob)
    # only the tensor entry: it no longer matches the module
    header, blob = unpack(data)
    entry(header, "fc1.weight")["shape"] = [10000, 10000]
    add("fc1 shape only", header, blob)
    # (b) hidden=2e6: an 8 GB fc1
    header, blob = unpack(data)
    add("hidden=2e6", _resize(header, hidden=2_000_000), blob)
    header, blob = unpack(data)
    header["module"]["kwargs"]["hidden"] = 2_000_000  # tensors left as they were
    add("hidden=2e6 kwargs only", header, blob)
    # (c) a tensor of 3e8 elements (1.2 GB), consistent with the module
    header, blob = unpack(data)
    add("fc1 3e8 elements", _resize(header, hidden=292_969), blob)
    outcomes = run_cases(cases)
    for label, outcome in zip(what, outcomes):
        check_format_error(outcome, what=f"{base}: {label}")
    for label, outcome in zip(what, outcomes):
        if label in ("fc1 10000x10000", "hidden=2e6", "fc1 3e8 elements"):
            assert "max_bytes" in outcome.message, (label, outcome.summary)
        if "only" in label:
            assert "shape" in outcome.message or "missing" in outcome.message, (
                label, outcome.summary)


@pytest.mark.parametrize("base", ["dense", "pruned_kmeans", "uniform"])
def test_huge_layers_with_a_raised_max_bytes_are_checked_against_the_data(
        bases, base):
    """A caller who raises max_bytes still gets no allocation for data the
    file does not hold: stream sizes are checked before decoding."""
    data = bases[base].data
    cases = []
    for kwargs in (dict(hidden=10000, channels=[32, 400], image_size=10),
                   dict(hidden=2_000_000), dict(hidden=292_969)):
        header, blob = unpack(data)
        cases.append(loads_case(pack(_resize(header, **kwargs), blob),
                                max_bytes=2**40))
    for outcome in run_cases(cases):
        check_format_error(outcome, what=base)


SHAPES = [[300_000_000], [2**31, 2**31], [10**30], [-1, 1024], [8, 1024.0],
          ["8", 1024], [8, None], [1] * 9 + [8, 1024], 8, None, {"0": 8}]
STREAMS = [[2**40], [-1], [32768.0], ["32768"], [None], [1] * 100, 32768, None]


def test_invalid_or_enormous_shapes_and_stream_tables(dense):
    cases, what = [], []
    for field, values, match in (("shape", SHAPES, "shape"),
                                 ("streams", STREAMS, "stream")):
        for value in values:
            header, blob = unpack(dense.data)
            entry(header, "fc1.weight")[field] = value
            what.append((f"fc1.weight {field}={str(value)[:40]}", match))
            cases.append(loads_case(pack(header, blob), max_bytes=2**62))
    for (label, match), outcome in zip(what, run_cases(cases)):
        check_format_error(outcome, match, what=label)


# ----------------------------------------------------------------- 2d zstd
def _with_stream(data, name, index, new):
    header, blob = unpack(data)
    streams = split_streams(header, blob)
    streams[name][index] = new
    return pack(header, join_streams(header, streams))


def test_zstd_frames_declaring_other_sizes(bases):
    cases, what = [], []
    for base in bases.values():
        header, blob = unpack(base.data)
        streams = split_streams(header, blob)
        for name, index in zstd_streams(header, blob):
            original = streams[name][index]
            raw = zstd.decompress(original, zstd_size(original))
            for label, frame in [
                ("declares 1 TB", zstd_frame(2**40, b"\0", 1 << 16)),
                ("declares 2**64-2", zstd_frame(2**64 - 2, b"\0", 1 << 16)),
                ("declares 16 GB, holds 1 byte", zstd_frame(2**34)),
                ("one byte more", _plain_frame(raw + b"\0")),
                ("one byte less", _plain_frame(raw[:-1])),
                ("declares its size, holds more", zstd_frame(len(raw), b"\0",
                                                             len(raw) + 1000)),
                ("no content size", _plain_frame(raw, content_size=False)),
                ("not a frame", b"\0" * 16),
                ("empty", b""),
            ]:
                what.append(f"{base.name} {name}[{index}]: {label}")
                cases.append(loads_case(_with_stream(base.data, name, index, frame)))
    assert len(what) >= 9 * 3, "the base files hold too few zstd streams"
    for label, outcome in zip(what, run_cases(cases)):
        check_format_error(outcome, what=label)


def zstd_size(frame):
    import zstandard

    return zstandard.frame_content_size(frame)


def _plain_frame(raw, content_size=True):
    import zstandard

    return zstandard.ZstdCompressor(write_content_size=content_size).compress(raw)


def test_zstd_symbol_stream_bomb(uniform):
    """A symbol stream switched to the zstd codec, whose frame declares far
    more than the tensor's packed symbols."""
    cases = []
    for frame in (zstd_frame(2**40, b"\0", 1 << 16), zstd_frame(2**31),
                  _plain_frame(b"\0" * (1 << 20))):
        header, blob = unpack(uniform.data)
        streams = split_streams(header, blob)
        item = entry(header, "fc1.weight")
        sym = item["meta"]["sym"]
        # the symbol streams come last: ANS has a table (and class) stream
        n_sym = 1 if sym["codec"] != "ans" else 2 + (sym.get("classes", 1) > 1)
        item["meta"]["sym"] = {"codec": "zstd", "n": sym["n"]}
        streams["fc1.weight"] = streams["fc1.weight"][:-n_sym] + [frame]
        cases.append(loads_case(pack(header, join_streams(header, streams))))
    for outcome in run_cases(cases):
        check_format_error(outcome)


def test_zstd_codec_rejects_declared_sizes_before_decoding():
    """The codec on its own: a frame must declare exactly the size asked."""
    import tracemalloc

    bomb = zstd_frame(2**40, b"\0", 1 << 16)
    tracemalloc.start()
    try:
        for frame, size in [(bomb, 100), (bomb, 2**40), (zstd.compress(b"ab"), 3),
                            (zstd.compress(b"abc"), 2)]:
            with pytest.raises(FormatError, match="zstd"):
                zstd.decompress(frame, size if size < 2**20 else 2**20)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50 * 2**20


# ------------------------------------------------------- 2e special files
def test_dev_zero_and_fifo_are_refused(tmp_path):
    fifo = tmp_path / "model.skc"
    os.mkfifo(fifo)
    link = tmp_path / "zero.skc"
    link.symlink_to("/dev/zero")
    cases = [load_case("/dev/zero"), load_case(fifo), load_case(str(fifo)),
             load_case(link), load_case(tmp_path / "missing")]
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    outcomes = run_cases(cases)
    for outcome in outcomes[:4]:
        check_format_error(outcome, "not a regular file", time_limit=0.5)
    check_format_error(outcomes[4], "cannot open")


def test_directory_is_refused(tmp_path):
    check_format_error(run_case(load_case(tmp_path)), "not a regular file")


def test_open_dev_zero_file_object_is_refused():
    def case():
        with open("/dev/zero", "rb") as handle:
            load(handle)

    check_format_error(run_case(case), "regular file")


def test_file_objects_and_bytes(dense, tmp_path):
    path = tmp_path / "net.skc"
    path.write_bytes(dense.data)
    with open(path, "rb") as handle:
        assert type(load(handle)).__name__ == "NeuralNetClassifier"
    assert type(load(io.BytesIO(dense.data))).__name__ == "NeuralNetClassifier"
    with pytest.raises(FormatError, match="magic"):
        load(io.BytesIO(b""))
    with pytest.raises(TypeError):
        load(io.StringIO("SKCZ"))


# ---------------------------------------------------------- 2f max_bytes
@pytest.mark.parametrize("base", ["dense", "uniform"])
def test_max_bytes(bases, base, X_small):
    data = bases[base].data
    header, _ = unpack(data)
    decoded = sum(int(np.prod(e["shape"])) * np.dtype(e["dtype"]).itemsize
                  for e in header["tensors"] if "same" not in e)
    outcomes = run_cases([loads_case(data, max_bytes=decoded - 1),
                          loads_case(data, max_bytes=0),
                          loads_case(data, X_small, max_bytes=decoded),
                          loads_case(data, X_small, max_bytes=10 * decoded)])
    for outcome in outcomes[:2]:
        check_format_error(outcome, "max_bytes")
        assert str(decoded) in outcomes[0].message
    for outcome in outcomes[2:]:
        assert outcome.kind == "loaded", outcome.summary
        np.testing.assert_array_equal(outcome.result["proba"], bases[base].proba)
    with pytest.raises(ValueError, match="max_bytes"):
        load(io.BytesIO(data), max_bytes=-1)


# ------------------------------------------------------------ 3 CPU bombs
def test_duplicate_and_aliased_entries(dense):
    header0, blob0 = unpack(dense.data)
    names = [e["name"] for e in header0["tensors"]]
    cases, what = [], []

    def add(label, header, blob=blob0):
        what.append(label)
        cases.append(loads_case(pack(header, blob)))

    # the same entry twice (its streams twice too)
    header, blob = unpack(dense.data)
    streams = split_streams(header, blob)
    header["tensors"].append(dict(entry(header, "fc1.weight")))
    add("duplicate entry", header, blob + streams["fc1.weight"][0])
    # 10,000 copies of an entry pointing at the same bytes
    header, _ = unpack(dense.data)
    header["tensors"] = header["tensors"] + [entry(header, "conv1.bias")] * 10000
    add("10,000 duplicates", header)
    # aliases
    for label, target in [("alias to an unknown name", "no.such.tensor"),
                          ("alias to itself", "fc2.bias"),
                          ("alias to a later tensor", None),
                          ("alias to a tensor of another shape", "conv1.bias"),
                          ("alias to a non-string", ["fc1.weight"]),
                          ("alias to null", None)]:
        header, blob = unpack(dense.data)
        streams = split_streams(header, blob)
        if label == "alias to a later tensor":
            header["tensors"][0] = {"name": names[0], "kind": "p", "same": names[-1]}
        else:
            item = entry(header, "fc2.bias")
            item.clear()
            item.update(name="fc2.bias", kind="p", same=target)
        streams.pop(header["tensors"][0]["name"] if "later" in label else "fc2.bias")
        add(label, header, join_streams(header, streams))
    # an alias that also carries an encoding
    header, blob = unpack(dense.data)
    entry(header, "fc2.bias")["same"] = "fc1.bias"
    add("alias with an encoding", header, blob)
    # 10,000 alias entries
    header, blob = unpack(dense.data)
    header["tensors"] += [{"name": "fc2.bias", "kind": "p", "same": "fc2.bias"}] * 10000
    add("10,000 aliases", header, blob)
    for label, outcome in zip(what, run_cases(cases)):
        check_format_error(outcome, what=label)


LINE_MODELS = ("enumerative", "geometric")
BYTE_MODELS = ("bitmap", "gaps")


def _largest_sparse(base, models=LINE_MODELS):
    """The name and entry of the sparse tensor with the most nonzeros whose
    positions use one of ``models``."""
    items = [e for e in base.header["tensors"] if e.get("enc") == "sparse"
             and e["meta"]["positions"]["model"] in models]
    assert items, f"{base.name} has no sparse tensor"
    item = max(items, key=lambda e: e["meta"]["nnz"])
    return item["name"], item


def _side_layout(item):
    """``(n_lines, n_cols, count itemsize)`` of a sparse entry's side stream:
    column bitmap, one count per line, then (geometric model) one escape
    count (uint32) per density class used."""
    shape = item["shape"]
    rows = shape[0]
    cols = int(np.prod(shape[1:]))
    n_lines, n_cols = (cols, rows) if item["meta"]["positions"]["transpose"] else (
        rows, cols)
    return n_lines, n_cols, 1 if n_cols <= 0xFF else 2 if n_cols <= 0xFFFF else 4


def _with_side(data, name, side, nnz=None):
    header, blob = unpack(data)
    streams = split_streams(header, blob)
    streams[name][0] = zstd.compress(side)
    if nnz is not None:
        entry(header, name)["meta"]["nnz"] = nnz
    return pack(header, join_streams(header, streams))


def test_byte_coded_positions_crafted_in_a_file(bases, X_small):
    """fc1 of ``big_sparse`` (512 x 1024): its positions are one zstd frame
    (bitmap or gaps); frames that declare too much, too little or other
    positions fail fast, or load other weights."""
    data = bases["big_sparse"].data
    name, item = _largest_sparse(bases["big_sparse"], BYTE_MODELS)
    size = int(np.prod(item["shape"]))
    nnz = item["meta"]["nnz"]
    header, blob = unpack(data)

    def with_positions(frame, model=None, nnz_to=None):
        header, blob = unpack(data)
        streams = split_streams(header, blob)
        streams[name][0] = frame
        if model is not None:
            entry(header, name)["meta"]["positions"]["model"] = model
        if nnz_to is not None:
            entry(header, name)["meta"]["nnz"] = nnz_to
        return pack(header, join_streams(header, streams))

    ones = np.zeros(size, dtype=bool)
    ones[:nnz + 1] = True
    cases = {
        "bitmap of every cell": with_positions(
            zstd.compress(b"\xff" * ((size + 7) // 8)), "bitmap"),
        "bitmap with one nonzero too many": with_positions(
            zstd.compress(np.packbits(ones).tobytes()), "bitmap"),
        "bitmap of the wrong size": with_positions(
            zstd.compress(b"\0" * (1 << 16)), "bitmap"),
        "gaps declaring more than nnz + size // 255": with_positions(
            zstd.compress(b"\xff" * (nnz + size // 255 + 1)), "gaps"),
        "gaps of escapes only": with_positions(
            zstd.compress(b"\xff" * nnz), "gaps"),
        "gaps past the tensor": with_positions(
            zstd.compress(b"\xfe" * nnz), "gaps"),
        "every cell nonzero, gaps of zeros": with_positions(
            zstd.compress(b"\0" * size), "gaps", nnz_to=size),
    }
    outcomes = run_cases([loads_case(f) for f in cases.values()])
    for label, outcome in zip(cases, outcomes):
        check_format_error(outcome, what=label)


@pytest.mark.parametrize("base", ["pruned_kmeans", "big_sparse"])
def test_sparse_positions_claiming_too_many_symbols(bases, base, X_small):
    data = bases[base].data
    name, item = _largest_sparse(bases[base])
    model = item["meta"]["positions"].get("model")
    header, blob = unpack(data)
    side0 = split_streams(header, blob)[name][0]
    side = zstd.decompress(side0, zstd_size(side0))
    n_lines, n_cols, itemsize = _side_layout(item)
    n_bitmap = (n_cols + 7) // 8
    fixed = n_bitmap + n_lines * itemsize
    assert len(side) >= fixed and (len(side) - fixed) % 4 == 0
    escapes = np.frombuffer(side[fixed:], dtype="<u4")
    counts = np.frombuffer(side, dtype=f"<u{itemsize}", count=n_lines,
                           offset=n_bitmap)
    full = np.full_like(counts, n_cols)
    must_fail, what = [], []

    def add(label, file):
        what.append(label)
        must_fail.append(loads_case(file))

    if model == "geometric":
        assert escapes.size >= 1
        for label, new in [("escape count 2**32-1", np.full_like(escapes, 2**32 - 1)),
                           ("escape count 10**6", np.full_like(escapes, 10**6)),
                           ("escape count 2**20 on one class", np.concatenate(
                               [[2**20], escapes[1:]]).astype(np.uint32))]:
            add(label, _with_side(data, name,
                                  side[:fixed] + new.astype("<u4").tobytes()))
        add("one escape count missing", _with_side(data, name, side[:-4]))
    add("escape counts appended", _with_side(data, name, side + b"\xff" * 64))
    add("every line full, nnz unchanged", _with_side(
        data, name, side[:n_bitmap] + full.tobytes() + side[fixed:]))
    add("line counts past the line length", _with_side(
        data, name, side[:n_bitmap] + (full + 1).tobytes() + side[fixed:]))
    for label, outcome in zip(what, run_cases(must_fail)):
        check_format_error(outcome, what=f"{base} {name} ({model}): {label}")
    # counts and nnz raised together (every position taken), and megabytes of
    # ANS words: the decoder reads what the counts need, no more; the file
    # may then load (with other values) or fail, but fast and small
    size = int(np.prod(item["shape"]))
    header, blob = unpack(data)
    streams = split_streams(header, blob)
    streams[name][1] = np.random.default_rng(0).integers(
        0, 2**32, 2**18, dtype=np.uint32).tobytes()
    cases = [loads_case(_with_side(data, name, side[:n_bitmap] + full.tobytes()
                                   + side[fixed:], nnz=size), X_small),
             loads_case(pack(header, join_streams(header, streams)), X_small)]
    for outcome in run_cases(cases):
        assert acceptable(outcome), f"{base} {name}: {outcome.summary}"


def test_sparse_side_stream_declaring_a_huge_size(sparse):
    name, _ = _largest_sparse(sparse)
    header, blob = unpack(sparse.data)
    streams = split_streams(header, blob)
    cases = []
    for frame in (zstd_frame(2**40, b"\0", 1 << 16), zstd_frame(2**33)):
        streams[name][0] = frame
        cases.append(loads_case(pack(header, join_streams(header, streams))))
    for outcome in run_cases(cases):
        check_format_error(outcome, "zstd")


def test_valid_crc_but_header_declares_a_huge_zstd_size(dense):
    """The header frame itself declares 2**40 bytes (checksums recomputed)."""
    header, blob = unpack(dense.data)
    frame = zstd_frame(2**40, b"{", 1 << 16)
    prefix = container.PREFIX.pack(container.MAGIC, container.FORMAT_VERSION, 0, 0,
                                   len(frame), zlib.crc32(frame), len(blob),
                                   zlib.crc32(blob))
    check_format_error(run_case(loads_case(prefix + frame + blob)), "header")
