"""Network compression on the digits CNN: pruning and low-rank, side by side
with torch.nn.utils.prune and torch-pruning's own MetaPruner.

Protocol: docs/design.md ("Benchmark protocol"). One base net per seed, handed to
every experiment with ``prefit=True``. An experiment is a function
``(seed, base, data) -> list of rows`` registered in ``EXPERIMENTS`` under a
technique name; ``benchmarks/bench_quantize.py`` and ``bench_distill.py``
expose ``EXPERIMENTS`` dicts of the same shape, merged here when present.

    python benchmarks/bench_compress.py --json compress.json
    python benchmarks/bench_compress.py --techniques filter lowrank --seeds 0
"""

import copy
import importlib
import io
import sys
import time
from pathlib import Path

import torch
import torch_pruning as tp
from torch.nn.utils import prune

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

from skcompress.accounting import (  # noqa: E402
    count_macs,
    count_parameters,
    dense_size_bytes,
    measure_latency,
)
from skcompress.compression import LowRankCompressor, Pruner  # noqa: E402
from skcompress.io import dumps  # noqa: E402

PRUNED_LAYERS = ("conv1", "conv2", "fc1")  # all but the output layer
FINETUNE = dict(finetune_epochs=4, finetune_lr=1e-3)
# Masks tolerate less: a gentler rate, three AGP rounds of one epoch each.
# Global L1 masks, as torch.nn.utils.prune's below (Pruner's default is LAMP).
WEIGHT_FINETUNE = dict(finetune_epochs=3, finetune_lr=5e-4, n_steps=3,
                       criterion="l1")


def _run(technique, setting, compressor, seed, base, data):
    Xtr, _, ytr, _ = data
    fitted = compressor.set_params(random_state=seed).fit(Xtr, ytr)
    row = evaluate(technique, setting, fitted, base, data)
    row["finetune_s"] = fitted.fit_time_["finetune"]
    return row


def _baseline_row(technique, setting, net, base, data, *, size_bytes, finetune_s):
    """A row for a plain skorch net compressed by another tool."""
    _, Xte, _, yte = data
    module, base_module = net.module_, base.module_
    params, macs = count_parameters(module), count_macs(module, INPUT_SHAPE)
    base_acc, acc = float(base.score(Xte, yte)), float(net.score(Xte, yte))
    return {
        "technique": technique,
        "setting": setting,
        "drop_points": 100.0 * (base_acc - acc),
        "size_bytes": int(size_bytes),
        "size_ratio": dense_size_bytes(base) / size_bytes,
        "params": int(params),
        "params_ratio": count_parameters(base_module) / params,
        "macs": int(macs),
        "macs_ratio": count_macs(base_module, INPUT_SHAPE) / macs,
        "latency_ratio": measure_latency(base_module, INPUT_SHAPE)
        / measure_latency(module, INPUT_SHAPE),
        "accuracy": acc,
        "base_train_s": base.train_time_,
        "compress_s": finetune_s,
        "finetune_s": finetune_s,
    }


def _finetune_plain(net, data, epochs, lr):
    """What a user of the other tool would do: skorch partial_fit."""
    Xtr, _, ytr, _ = data
    net.set_params(lr=lr)
    net.initialize_optimizer()
    start = time.perf_counter()
    net.partial_fit(Xtr, ytr, epochs=epochs)
    return time.perf_counter() - start


