"""Loose checks of issue 10: parsing depth, tensors that do not match the
module, other versions, bad magic, trailing bytes, truncations, bit flips."""

import io
import json
import zlib

import numpy as np
import pytest
import torch

from skcompress.io import container
from skcompress.io.errors import LIMITS

from .helpers import (
    check_format_error,
    entry,
    join_streams,
    loads_case,
    pack,
    pack_text,
    run_case,
    run_cases,
    split_streams,
    unpack,
)

ALL = ["dense", "pruned_kmeans", "uniform", "big_sparse"]
MiB = 2**20
HEADER_LIMIT = LIMITS["header_bytes"]


# ------------------------------------------------------------------ depth
def test_deeply_nested_header():
    texts = [b"[" * 100_000 + b"]" * 100_000,
             b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
             b'{"format":3,"module":' + b"[" * 100_000,  # not even closed
             b"[" * 65 + b"]" * 65]
    for text, outcome in zip(texts, run_cases([loads_case(pack_text(t))
                                               for t in texts])):
        check_format_error(outcome, "nested|deep", what=text[:30])


def test_deeply_nested_value_inside_a_valid_header(dense):
    header, blob = unpack(dense.data)
    text = json.dumps(header).encode()
    deep = b'{"format":3,"deep":' + b"[" * 100_000 + b"]" * 100_000 + b","
    check_format_error(run_case(loads_case(pack_text(deep + text[1:], blob))),
                       "nested|deep")


