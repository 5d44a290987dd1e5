"""Every technique at its default setting on real architectures, and memory.

Issue 11's targets, measured:

- **accuracy**: the zoo's ResNet-20 (:func:`skcompress.models.make_resnet_net`)
  and MobileNetV2 (:func:`skcompress.models.make_mobilenet_net`, width 0.5,
  stride-2 stem), trained for ``--base-epochs`` (4) on
  MNIST-5k (:func:`skcompress.datasets.load_mnist_5k`, 28x28, pixels in
  [0, 1], ``train_test_split(test_size=0.2, stratify=y, random_state=0)``),
  are handed with ``prefit=True`` to every registered technique at its
  default setting and default fine-tuning (only ``random_state`` set); the
  target is an accuracy drop of at most 1.5 points, against the base as
  trained and against the base with its BatchNorm statistics recalibrated
  the way compressors do it (a net trained briefly with Adam can gain
  several points from that alone, which would flatter the compressors).
  Rows give the accuracy before and after, the file size ratio, the latency
  ratio (batch 256, one thread, same process) and the fit's peak extra
  resident memory.
- **memory**: a ResNet-18 (:func:`skcompress.models.make_resnet18_net`, 1
  input channel, initialised, not trained) compressed by every technique with
  ``prefit=True`` and ``finetune_epochs=0`` on 64 images. Each fit runs in a
  forked child process; the resident set size is read from
  ``/proc/self/status`` (``VmRSS``; the peak, ``VmHWM``, is reset through
  ``/proc/self/clear_refs`` before the fit), so PyTorch's own allocations
  count, which ``tracemalloc`` would miss. glibc's mmap threshold is fixed
  at 128 KiB and ``malloc_trim`` runs before each reading, so that freed
  tensors do not count; one training step on a throwaway copy sets up the
  libraries' one-time buffers first ("beyond base training"). ``retained``
  is the growth with the fitted compressor alive after the fit, ``peak`` the
  high-water mark during it, both in multiples of the net's fp32 size; the
  target is at most 3x.

The base nets are trained once and cached (``joblib.Memory`` under
``--cache``). Everything runs on one torch thread.

    python benchmarks/bench_zoo.py --json benchmarks/results/zoo.json
    python benchmarks/bench_zoo.py --quick          # a smoke run, minutes
    python benchmarks/bench_zoo.py --memory-only
"""

import argparse
import copy
import gc
import json
import multiprocessing
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from joblib import Memory
from sklearn.model_selection import train_test_split

from skcompress.accounting import dense_size_bytes
from skcompress.compression import _registry
from skcompress.compression._base import recalibrate_batchnorm
from skcompress.datasets import load_mnist_5k
from skcompress.models import make_mobilenet_net, make_resnet18_net, make_resnet_net
from skcompress.search import compare_to_base

HERE = Path(__file__).resolve().parent
TARGET_DROP = 1.5
TARGET_MEMORY = 3.0
BASE_EPOCHS = 4
STUDENT_EPOCHS = 4

# The techniques' default settings: the parameters that tell registry entries
# sharing a class apart, nothing else. An entry not listed here (a technique
# registered later) is built with its class's defaults.
DEFAULTS = {
    "prune filter": dict(granularity="filter"),
}


def _resnet20(**kw):
    return make_resnet_net(20, module__in_channels=1, **kw)


def _mobilenet(**kw):
    # Half width, stride-2 stem: 6.3M MACs on 28x28 (full width with a
    # stride-1 stem: 73M), so that the run fits on one CPU thread.
    return make_mobilenet_net(module__in_channels=1, module__width_mult=0.5,
                              module__stem_stride=2, **kw)


NETS = {"resnet20": _resnet20, "mobilenetv2": _mobilenet}
# Distillation students: the same family, about 3-4x fewer parameters.
STUDENTS = {
    "resnet20": lambda **kw: make_resnet_net(8, module__in_channels=1, **kw),
    "mobilenetv2": lambda **kw: make_mobilenet_net(
        module__in_channels=1, module__width_mult=0.25, module__stem_stride=2,
        **kw),
}


def load_split(quick=False):
    X, y = load_mnist_5k()
    split = train_test_split(X, y, test_size=0.2, stratify=y, random_state=0)
    if quick:  # a smoke run: 600 training and 300 test images
        Xtr, Xte, ytr, yte = split
        split = [Xtr[:600], Xte[:300], ytr[:600], yte[:300]]
    return split


