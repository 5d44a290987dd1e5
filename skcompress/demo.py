"""The main job: compress the digits CNN every way and keep the best trade-off.

``skcompress demo`` (what ``make demo`` runs) trains the default CNN once,
fits every registered technique over its grid of settings on top of that
base (``prefit=True``: it is trained once, never refitted), measures each
candidate on the held-out split (docs/design.md benchmark protocol, via
:func:`skcompress.search.compare_to_base`), marks the Pareto front of accuracy
vs file-size ratio, and saves the most compressed model whose accuracy is
within half a point of the best.

The techniques, their order in the table and their settings (tuned in
``benchmarks/bench_compress.py`` and ``benchmarks/bench_quantize.py``) come
from the registry, :mod:`skcompress.compression._registry`. The prune ->
quantize chain reuses the fitted weight-pruning stage of the same sparsity
(each stage is fitted once and cached for the run), so it costs one
quantization per setting.
"""

import contextlib
import os
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .compression import _registry

__all__ = [
    "Candidate",
    "candidates",
    "check_writable",
    "format_table",
    "plot_demo",
    "run_demo",
]

MODEL_FILE = "model.skc"
OUTPUT_FILES = ("results.csv", "tradeoff.png", MODEL_FILE, "report.md")


@dataclass(frozen=True)
class Candidate:
    """One technique at one setting.

    Parameters
    ----------
    technique : str
        Name of the registered technique, shown in the table
        (``"prune weight"``, ``"quantize"``...).
    setting : str
        The setting, as shown in the table.
    params : dict
        Keyword arguments of the compressor (``prefit`` and ``random_state``
        are added by the demo).
    inner : Candidate, optional
        A stage to chain after: it is fitted once per run (also when it is
        not a row of the table) and this compressor is fitted on top of it.
    """

    technique: str
    setting: str
    params: dict = field(default_factory=dict)
    inner: "Candidate | None" = None

    @property
    def key(self):
        return (self.technique, self.setting)


def _candidate(technique, setting, quick):
    """The :class:`Candidate` of a registered technique's setting."""
    inner = None
    if technique.inner is not None:
        inner_technique = _registry.get(technique.inner)
        inner_setting = next(s for s in inner_technique.settings(quick)
                             if s.label == setting.inner)
        inner = _candidate(inner_technique, inner_setting, quick)
    return Candidate(technique.name, setting.label, dict(setting.params), inner)


def candidates(quick=False):
    """The demo's grid, one :class:`Candidate` per (technique, setting).

    Every registered technique with settings, in registration order.

    Parameters
    ----------
    quick : bool, default=False
        One or two settings per technique and a shorter student training.

    Returns
    -------
    list of Candidate

    Examples
    --------
    >>> from skcompress.demo import candidates
    >>> len(candidates(quick=True)), len(candidates())
    (8, 24)
    >>> candidates(quick=True)[0].setting
    'tucker rank=0.25'
    """
    return [
        _candidate(technique, setting, quick)
        for technique in _registry.techniques()
        for setting in technique.settings(quick)
    ]


def check_writable(out):
    """Create ``out`` if needed and check a file can be written there.

    Raises
    ------
    OSError
        With a message naming the folder, before any work starts.
    """
    out = os.fspath(out)
    if os.path.exists(out) and not os.path.isdir(out):
        raise OSError(f"cannot write the report into {out!r}: it is a file, not "
                      "a folder")
    try:
        os.makedirs(out, exist_ok=True)
        probe = os.path.join(out, f".skcompress-write-test-{os.getpid()}")
        with open(probe, "wb"):
            pass
        os.remove(probe)
    except OSError as exc:
        raise OSError(
            f"cannot write the report into {out!r}: {exc.strerror or exc}"
        ) from None


def _fit_candidate(candidate, base, X, y, random_state, fitted_stages):
    """Fit one candidate on the base net; chained stages come from the cache."""
    technique = _registry.get(candidate.technique)
    cls = technique.load()
    params = dict(candidate.params)
    if technique.base_as_teacher:
        from .models import make_digits_net

        student = make_digits_net(random_state=random_state, **params.pop("student"))
        compressor = cls(student, teacher=base, random_state=random_state, **params)
    else:
        estimator = base
        if candidate.inner is not None:
            key = candidate.inner.key
            if key not in fitted_stages:
                fitted_stages[key] = _fit_candidate(candidate.inner, base, X, y,
                                                    random_state, fitted_stages)
            estimator = fitted_stages[key]
        compressor = cls(estimator, prefit=True, random_state=random_state, **params)
    fitted_stages[candidate.key] = compressor.fit(X, y)
    return compressor


