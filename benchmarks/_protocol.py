"""The benchmark protocol of DESIGN.md, shared by every benchmark script.

- data: ``load_digits_images()`` split with ``train_test_split(test_size=0.25,
  stratify=y, random_state=0)``;
- base net: ``make_digits_net(random_state=seed)``, trained once per seed and
  handed to every compressor with ``prefit=True``;
- accuracy drop in points, size ratio from file bytes, latency ratio from
  :func:`skcompress.accounting.measure_latency` in the same process.
"""

import argparse
import json
import time

import numpy as np
import pandas as pd
import torch
from sklearn.model_selection import train_test_split

from skcompress.accounting import count_macs, count_parameters, measure_latency
from skcompress.datasets import load_digits_images
from skcompress.io import dumps
from skcompress.models import make_digits_net

INPUT_SHAPE = (1, 8, 8)
SEEDS = (0, 1, 2)


def load_split():
    """The protocol's train/test split: ``Xtr, Xte, ytr, yte``."""
    X, y = load_digits_images()
    return train_test_split(X, y, test_size=0.25, stratify=y, random_state=0)


_BASES = {}


def base_net(seed, data, **overrides):
    """Train (once per process and seed) the protocol's base net."""
    key = (seed, tuple(sorted(overrides.items())))
    if key not in _BASES:
        Xtr, _, ytr, _ = data
        net = make_digits_net(random_state=seed, **overrides)
        start = time.perf_counter()
        net.fit(Xtr, ytr)
        net.train_time_ = time.perf_counter() - start
        _BASES[key] = net
    return _BASES[key]


def module_of(obj):
    obj = getattr(obj, "estimator_", obj)
    return getattr(obj, "module_", obj)


def evaluate(technique, setting, fitted, base, data, *, latency=True):
    """One result row for a fitted compressor (or net) against its base net."""
    _, Xte, _, yte = data
    base_acc = float(base.score(Xte, yte))
    acc = float(fitted.score(Xte, yte))
    base_module, module = module_of(base), module_of(fitted)
    original = getattr(fitted, "original_size_bytes_", None)
    size = getattr(fitted, "size_bytes_", None)
    if size is None:
        size = len(dumps(fitted))
    if original is None:
        original = len(dumps(base))
    row = {
        "technique": technique,
        "setting": setting,
        "accuracy": acc,
        "drop_points": 100.0 * (base_acc - acc),
        "size_bytes": int(size),
        "size_ratio": original / size,
        "params": count_parameters(module),
        "params_ratio": count_parameters(base_module) / count_parameters(module),
        "macs": count_macs(module, INPUT_SHAPE),
        "macs_ratio": count_macs(base_module, INPUT_SHAPE)
        / max(count_macs(module, INPUT_SHAPE), 1),
        "base_train_s": getattr(base, "train_time_", float("nan")),
        "compress_s": sum(
            v for k, v in getattr(fitted, "fit_time_", {}).items() if k != "base"
            and k != "compress_and_finetune"
        ),
    }
    if latency:
        base_t = measure_latency(base_module, INPUT_SHAPE)
        t = measure_latency(module, INPUT_SHAPE)
        row["latency_ratio"] = base_t / t
    return row


def summarize(rows):
    """Mean over seeds per (technique, setting)."""
    df = pd.DataFrame(rows)
    numeric = [c for c in df.columns if c not in ("technique", "setting", "seed")]
    return (
        df.groupby(["technique", "setting"], sort=False)[numeric]
        .mean()
        .reset_index()
    )


def print_table(df):
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(df.to_string(index=False, float_format=lambda v: f"{v:.3g}"))


def parser(description):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    p.add_argument("--json", metavar="PATH", help="write the results as JSON")
    p.add_argument("--threads", type=int, default=1, help="torch threads for training")
    return p


def setup(args):
    torch.set_num_threads(args.threads)
    np.random.seed(0)


def write_json(path, summary, rows, **extra):
    if not path:
        return
    payload = {
        "summary": summary.to_dict(orient="records"),
        "runs": rows,
        **extra,
    }
    with open(path, "w") as fh:
        json.dump(payload, fh, indent=2, default=float)