def train_base(name, epochs, quick):
    """The base net, trained on the protocol's training split (cached)."""
    torch.set_num_threads(1)
    Xtr, _, ytr, _ = load_split(quick)
    net = NETS[name](max_epochs=epochs, random_state=0)
    start = time.perf_counter()
    net.fit(Xtr, ytr)
    net.train_time_ = time.perf_counter() - start
    return net


def _rss():
    """``(VmRSS, VmHWM)`` of this process in bytes."""
    values = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, kb = line.split()[:2]
                values[key[:-1]] = int(kb) * 1024
    return values["VmRSS"], values["VmHWM"]


def _reset_peak():
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


def build(technique, base, *, student=None, random_state=0, **shared):
    """``technique``'s compressor at its default setting over ``base``."""
    cls = technique.load()
    params = dict(DEFAULTS.get(technique.name, {}), **shared)
    if technique.base_as_teacher:
        return cls(student, teacher=base, random_state=random_state, **params)
    if technique.inner is not None:
        inner = _registry.get(technique.inner)
        inner_model = build(inner, base, random_state=random_state, **shared)
        shared_outer = {k: v for k, v in shared.items() if k != "prefit"}
        return cls(inner_model, random_state=random_state,
                   **dict(DEFAULTS.get(technique.name, {}), **shared_outer))
    return cls(base, prefit=True, random_state=random_state, **params)


def accuracy_rows(name, data, *, base_epochs, student_epochs, cache, quick,
                  only=None):
    Xtr, Xte, ytr, yte = data
    base = Memory(cache, verbose=0).cache(train_base)(name, base_epochs, quick)
    base_acc = float(base.score(Xte, yte))
    # Compressors recompute BatchNorm statistics; the same on the base alone
    # tells how much of an accuracy change is owed to that, not to the rest.
    recalibrated = copy.deepcopy(base)
    recalibrate_batchnorm(recalibrated, Xtr, ytr)
    recal_acc = float(recalibrated.score(Xte, yte))
    del recalibrated
    print(f"{name}: base accuracy {base_acc:.4f} after {base_epochs} epochs "
          f"({getattr(base, 'train_time_', float('nan')):.0f} s), "
          f"{recal_acc:.4f} with BatchNorm recalibrated", flush=True)
    rows = []
    for technique in _registry.techniques():
        if only and technique.name not in only:
            continue
        student = STUDENTS[name](max_epochs=student_epochs, random_state=0)
        compressor = build(technique, base, student=student)
        gc.collect()
        rss0, _ = _rss()
        _reset_peak()
        start = time.perf_counter()
        try:
            compressor.fit(Xtr, ytr)
        except Exception as exc:  # report, do not hide
            print(f"  {technique.name}: {type(exc).__name__}: {exc}", flush=True)
            rows.append(dict(net=name, technique=technique.name,
                             error=f"{type(exc).__name__}: {exc}"))
            continue
        fit_s = time.perf_counter() - start
        _, peak = _rss()
        row = dict(net=name, technique=technique.name)
        row.update(compare_to_base(compressor, base, Xte, yte, latency=True))
        acc = row.pop("score")
        row.update(
            base_accuracy=base_acc, base_recalibrated_accuracy=recal_acc,
            accuracy=acc, drop_points=100.0 * (base_acc - acc),
            drop_vs_recalibrated_points=100.0 * (recal_acc - acc),
            peak_extra_mb=(peak - rss0) / 2**20,
            fp32_mb=dense_size_bytes(base) / 2**20,
            fit_s=fit_s,
        )
        # Accuracies are multiples of 1 / len(yte): the drop is compared in
        # test images, so that 15 of 1,000 meets "at most 1.5 points" although
        # 100 * (0.973 - 0.958) is 1.5000000000000013 in floating point.
        worst = max(row["drop_points"], row["drop_vs_recalibrated_points"])
        row["meets_target"] = bool(
            round(worst * len(yte) / 100) <= TARGET_DROP * len(yte) / 100)
        rows.append(row)
        print(f"  {technique.name}: {base_acc:.4f} -> {acc:.4f} "
              f"(drop {row['drop_points']:.2f}, "
              f"{row['drop_vs_recalibrated_points']:.2f} vs recalibrated), "
              f"size x{row['size_ratio']:.2f}, "
              f"latency x{row['latency_ratio']:.2f}, "
              f"peak +{row['peak_extra_mb']:.0f} MB, {fit_s:.0f} s", flush=True)
        del compressor
    return rows


def _settle():
    """Collect garbage and hand freed heap memory back to the OS, so that
    ``VmRSS`` counts live memory."""
    gc.collect()
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _libc():
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        # glibc raises its mmap threshold after each large free, and later
        # large tensors then stay on the heap after they are freed; a fixed
        # threshold (128 KiB) maps and unmaps them, as a live count needs.
        libc.mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD
        return libc
    except (OSError, AttributeError):  # not glibc: RSS as it comes
        return None