def _base_row(base, X, y):
    """The uncompressed net as a reference row, saved in the same format."""
    from .accounting import count_macs, count_parameters, dense_size_bytes
    from .io import dumps

    shape = tuple(X.shape[1:])
    size = len(dumps(base))
    return {
        "technique": "base",
        "setting": "uncompressed",
        "accuracy": float(base.score(X, y)),
        "drop_points": 0.0,
        "size_bytes": size,
        "size_ratio": dense_size_bytes(base) / size,
        "params": int(count_parameters(base.module_)),
        "params_ratio": 1.0,
        "macs": int(count_macs(base.module_, shape)),
        "macs_ratio": 1.0,
        "latency_ratio": 1.0,
        "fit_s": 0.0,
    }


class _Progress:
    """A tqdm bar on stderr, or nothing."""

    def __init__(self, total, enabled):
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc="compressing", unit="candidate",
                            file=sys.stderr, dynamic_ncols=True)

    def start(self, candidate):
        if self.bar is not None:
            self.bar.set_postfix_str(f"{candidate.technique} {candidate.setting}")

    def done(self):
        if self.bar is not None:
            self.bar.update()

    def close(self):
        if self.bar is not None:
            self.bar.close()


class _OnnxTimer:
    """onnxruntime latency of each candidate and of the base, side by side.

    As :func:`skcompress.search.compare_to_base` does for PyTorch, the base
    graph is timed again next to every candidate, so that the ratio does not
    drift with the machine's load. Graphs are written to a temporary folder
    and removed at once; without the ``deploy`` extra every value is NaN and
    ``note`` says why.
    """

    def __init__(self, base, input_shape):
        from .accounting import onnx_missing_note

        self.shape = input_shape
        self.note = onnx_missing_note()
        self.available = not self.note
        self.base = self._graph(base) if self.available else None

    def _graph(self, fitted):
        import tempfile

        from .export import export_onnx

        with tempfile.TemporaryDirectory(prefix="skcompress-demo-") as folder:
            path = os.path.join(folder, "model.onnx")
            export_onnx(fitted, path, self.shape)
            with open(path, "rb") as fh:
                return fh.read()

    def _seconds(self, graph):
        from .export import measure_onnx_latency

        # batch 256, one thread, as measure_latency; fewer repeats keep the
        # demo short (two graphs are timed per candidate)
        return measure_onnx_latency(graph, self.shape, repeats=15, warmup=3,
                                    fold_dequantize=True)

    def measure(self, fitted):
        """``(milliseconds, base seconds / fitted seconds)`` of ``fitted``."""
        if not self.available:
            return np.nan, np.nan
        seconds = self._seconds(self._graph(fitted))
        base = self._seconds(self.base)
        return 1e3 * seconds, base / seconds


def _epoch_callback(bar):
    """A skorch callback that advances ``bar`` after every epoch.

    The bar is reached through the closure, not stored on the callback, so
    that nets holding it can still be deep-copied (compressors copy their
    prefit net).
    """
    from skorch.callbacks import Callback

    class EpochBar(Callback):
        def on_epoch_end(self, net, **kwargs):
            bar.update()
            bar.set_postfix_str(f"loss {net.history[-1, 'train_loss']:.3f}")

    return EpochBar()


@contextlib.contextmanager
def _epoch_bar(net, enabled):
    """A progress bar over the epochs of ``net.fit`` on stderr, or nothing.

    The callback is added for the fit only: the trained net keeps its own
    callbacks (it is deep-copied and cloned by the compressors).
    """
    if not enabled:
        yield
        return
    from tqdm.auto import tqdm

    original = net.callbacks
    bar = tqdm(total=net.max_epochs, desc="training the base CNN", unit="epoch",
               file=sys.stderr, dynamic_ncols=True)
    net.set_params(callbacks=[*(original or []), ("epoch_bar", _epoch_callback(bar))])
    try:
        yield
    finally:
        bar.close()
        net.callbacks = original
        net.initialize_callbacks()