# ------------------------------------------------------------ experiments
def exp_weight_pruning(seed, base, data):
    rows = []
    for sparsity in (0.8, 0.9, 0.95):
        pruner = Pruner(base, sparsity=sparsity, prefit=True, **WEIGHT_FINETUNE)
        rows.append(_run("Pruner(weight)", f"sparsity={sparsity}", pruner, seed, base,
                         data))
    # torch.nn.utils.prune: the same global L1 masks (one shot), the same
    # epochs; made permanent, yet torch.save's state_dict stays dense.
    net = copy.deepcopy(base)
    targets = [(net.module_.get_submodule(name), "weight") for name in PRUNED_LAYERS]
    prune.global_unstructured(targets, prune.L1Unstructured, amount=0.9)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        finetune_s = _finetune_plain(net, data, WEIGHT_FINETUNE["finetune_epochs"],
                                     WEIGHT_FINETUNE["finetune_lr"])
    for module, name in targets:
        prune.remove(module, name)
    buffer = io.BytesIO()
    torch.save(net.module_.state_dict(), buffer)
    rows.append(_baseline_row("torch.nn.utils.prune", "sparsity=0.9", net, base, data,
                              size_bytes=buffer.tell(), finetune_s=finetune_s))
    return rows


FILTER_SETTINGS = (0.5, 0.6)


def exp_filter_pruning(seed, base, data):
    rows = []
    for sparsity in FILTER_SETTINGS:
        pruner = Pruner(base, sparsity=sparsity, granularity="filter", scope="layer",
                        criterion="l2", n_steps=2, prefit=True, **FINETUNE)
        rows.append(_run("Pruner(filter)", f"sparsity={sparsity}", pruner, seed, base,
                         data))
    # torch-pruning used directly: MetaPruner, one shot, then plain fine-tuning
    sparsity = FILTER_SETTINGS[0]
    net = copy.deepcopy(base)
    Xtr = data[0]
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        pruner = tp.pruner.MetaPruner(
            net.module_,
            example_inputs=torch.as_tensor(Xtr[:2]),
            importance=tp.importance.MagnitudeImportance(p=2),
            pruning_ratio=sparsity,
            ignored_layers=[net.module_.fc2],
        )
        pruner.step()
        finetune_s = _finetune_plain(net, data, FINETUNE["finetune_epochs"],
                                     FINETUNE["finetune_lr"])
    rows.append(_baseline_row("tp.MetaPruner", f"sparsity={sparsity}", net, base, data,
                              size_bytes=len(dumps(net)), finetune_s=finetune_s))
    return rows


def exp_lowrank(seed, base, data):
    settings = {
        "channel rank=0.25": dict(rank=0.25),
        "channel energy=0.8": dict(rank=None, energy=0.8),
        "tucker rank=0.25": dict(rank=0.25, method="tucker"),
    }
    return [
        _run("LowRankCompressor", name,
             LowRankCompressor(base, prefit=True, **params, **FINETUNE), seed, base,
             data)
        for name, params in settings.items()
    ]


EXPERIMENTS = {
    "weight": exp_weight_pruning,
    "filter": exp_filter_pruning,
    "lowrank": exp_lowrank,
}
for _module_name in ("bench_quantize", "bench_distill"):
    try:
        EXPERIMENTS.update(importlib.import_module(_module_name).EXPERIMENTS)
    except ModuleNotFoundError as exc:
        if exc.name != _module_name:
            raise


COLUMNS = [
    "technique", "setting", "accuracy", "drop_points", "size_ratio", "params",
    "params_ratio", "macs_ratio", "latency_ratio", "finetune_s", "base_train_s",
]


def main(argv=None):
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--techniques", nargs="+", default=list(EXPERIMENTS),
                   choices=sorted(EXPERIMENTS))
    args = p.parse_args(argv)
    setup(args)
    data = load_split()
    rows = []
    for seed in args.seeds:
        base = base_net(seed, data)
        for technique in args.techniques:
            for row in EXPERIMENTS[technique](seed, base, data):
                rows.append({**row, "seed": seed})
    summary = summarize(rows)
    summary["finetune_share"] = summary["finetune_s"] / summary["base_train_s"]
    print_table(summary[[c for c in COLUMNS if c in summary] + ["finetune_share"]])
    write_json(args.json, summary, rows, seeds=args.seeds,
               techniques=args.techniques, torch_threads=torch.get_num_threads())
    return summary


if __name__ == "__main__":
    main()