_LIBC = None


def _memory_child(technique_name, conn):
    global _LIBC
    _LIBC = _libc()
    torch.set_num_threads(1)
    X, y = load_mnist_5k()
    X, y = X[::78][:64], y[::78][:64]
    net = make_resnet18_net(module__in_channels=1, random_state=0).initialize()
    fp32 = dense_size_bytes(net)
    # "beyond base training": the libraries' one-time buffers (autograd,
    # oneDNN) are set up by a training step on a throwaway copy first
    warm = make_resnet18_net(module__in_channels=1, random_state=0, max_epochs=1,
                             batch_size=16)
    warm.fit(X[:16], y[:16])
    del warm
    technique = _registry.get(technique_name)
    student = make_resnet_net(8, module__in_channels=1, max_epochs=1, random_state=0)
    compressor = build(technique, net, student=student, finetune_epochs=0)
    _settle()
    rss0, _ = _rss()
    _reset_peak()
    start = time.perf_counter()
    compressor.fit(X, y)
    fit_s = time.perf_counter() - start
    _settle()
    rss1, peak = _rss()
    conn.send(dict(technique=technique_name, fp32_mb=fp32 / 2**20,
                   retained_mb=(rss1 - rss0) / 2**20, peak_mb=(peak - rss0) / 2**20,
                   retained_x=(rss1 - rss0) / fp32, peak_x=(peak - rss0) / fp32,
                   fit_s=fit_s))
    conn.close()


def memory_rows(only=None):
    ctx = multiprocessing.get_context("fork")
    rows = []
    for technique in _registry.techniques():
        if only and technique.name not in only:
            continue
        parent, child = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_memory_child, args=(technique.name, child))
        proc.start()
        child.close()
        try:
            row = parent.recv()
        except EOFError:
            row = dict(technique=technique.name, error="the child process failed")
        proc.join()
        row["net"] = "resnet18"
        if "retained_x" in row:
            row["meets_target"] = bool(row["retained_x"] <= TARGET_MEMORY)
            print(f"  resnet18 {technique.name}: retained +{row['retained_mb']:.0f} MB "
                  f"({row['retained_x']:.2f}x fp32), peak +{row['peak_mb']:.0f} MB "
                  f"({row['peak_x']:.2f}x), {row['fit_s']:.0f} s", flush=True)
        else:
            print(f"  resnet18 {technique.name}: {row['error']}", flush=True)
        rows.append(row)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nets", nargs="+", default=list(NETS), choices=list(NETS))
    p.add_argument("--techniques", nargs="+", default=None,
                   help="registry names (default: all)")
    p.add_argument("--base-epochs", type=int, default=BASE_EPOCHS)
    p.add_argument("--student-epochs", type=int, default=STUDENT_EPOCHS)
    p.add_argument("--quick", action="store_true",
                   help="600 training images, 1 base epoch, 1 student epoch")
    p.add_argument("--memory-only", action="store_true")
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--cache", default=str(HERE / "results" / "zoo_cache"))
    p.add_argument("--json", metavar="PATH", help="write the results as JSON")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    np.random.seed(0)
    if args.quick:
        args.base_epochs, args.student_epochs = 1, 1

    rows, memory = [], []
    if not args.memory_only:
        data = load_split(args.quick)
        for name in args.nets:
            rows += accuracy_rows(name, data, base_epochs=args.base_epochs,
                                  student_epochs=args.student_epochs,
                                  cache=args.cache, quick=args.quick,
                                  only=args.techniques)
    if not args.no_memory:
        memory = memory_rows(args.techniques)

    with pd.option_context("display.width", 200, "display.max_columns", 30):
        if rows:
            cols = ["net", "technique", "base_accuracy",
                    "base_recalibrated_accuracy", "accuracy", "drop_points",
                    "drop_vs_recalibrated_points", "size_ratio", "latency_ratio",
                    "peak_extra_mb", "fit_s"]
            df = pd.DataFrame(rows)
            print(df[[c for c in cols if c in df]].to_string(
                index=False, float_format=lambda v: f"{v:.3g}"))
        if memory:
            print(pd.DataFrame(memory).to_string(
                index=False, float_format=lambda v: f"{v:.3g}"))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(dict(accuracy=rows, memory=memory, quick=args.quick,
                           base_epochs=args.base_epochs,
                           student_epochs=args.student_epochs),
                      fh, indent=2, default=float)
    return 0


if __name__ == "__main__":
    sys.exit(main())