@contextlib.contextmanager
def finetune_bar(net, enabled, desc="fine-tuning"):
    """A progress bar over the fine-tuning epochs of a compressor on ``net``.

    ``net`` is an initialized (prefit) skorch net about to be handed to a
    compressor: the callback joins its ``callbacks_``, which the compressor's
    copy keeps while it fine-tunes (skorch's ``partial_fit``); it is removed
    from ``net`` afterwards. The number of epochs is not known in advance
    (rounds, chains): the bar counts them.
    """
    if not enabled:
        yield
        return
    from tqdm.auto import tqdm

    bar = tqdm(desc=desc, unit="epoch", file=sys.stderr)
    entry = ("skcompress_epoch_bar", _epoch_callback(bar))
    net.callbacks_.append(entry)
    try:
        yield
    finally:
        bar.close()
        net.callbacks_.remove(entry)


def run_demo(
    out="skcompress-report",
    *,
    quick=False,
    techniques=None,
    tolerance=0.005,
    random_state=0,
    base_params=None,
    n_threads=1,
    progress=True,
    log=print,
):
    """Run the demo and write its report into ``out``.

    Parameters
    ----------
    out : str or path, default="skcompress-report"
        Folder for ``results.csv``, ``tradeoff.png``, ``model.skc`` (the
        chosen model in the compact format) and ``report.md``; created if
        needed and checked to be writable before anything is trained.
    quick : bool, default=False
        A shorter version (86 s instead of 263 s, measured on a shared
        2-core machine): fewer settings, a base net trained for 15 epochs
        instead of 30, shorter student training.
    techniques : list of str, optional
        Restrict to these techniques (names as in the table: ``"low-rank"``,
        ``"prune weight"``, ``"prune filter"``, ``"quantize"``,
        ``"binarize"``, ``"prune+quantize"``, ``"distill"``).
    tolerance : float, default=0.005
        Accuracy the chosen model may give up vs the best row, the
        uncompressed base included (0.005 = half a point).
    random_state : int, default=0
        Seed of the base net and of every compressor.
    base_params : dict, optional
        Overrides for :func:`skcompress.models.make_digits_net` (e.g. a
        smaller net for tests).
    n_threads : int, default=1
        torch threads while training and fine-tuning (restored afterwards).
        These nets are small: on a busy 2-core machine one thread trained
        the base CNN 4-10x faster than two (thread contention).
    progress : bool, default=True
        Show a progress bar on stderr.
    log : callable, default=print
        Where the table and messages go.

    Returns
    -------
    results : pandas.DataFrame
        One row for the base net, then one per candidate; columns
        ``technique, setting, accuracy, drop_points, size_bytes, size_ratio,
        params, params_ratio, macs, macs_ratio, latency_ratio, onnx_latency_ms,
        onnx_latency_ratio (NaN without the ``deploy`` extra), fit_s, pareto,
        chosen``.

    Raises
    ------
    ValueError
        Unknown name in ``techniques``.
    OSError
        ``out`` cannot be written (raised before training starts).
    """
    grid = candidates(quick)
    if techniques is not None:
        known = sorted({c.technique for c in grid})
        unknown = [t for t in techniques if t not in known]
        if unknown or not techniques:
            raise ValueError(
                f"Unknown technique(s) {unknown}; choose from {known}."
                if unknown else f"techniques is empty; choose from {known}."
            )
        grid = [c for c in grid if c.technique in techniques]
    from ._threads import torch_threads

    check_writable(out)
    with torch_threads(n_threads):
        return _run(os.fspath(out), grid, quick, tolerance, random_state,
                    base_params, progress, log)


