"""The compact format at real size: a CIFAR ResNet-18 (11.2M parameters).

Side by side in one process, one torch thread, the same fitted compressor:
``skcompress.io.dumps`` against ``torch.save`` of the compressed module's
``state_dict`` (constraints included, what a user would otherwise save),
and ``skcompress.io.loads`` against ``torch.load`` of it. Each time is the
median of ``--repeats`` runs; the net needs no training (``prefit=True``,
no fine-tuning), only its weights matter.

    python benchmarks/bench_format.py --json format.json
    python benchmarks/bench_format.py --net resnet20 --repeats 3   # quick
    python benchmarks/bench_format.py --codecs   # docs/format.md's codec table

Targets (issue "Format v3"): dumps <= 2x torch.save after 4-bit uniform
quantization, <= 3x after pruning 90% then 4-bit k-means; loads <= 2x
torch.load.
"""

import argparse
import io
import json
import statistics
import sys
import time
import warnings

import numpy as np
import torch

from skcompress.compression import Pruner, Quantizer
from skcompress.io import encode_net, loads
from skcompress.models import make_resnet18_net, make_resnet_net


def _median_time(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _torch_save(module):
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    return buffer.getvalue()


def _rows(name, fitted, X, repeats):
    module = fitted.estimator_.module_
    data = encode_net(fitted).data
    saved = _torch_save(module)
    t_dumps = _median_time(lambda: encode_net(fitted), repeats)
    t_save = _median_time(lambda: _torch_save(module), repeats)
    t_loads = _median_time(lambda: loads(data), repeats)
    t_load = _median_time(lambda: torch.load(io.BytesIO(saved)), repeats)
    loaded = loads(data)
    with torch.no_grad():
        same = torch.equal(loaded.module_.eval()(X), module.eval()(X))
    return {
        "net": name,
        "params": int(sum(p.numel() for p in loaded.module_.parameters())),
        "file_bytes": len(data),
        "torch_save_bytes": len(saved),
        "dumps_s": t_dumps,
        "torch_save_s": t_save,
        "dumps_ratio": t_dumps / t_save,
        "loads_s": t_loads,
        "torch_load_s": t_load,
        "loads_ratio": t_loads / t_load,
        "exact": bool(same),
    }


def codec_table(repeats):
    """Sizes and times of the symbol coders on real and synthetic streams."""
    import lzma
    import zlib

    from skcompress.compression import Quantizer
    from skcompress.datasets import load_digits_images
    from skcompress.io import bake
    from skcompress.io.codecs import ans, bits, zstd
    from skcompress.models import make_digits_net

    X, y = load_digits_images()
    base = make_digits_net(random_state=0, max_epochs=10).fit(X, y)
    streams = []
    for n_bits in (4, 2):
        fitted = Quantizer(base, bits=n_bits, prefit=True, finetune_epochs=0,
                           random_state=0).fit(X, y)
        w = bake(fitted.estimator_.module_).fc1.weight.detach().numpy().ravel()
        symbols = np.unique(w, return_inverse=True)[1].astype(np.uint8)
        streams.append((f"digits fc1, k-means {n_bits} bits", symbols, n_bits))
    rng = np.random.default_rng(0)
    gaussian = np.clip(np.rint(rng.standard_normal(2_359_296) / (3 / 7)) + 8, 0, 15)
    streams.append(("Gaussian 4 bits (ResNet-18 layer4 size)",
                    gaussian.astype(np.uint8), 4))
    print("| stream | symbols | entropy | ANS | zstd (packed) | zlib-9 | LZMA |")
    for name, symbols, width in streams:
        counts = np.bincount(symbols)
        counts = counts[counts > 0]
        entropy = -(counts * np.log2(counts / symbols.size)).sum() / 8
        (freq, words), t_enc = _timed(lambda s=symbols, w=width: ans.encode(s, 1 << w),
                                      repeats)
        _, t_dec = _timed(lambda f=freq, w=words, s=symbols: ans.decode(f, w, s.size),
                          repeats)
        ans_bytes = words.nbytes + freq.nbytes
        cells = [f"{ans_bytes:,} B, {1e3 * t_enc:.1f}/{1e3 * t_dec:.1f} ms"]
        packed = bits.pack(symbols, width).tobytes()
        size = len(packed)
        for compress, decompress in (
            (zstd.compress, lambda z, n=size: zstd.decompress(z, n)),
            (lambda d: zlib.compress(d, 9), zlib.decompress),
            (lambda d: lzma.compress(d, preset=9), lzma.decompress),
        ):
            stored, t_enc = _timed(lambda d=packed, c=compress: c(d), repeats)
            _, t_dec = _timed(lambda z=stored, d=decompress: d(z), repeats)
            cells.append(f"{len(stored):,} B, {1e3 * t_enc:.1f}/{1e3 * t_dec:.1f} ms")
        print(f"| {name} | {symbols.size:,} | {entropy:,.0f} B | " + " | ".join(cells)
              + " |")


def _timed(fn, repeats):
    result = fn()
    return result, _median_time(fn, repeats)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--net", choices=["resnet18", "resnet20"], default="resnet18")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", metavar="PATH")
    p.add_argument("--codecs", action="store_true",
                   help="print the codec comparison of docs/format.md instead")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    if args.codecs:
        codec_table(args.repeats)
        return
    warnings.simplefilter("ignore")
    rng = np.random.RandomState(0)
    X = torch.as_tensor(rng.rand(64, 3, 32, 32).astype(np.float32))
    y = np.arange(64) % 10
    make = make_resnet18_net if args.net == "resnet18" else make_resnet_net
    base = make(max_epochs=0).initialize()
    common = dict(prefit=True, finetune_epochs=0, random_state=0)
    setups = {
        "uniform 4-bit": lambda: Quantizer(base, bits=4, method="uniform", **common),
        "prune 0.9 -> k-means 4-bit": lambda: Quantizer(
            Pruner(base, sparsity=0.9, **common), bits=4, finetune_epochs=0,
            random_state=0),
    }
    rows = []
    for name, make_compressor in setups.items():
        fitted = make_compressor().fit(X, y)
        row = _rows(name, fitted, X[:8], args.repeats)
        row["setting"] = row.pop("net")
        row["net"] = args.net
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)
    print(f"{'setting':28s} {'params':>9s} {'file MB':>8s} {'dumps s':>8s} "
          f"{'save s':>7s} {'ratio':>6s} {'loads s':>8s} {'load s':>7s} {'ratio':>6s}")
    for r in rows:
        print(f"{r['setting']:28s} {r['params']:9d} {r['file_bytes'] / 1e6:8.2f} "
              f"{r['dumps_s']:8.3f} {r['torch_save_s']:7.3f} {r['dumps_ratio']:5.2f}x "
              f"{r['loads_s']:8.3f} {r['torch_load_s']:7.3f} {r['loads_ratio']:5.2f}x"
              f"{'' if r['exact'] else '  NOT EXACT'}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)


if __name__ == "__main__":
    main()
