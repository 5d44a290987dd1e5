"""Time skcompress's PCA and SVD against scikit-learn on the same data.

Interleaves scikit-learn and skcompress fits in one process, repeats each a
few times and reports medians, the time ratio (ours / scikit-learn, below 1
is faster) and the relative reconstruction errors
``||X - X_hat||_F / ||X||_F`` (with the exact optimum for the dense PCA rows).

Usage::

    python benchmarks/bench_reducers.py [--quick] [--repeats 3] [--json PATH]
"""

import argparse
import json
import statistics
import time

import numpy as np
import scipy.sparse as sp
import sklearn
from sklearn.decomposition import PCA as SklearnPCA
from sklearn.decomposition import TruncatedSVD

from skcompress.decomposition import PCA, SVD

FULL_SHAPES = {
    "tall dense": (200_000, 100),
    "wide dense": (20_000, 2_000),
    "sparse": (100_000, 10_000),
}
QUICK_SHAPES = {
    "tall dense": (20_000, 100),
    "wide dense": (2_000, 400),
    "sparse": (10_000, 2_000),
}
SPARSE_DENSITY = 0.001
N_COMPONENTS = (10, 50)


def make_dense(n_samples, n_features, seed=0):
    """Decaying spectrum (latent rank 200) + isotropic noise + column offsets."""
    rng = np.random.default_rng(seed)
    rank = min(200, n_features)
    latent = rng.standard_normal((n_samples, rank)) * np.exp(-np.arange(rank) / 20)
    X = latent @ rng.standard_normal((rank, n_features))
    X += 0.1 * rng.standard_normal((n_samples, n_features))
    X += rng.standard_normal(n_features)
    return X


def make_sparse(n_samples, n_features, density, seed=0):
    return sp.random(
        n_samples, n_features, density=density, format="csr", random_state=seed
    )


def relative_error(X, components, mean):
    """||X - X_hat||_F / ||X||_F for an orthonormal projection (row blocks)."""
    residual = total = 0.0
    for start in range(0, X.shape[0], 8192):
        block = X[start : start + 8192]
        block = block.toarray() if sp.issparse(block) else block
        centred = block - mean if mean is not None else block
        approx = (centred @ components.T) @ components
        residual += float(np.sum((centred - approx) ** 2))
        total += float(np.sum(block**2))
    return float(np.sqrt(residual / total))


def optimal_pca_error(X, k):
    """Exact optimum from the covariance spectrum (dense X)."""
    mean = X.mean(axis=0)
    gram = X.T @ X - X.shape[0] * np.outer(mean, mean)
    eigenvalues = np.linalg.eigvalsh(gram)[::-1]
    return float(np.sqrt(max(eigenvalues[k:].sum(), 0.0) / np.sum(X**2)))


def time_fit(make, X, repeats):
    times, model = [], None
    for _ in range(repeats):
        model = make()
        start = time.perf_counter()
        model.fit(X)
        times.append(time.perf_counter() - start)
    return times, model


def run(shapes, repeats):
    rows = []
    for name, (n, d) in shapes.items():
        if name == "sparse":
            X = make_sparse(n, d, SPARSE_DENSITY)
            pairs = [("SVD", "TruncatedSVD")]
        else:
            X = make_dense(n, d)
            pairs = [("PCA", "PCA"), ("SVD", "TruncatedSVD")]
        for k in N_COMPONENTS:
            optimum = optimal_pca_error(X, k) if name != "sparse" else None
            for ours_name, ref_name in pairs:
                if ours_name == "PCA":
                    ours = lambda k=k: PCA(n_components=k, random_state=0)  # noqa: E731
                    ref = lambda k=k: SklearnPCA(n_components=k, random_state=0)  # noqa: E731
                else:
                    ours = lambda k=k: SVD(n_components=k, random_state=0)  # noqa: E731
                    ref = lambda k=k: TruncatedSVD(n_components=k, random_state=0)  # noqa: E731
                ref_times, ours_times = [], []
                for _ in range(repeats):  # interleaved: same load for both
                    t, ref_model = time_fit(ref, X, 1)
                    ref_times += t
                    t, ours_model = time_fit(ours, X, 1)
                    ours_times += t
                mean_ref = (
                    getattr(ref_model, "mean_", None) if ours_name == "PCA" else None
                )
                row = {
                    "data": name,
                    "shape": f"{n}x{d}",
                    "k": k,
                    "ours": ours_name,
                    "reference": f"sklearn {ref_name}",
                    "solver": getattr(ours_model, "fit_solver_", "truncated"),
                    "reference_s": statistics.median(ref_times),
                    "ours_s": statistics.median(ours_times),
                    "error_reference": relative_error(
                        X, ref_model.components_, mean_ref
                    ),
                    "error_ours": ours_model.reconstruction_error(X),
                    "error_optimal": optimum if ours_name == "PCA" else None,
                }
                row["time_ratio"] = row["ours_s"] / row["reference_s"]
                rows.append(row)
                print(format_row(row), flush=True)
    return rows


HEADER = (
    f"{'data':<11} {'shape':>13} {'k':>3} {'ours':<4} {'reference':<21} "
    f"{'solver':<16} {'sklearn s':>9} {'ours s':>8} {'ratio':>6} "
    f"{'err sklearn':>11} {'err ours':>9} {'err optimal':>11}"
)


def format_row(row):
    optimal = row["error_optimal"]
    return (
        f"{row['data']:<11} {row['shape']:>13} {row['k']:>3} {row['ours']:<4} "
        f"{row['reference']:<21} {row['solver']:<16} {row['reference_s']:>9.3f} "
        f"{row['ours_s']:>8.3f} {row['time_ratio']:>6.2f} "
        f"{row['error_reference']:>11.6f} {row['error_ours']:>9.6f} "
        f"{'' if optimal is None else f'{optimal:.6f}':>11}"
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small shapes (smoke)")
    parser.add_argument("--repeats", type=int, default=3, help="fits per method")
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    args = parser.parse_args(argv)
    shapes = QUICK_SHAPES if args.quick else FULL_SHAPES
    print(
        f"numpy {np.__version__}, scikit-learn {sklearn.__version__}, "
        f"repeats={args.repeats} (medians), ratio = ours / sklearn"
    )
    print(HEADER)
    rows = run(shapes, args.repeats)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"quick": args.quick, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
