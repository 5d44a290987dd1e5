"""Choose a pruning level like a model: Pipeline + GridSearchCV.

A :class:`~sklearn.pipeline.Pipeline` casts the images to float32 and prunes
a CNN with :class:`skcompress.Pruner`. :class:`~sklearn.model_selection.GridSearchCV`
scores every sparsity on held-out folds twice, by accuracy and by the
file-size ratio (:data:`skcompress.search.SCORERS`), and
``refit=smallest_within(0.01)`` keeps the most compressed setting whose mean
accuracy is within one point of the best. ``memory=`` caches the trained
base net: it is trained once per fold, not once per (fold, sparsity).
Writes ``cv_results.csv`` in the current folder.

Run: ``python examples/grid_search_pruning.py`` (about 40 s on 2 CPU cores).
``SKCOMPRESS_EXAMPLE_QUICK=1`` (set by the smoke test) uses a smaller net,
fewer epochs and part of the data.
"""

import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from joblib import Memory
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from skcompress import Pruner
from skcompress.datasets import load_digits_images
from skcompress.models import make_digits_net
from skcompress.search import SCORERS, pareto_front, smallest_within

QUICK = os.environ.get("SKCOMPRESS_EXAMPLE_QUICK") == "1"
torch.set_num_threads(1)  # small nets: one thread is fastest

X, y = load_digits_images()
X = X.astype(np.float64)  # as user data often is; the pipeline casts it back
if QUICK:
    X, y = X[:600], y[:600]
Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, stratify=y,
                                      random_state=0)
net = make_digits_net(
    random_state=0,
    max_epochs=10 if QUICK else 12,
    **(dict(module__channels=(8, 16), module__hidden=32) if QUICK else {}),
)

with tempfile.TemporaryDirectory() as cache:
    memory = Memory(cache, verbose=0)
    pipe = Pipeline([
        ("float32", FunctionTransformer(np.float32)),
        ("prune", Pruner(net, n_steps=3, finetune_epochs=1 if QUICK else 3,
                         finetune_lr=5e-4, memory=memory, random_state=0)),
    ])
    search = GridSearchCV(
        pipe,
        {"prune__sparsity": [0.5, 0.8, 0.9, 0.95]},
        scoring={"accuracy": "accuracy",
                 "compression_ratio": SCORERS["compression_ratio"]},
        refit=smallest_within(0.01, metric="accuracy", size="compression_ratio"),
        cv=3,
    )
    search.fit(Xtr, ytr)
    # One cached base net per fold, plus one for the refit on all of Xtr.
    n_bases = len(list(Path(cache).rglob("output.pkl")))

results = pd.DataFrame(search.cv_results_)
shown = results[["param_prune__sparsity", "mean_test_accuracy",
                 "mean_test_compression_ratio", "rank_test_accuracy"]]
print(shown.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
front = pareto_front(search.cv_results_)
print("Pareto front (sparsity):", front["param_prune__sparsity"].tolist())
pruner = search.best_estimator_.named_steps["prune"]
print(f"chosen: sparsity={search.best_params_['prune__sparsity']} "
      f"(most compressed within 1 point of the best mean accuracy)")
test_accuracy = search.best_estimator_.score(Xte, yte)
print(f"refit on all training data: test accuracy {test_accuracy:.4f}, "
      f"file {pruner.size_bytes_} bytes, {pruner.compression_ratio_:.1f}x smaller")
print(f"base nets trained: {n_bases} (cached by memory= across the 4 sparsities)")
results.to_csv("cv_results.csv", index=False)
print("wrote cv_results.csv")
