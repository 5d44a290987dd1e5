"""The benchmark protocol of docs/design.md, shared by every benchmark script.

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

from skcompress.datasets import load_digits_images
from skcompress.models import make_digits_net
from skcompress.search import compare_to_base

INPUT_SHAPE = (1, 8, 8)
SEEDS = (0, 1, 2)


def load_split(split_state=0):
    """The protocol's train/test split: ``Xtr, Xte, ytr, yte``.

    ``split_state`` other than 0 is not the protocol: it draws another split,
    to confirm a protocol decided on the usual one on test images it has
    never been scored on."""
    X, y = load_digits_images()
    return train_test_split(X, y, test_size=0.25, stratify=y,
                            random_state=split_state)


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


def evaluate(technique, setting, fitted, base, data, *, latency=True):
    """One result row for a fitted compressor against its base net."""
    _, Xte, _, yte = data
    row = {"technique": technique, "setting": setting}
    row.update(compare_to_base(fitted, base, Xte, yte, latency=latency))
    row["accuracy"] = row.pop("score")
    row["base_train_s"] = getattr(base, "train_time_", float("nan"))
    timings = getattr(fitted, "fit_time_", {})
    row["compress_s"] = timings.get("compress_and_finetune", float("nan"))
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
