"""LeNet-5 (Caffe variant, 431k parameters) on real MNIST: every technique and
the chains, against Deep Compression's LeNet-5 figure (39x at ~0 point lost).

Protocol (README, "MNIST-5k"):

- data: ``X, y = load_mnist_5k()`` (5,000 real 28x28 MNIST images, pixels
  already scaled to [0, 1]), split with ``train_test_split(test_size=0.2,
  stratify=y, random_state=0)``: 4,000 training and 1,000 test images;
- base net: ``make_lenet5_net(random_state=seed, max_epochs=BASE_EPOCHS)``,
  trained once per seed on the training split and handed to every compressor
  with ``prefit=True``; results are the mean over seeds 0-2;
- columns: ``size_ratio``, the fp32 dense size of the base net over the bytes
  of the file ``skcompress.save`` writes; ``drop_points``, test accuracy lost
  in points; ``latency_ratio``, base over compressed CPU latency (one thread,
  :func:`skcompress.accounting.measure_latency`).

Settings. The registry's techniques run at fixed settings (``FIXED``, scaled
to LeNet-5, not tuned on the test split). The learned-sparsity rows are
chosen on the training split only: a held-out fifth of it (stratified,
``random_state=0``) scores every ``(strength, bits, bias_bits)`` candidate of
``SELECT_STRENGTHS`` x ``SELECT_BITS`` x ``SELECT_BIAS_BITS`` against a base
net trained on the other four fifths; for each accuracy budget of
``TOLERANCES`` (0.5 and 1 point) the smallest candidate whose validation
accuracy is within the budget of the base's is kept (``selected`` in the
JSON). Those settings are then fitted on the whole training split for each
seed and evaluated once on the test split. No setting is chosen by looking
at test accuracy.

    python benchmarks/bench_mnist.py --json mnist.json --plot docs/mnist_tradeoff.png
    python benchmarks/bench_mnist.py --techniques variational --json mnist_vd.json
    python benchmarks/bench_mnist.py --quick
    python benchmarks/bench_mnist.py --replot mnist.json --plot docs/mnist_tradeoff.png
    python benchmarks/bench_mnist.py --replot mnist.json mnist_vd.json \
        --plot docs/mnist_tradeoff.png

``--techniques`` runs only the named rows (``variational`` is the
learned-sparsity selection and its rows; the others are the first words of
``FIXED``'s keys); ``--strengths``, ``--bits`` and ``--bias-bits`` replace
the selection grid.
"""

import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.model_selection import train_test_split

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _protocol import print_table, summarize, write_json  # noqa: E402

from skcompress.compression import (  # noqa: E402
    Binarizer,
    Distiller,
    LowRankCompressor,
    Pruner,
    Quantizer,
    VariationalPruner,
)
from skcompress.datasets import load_mnist_5k  # noqa: E402
from skcompress.models import make_lenet5_net  # noqa: E402
from skcompress.search import compare_to_base  # noqa: E402

SEEDS = (0, 1, 2)
INPUT_SHAPE = (1, 28, 28)
BASE_EPOCHS = 15
# Deep Compression (Han et al., ICLR 2016), LeNet-5 on MNIST: 39x, no loss
REFERENCE = {"label": "Deep Compression LeNet-5", "size_ratio": 39.0,
             "drop_points": 0.0}
TARGETS = ((0.5, 100.0), (1.0, 200.0))  # (points lost at most, size ratio)

VARIATIONAL = dict(finetune_epochs=10, masked_epochs=2, finetune_lr=1e-3)
CHAIN_QUANTIZE = dict(finetune_epochs=1, finetune_lr=5e-4)
SELECT_STRENGTHS = (0.1, 0.15, 0.2)
SELECT_BITS = (2, 3, 4)
# Quantizer(bias_bits=...): 4-bit codebooks of the biases (float16 where a
# layer has too few biases for a codebook), or float16 biases
SELECT_BIAS_BITS = (4, 16)
TOLERANCES = (0.5, 1.0)
PRUNE = dict(n_steps=3, finetune_epochs=3, finetune_lr=5e-4)


def _pruner(sparsity):
    return lambda base: Pruner(base, sparsity=sparsity, **PRUNE)


def _chain(inner_key, bits):
    return (lambda inner: Quantizer(inner, bits=bits, **CHAIN_QUANTIZE)), inner_key