def test_unterminated_string_of_escaped_quotes_is_linear():
    """The structure check before parsing is linear: with a regex that blanked
    strings, an unterminated string of escaped quotes was O(n**2) (a 32 KB
    header, in a 40-byte file, took 14 s in C code no signal interrupts)."""
    texts = [b'"' + b'\\"' * 16_000, b'"' + b'\\"' * ((HEADER_LIMIT - 1) // 2),
             b'["' + b'\\"' * ((HEADER_LIMIT - 4) // 2) + b'"]']
    for outcome in run_cases([loads_case(pack_text(t)) for t in texts], grace=1.0):
        check_format_error(outcome)


def _largest(item, prefix=b'{"format":3,"x":[', suffix=b"]}"):
    """A header of the largest size allowed: ``item`` repeated, comma-separated."""
    count = (HEADER_LIMIT - len(prefix) - len(suffix) + 1) // (len(item) + 1)
    text = prefix + b",".join([item] * count) + suffix
    assert HEADER_LIMIT - len(item) - 1 <= len(text) <= HEADER_LIMIT
    return text


LARGEST = {
    "open brackets": b"[" * HEADER_LIMIT,
    "open braces": b'{"a":' * (HEADER_LIMIT // 5),
    "objects": _largest(b"{}"),
    "arrays": _largest(b"[]"),
    "numbers": _largest(b"1"),
    "floats": _largest(b"0.5"),
    "strings": _largest(b'"a"'),
    "keys": _largest(b'"a":1', prefix=b'{"format":3,"x":{', suffix=b"}}"),
    "nulls": _largest(b"null"),
    "backslashes": b'"' + b"\\" * (HEADER_LIMIT - 2) + b'"',
    "quotes": b'"' * HEADER_LIMIT,
    "one string": b'{"format":3,"x":"' + b"[" * (HEADER_LIMIT - 20) + b'"}',
    "one number": b"1" * HEADER_LIMIT,
    "whitespace": b" " * HEADER_LIMIT,
}


def _largest_cases(labels):
    texts = [LARGEST[label] for label in labels]
    texts.append(b"[]" + b" " * (HEADER_LIMIT - 1))  # one byte over the limit
    labels = [*labels, "over the limit"]
    for label, outcome in zip(labels, run_cases([loads_case(pack_text(t))
                                                 for t in texts])):
        check_format_error(outcome, what=label)


def test_largest_headers_are_refused_fast_and_small():
    """Headers of the largest size allowed, of the shapes that cost the most
    to check and parse (a 16 MiB header of 5.6 million empty objects, a 1.6 KB
    file, took 430 MB when the number of values was not bounded)."""
    _largest_cases(["open brackets", "objects", "strings"])


@pytest.mark.fuzz
def test_largest_headers_of_every_shape():
    _largest_cases(list(LARGEST))


NOT_A_NET = [
    b"", b"null", b"[]", b'"format"', b"3", b'{"format":2}', b'{"format":"3"}',
    b'{"format":3}', b"\xff\xfe{", b'{"format":3,"net":{},"module":{},"tensors":[]}',
    b"NaN", b'{"format":3,"module":{"class":"torch.nn.modules.linear:Identity"},'
    b'"net":{"class":"skorch.net:NeuralNet","criterion":{"class":'
    b'"torch.nn.modules.loss:MSELoss","kwargs":{}},"params":{}},"tensors":[],'
    b'"extra":1}',
]


def test_headers_that_are_not_a_net():
    outcomes = run_cases([loads_case(pack_text(text)) for text in NOT_A_NET])
    for text, outcome in zip(NOT_A_NET, outcomes):
        check_format_error(outcome, what=text[:40])


# --------------------------------------------- tensors against the module
def test_tensor_table_must_match_the_module(bases):
    cases, what = [], []
    for base in ALL:
        _tensor_table_cases(bases[base].data, base, cases, what)
    for (label, match), outcome in zip(what, run_cases(cases)):
        check_format_error(outcome, match, what=label)


def _tensor_table_cases(data, base, cases, what):
    def add(label, header, blob, match):
        what.append((f"{base}: {label}", match))
        cases.append(loads_case(pack(header, blob)))

    # shapes that do not match, with the same number of elements
    for name, shape in [("fc1.weight", None), ("conv2.weight", None),
                        ("fc2.bias", [10, 1]), ("conv1.bias", [])]:
        header, blob = unpack(data)
        item = entry(header, name)
        if shape is None:
            shape = list(reversed(item["shape"]))
        if shape == item["shape"]:
            continue
        item["shape"] = shape
        add(f"{name} shape {shape}", header, blob, "shape|match")
    # module kwargs that no longer match the tensors
    for kwargs in ({"hidden": 16}, {"n_classes": 11}, {"image_size": 6},
                   {"channels": [32, 32]}, {"in_channels": 3}):
        header, blob = unpack(data)
        header["module"].setdefault("kwargs", {}).update(kwargs)
        add(f"kwargs {kwargs}", header, blob, "shape|match|missing|does not have")
    # an unknown extra tensor, of an existing or a new module
    for name, kind in [("fc3.weight", "p"), ("fc1.extra", "p"), ("fc1.extra", "b"),
                       ("fc1.weight.x", "p"), ("", "p"), ("conv1", "p"),
                       ("fc1._parameters", "b"), (None, "p"), (["fc1"], "p")]:
        header, blob = unpack(data)
        streams = split_streams(header, blob)
        # a copy of fc2.bias (entry and streams) under another name, last
        header["tensors"].append(dict(entry(header, "fc2.bias"), name=name, kind=kind))
        blob += b"".join(streams["fc2.bias"])
        add(f"extra tensor {name!r}", header, blob, "does not have|invalid|kind")
    # a missing tensor (entry and streams removed)
    for name in ("fc2.bias", "fc1.weight", "conv1.weight"):
        header, blob = unpack(data)
        streams = split_streams(header, blob)
        header["tensors"] = [e for e in header["tensors"] if e["name"] != name]
        streams.pop(name)
        add(f"missing {name}", header, join_streams(header, streams), "missing")
    header, blob = unpack(data)
    header["tensors"] = []
    add("no tensors", header, b"", "missing")
    # the wrong kind, dtype, or a parameter stored as a buffer
    for field, value in [("kind", "b"), ("kind", "x"), ("dtype", "float64"),
                         ("dtype", "int64"), ("dtype", "bfloat16"), ("dtype", None)]:
        header, blob = unpack(data)
        entry(header, "fc2.bias")[field] = value
        add(f"fc2.bias {field}={value!r}", header, blob, "kind|dtype")
    # an unknown field in an entry
    header, blob = unpack(data)
    entry(header, "fc2.bias")["offset"] = 0
    add("unknown entry field", header, blob, "unknown")


# ----------------------------------------------------------- the container
def test_other_format_versions_say_their_version(dense):
    cases, versions = [], [0, 1, 2, 4, 255]
    for version in versions:
        data = bytearray(dense.data)
        data[4] = version
        cases.append(loads_case(bytes(data)))
        # and a file of that version from end to end (its own checksums)
        header, blob = unpack(dense.data)
        header["format"] = version
        text = json.dumps(header).encode()
        cases.append(loads_case(pack_text(text, blob, version=version)))
    outcomes = run_cases(cases)
    for i, outcome in enumerate(outcomes):
        version = versions[i // 2]
        check_format_error(outcome, f"version {version}\\b", what=f"version {version}")


def test_header_format_field_must_agree(dense):
    header, blob = unpack(dense.data)
    cases = []
    for value in (2, 4, "3", None, 3.0000001):
        header["format"] = value
        cases.append(loads_case(pack(header, blob)))
    for outcome in run_cases(cases):
        check_format_error(outcome, "version")


def test_bad_magic(dense):
    magics = [b"SKCY", b"skcz", b"\0\0\0\0", b"PK\x03\x04", b"\x28\xb5\x2f\xfd"]
    outcomes = run_cases([loads_case(magic + dense.data[4:]) for magic in magics])
    for magic, outcome in zip(magics, outcomes):
        check_format_error(outcome, "magic", what=magic)


def test_other_files_are_not_skcompress_files(dense):
    buffer = io.BytesIO()
    torch.save({"w": torch.zeros(3)}, buffer)
    files = [buffer.getvalue(), b"", b"SKC", b"SKCZ", json.dumps({}).encode(),
             zlib.compress(dense.data)]
    for outcome in run_cases([loads_case(data) for data in files]):
        check_format_error(outcome)


def test_trailing_bytes(bases):
    cases = [loads_case(base.data + tail) for base in bases.values()
             for tail in (b"\0", b"SKCZ", base.data, b"\0" * MiB)]
    for outcome in run_cases(cases):
        check_format_error(outcome, "trailing")


def test_prefix_fields(dense):
    prefix = container.PREFIX
    magic, version, flags, reserved, hlen, hcrc, blen, bcrc = prefix.unpack_from(
        dense.data)
    body = dense.data[prefix.size:]
    cases = []
    for fields in [(magic, version, 1, 0, hlen, hcrc, blen, bcrc),
                   (magic, version, 0, 7, hlen, hcrc, blen, bcrc),
                   (magic, version, 0, 0, 2**32 - 1, hcrc, blen, bcrc),
                   (magic, version, 0, 0, hlen, hcrc, 2**64 - 1, bcrc),
                   (magic, version, 0, 0, hlen + 1, hcrc, blen - 1, bcrc),
                   (magic, version, 0, 0, 0, 0, blen + hlen, bcrc),
                   (magic, version, 0, 0, hlen, hcrc ^ 1, blen, bcrc),
                   (magic, version, 0, 0, hlen, hcrc, blen, bcrc ^ 1)]:
        cases.append(loads_case(prefix.pack(*fields) + body))
    for outcome in run_cases(cases):
        check_format_error(outcome)


# ----------------------------------------------- truncations and bit flips
def test_truncations(bases):
    cases, what = [], []
    size = container.PREFIX.size
    for base in ALL:
        data = bases[base].data
        cuts = sorted({0, 1, 3, 4, 5, size - 1, size, size + 1, len(data) - 1,
                       *np.linspace(0, len(data) - 1, 42).astype(int).tolist()})
        assert len(cuts) >= 45
        cases += [loads_case(data[:cut]) for cut in cuts]
        what += [f"{base} cut at {cut} of {len(data)}" for cut in cuts]
    for label, outcome in zip(what, run_cases(cases)):
        check_format_error(outcome, what=label)


def test_single_bit_flips(bases):
    cases, what = [], []
    for base in ALL:
        data = bases[base].data
        seed = 10 + ALL.index(base)
        rng = np.random.default_rng(seed)
        # half over the prefix and header, half anywhere
        head = container.PREFIX.size + container.PREFIX.unpack_from(data)[4]
        bits = np.concatenate([rng.integers(0, 8 * head, 100),
                               rng.integers(0, 8 * len(data), 100)])
        for bit in bits.tolist():
            flipped = bytearray(data)
            flipped[bit // 8] ^= 1 << (bit % 8)
            cases.append(loads_case(bytes(flipped)))
            what.append(f"{base}: bit {bit} flipped (seed {seed})")
    assert len(cases) == 800
    for label, outcome in zip(what, run_cases(cases)):
        check_format_error(outcome, what=label)