def _run(out, grid, quick, tolerance, random_state, base_params, progress, log):
    import torch
    from sklearn.model_selection import train_test_split

    from .datasets import load_digits_images
    from .io import load, save
    from .models import make_digits_net
    from .search import compare_to_base, pareto_front, smallest_within

    X, y = load_digits_images()
    Xtr, Xte, ytr, yte = train_test_split(
        X, y, test_size=0.25, stratify=y, random_state=0
    )
    threads = torch.get_num_threads()
    overrides = {"max_epochs": 15} if quick else {}
    overrides.update(base_params or {})
    base = make_digits_net(random_state=random_state, **overrides)
    log(f"training the base CNN on {len(Xtr)} digits images "
        f"({base.max_epochs} epochs, {threads} torch threads)...")
    start = time.perf_counter()
    with _epoch_bar(base, progress):
        base.fit(Xtr, ytr)
    base_time = time.perf_counter() - start
    base_row = _base_row(base, Xte, yte)
    log(f"base CNN: test accuracy {base_row['accuracy']:.4f}, "
        f"trained in {base_time:.1f} s; {len(grid)} candidates to fit")
    onnx = _OnnxTimer(base, tuple(Xte.shape[1:]))
    if onnx.note:
        log(f"{onnx.note}: the onnx ratio column is n/a")
    base_row["onnx_latency_ms"], _ = onnx.measure(base)
    base_row["onnx_latency_ratio"] = 1.0 if onnx.available else np.nan

    rows, fitted = [base_row], [base]
    stages = {}
    bar = _Progress(len(grid), progress)
    started = time.perf_counter()
    try:
        for candidate in grid:
            bar.start(candidate)
            start = time.perf_counter()
            compressor = _fit_candidate(candidate, base, Xtr, ytr, random_state,
                                        stages)
            elapsed = time.perf_counter() - start
            row = {"technique": candidate.technique, "setting": candidate.setting}
            row.update(compare_to_base(compressor, base, Xte, yte))
            row["accuracy"] = row.pop("score")
            row["fit_s"] = elapsed
            row["onnx_latency_ms"], row["onnx_latency_ratio"] = onnx.measure(
                compressor)
            rows.append(row)
            fitted.append(compressor)
            bar.done()
    finally:
        bar.close()
    search_time = time.perf_counter() - started

    results = pd.DataFrame(rows)
    results = results[[*_COLUMNS]]
    front = pareto_front(results, x="size_ratio", y="accuracy")
    results["pareto"] = False
    results.loc[front["candidate"], "pareto"] = True
    chosen = smallest_within(tolerance, metric="accuracy", size="size_ratio")(results)
    results["chosen"] = np.arange(len(results)) == chosen
    results.to_csv(os.path.join(out, "results.csv"), index=False)

    model_path = os.path.join(out, MODEL_FILE)
    n_bytes = save(fitted[chosen], model_path)
    check = _check_saved(load(model_path), fitted[chosen], Xte, n_bytes,
                         results.loc[chosen, "size_bytes"])

    fig = plot_demo(results, tolerance)
    fig.savefig(os.path.join(out, "tradeoff.png"), dpi=120)

    table = format_table(results)
    log(table)
    best = results.iloc[chosen]
    summary = (
        f"chosen (most compressed within {100 * tolerance:.1f} point of the best "
        f"accuracy): {best['technique']} {best['setting']}, accuracy "
        f"{best['accuracy']:.4f}, {best['size_ratio']:.1f}x smaller file "
        f"({int(best['size_bytes'])} bytes) -> {model_path}"
    )
    log(summary)
    log(check)
    _write_report(out, results, table, summary, check, base_row["accuracy"],
                  base_time, search_time, threads)
    log(f"wrote {', '.join(os.path.join(out, f) for f in OUTPUT_FILES)}")
    return results


_COLUMNS = (
    "technique", "setting", "accuracy", "drop_points", "size_bytes", "size_ratio",
    "params", "params_ratio", "macs", "macs_ratio", "latency_ratio",
    "onnx_latency_ms", "onnx_latency_ratio", "fit_s",
)


_MARKERS = "os^vDP<>Xhp"


