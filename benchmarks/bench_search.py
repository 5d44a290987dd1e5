"""Cached vs uncached grid search over compression settings.

``GridSearchCV(Pruner(net, memory=...), {"sparsity": 8 values}, cv=3)`` trains
the base net once per fold (+ the refit) and only fine-tunes per candidate;
without ``memory`` it retrains the base for every candidate and fold. Both
searches run here, one after the other in the same process, on the benchmark
split of docs/design.md; the scores must be identical.

Run::

    python benchmarks/bench_search.py --json search.json
"""

import argparse
import json
import tempfile
import time

import joblib
import numpy as np
import torch
from _protocol import load_split
from sklearn.model_selection import GridSearchCV, StratifiedKFold

from skcompress.compression import Pruner
from skcompress.models import make_digits_net
from skcompress.search import SCORERS, smallest_within

SPARSITIES = [0.3, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95]


def search(memory, Xtr, ytr, *, max_epochs, finetune_epochs, n_jobs=1):
    net = make_digits_net(random_state=0, max_epochs=max_epochs)
    grid = GridSearchCV(
        Pruner(net, finetune_epochs=finetune_epochs, memory=memory, random_state=0),
        {"sparsity": SPARSITIES},
        cv=StratifiedKFold(3, shuffle=True, random_state=0),
        scoring={
            "accuracy": "accuracy",
            "compression_ratio": SCORERS["compression_ratio"],
        },
        refit=smallest_within(0.005),
        n_jobs=n_jobs,
    )
    start = time.perf_counter()
    grid.fit(Xtr, ytr)
    return grid, time.perf_counter() - start


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", metavar="PATH")
    p.add_argument("--max-epochs", type=int, default=30, help="base net epochs")
    p.add_argument("--finetune-epochs", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    np.random.seed(0)

    Xtr, Xte, ytr, yte = load_split()
    with tempfile.TemporaryDirectory() as cache:
        cached, t_cached = search(
            joblib.Memory(cache, verbose=0), Xtr, ytr,
            max_epochs=args.max_epochs, finetune_epochs=args.finetune_epochs,
        )
    uncached, t_uncached = search(
        None, Xtr, ytr,
        max_epochs=args.max_epochs, finetune_epochs=args.finetune_epochs,
    )
    keys = ["mean_test_accuracy", "mean_test_compression_ratio"]
    identical = all(
        np.array_equal(cached.cv_results_[k], uncached.cv_results_[k]) for k in keys
    )
    speedup = t_uncached / t_cached
    print(f"{len(SPARSITIES)} candidates x 3 folds, Pruner(sparsity), base "
          f"{args.max_epochs} epochs, fine-tune {args.finetune_epochs} epochs")
    print(f"{'search':<10} {'seconds':>8}")
    print(f"{'uncached':<10} {t_uncached:8.1f}")
    print(f"{'cached':<10} {t_cached:8.1f}")
    print(f"speedup {speedup:.2f}x, identical cv_results_ scores: {identical}")
    print(f"chosen by smallest_within(0.005): {cached.best_params_}, "
          f"test accuracy {cached.best_estimator_.score(Xte, yte):.4f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(
                {
                    "speedup": speedup,
                    "seconds_cached": t_cached,
                    "seconds_uncached": t_uncached,
                    "identical_scores": bool(identical),
                    "best_params": cached.best_params_,
                    "mean_test_accuracy": cached.cv_results_[keys[0]].tolist(),
                    "mean_test_compression_ratio": cached.cv_results_[keys[1]].tolist(),
                },
                fh,
                indent=2,
            )
    return 0 if identical else 1


if __name__ == "__main__":
    raise SystemExit(main())