# (technique, setting) -> builder(base) or (builder(fitted inner), inner key)
FIXED = {
    ("low-rank", "tucker rank=0.25"): lambda base: LowRankCompressor(
        base, rank=0.25, method="tucker", finetune_epochs=3, finetune_lr=1e-3),
    ("prune weight", "sparsity=0.97"): _pruner(0.97),
    ("prune weight", "sparsity=0.99"): _pruner(0.99),
    ("prune filter", "sparsity=0.5"): lambda base: Pruner(
        base, sparsity=0.5, granularity="filter", scope="layer", criterion="l2",
        n_steps=2, finetune_epochs=3, finetune_lr=1e-3),
    ("quantize", "kmeans bits=4"): lambda base: Quantizer(
        base, bits=4, finetune_epochs=1, finetune_lr=5e-4),
    ("quantize", "uniform bits=8"): lambda base: Quantizer(
        base, bits=8, method="uniform", finetune_epochs=1, finetune_lr=5e-4),
    ("binarize", "scale"): lambda base: Binarizer(
        base, finetune_epochs=3, finetune_lr=1e-3),
    ("prune+quantize", "sparsity=0.97 bits=4"): _chain(
        ("prune weight", "sparsity=0.97"), 4),
    ("prune+quantize", "sparsity=0.99 bits=4"): _chain(
        ("prune weight", "sparsity=0.99"), 4),
    ("distill", "student LeNet-5 8/16/64"): lambda base: Distiller(
        make_lenet5_net(module__channels=(8, 16), module__hidden=64,
                        max_epochs=BASE_EPOCHS),
        teacher=base, temperature=4.0, alpha=0.9),
}
QUICK = [("prune weight", "sparsity=0.97"),
         ("prune+quantize", "sparsity=0.97 bits=4")]


def load_split():
    """The MNIST-5k protocol's split: ``Xtr, Xte, ytr, yte``."""
    X, y = load_mnist_5k()
    assert X.min() >= 0.0 and X.max() <= 1.0, "inputs must be scaled to [0, 1]"
    return train_test_split(X, y, test_size=0.2, stratify=y, random_state=0)


def train_base(seed, X, y, epochs):
    net = make_lenet5_net(random_state=seed, max_epochs=epochs)
    start = time.perf_counter()
    net.fit(X, y)
    net.train_time_ = time.perf_counter() - start
    return net


def _prepared(compressor, base, seed):
    """The compressor on ``base`` (prefit), seeded; a Distiller's student is
    not prefit, its teacher is."""
    if isinstance(compressor, Distiller):
        return compressor.set_params(random_state=seed)
    return compressor.set_params(prefit=True, random_state=seed)


def evaluate(technique, setting, fitted, base, data, seed, *, latency=True):
    _, Xte, _, yte = data
    row = {"technique": technique, "setting": setting, "seed": seed}
    row.update(compare_to_base(fitted, base, Xte, yte, input_shape=INPUT_SHAPE,
                               latency=latency))
    row["accuracy"] = row.pop("score")
    row["base_accuracy"] = float(base.score(Xte, yte))
    row["fit_s"] = fitted.fit_time_.get("compress_and_finetune", float("nan"))
    if hasattr(fitted, "sparsity_"):
        row["sparsity"] = float(fitted.sparsity_)
    return row


def select_variational(seed, data, strengths, bits, bias_bits, base_epochs, log):
    """Choose ``(strength, bits, bias_bits)`` per accuracy budget on a held-out
    fifth of the training split (never the test split)."""
    Xtr, _, ytr, _ = data
    Xfit, Xval, yfit, yval = train_test_split(Xtr, ytr, test_size=0.2, stratify=ytr,
                                              random_state=0)
    base = train_base(seed, Xfit, yfit, base_epochs)
    base_accuracy = float(base.score(Xval, yval))
    candidates = []
    for strength in strengths:
        vp = VariationalPruner(base, strength=strength, prefit=True,
                               random_state=seed, **VARIATIONAL).fit(Xfit, yfit)
        for b in bits:
            for bb in bias_bits:
                q = Quantizer(vp, bits=b, bias_bits=bb, prefit=True,
                              random_state=seed, **CHAIN_QUANTIZE).fit(Xfit, yfit)
                drop = 100 * (base_accuracy - float(q.score(Xval, yval)))
                candidates.append({"strength": strength, "bits": b,
                                   "bias_bits": bb, "val_drop_points": drop,
                                   "size_ratio": float(q.compression_ratio_),
                                   "sparsity": float(vp.sparsity_)})
                log(f"  select strength={strength} bits={b} bias_bits={bb}: "
                    f"validation drop {drop:.2f} points, "
                    f"{q.compression_ratio_:.0f}x")
    selected = {}
    for tolerance in TOLERANCES:
        within = [c for c in candidates if c["val_drop_points"] <= tolerance]
        if not within:  # nothing within budget: the most accurate candidate
            within = [min(candidates, key=lambda c: c["val_drop_points"])]
        selected[tolerance] = max(within, key=lambda c: c["size_ratio"])
    return {"base_val_accuracy": base_accuracy, "candidates": candidates,
            "selected": {str(t): c for t, c in selected.items()}}


