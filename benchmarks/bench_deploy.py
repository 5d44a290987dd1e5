"""Deployment: which techniques run faster in onnxruntime, and by how much.

For the digits CNN (8x8 digits, the protocol's base net) and the zoo's
ResNet-20 (``ResNetCIFAR(depth=20, in_channels=1)`` trained on the same
8x8 digits for a few epochs), every technique at one setting is exported
with ``skcompress.export_onnx`` and timed side by side in one process, one
thread, batch 256: PyTorch (``measure_latency``) and onnxruntime
(``measure_onnx_latency``, int8 weights folded at load as a deployment
would), each as the ratio base / compressed in the same runtime, plus the
onnxruntime-vs-PyTorch ratio of the same compressed net.

    python benchmarks/bench_deploy.py --json deploy.json
"""

import argparse
import json
import sys
import tempfile
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _protocol import load_split, print_table  # noqa: E402

from skcompress.accounting import measure_latency  # noqa: E402
from skcompress.compression import (  # noqa: E402
    Binarizer,
    LowRankCompressor,
    Pruner,
    Quantizer,
)
from skcompress.export import export_onnx, measure_onnx_latency  # noqa: E402
from skcompress.models import make_digits_net, make_resnet_net  # noqa: E402

SHAPE = (1, 8, 8)
COMMON = dict(prefit=True, finetune_epochs=1, random_state=0)
TECHNIQUES = {
    "prune filter 0.5": lambda b: Pruner(b, sparsity=0.5, granularity="filter",
                                         scope="layer", **COMMON),
    "low-rank tucker 0.25": lambda b: LowRankCompressor(b, rank=0.25, **COMMON),
    "prune weight 0.9": lambda b: Pruner(b, sparsity=0.9, **COMMON),
    "quantize uniform 8": lambda b: Quantizer(b, bits=8, method="uniform", **COMMON),
    "quantize uniform 4": lambda b: Quantizer(b, bits=4, method="uniform", **COMMON),
    "quantize kmeans 4": lambda b: Quantizer(b, bits=4, **COMMON),
    "binarize": lambda b: Binarizer(b, **COMMON),
}


def _times(obj, folder, name, repeats):
    export = export_onnx(obj, Path(folder) / f"{name}.onnx", SHAPE)
    torch_s = measure_latency(obj, SHAPE, repeats=repeats)
    onnx_s = measure_onnx_latency(export, SHAPE, repeats=repeats,
                                  fold_dequantize=True)
    return export, torch_s, onnx_s


def run(net_name, base, data, repeats):
    Xtr, Xte, ytr, yte = data
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for technique, make in [("base", None), *TECHNIQUES.items()]:
            fitted = base if make is None else make(base).fit(Xtr, ytr)
            # the base is timed again next to each candidate: ratios, not
            # seconds, survive the machine's load
            _, base_torch, base_onnx = _times(base, folder, "base", repeats)
            export, torch_s, onnx_s = _times(fitted, folder, "candidate", repeats)
            rows.append({
                "net": net_name, "technique": technique,
                "accuracy": float(fitted.score(Xte, yte)),
                "onnx_format": export.format,
                "onnx_kb": export.n_bytes / 1e3,
                "torch_speedup": base_torch / torch_s,
                "onnx_speedup": base_onnx / onnx_s,
                "onnx_vs_torch": torch_s / onnx_s,
            })
            print(json.dumps(rows[-1]), file=sys.stderr)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    data = load_split()
    Xtr, _, ytr, _ = data
    nets = {
        "digits CNN": make_digits_net(random_state=0),
        "ResNet-20": make_resnet_net(depth=20, random_state=0, max_epochs=10,
                                     module__in_channels=1),
    }
    rows = []
    for name, net in nets.items():
        rows += run(name, net.fit(Xtr, ytr), data, args.repeats)
    import pandas as pd

    print_table(pd.DataFrame(rows))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)


if __name__ == "__main__":
    main()
