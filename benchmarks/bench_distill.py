"""Distillation into compact students, and depthwise-separable compaction.

Protocol of docs/design.md: digits split, teacher = the base net
``make_digits_net(random_state=seed)`` (trained once per seed on the train
split), seeds 0-2. The test split is only used to report accuracies: no
setting below is chosen by looking at it.

``distill``: four students with >= 10x fewer parameters than the teacher
(``squeeze``, ``mobile``, ``tiny_cnn`` = DigitsCNN (8, 16)/32 and
``micro_cnn`` = DigitsCNN (4, 8)/16, the one plain training leaves a real gap
for), each trained for ``STUDENT_EPOCHS`` epochs at the zoo's lr from the same
initialisation, three ways:

- ``plain``: ``Distiller(alpha=0)``, which is exactly plain training (same
  weights, see the tests);
- ``default``: ``Distiller`` with its default ``alpha`` and ``temperature``;
- ``cv-selected``: ``alpha`` and ``temperature`` chosen by
  ``GridSearchCV(Distiller(...), GRIDS[grid], cv=3)`` on the **train split only**
  (accuracy, stratified 3-fold; ``alpha=0``, i.e. plain training, is one of
  the candidates and wins ties), then refit on the whole train split with the
  prefit teacher. Inside the search the teacher is refitted on each training
  fold (``teacher_prefit=False``, cached with ``memory``), so that it never
  saw the validation fold it helps to score.

The gap table reports, from the accuracies averaged over seeds, the gap
closed ``(acc_distilled - acc_plain) / (acc_teacher - acc_plain)`` and
whether the issue's target holds (>= 10x fewer parameters, within 1 point of
the teacher, gap closed >= 0.5). The CV table is the evidence about the
defaults: mean cross-validated accuracy (train split only) per candidate,
averaged over seeds.

``compact``: :class:`~skcompress.compression.Compactor` on the teacher
(conv2 made depthwise-separable, conv1 has one input channel and is kept),
with the conv-only MACs before / after.

Run: ``python benchmarks/bench_distill.py [--json PATH] [--grid small|full]
[--students ...] [--experiments distill compact]`` (the default small grid:
about 11 CPU minutes on one thread; ``--grid full`` adds T=2: about 14).
"""

import inspect
import sys
import tempfile
from pathlib import Path

import pandas as pd
from sklearn.model_selection import GridSearchCV

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
    "micro_cnn": dict(module__channels=(4, 8), module__hidden=16),
}
STUDENT_EPOCHS = 30
_SIGNATURE = inspect.signature(Distiller).parameters
DEFAULT_ALPHA = _SIGNATURE["alpha"].default
DEFAULT_TEMPERATURE = _SIGNATURE["temperature"].default
# alpha=0 (plain training; the temperature is then irrelevant) comes first, so
# that a tie in CV accuracy goes to plain training. "small" (the default, to
# stay within ~10 CPU minutes) drops T=2, which no student preferred by more
# than 0.1 point of CV accuracy in the "full" grid.
GRIDS = {
    "small": [{"alpha": [0.0]},
              {"alpha": [0.5, 0.9], "temperature": [4.0, 8.0]}],
    "full": [{"alpha": [0.0]},
             {"alpha": [0.5, 0.9], "temperature": [2.0, 4.0, 8.0]}],
}
CV_FOLDS = 3
COMPACT_EPOCHS = 10


def _student(name, seed):
    return make_digits_net(random_state=seed, max_epochs=STUDENT_EPOCHS,
                           **STUDENTS[name])


def _key(alpha, temperature):
    # alpha=0 ignores the temperature: all such settings train the same net
    return (0.0, None) if alpha == 0 else (float(alpha), float(temperature))


def _label(alpha, temperature):
    return "plain" if alpha == 0 else f"a={alpha:g},T={temperature:g}"


def _search(name, seed, data, memory, grid):
    """CV on the train split: ``(best_params, cv_rows)``."""
    Xtr, _, ytr, _ = data
    distiller = Distiller(
        _student(name, seed),
        teacher=make_digits_net(random_state=seed),
        teacher_prefit=False,  # refitted on each training fold (cached)
        memory=memory,
        random_state=seed,
    )
    search = GridSearchCV(distiller, GRIDS[grid], cv=CV_FOLDS, refit=False)
    search.fit(Xtr, ytr)
    results = search.cv_results_
    cv_rows = [
        {"student": name, "seed": seed,
         "candidate": _label(p["alpha"], p.get("temperature", DEFAULT_TEMPERATURE)),
         "cv_accuracy": float(score)}
        for p, score in zip(results["params"], results["mean_test_score"])
    ]
    best = dict(search.best_params_)
    best.setdefault("temperature", DEFAULT_TEMPERATURE)
    return best, cv_rows