def run_seed(seed, data, keys, selected, base_epochs, log):
    Xtr, _, ytr, _ = data
    base = train_base(seed, Xtr, ytr, base_epochs)
    log(f"seed {seed}: base accuracy {base.score(data[1], data[3]):.4f} "
        f"({base.train_time_:.0f} s)")
    rows, fitted = [], {}
    for key in keys:
        spec = FIXED[key]
        if isinstance(spec, tuple):
            build, inner = spec
            compressor = _prepared(build(fitted[inner]), base, seed)
        else:
            compressor = _prepared(spec(base), base, seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            fitted[key] = compressor.fit(Xtr, ytr)
        rows.append(evaluate(*key, fitted[key], base, data, seed))
        log(f"  {key[0]} {key[1]}: {rows[-1]['size_ratio']:.1f}x, "
            f"{rows[-1]['drop_points']:.2f} points")
    strengths = sorted({c["strength"] for c in selected.values()})
    for strength in strengths:
        vp = VariationalPruner(base, strength=strength, prefit=True,
                               random_state=seed, **VARIATIONAL).fit(Xtr, ytr)
        rows.append(evaluate("variational", f"strength={strength}", vp, base, data,
                             seed))
        log(f"  variational strength={strength}: {rows[-1]['size_ratio']:.1f}x, "
            f"{rows[-1]['drop_points']:.2f} points, sparsity {vp.sparsity_:.4f}, "
            f"dead units {vp.dead_units_}")
        chosen_bits = {}
        for tolerance, choice in selected.items():
            if choice["strength"] == strength:
                chosen_bits.setdefault((choice["bits"], choice.get("bias_bits")),
                                       []).append(f"{tolerance}")
        for (b, bb), budgets in chosen_bits.items():
            q = Quantizer(vp, bits=b, bias_bits=bb, prefit=True, random_state=seed,
                          **CHAIN_QUANTIZE).fit(Xtr, ytr)
            row = evaluate("variational+quantize",
                           f"strength={strength} bits={b} bias_bits={bb} "
                           f"(chosen for <= {' and '.join(budgets)} pt)", q, base,
                           data, seed)
            rows.append(row)
            log(f"  variational+quantize {row['setting']}: "
                f"{row['size_ratio']:.1f}x, {row['drop_points']:.2f} points")
    return rows


def plot(summary, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    top = 3.0  # points; collapsed settings are drawn on the top edge
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for technique, group in summary.groupby("technique", sort=False):
        drop = group["drop_points"].clip(upper=top)
        marker = ["^" if d > top else "o" for d in group["drop_points"]]
        colour = None
        for x, d, m in zip(group["size_ratio"], drop, marker):
            handle = ax.scatter([x], [d], marker=m, s=30, color=colour,
                                label=technique if colour is None else None)
            colour = handle.get_facecolor()[0]
    ax.scatter([REFERENCE["size_ratio"]], [REFERENCE["drop_points"]], marker="*",
               s=180, color="black", label=REFERENCE["label"] + " (39x)")
    for points, ratio in TARGETS:
        ax.plot([ratio, ratio * 3], [points, points], color="red", lw=1)
        ax.plot([ratio, ratio], [points, -1.5], color="red", lw=1, ls=":")
        ax.annotate(f"target: >= {ratio:.0f}x at <= {points} pt", (ratio, points),
                    textcoords="offset points", xytext=(2, 3), fontsize=7,
                    color="red")
    ax.axhline(0, color="grey", lw=0.5)
    ax.set_ylim(-1.5, top + 0.3)
    ax.set_xscale("log")
    ax.set_xlabel("file-size ratio (dense fp32 / file bytes), log scale")
    ax.set_ylabel("accuracy drop (points)")
    ax.set_title("LeNet-5-Caffe on MNIST-5k (mean of seeds; ^: off the scale)")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    p.add_argument("--json", metavar="PATH", help="write the results as JSON")
    p.add_argument("--plot", metavar="PATH", help="write the trade-off plot")
    p.add_argument("--quick", action="store_true",
                   help="seed 0, 3 base epochs, two fixed rows, one candidate")
    p.add_argument("--replot", metavar="JSON", nargs="+",
                   help="only draw --plot from the JSON of earlier runs (the "
                   "rows of a technique in a later file replace the earlier "
                   "files' rows of that technique)")
    names = sorted({key[0] for key in FIXED} | {"variational"})
    p.add_argument("--techniques", nargs="+", choices=names, default=names,
                   help="run only these rows ('variational': the selection "
                   "and the learned-sparsity rows)")
    p.add_argument("--strengths", type=float, nargs="+",
                   default=list(SELECT_STRENGTHS))
    p.add_argument("--bits", type=int, nargs="+", default=list(SELECT_BITS))
    p.add_argument("--bias-bits", type=int, nargs="+",
                   default=list(SELECT_BIAS_BITS))
    args = p.parse_args(argv)
    if args.replot:
        import json

        import pandas as pd

        summary = pd.DataFrame()
        for path in args.replot:
            with open(path) as fh:
                later = pd.DataFrame(json.load(fh)["summary"])
            if len(summary):
                summary = summary[~summary["technique"].isin(later["technique"])]
            summary = pd.concat([summary, later], ignore_index=True)
        print_table(summary[["technique", "setting", "size_ratio", "drop_points",
                             "latency_ratio", "accuracy", "size_bytes"]])
        plot(summary, args.plot)
        return
    torch.set_num_threads(1)
    np.random.seed(0)

    def log(message):
        print(message, flush=True)

    start = time.perf_counter()
    data = load_split()
    if args.quick:
        seeds, keys, base_epochs = [0], QUICK, 3
        strengths, bits, bias_bits = (0.1,), (4,), (16,)
        VARIATIONAL.update(finetune_epochs=2, masked_epochs=0)
    else:
        seeds, keys, base_epochs = args.seeds, list(FIXED), BASE_EPOCHS
        strengths, bits, bias_bits = args.strengths, args.bits, args.bias_bits
    # a chain's inner row runs too: the chain starts from it
    wanted = {key for key in keys if key[0] in args.techniques}
    wanted |= {FIXED[key][1] for key in wanted if isinstance(FIXED[key], tuple)}
    keys = [key for key in keys if key in wanted]
    selection, selected = {}, {}
    if "variational" in args.techniques:
        selection = select_variational(0, data, strengths, bits, bias_bits,
                                       base_epochs, log)
        selected = {float(t): c for t, c in selection["selected"].items()}
    for t, c in selected.items():
        log(f"chosen on the training split for <= {t} pt: strength="
            f"{c['strength']} bits={c['bits']} bias_bits={c['bias_bits']}")
    rows = []
    for seed in seeds:
        rows += run_seed(seed, data, keys, selected, base_epochs, log)
    summary = summarize(rows)
    print_table(summary[["technique", "setting", "size_ratio", "drop_points",
                         "latency_ratio", "accuracy", "size_bytes"]])
    for points, ratio in TARGETS:
        ok = summary[(summary["drop_points"] <= points)]
        best = ok["size_ratio"].max() if len(ok) else float("nan")
        log(f"target >= {ratio:.0f}x at <= {points} pt: best {best:.1f}x "
            f"({'met' if best >= ratio else 'missed'})")
    elapsed = time.perf_counter() - start
    log(f"total {elapsed / 60:.1f} min")
    write_json(args.json, summary, rows, selection=selection,
               protocol={"seeds": seeds, "base_epochs": base_epochs,
                         "quick": args.quick, "total_s": elapsed},
               reference=REFERENCE)
    if args.plot:
        plot(summary, args.plot)


if __name__ == "__main__":
    main()
