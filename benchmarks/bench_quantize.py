"""Quantization and binarization of the digits CNN, side by side with PyTorch's
own dynamic int8 quantization, and the prune-then-quantize chain.

Protocol: docs/design.md ("Benchmark protocol"). One base net per seed, handed to
every experiment with ``prefit=True``. ``EXPERIMENTS`` maps a technique to a
function ``(seed, base, data) -> list of rows`` (``benchmarks/bench_compress.py``
merges it). Besides the protocol's columns, rows carry ``finetune_s``.

    python benchmarks/bench_quantize.py --json quantize.json --plot quantize.png
    python benchmarks/bench_quantize.py --experiments chain --seeds 0
"""

import io
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _protocol import (  # noqa: E402
    INPUT_SHAPE,
    base_net,
    evaluate,
    load_split,
    parser,
    print_table,
    setup,
    summarize,
    write_json,
)

from skcompress.accounting import dense_size_bytes, measure_latency  # noqa: E402
from skcompress.compression import Binarizer, Pruner, Quantizer  # noqa: E402

KMEANS_BITS = (2, 4, 8)
UNIFORM_BITS = (8, 4)
CHAIN_SPARSITY = (0.5, 0.8, 0.9, 0.95)
CHAIN_BITS = (2, 3, 4, 5)
QUANTIZE = dict(finetune_epochs=1, finetune_lr=5e-4)
BINARIZE = dict(finetune_epochs=3, finetune_lr=1e-3)
# The chain: bench_compress's tuned weight pruning (three AGP rounds of one
# epoch at a gentle rate), then two epochs of codebook fine-tuning.
# Magnitude (L1) masks, as in Han et al. and bench_compress.
PRUNE = dict(finetune_epochs=3, finetune_lr=5e-4, n_steps=3, criterion="l1")
CHAIN_QUANTIZE = dict(finetune_epochs=2, finetune_lr=5e-4)


def _row(technique, setting, fitted, base, data, *, latency=False):
    row = evaluate(technique, setting, fitted, base, data, latency=latency)
    row["finetune_s"] = fitted.fit_time_.get("finetune", float("nan"))
    return row


def _fit(compressor, seed, data):
    Xtr, _, ytr, _ = data
    return compressor.set_params(random_state=seed).fit(Xtr, ytr)


def _accuracy(module, data):
    _, Xte, _, yte = data
    with torch.no_grad():
        out = module(torch.as_tensor(Xte))
    return float((out.argmax(1).numpy() == yte).mean())


def _torch_rows(base, int8_export, data):
    """PyTorch's dynamic int8 quantization of the base net, and our export."""
    base_module = base.module_.eval()
    base_acc = _accuracy(base_module, data)
    original = dense_size_bytes(base)
    base_time = measure_latency(base_module, INPUT_SHAPE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dynamic = torch.ao.quantization.quantize_dynamic(
            base_module, {nn.Linear}, dtype=torch.qint8
        )
    rows = []
    for setting, module in (
        ("quantize_dynamic int8 Linear", dynamic),
        ("Quantizer(uniform, 8).export_int8()", int8_export),
    ):
        buffer = io.BytesIO()
        torch.save(module.state_dict(), buffer)
        acc = _accuracy(module, data)
        rows.append(
            {
                "technique": "torch int8",
                "setting": setting,
                "accuracy": acc,
                "drop_points": 100.0 * (base_acc - acc),
                "size_bytes": buffer.getbuffer().nbytes,
                # torch.save of a state_dict, pickle overhead included
                "size_ratio": original / buffer.getbuffer().nbytes,
                "latency_ratio": base_time / measure_latency(module, INPUT_SHAPE),
            }
        )
    return rows


def run_quantize(seed, base, data):
    rows = []
    for bits in KMEANS_BITS:
        fitted = _fit(Quantizer(base, bits=bits, prefit=True, **QUANTIZE), seed, data)
        rows.append(_row("Quantizer", f"kmeans bits={bits}", fitted, base, data))
    for bits in UNIFORM_BITS:
        fitted = _fit(
            Quantizer(base, bits=bits, method="uniform", prefit=True, **QUANTIZE),
            seed,
            data,
        )
        rows.append(
            _row("Quantizer", f"uniform bits={bits}", fitted, base, data, latency=True)
        )
        if bits == 8:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                int8 = fitted.export_int8()
    rows.extend(_torch_rows(base, int8, data))
    return rows


def run_binarize(seed, base, data):
    rows = []
    for setting, params in (
        ("default (scale)", {}),
        ("scale=False", {"scale": False}),
        ("stochastic", {"mode": "stochastic"}),
        ("activations=True", {"activations": True}),
    ):
        fitted = _fit(Binarizer(base, prefit=True, **BINARIZE, **params), seed, data)
        rows.append(_row("Binarizer", setting, fitted, base, data))
    return rows


def run_chain(seed, base, data):
    rows = []
    for sparsity in CHAIN_SPARSITY:
        pruner = _fit(Pruner(base, sparsity=sparsity, prefit=True, **PRUNE), seed, data)
        rows.append(_row("Pruner", f"s={sparsity}", pruner, base, data))
        for bits in CHAIN_BITS:
            fitted = _fit(
                Quantizer(pruner, bits=bits, prefit=True, **CHAIN_QUANTIZE), seed,
                data,
            )
            setting = f"s={sparsity} bits={bits}"
            rows.append(_row("Quantizer(Pruner)", setting, fitted, base, data))
    return rows


EXPERIMENTS = {"quantize": run_quantize, "binarize": run_binarize, "chain": run_chain}


def plot(summary, path):
    """Accuracy vs file-size ratio (log scale), one marker family per technique."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 5.5))
    ax = fig.add_subplot()
    chain = summary[summary.technique == "Quantizer(Pruner)"]
    for bits in CHAIN_BITS:
        part = chain[chain.setting.str.endswith(f"bits={bits}")]
        ax.plot(part.size_ratio, 100 * part.accuracy, "o-", label=f"Pruner+{bits}-bit")
        for _, row in part.iterrows():
            ax.annotate(row.setting.split()[0], (row.size_ratio, 100 * row.accuracy),
                        fontsize=6, xytext=(2, 2), textcoords="offset points")
    markers = {"Quantizer": "s", "Binarizer": "^", "Pruner": "v", "torch int8": "x"}
    for technique, marker in markers.items():
        part = summary[summary.technique == technique]
        for _, row in part.iterrows():
            ax.plot(row.size_ratio, 100 * row.accuracy, marker, label=
                    f"{technique}: {row.setting}")
    ax.set_xscale("log")
    ax.set_xlabel("file-size ratio (fp32 dense / file bytes, log scale)")
    ax.set_ylabel("test accuracy (%), mean of seeds")
    ax.set_title("Digits CNN: quantization, binarization, prune + quantize")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=6, ncol=2, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None):
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--experiments", nargs="+", choices=sorted(EXPERIMENTS),
                   default=list(EXPERIMENTS))
    p.add_argument("--plot", metavar="PATH", help="write accuracy vs size as PNG")
    args = p.parse_args(argv)
    setup(args)
    data = load_split()
    rows = []
    for seed in args.seeds:
        base = base_net(seed, data)
        for name in args.experiments:
            for row in EXPERIMENTS[name](seed, base, data):
                rows.append({"seed": seed, **row})
    summary = summarize(rows)
    print_table(summary)
    write_json(args.json, summary, rows, seeds=list(args.seeds))
    if args.plot:
        plot(summary, args.plot)
    return summary


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