def distill(seed, base, data, *, students, grid, memory, log):
    """Plain, default-distilled and CV-selected training of each student."""
    Xtr, _, ytr, _ = data
    rows = []
    for name in students:
        best, cv_rows = _search(name, seed, data, memory, grid)
        log["cv"].extend(cv_rows)
        log["selected"].append({"student": name, "seed": seed, **best,
                                "candidate": _label(best["alpha"],
                                                    best["temperature"])})
        settings = {
            "plain": (0.0, DEFAULT_TEMPERATURE),
            "default": (DEFAULT_ALPHA, DEFAULT_TEMPERATURE),
            "cv-selected": (best["alpha"], best["temperature"]),
        }
        fitted = {}  # same setting, same seed: same net (deterministic)
        for mode, (alpha, temperature) in settings.items():
            key = _key(alpha, temperature)
            if key not in fitted:
                fitted[key] = Distiller(
                    _student(name, seed), teacher=base, alpha=alpha,
                    temperature=temperature, random_state=seed,
                ).fit(Xtr, ytr)
            row = evaluate(f"distill:{name}", mode, fitted[key], base, data)
            row["teacher_accuracy"] = row["accuracy"] + row["drop_points"] / 100
            row["alpha"], row["temperature"] = float(alpha), float(temperature)
            rows.append(row)
    return rows


def compact(seed, base, data, **_):
    """Compactor on the teacher: conv MACs before / after and accuracy."""
    Xtr, _, ytr, _ = data
    fitted = Compactor(base, prefit=True, finetune_epochs=COMPACT_EPOCHS,
                       temperature=DEFAULT_TEMPERATURE, alpha=DEFAULT_ALPHA,
                       random_state=seed).fit(Xtr, ytr)
    row = evaluate("compact", f"{COMPACT_EPOCHS} epochs", fitted, base, data)
    total = fitted.conversion_report_.loc["total"]
    row["conv_macs_before"] = float(total["macs_before"])
    row["conv_macs_after"] = float(total["macs_after"])
    row["conv_macs_ratio"] = fitted.conv_macs_ratio_
    return [row]


EXPERIMENTS = {"distill": distill, "compact": compact}


def gap_closed(summary):
    """Per student and distilled setting: accuracies, gap closed, target."""
    out = []
    for technique, group in summary.groupby("technique", sort=False):
        if not technique.startswith("distill:"):
            continue
        by_mode = group.set_index("setting")
        plain = by_mode.loc["plain", "accuracy"]
        teacher = by_mode.loc["plain", "teacher_accuracy"]
        gap = teacher - plain
        ratio = by_mode.loc["plain", "params_ratio"]
        for mode in by_mode.index.drop("plain"):
            distilled = by_mode.loc[mode, "accuracy"]
            closed = (distilled - plain) / gap if gap > 0 else float("nan")
            drop = 100 * (teacher - distilled)
            out.append({
                "student": technique.split(":", 1)[1],
                "setting": mode,
                "params_ratio": ratio,
                "teacher_acc": 100 * teacher,
                "plain_acc": 100 * plain,
                "distilled_acc": 100 * distilled,
                "gap_points": 100 * gap,
                "distilled_drop_points": drop,
                "gap_closed": closed,
                "target_met": bool(ratio >= 10 and drop <= 1 and closed >= 0.5),
            })
    return pd.DataFrame(out)


def cv_table(cv_rows):
    """Mean CV accuracy (train split only) per student and candidate."""
    df = pd.DataFrame(cv_rows)
    table = df.pivot_table(index="candidate", columns="student",
                           values="cv_accuracy", aggfunc="mean", sort=False)
    table = 100 * table[[s for s in STUDENTS if s in table.columns]]
    table["mean"] = table.mean(axis=1)
    return table


def main(argv=None):
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--experiments", nargs="+", choices=sorted(EXPERIMENTS),
                   default=list(EXPERIMENTS))
    p.add_argument("--students", nargs="+", choices=list(STUDENTS),
                   default=list(STUDENTS))
    p.add_argument("--grid", choices=sorted(GRIDS), default="small",
                   help="alpha / temperature candidates of the CV search")
    args = p.parse_args(argv)
    setup(args)
    data = load_split()
    rows, log = [], {"cv": [], "selected": []}
    with tempfile.TemporaryDirectory() as cache:
        for seed in args.seeds:
            base = base_net(seed, data)
            for name in args.experiments:
                for row in EXPERIMENTS[name](seed, base, data, students=args.students,
                                             grid=args.grid, memory=cache, log=log):
                    rows.append({**row, "seed": seed})
    summary = summarize(rows)
    print_table(summary)
    extra = {}
    gaps = gap_closed(summary)
    if len(gaps):
        print("\nGap closed (accuracies in %, mean over seeds):")
        print_table(gaps)
        table = cv_table(log["cv"])
        print("\nCV accuracy in % on the train split (3-fold, mean over seeds):")
        with pd.option_context("display.width", 200):
            print(table.to_string(float_format=lambda v: f"{v:.2f}"))
        selected = pd.DataFrame(log["selected"])
        print("\nSelected by CV, per seed:")
        print(selected.pivot(index="student", columns="seed", values="candidate")
              .loc[[s for s in STUDENTS if s in args.students]].to_string())
        extra = dict(
            gap_closed=gaps.to_dict(orient="records"),
            cv_results=log["cv"],
            cv_mean=table.reset_index().to_dict(orient="records"),
            selected=log["selected"],
            protocol=dict(student_epochs=STUDENT_EPOCHS, grid=GRIDS[args.grid],
                          cv=CV_FOLDS,
                          default_alpha=DEFAULT_ALPHA,
                          default_temperature=DEFAULT_TEMPERATURE,
                          seeds=list(args.seeds)),
        )
    write_json(args.json, summary, rows, **extra)
    return summary


if __name__ == "__main__":
    main()
