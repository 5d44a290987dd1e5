"""Random mutations of a file's header (and, less often, of its data), with
the checksums recomputed, for tests/io/test_fuzz.py.

``mutate(data, seed)`` is deterministic: the same file and seed give the
same mutated file and the same description, so that any failing case can be
replayed on its own with ``loads(mutate(data, seed)[0])``.
"""

import copy
import json
import math

import numpy as np

from .helpers import pack_text, unpack

INTS = [0, 1, 2, -1, -2, 3, 7, 8, 10, 15, 16, 255, 256, 257, 1024, 65535, 65536,
        2**31 - 1, 2**31, -(2**31), 2**32, 2**63 - 1, 2**63, 2**64, -(2**63),
        10**30, 300_000_000, 10_000]
FLOATS = [0.0, -0.0, 0.5, -1.5, 1e-300, -1e300, 1e300, 3.0000001, float("nan"),
          float("inf"), float("-inf")]
WORDS = ["", "x", "fc1.weight", "fc1", "p", "b", "dense", "fp16", "raw", "sparse",
         "codebook", "uniform", "binary", "ans", "zstd", "packed", "enumerative",
         "geometric", "float32", "int64", "float16", "auto", "none", "same",
         "torch.nn.modules.linear:Linear", "torch.nn.modules.module:Module",
         "skorch.regressor:NeuralNetRegressor", "skcompress.models:LeNet5",
         "torch.nn.modules.loss:NLLLoss", "os:system", "a" * 10_000]
CONTAINERS = [[], [1], [0, 0], [-1], [2**40], [8, 1024], [1024, 8], [[]], ["x"],
              {}, {"a": 1}, {"__class__": "torch.nn.modules.linear:Linear"},
              {"__class__": "os:system"}, {"n": 1}, {"enc": "dense"},
              [[[[[[[[1]]]]]]]], {"a": {"b": {"c": {"d": [1, 2, {"e": None}]}}}}]
# fields of the tensor table and their plausible alternatives
FIELDS = {
    "enc": ["dense", "fp16", "raw", "sparse", "codebook", "uniform", "binary", "x"],
    "codec": ["ans", "zstd", "packed", "x"],
    "model": ["enumerative", "geometric", "x"],
    "n": [0, 1, 2, 8, 9, 15, 16, 17, 255, 256, 257, -1],
    "k": [0, 1, 2, 8, 9, 16, 256, 257, -1],
    "nnz": [0, 1, -1, 8, 10**9],
    "transpose": [True, False, 1, 0, "yes"],
    "q_min": [0, -1, -7, -8, 7, -(2**31), 2**31, 2**40, 0.5],
    "channels": [0, 1, 2, 8, 10, 32, 64, -1, 2**31],
    "classes": [0, 1, 2, 4, 8, 9, 255, -1],
    "zero_points": [0, 1, 2, 8, -1],
    "dtype": ["float32", "float16", "float64", "int64", "int8", "uint8", "bool",
              "bfloat16", "complex64"],
    "kind": ["p", "b", "x"],
    "frozen": [True, False, None, 1],
    "persistent": [True, False, None, 0],
}


