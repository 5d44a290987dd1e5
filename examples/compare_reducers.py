"""PCA vs SVD on a table: how many columns can go, and what it costs.

Compresses the 30 features of scikit-learn's breast-cancer table to k columns
with :class:`skcompress.PCA` and :class:`skcompress.SVD`, and compares them
with :func:`skcompress.compare_reducers`: compression ratio, held-out
reconstruction error and the cross-validated accuracy of a logistic
regression on the k columns. Writes ``reducers.csv`` in the current folder.

Run: ``python examples/compare_reducers.py`` (a few seconds on a CPU).
``SKCOMPRESS_EXAMPLE_QUICK=1`` (set by the smoke test) uses 3 folds instead of 5.
"""

import os

from sklearn.datasets import load_breast_cancer

from skcompress import PCA, SVD, compare_reducers

QUICK = os.environ.get("SKCOMPRESS_EXAMPLE_QUICK") == "1"

X, y = load_breast_cancer(return_X_y=True)
# PCA centres the data, SVD does not: on features with large means (areas in
# the hundreds) the first SVD component is spent on the mean.
table = compare_reducers(
    X,
    y,
    reducers={"PCA": PCA(), "SVD": SVD()},
    n_components=(2, 5, 10),
    cv=3 if QUICK else 5,
)
columns = ["method", "n_components", "compression_ratio", "reconstruction_error",
           "explained_variance", "score"]
print(f"{X.shape[0]} samples x {X.shape[1]} features")
print(table[columns].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
table.to_csv("reducers.csv", index=False)
print("wrote reducers.csv")