def plot_demo(results, tolerance=0.005):
    """The demo's trade-off plot: accuracy vs file-size ratio of every row.

    Every point is numbered with its row in ``results.csv`` (points closer
    than a few pixels share one label) and listed in the key beside the
    axes with its technique's colour and marker and its setting; the base net
    is a black star, the Pareto front is joined, the saved model circled and
    the accuracy band within ``tolerance`` of the best shaded.

    Parameters
    ----------
    results : pandas.DataFrame
        As returned by :func:`run_demo` (``technique``, ``setting``,
        ``accuracy``, ``size_ratio``, ``pareto``, ``chosen``).
    tolerance : float, default=0.005
        Accuracy the saved model may give up vs the best (0.005 = half a
        point).

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.ticker import LogLocator, ScalarFormatter

    results = results.reset_index(drop=True)
    fig = Figure(figsize=(11, 6), layout="constrained")
    ax = fig.add_subplot()
    x = results["size_ratio"].to_numpy(float)
    y = 100 * results["accuracy"].to_numpy(float)
    best = np.nanmax(y)
    ax.axhspan(best - 100 * tolerance, best, color="C2", alpha=0.12, lw=0)
    front = np.flatnonzero(results["pareto"].to_numpy(bool))
    front = front[np.argsort(x[front])]
    ax.plot(x[front], y[front], "-", color="0.45", lw=1, zorder=1)
    techniques = [t for t in dict.fromkeys(results["technique"]) if t != "base"]
    style = {t: dict(marker=_MARKERS[i % len(_MARKERS)], color=f"C{i % 10}")
             for i, t in enumerate(techniques)}
    style["base"] = dict(marker="*", color="k")
    for technique, kw in style.items():
        rows = (results["technique"] == technique).to_numpy()
        ax.scatter(x[rows], y[rows], s=150 if technique == "base" else 40,
                   zorder=3, **kw)
    chosen = np.flatnonzero(results["chosen"].to_numpy(bool))
    ax.scatter(x[chosen], y[chosen], s=300, facecolors="none", edgecolors="k",
               lw=1.5, zorder=4)

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter("")
    # margins in axis units, so that labels near the edges stay inside
    xlo, xhi = np.log10(np.nanmin(x)), np.log10(np.nanmax(x))
    pad = 0.07 * max(xhi - xlo, 0.5)
    ax.set_xlim(10 ** (xlo - pad), 10 ** (xhi + pad))
    ylo, yhi = np.nanmin(y), np.nanmax(y)
    ypad = 0.1 * max(yhi - ylo, 0.5)
    ax.set_ylim(ylo - ypad, yhi + ypad)
    ax.set_xlabel("file-size ratio (fp32 dense bytes / file bytes), log scale")
    ax.set_ylabel("held-out accuracy (%)")
    ax.set_title("skcompress demo: accuracy vs file size of the compressed "
                 "digits CNN")
    ax.grid(True, which="major", alpha=0.3)

    _label_points(ax, x, y, wide=[*chosen, *np.flatnonzero(
        (results["technique"] == "base").to_numpy())])

    handles = [
        Line2D([], [], linestyle="", markersize=10 if results["technique"][i]
               == "base" else 6, **style[results["technique"][i]],
               label=f"{i:>2}  {results['technique'][i]}  {results['setting'][i]}")
        for i in range(len(results))
    ]
    handles += [
        Line2D([], [], color="0.45", lw=1, label="Pareto front"),
        Line2D([], [], linestyle="", marker="o", markersize=14, markeredgecolor="k",
               markerfacecolor="none", label="saved model (model.skc)"),
        Patch(color="C2", alpha=0.25,
              label=f"within {100 * tolerance:g} point of the best accuracy"),
    ]
    fig.legend(handles=handles, loc="outside right upper", fontsize=7.5,
               frameon=False, handletextpad=0.4,
               title="row of results.csv, technique, setting",
               title_fontsize=7.5)
    return fig


def _label_points(ax, x, y, wide=(), fontsize=7):
    """Number every point with its row, without overlaps, inside the axes.

    Points on the same spot share one label ("12, 14"); each label takes the
    first free place around its point (right, left, above, below), pointing
    inwards first so that it stays inside the axes; the points in ``wide``
    (drawn larger) keep more room around them.
    """
    ax.figure.canvas.draw_idle()
    screen = ax.transData.transform(np.column_stack([x, y]))
    box = ax.get_window_extent()
    char_w, height = 0.62 * fontsize, 1.25 * fontsize  # points = pixels at 72 dpi
    scale = ax.figure.dpi / 72
    char_w, height = char_w * scale, height * scale
    radius = np.where(np.isin(np.arange(len(x)), list(wide)), 10, 4) * scale
    placed = [(sx - r, sy - r, sx + r, sy + r)
              for (sx, sy), r in zip(screen, radius)
              if np.isfinite(sx) and np.isfinite(sy)]
    taken = np.zeros(len(x), bool)
    for i in np.argsort(x):
        if taken[i] or not np.isfinite(screen[i]).all():
            continue
        same = np.flatnonzero(~taken & (np.abs(screen - screen[i]).max(axis=1) < 4))
        taken[same] = True
        text = ", ".join(map(str, sorted(same)))
        width = char_w * len(text)
        sx, sy = screen[i]
        gap = radius[i] + 1.5 * scale
        inwards = 1 if sx < (box.x0 + box.x1) / 2 else -1
        options = [(inwards * gap, -height / 2), (-inwards * gap, -height / 2),
                   (-width / 2, gap), (-width / 2, -gap - height),
                   (inwards * gap, gap), (inwards * gap, -gap - height)]
        chosen = None
        for dx, dy in options:
            x0 = sx + dx if dx >= 0 or dx == -width / 2 else sx + dx - width
            rect = (x0, sy + dy, x0 + width, sy + dy + height)
            inside = (rect[0] >= box.x0 and rect[2] <= box.x1
                      and rect[1] >= box.y0 and rect[3] <= box.y1)
            free = all(rect[2] <= r[0] or rect[0] >= r[2] or rect[3] <= r[1]
                       or rect[1] >= r[3] for r in placed)
            if inside and free:
                chosen = rect
                break
        if chosen is None:  # crowded: the first inward place
            dx, dy = options[0]
            x0 = sx + dx if dx >= 0 else sx + dx - width
            chosen = (x0, sy + dy, x0 + width, sy + dy + height)
        placed.append(chosen)
        ax.annotate(text, (x[i], y[i]), fontsize=fontsize, color="0.15",
                    xytext=((chosen[0] - sx) / scale, (chosen[1] - sy) / scale),
                    textcoords="offset points", ha="left", va="bottom")


def _check_saved(loaded, model, X, n_bytes, size_bytes):
    """The saved file must be the measured size and predict the same labels."""
    if n_bytes != size_bytes:
        raise RuntimeError(
            f"the saved file has {n_bytes} bytes but {size_bytes} were measured"
        )
    same = loaded.predict(X) == model.predict(X)
    if not same.all():
        raise RuntimeError(
            f"the saved model predicts differently on {int((~same).sum())} of "
            f"{len(same)} held-out images"
        )
    return (f"check: {MODEL_FILE} ({n_bytes} bytes) loads with skcompress.load and "
            f"predicts the same labels on all {len(same)} held-out images")


def format_table(results):
    """The demo table as text; ``*`` marks the Pareto front, ``>`` the choice.

    Parameters
    ----------
    results : pandas.DataFrame
        As returned by :func:`run_demo`.

    Returns
    -------
    str
    """
    marks = (np.where(results["chosen"], ">", " ")
             + np.where(results["pareto"], "*", " "))
    shown = pd.DataFrame(
        {
            "": marks,
            "technique": results["technique"],
            "setting": results["setting"],
            "accuracy": results["accuracy"].map("{:.4f}".format),
            "drop": results["drop_points"].map("{:+.2f}".format),
            "file ratio": results["size_ratio"].map("{:.1f}x".format),
            "params": results["params"],
            "MACs": results["macs"],
            "latency ratio": results["latency_ratio"].map("{:.2f}x".format),
            "onnx ratio": results["onnx_latency_ratio"].map(
                lambda v: f"{v:.2f}x" if np.isfinite(v) else "n/a"),
        }
    )
    return shown.to_string(index=False)


def _write_report(out, results, table, summary, check, base_acc, base_time,
                  search_time, threads):
    n_front = int(results["pareto"].sum())
    lines = [
        "# skcompress demo report",
        "",
        f"Base CNN (digits, 8x8 images): held-out accuracy {base_acc:.4f}, trained "
        f"in {base_time:.1f} s; {len(results) - 1} candidates fitted on it in "
        f"{search_time:.1f} s ({threads} torch threads).",
        "",
        "Accuracy is measured on the held-out quarter of the data; `drop` is in "
        "points vs the base; `file ratio` = fp32 dense bytes / bytes of the file "
        "`skcompress.save` writes; `latency ratio` = base / compressed forward "
        "time in PyTorch (batch 256, 1 thread), above 1 is faster; `onnx ratio` "
        "= the same in onnxruntime on the CPU (each net exported with "
        "`skcompress.export_onnx`, batch 256, 1 thread; n/a without the "
        "`deploy` extra).",
        "",
        f"`*` = on the Pareto front of accuracy vs file ratio ({n_front} rows); "
        "`>` = the saved model.",
        "",
        "```",
        table,
        "```",
        "",
        summary.replace(os.path.join(out, ""), ""),
        "",
        check,
        "",
        "Files: `results.csv` (every number above, unrounded), `tradeoff.png` "
        f"(the trade-off plot), `{MODEL_FILE}` (load with `skcompress.load`).",
        "",
    ]
    with open(os.path.join(out, "report.md"), "w") as fh:
        fh.write("\n".join(lines))