def _paths(node, path=()):
    """Every ``path`` (tuple of keys / indices) in a JSON value, root excluded."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield (*path, key)
            yield from _paths(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield (*path, index)
            yield from _paths(value, (*path, index))


def _get(node, path):
    for key in path:
        node = node[key]
    return node


def _pick(rng, items):
    return items[int(rng.integers(len(items)))]


def _value(rng, header, old=None):
    """A replacement value: another type, an edge value, or a nearby one."""
    choice = int(rng.integers(8))
    if choice == 0:
        return _pick(rng, INTS)
    if choice == 1:
        return _pick(rng, FLOATS)
    if choice == 2:
        return _pick(rng, WORDS)
    if choice == 3:
        return copy.deepcopy(_pick(rng, CONTAINERS))
    if choice == 4:
        return _pick(rng, [None, True, False])
    if choice == 5:  # a copy of another part of the header
        paths = list(_paths(header))
        return copy.deepcopy(_get(header, _pick(rng, paths)))
    if choice == 6 and isinstance(old, (int, float)) and not isinstance(old, bool):
        if isinstance(old, float) and not math.isfinite(old):
            return 0
        return old + _pick(rng, [-1, 1, -8, 8, 1000]) if isinstance(old, int) else (
            old * _pick(rng, [-1.0, 2.0, 0.5, 1e30]))
    if choice == 6 and isinstance(old, list):
        return [_value(rng, header, v) if rng.random() < 0.5 else v for v in old]
    return _pick(rng, INTS + WORDS)


def _entries(header):
    tensors = header.get("tensors")
    return [e for e in tensors if isinstance(e, dict)] if isinstance(
        tensors, list) else []


def _replace(rng, header, blob):
    paths = list(_paths(header))
    path = _pick(rng, paths)
    old = _get(header, path)
    new = _value(rng, header, old)
    _get(header, path[:-1])[path[-1]] = new
    return f"replace {list(path)} {_short(old)} -> {_short(new)}"


def _delete(rng, header, blob):
    paths = [p for p in _paths(header)]
    path = _pick(rng, paths)
    parent = _get(header, path[:-1])
    old = parent[path[-1]]
    del parent[path[-1]]
    return f"delete {list(path)} ({_short(old)})"


def _add(rng, header, blob):
    dicts = [p for p in _paths(header) if isinstance(_get(header, p), dict)]
    path = _pick(rng, dicts + [()])
    node = _get(header, path)
    key = _pick(rng, [*FIELDS, "class", "kwargs", "attrs", "none", "children",
                      "drop", "same", "streams", "shape", "meta", "x", "__class__",
                      "format", "net", "module", "tensors", "params", "criterion"])
    value = _value(rng, header)
    node[key] = value
    return f"add {list(path)}[{key!r}] = {_short(value)}"


def _field(rng, header, blob):
    """Set a named field of the tensor table (a field name drawn first, then
    one of its places) to another of its plausible values, or to anything."""
    found = {}
    for path in _paths(header):
        if path and path[-1] in FIELDS:
            found.setdefault(path[-1], []).append(path)
    if not found:
        return _replace(rng, header, blob)
    path = _pick(rng, found[_pick(rng, sorted(found))])
    old = _get(header, path)
    others = [v for v in FIELDS[path[-1]] if v != old or type(v) is not type(old)]
    new = _pick(rng, others) if rng.random() < 0.8 else _value(rng, header, old)
    _get(header, path[:-1])[path[-1]] = new
    return f"field {list(path)} {_short(old)} -> {_short(new)}"


def _swap(rng, header, blob):
    """Swap encodings (enc + meta), shapes or stream tables of two tensors."""
    entries = [e for e in _entries(header) if "enc" in e]
    if len(entries) < 2:
        return _replace(rng, header, blob)
    first, second = (entries[i] for i in rng.choice(len(entries), 2, replace=False))
    keys = _pick(rng, [("enc", "meta"), ("meta",), ("streams",), ("shape",),
                       ("enc", "meta", "streams"), ("name",)])
    for key in keys:
        first[key], second[key] = second.get(key), first.get(key)
    return f"swap {keys} of {first.get('name')!r} and {second.get('name')!r}"


def _streams(rng, header, blob):
    """Move bytes between two streams (the total stays the blob's length), or
    change one stream's length."""
    entries = [e for e in _entries(header) if isinstance(e.get("streams"), list)
               and e["streams"] and all(type(n) is int for n in e["streams"])]
    if not entries:
        return _replace(rng, header, blob)
    item = _pick(rng, entries)
    i = int(rng.integers(len(item["streams"])))
    delta = int(_pick(rng, [1, -1, 4, -4, 2, 100, -100, 2**20]))
    item["streams"][i] += delta
    if rng.random() < 0.7:  # compensate in another stream
        other = _pick(rng, entries)
        j = int(rng.integers(len(other["streams"])))
        other["streams"][j] -= delta
        return (f"streams {item.get('name')!r}[{i}] {delta:+d}, "
                f"{other.get('name')!r}[{j}] {-delta:+d}")
    return f"streams {item.get('name')!r}[{i}] {delta:+d}"


def _data(rng, header, blob):
    """Randomize a few bytes of the blob (the checksum is recomputed)."""
    if not blob:
        return _replace(rng, header, blob)
    start = int(rng.integers(len(blob)))
    count = int(rng.integers(1, 9))
    for position in range(start, min(start + count, len(blob))):
        blob[position] = int(rng.integers(256))
    return f"data bytes {start}..+{count} of the blob randomized"


MODULE_KWARGS = {
    "in_channels": [0, 1, 2, 3, -1],
    "n_classes": [0, 1, 9, 10, 11, -1],
    "image_size": [0, 2, 6, 8, 10, 16, -8],
    "channels": [[32, 64], [4, 8], [0, 0], [32], [32, 64, 128], [-1, 64]],
    "hidden": [0, 1, 7, 8, 9, 512, -1, 2_000_000],
    "dropout": [0.0, 0.25, 0.999, 1.0, 1.5, -0.1],
}
NET_PARAMS = {
    "batch_size": [1, 64, -1, 10**9],
    "lr": [0.0, 1e30, -1.0],
    "max_epochs": [0, 10**9],
    "verbose": [0, 1, 2],
    "classes": [[], [0, 1], list(range(10)), list(range(20)), ["a", "b"]],
    "predict_nonlinearity": ["auto", None],
}


def _kwargs(rng, header, blob):
    """Change or add a constructor kwarg of the root module."""
    module = header.get("module")
    if not isinstance(module, dict):
        return _replace(rng, header, blob)
    kwargs = module.setdefault("kwargs", {})
    if not isinstance(kwargs, dict):
        return _replace(rng, header, blob)
    key = _pick(rng, sorted(MODULE_KWARGS))
    new = copy.deepcopy(_pick(rng, MODULE_KWARGS[key])) if rng.random() < 0.8 else (
        _value(rng, header, kwargs.get(key)))
    old = kwargs.get(key, "<unset>")
    kwargs[key] = new
    return f"module kwarg {key} {_short(old)} -> {_short(new)}"


def _net_param(rng, header, blob):
    """Change, add or remove a skorch net parameter."""
    net = header.get("net")
    params = net.get("params") if isinstance(net, dict) else None
    if not isinstance(params, dict):
        return _replace(rng, header, blob)
    key = _pick(rng, sorted(NET_PARAMS))
    old = params.get(key, "<unset>")
    if rng.random() < 0.1:
        params.pop(key, None)
        return f"net param {key} {_short(old)} removed"
    new = copy.deepcopy(_pick(rng, NET_PARAMS[key])) if rng.random() < 0.5 else (
        _value(rng, header, params.get(key)))
    params[key] = new
    return f"net param {key} {_short(old)} -> {_short(new)}"


# attributes of the DigitsCNN's children: values that keep every activation's
# size (any other size is an error only the data can reveal), values of
# another kind, and values no input can run with
ATTRS = {
    "conv1": {"stride": [[1, 1], [0, 0], [-1, 1], [1], 1, "1"],
              "padding": [[1, 1], "same", "bogus", [1, 1, 1], 1.5],
              "dilation": [[1, 1], [0, 0]], "groups": [1, 2, 0, "1"],
              "padding_mode": ["zeros", "circular", "reflect", "bogus", 1],
              "kernel_size": [[3, 3], [5, 5], 3]},
    "conv2": {"groups": [1, 2, 32, 0, -1], "in_channels": [32, 3, "32"],
              "out_channels": [64, 10, 0]},
    "pool": {"kernel_size": [2, 0, -2, "2", [2, 2]], "stride": [2, 0, -1, None],
             "ceil_mode": [True, False, 1], "dilation": [1, 0]},
    "dropout": {"p": [0.0, 0.5, 1.0, 1.5, -0.5, "0.5"], "inplace": [True, 1]},
    "relu1": {"inplace": [True, False, 0, "yes"]},
    "flatten": {"start_dim": [1, "1", 1.0], "end_dim": [-1, "x"]},
    "fc1": {"in_features": [1024, 5, -1, "x"], "out_features": [8, 512, 3]},
    "fc2": {"out_features": [10, 3], "in_features": [8, 512]},
}


def _attrs(rng, header, blob):
    """Set an attribute of a child of the root module."""
    module = header.get("module")
    if not isinstance(module, dict):
        return _replace(rng, header, blob)
    child = _pick(rng, sorted(ATTRS))
    name = _pick(rng, sorted(ATTRS[child]))
    value = copy.deepcopy(_pick(rng, ATTRS[child][name]))
    children = module.get("children")
    if not isinstance(children, list):
        children = module["children"] = []
    children.append([child, {"attrs": {name: value}}])
    return f"attrs {child}.{name} = {_short(value)}"


OPERATORS = [(_replace, 4), (_field, 4), (_delete, 1), (_add, 1), (_swap, 1),
             (_streams, 1), (_data, 1), (_kwargs, 1), (_net_param, 1), (_attrs, 1)]


def _short(value):
    text = json.dumps(value, allow_nan=True, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def mutate(data, seed):
    """``(file bytes, description)``: 1 to 3 random mutations of ``data``."""
    rng = np.random.default_rng(seed)
    header, blob = unpack(data)
    blob = bytearray(blob)
    operators, weights = zip(*OPERATORS)
    weights = np.asarray(weights, dtype=float) / sum(weights)
    done = []
    for _ in range(int(rng.integers(1, 4))):
        operator = operators[int(rng.choice(len(operators), p=weights))]
        done.append(operator(rng, header, blob))
    text = json.dumps(header, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return pack_text(text.encode(), bytes(blob)), "; ".join(done)
