"""Distillation into compact students, and depthwise-separable compaction.

Protocol of DESIGN.md: digits split, teacher = the base net
``make_digits_net(random_state=seed)`` (trained once per seed), seeds 0-2.

``distill``: three students with >= 10x fewer parameters than the teacher
(``squeeze``, ``mobile`` and a tiny DigitsCNN), each trained for the same
epochs plainly (``Distiller(alpha=0)``, which is exactly plain training: same
weights, see the tests) and by distillation from the teacher. Rows compare
each student with the teacher (accuracy drop, params, MACs, file size,
latency); the summary adds the accuracy gap closed,
``(acc_distilled - acc_plain) / (acc_teacher - acc_plain)``.

``compact``: :class:`~skcompress.compression.Compactor` on the teacher
(conv2 made depthwise-separable, conv1 has one input channel and is kept),
with the conv-only MACs before / after.

Run: ``python benchmarks/bench_distill.py [--json PATH]``.
"""

import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _protocol import (  # noqa: E402
    base_net,
    evaluate,
    load_split,
    parser,
    print_table,
    setup,
    summarize,
    write_json,
)

from skcompress.compression import Compactor, Distiller  # noqa: E402
from skcompress.models import make_digits_net  # noqa: E402

STUDENTS = {
    "squeeze": dict(arch="squeeze"),
    "mobile": dict(arch="mobile"),
    "tiny_cnn": dict(module__channels=(8, 16), module__hidden=32),
}
STUDENT_EPOCHS = 30
TEMPERATURE, ALPHA = 4.0, 0.9
# (setting, alpha): alpha=0 is plain training; 0.9 is the default, 0.5 weighs
# the labels as much as the teacher.
DISTILL_SETTINGS = (("plain", 0.0), ("distilled a=0.9", 0.9), ("distilled a=0.5", 0.5))
COMPACT_EPOCHS = 10


def distill(seed, base, data):
    """Plain vs distilled training of each compact student."""
    Xtr, _, ytr, _ = data
    rows = []
    for name, kwargs in STUDENTS.items():
        for mode, alpha in DISTILL_SETTINGS:
            student = make_digits_net(random_state=seed, max_epochs=STUDENT_EPOCHS,
                                      **kwargs)
            fitted = Distiller(student, teacher=base, temperature=TEMPERATURE,
                               alpha=alpha, random_state=seed).fit(Xtr, ytr)
            row = evaluate(f"distill:{name}", mode, fitted, base, data)
            row["teacher_accuracy"] = row["accuracy"] + row["drop_points"] / 100
            rows.append(row)
    return rows


def compact(seed, base, data):
    """Compactor on the teacher: conv MACs before / after and accuracy."""
    Xtr, _, ytr, _ = data
    fitted = Compactor(base, prefit=True, finetune_epochs=COMPACT_EPOCHS,
                       temperature=TEMPERATURE, alpha=ALPHA,
                       random_state=seed).fit(Xtr, ytr)
    row = evaluate("compact", f"{COMPACT_EPOCHS} epochs", fitted, base, data)
    total = fitted.conversion_report_.loc["total"]
    row["conv_macs_before"] = float(total["macs_before"])
    row["conv_macs_after"] = float(total["macs_after"])
    row["conv_macs_ratio"] = fitted.conv_macs_ratio_
    return [row]


EXPERIMENTS = {"distill": distill, "compact": compact}


def gap_closed(summary):
    """Per student and distilled setting: accuracies and the gap closed."""
    out = []
    for technique, group in summary.groupby("technique", sort=False):
        if not technique.startswith("distill:"):
            continue
        by_mode = group.set_index("setting")
        plain = by_mode.loc["plain", "accuracy"]
        teacher = by_mode.loc["plain", "teacher_accuracy"]
        gap = teacher - plain
        for mode in by_mode.index.drop("plain"):
            distilled = by_mode.loc[mode, "accuracy"]
            out.append({
                "student": technique.split(":", 1)[1],
                "setting": mode,
                "params_ratio": by_mode.loc["plain", "params_ratio"],
                "teacher_acc": teacher,
                "plain_acc": plain,
                "distilled_acc": distilled,
                "distilled_drop_points": 100 * (teacher - distilled),
                "gap_closed": (distilled - plain) / gap if gap > 0 else float("nan"),
            })
    return pd.DataFrame(out)


def main(argv=None):
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--experiments", nargs="+", choices=sorted(EXPERIMENTS),
                   default=list(EXPERIMENTS))
    args = p.parse_args(argv)
    setup(args)
    data = load_split()
    rows = []
    for seed in args.seeds:
        base = base_net(seed, data)
        for name in args.experiments:
            for row in EXPERIMENTS[name](seed, base, data):
                rows.append({**row, "seed": seed})
    summary = summarize(rows)
    print_table(summary)
    gaps = gap_closed(summary)
    if len(gaps):
        print()
        print_table(gaps)
    write_json(args.json, summary, rows, gap_closed=gaps.to_dict(orient="records"))
    return summary


if __name__ == "__main__":
    main()
