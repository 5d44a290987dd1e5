"""The ``skcompress`` command line.

Each subcommand is one ``_add_<name>`` function that registers its parser on
the subparsers and sets ``handler``; add new subcommands the same way.
Heavy imports (torch, skorch) stay inside the handlers that need them.
"""

import argparse
import os
import sys
import time
from pathlib import Path

__all__ = ["main"]

BUILTIN_DATASETS = ("breast_cancer", "wine", "digits", "diabetes")
METHODS = ("PCA", "SVD", "LDA", "LLE", "LaplacianEigenmaps")


class DataError(Exception):
    """Bad user data: reported as one line on stderr, exit status 1."""


class UsageError(Exception):
    """A bad argument found by a handler: usage message, exit status 2."""


def main(argv=None):
    """Run the command line; return the exit status.

    Parameters
    ----------
    argv : list of str, default=None
        Arguments without the program name; ``None`` reads ``sys.argv``.

    Returns
    -------
    status : int
        0 on success; 1 on a data error (unreadable data or model file,
        output not writable), reported before any work starts where it can
        be; 2 on a usage error (unknown option, technique or setting, a value
        out of range, also one that the compressor only finds at ``fit``).
        Every error is one line on stderr, never a traceback.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help(sys.stderr)
        return 2
    try:
        return args.handler(args)
    except UsageError as exc:
        args.subparser.error(str(exc))  # exits with status 2
    except DataError as exc:
        print(f"skcompress {args.command}: error: {exc}", file=sys.stderr)
        return 1


def build_parser():
    """The argument parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="skcompress",
        description=(
            "Data and neural-network compression as scikit-learn estimators. "
            "Run 'skcompress COMMAND --help' for the options of a command."
        ),
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_demo(subparsers)
    _add_compress(subparsers)
    _add_compare(subparsers)
    return parser


def _positive_int_list(text):
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers >= 1, got {text!r}"
        )
    return values


_MAX_SEED = 2**32 - 1


def _seed(text):
    """``--random-state``: an int that numpy and torch both accept."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= _MAX_SEED:
        raise argparse.ArgumentTypeError(
            f"expected an integer in [0, {_MAX_SEED}], got {text!r}"
        )
    return value


def _folds(text):
    """``--cv``: at least 2 folds (the upper bound depends on the data)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 2:
        raise argparse.ArgumentTypeError(f"expected an integer >= 2, got {text!r}")
    return value


def _method_list(text):
    names = [v.strip() for v in text.split(",") if v.strip()]
    unknown = [n for n in names if n not in METHODS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown method(s) {', '.join(unknown) or text!r}; choose from "
            f"{', '.join(METHODS)}"
        )
    return names


def _add_compare(subparsers):
    parser = subparsers.add_parser(
        "compare",
        help="compare the reducers on a data set",
        description=(
            "Compare PCA, SVD, LDA, LLE and Laplacian eigenmaps on a built-in "
            "data set or a CSV: compression ratio, held-out reconstruction "
            "error, explained variance, cross-validated downstream score and "
            "times. Writes comparison.csv and comparison.png."
        ),
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--dataset",
        choices=BUILTIN_DATASETS,
        default="digits",
        help="built-in scikit-learn data set (default: digits, as a table)",
    )
    source.add_argument("--csv", type=Path, help="CSV file with a header row")
    parser.add_argument("--target", help="target column of the CSV (optional)")
    parser.add_argument(
        "--methods",
        type=_method_list,
        default=list(METHODS),
        help=f"comma-separated subset of {','.join(METHODS)} (default: all)",
    )
    parser.add_argument(
        "--n-components",
        type=_positive_int_list,
        default=[2, 5, 10, 20],
        help="comma-separated values of k (default: 2,5,10,20)",
    )
    parser.add_argument(
        "--cv", type=_folds, default=5,
        help="cross-validation folds, 2 to the number of samples (default: 5)",
    )
    parser.add_argument(
        "--scale",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="standardize every feature to zero mean and unit variance first, "
        "so that no feature dominates by its unit (default: --scale)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("skcompress-report"),
        help="output folder (default: ./skcompress-report)",
    )
    parser.set_defaults(handler=_run_compare, subparser=parser)


def _load_builtin(name):
    from sklearn import datasets

    loader = getattr(datasets, f"load_{name}")
    data = loader(as_frame=True)
    return data.data, data.target


def _load_csv(path, target):
    import pandas as pd

    if not path.is_file():
        raise DataError(f"CSV file not found: {path}")
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read CSV {path}: {str(e).strip()}") from None
    y = None
    if target is not None:
        if target not in frame.columns:
            raise DataError(
                f"target column {target!r} not in {path.name}; columns are: "
                f"{', '.join(map(str, frame.columns))}"
            )
        y = frame.pop(target)
        if y.isna().any():
            raise DataError(f"target column {target!r} has missing values")
    non_numeric = [
        str(c) for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])
    ]
    if non_numeric:
        raise DataError(
            f"non-numeric feature column(s) in {path.name}: {', '.join(non_numeric)}"
        )
    if frame.shape[1] == 0 or len(frame) < 2:
        raise DataError(f"{path.name} needs at least 2 rows and 1 feature column")
    missing = [str(c) for c in frame.columns if frame[c].isna().any()]
    if missing:
        raise DataError(f"missing values in feature column(s): {', '.join(missing)}")
    return frame, y


def _check_out_folder(out):
    """``--out`` can be created and written, checked before any work."""
    from skcompress.demo import check_writable

    try:
        check_writable(out)
    except OSError as exc:
        raise DataError(str(exc)) from None


def _run_compare(args):
    import pandas as pd

    from skcompress.decomposition import compare_reducers, plot_comparison
    from skcompress.decomposition._compare import default_reducers

    if args.csv is not None:
        X, y = _load_csv(args.csv, args.target)
        source = str(args.csv)
    else:
        if args.target is not None:
            raise UsageError("--target needs --csv")
        X, y = _load_builtin(args.dataset)
        source = args.dataset
    n_samples, n_features = X.shape
    if args.cv > n_samples:
        raise UsageError(
            f"--cv {args.cv} is more folds than the {n_samples} samples of {source}"
        )
    # a fold trains on n_samples - ceil(n_samples / cv) rows
    upper = min(n_samples - -(-n_samples // args.cv), n_features)
    if min(args.n_components) > upper:
        raise UsageError(
            f"--n-components: every k ({', '.join(map(str, args.n_components))}) "
            f"is above min(training samples, features) = {upper} for {source}"
        )
    _check_out_folder(args.out)
    reducers = {name: est for name, est in default_reducers().items()}
    reducers = {name: reducers[name] for name in args.methods}
    X = X.to_numpy(dtype=float)
    if args.scale:
        from sklearn.preprocessing import StandardScaler

        X = StandardScaler().fit_transform(X)
    print(
        f"comparing {', '.join(args.methods)} on {source} "
        f"({n_samples} x {n_features}, "
        f"{'standardized' if args.scale else 'unscaled'}), k = {args.n_components}",
        file=sys.stderr,
    )
    try:
        table = compare_reducers(
            X,
            None if y is None else y.to_numpy(),
            reducers=reducers,
            n_components=args.n_components,
            cv=args.cv,
            verbose=True,
        )
    except ValueError as exc:
        raise DataError(str(exc)) from None
    notes = table["note"].fillna("")
    if (notes != "").all():
        raise UsageError(
            "no (method, k) could run on "
            f"{source}: {'; '.join(sorted(set(notes)))}"
        )
    table.to_csv(args.out / "comparison.csv", index=False)
    plot_comparison(table).savefig(args.out / "comparison.png", dpi=100)
    with pd.option_context("display.width", 160, "display.max_columns", None):
        print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"wrote {args.out / 'comparison.csv'} and {args.out / 'comparison.png'}")
    return 0


# ---------------------------------------------------------------------- demo
def _demo_techniques():
    """Names of the registered techniques that the demo runs."""
    from skcompress.compression import _registry

    return [t.name for t in _registry.techniques() if t.grid]


def _slug(name):
    return name.strip().replace(" ", "-").lower()


def _technique_list(text):
    known = {_slug(t): t for t in _demo_techniques()}
    names = [v for v in text.split(",") if v.strip()]
    unknown = [n for n in names if _slug(n) not in known]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown technique(s) {', '.join(unknown) or repr(text)}; choose "
            f"from {', '.join(known)}"
        )
    return [known[_slug(n)] for n in names]


def _points(text):
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(
            f"expected accuracy points in [0, 100], got {text!r}"
        )
    return value


def _add_demo(subparsers):
    slugs = ", ".join(_slug(t) for t in _demo_techniques())
    parser = subparsers.add_parser(
        "demo",
        help="the main job: compress the digits CNN every way, keep the best",
        description=(
            "Train the default CNN on the embedded digits images, compress it "
            "with every technique over a small grid of tuned settings (low-rank, "
            "weight and filter pruning, quantization, binarization, the "
            "prune->quantize chain, distillation into compact students), measure "
            "each on the held-out quarter of the data, print one table with the "
            "Pareto front of accuracy vs file size marked, and write into --out: "
            "results.csv, tradeoff.png, model.skc (the most compressed model "
            "within --tolerance points of the best accuracy, in the compact "
            "format) and report.md. Measured on a shared 2-core CPU machine "
            "(load average about 4): 263 s, --quick 86 s; an idle machine is "
            "faster. An --out that cannot be written is reported before "
            "training starts (exit status 1)."
        ),
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("skcompress-report"),
        help="output folder (default: ./skcompress-report)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="shorter version (86 s vs 263 s measured): one setting per "
        "technique, shorter training",
    )
    parser.add_argument(
        "--techniques",
        type=_technique_list,
        default=None,
        help=f"comma-separated subset of {slugs} (default: all)",
    )
    parser.add_argument(
        "--tolerance",
        type=_points,
        default=0.5,
        help="accuracy points the saved model may give up vs the best (default: 0.5)",
    )
    parser.add_argument(
        "--threads",
        type=_positive_int,
        default=1,
        help="torch threads (default: 1, fastest for these small nets)",
    )
    parser.add_argument(
        "--random-state", type=_seed, default=0, help="seed (default: 0)"
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bar on stderr"
    )
    parser.set_defaults(handler=_run_demo, subparser=parser)


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def _run_demo(args):
    _check_out_folder(args.out)
    from skcompress.demo import run_demo

    start = time.perf_counter()
    run_demo(
        args.out,
        quick=args.quick,
        techniques=args.techniques,
        tolerance=args.tolerance / 100,
        random_state=args.random_state,
        n_threads=args.threads,
        progress=not args.no_progress,
    )
    print(f"done in {time.perf_counter() - start:.0f} s")
    return 0


# ------------------------------------------------------------------ compress
def _compress_techniques():
    """``{name: class name}`` of the registered techniques the command offers."""
    from skcompress.compression import _registry

    return {name: t.class_name for name, t in _registry.cli_names().items()}


# Fixed by the command itself: the loaded net is the prefit base.
_NOT_SETTABLE = ("estimator", "prefit", "memory")


def _parse_value(text):
    """``--set`` values: bool, None, int, float, else the string itself."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered == "none":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _setting(text):
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(
            f"expected key=value (e.g. sparsity=0.9), got {text!r}"
        )
    return key, _parse_value(value)


def _add_compress(subparsers):
    parser = subparsers.add_parser(
        "compress",
        help="compress a saved net with one technique and chosen settings",
        description=(
            "Load a net saved with skcompress.save, compress it with one "
            "technique (the loaded net is the prefit base, never modified), "
            "fine-tune on the data minus a held-out split (--test-size), "
            "report the accuracy on that split and the file size before and "
            "after, and save the result in the compact format. Settings are "
            "the compressor's parameters, as repeated --set key=value (values "
            "parsed as int, float, true/false, none or string) and validated "
            "before anything runs (those that depend on the net, such as a "
            "rank above a layer's, when the compressor is fitted; both exit "
            "with status 2); e.g. 'skcompress compress --model net.skc "
            "--technique pruner --set sparsity=0.9 --set n_steps=3 --output "
            "pruned.skc'. The model is an uncompressed net saved with "
            "skcompress.save(net, 'net.skc') after net.fit(X, y) (see the "
            "README); skcompress demo's model.skc is already compressed, and a "
            "warning says so when the output is not smaller than the input. "
            "--onnx PATH also exports the result (deploy extra). A bad "
            "technique or setting exits with status 2, an unreadable model or "
            "data file with status 1."
        ),
    )
    parser.add_argument(
        "--model", type=Path, required=True, help="file written by skcompress.save"
    )
    techniques = _compress_techniques()
    parser.add_argument(
        "--technique",
        required=True,
        choices=sorted(techniques),
        help="the compressor: " + ", ".join(
            f"{k} ({v})" for k, v in sorted(techniques.items())
        ),
    )
    parser.add_argument(
        "--set",
        dest="settings",
        metavar="KEY=VALUE",
        type=_setting,
        action="append",
        default=[],
        help="a compressor parameter, repeatable (e.g. --set sparsity=0.9)",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--dataset",
        choices=("digits",),
        default="digits",
        help="data to fine-tune on: the embedded digits images (default)",
    )
    source.add_argument(
        "--npz", type=Path, help="data to fine-tune on: a .npz file with X and y"
    )
    parser.add_argument(
        "--output", type=Path, required=True, help="where to save the compressed net"
    )
    parser.add_argument(
        "--onnx",
        type=Path,
        metavar="PATH",
        help="also export the compressed net as an ONNX graph (needs the "
        "deploy extra: pip install 'skcompress[deploy]')",
    )
    parser.add_argument(
        "--test-size",
        type=float,
        default=0.25,
        help="held-out fraction for the accuracy (default: 0.25)",
    )
    parser.add_argument(
        "--random-state", type=_seed, default=0, help="seed (default: 0)"
    )
    parser.set_defaults(handler=_run_compress, subparser=parser)


def _compressor_class(technique):
    from skcompress.compression import _registry

    return _registry.cli_names()[technique].load()


def _check_settings(cls, settings):
    """Unknown names and out-of-range values, before any data is read."""
    from sklearn.utils._param_validation import (
        InvalidParameterError,
        validate_parameter_constraints,
    )

    allowed = [n for n in cls._get_param_names() if n not in _NOT_SETTABLE]
    unknown = [k for k in settings if k not in allowed]
    if unknown:
        raise UsageError(
            f"unknown setting(s) {', '.join(unknown)} for {cls.__name__}; "
            f"choose from {', '.join(allowed)}"
        )
    constraints = {k: cls._parameter_constraints[k] for k in settings}
    try:
        validate_parameter_constraints(constraints, settings, cls.__name__)
    except InvalidParameterError as exc:
        raise UsageError(f"--set: {exc}") from None


def _check_output(path, option="--output"):
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise DataError(f"{option} {path} is a folder; give a file name")
    if not parent.is_dir():
        raise DataError(f"{option} folder {parent} does not exist")
    target = path if path.exists() else parent
    if not os.access(target, os.W_OK):
        raise DataError(f"{option} {path} is not writable")


def _load_npz(path):
    import zipfile

    import numpy as np

    if not path.is_file():
        raise DataError(f"npz file not found: {path}")
    with open(path, "rb") as fh:
        magic = fh.read(6)
    if magic == b"\x93NUMPY":
        raise DataError(
            f"{path} holds one array (a .npy file), not X and y; write them with "
            "numpy.savez(path, X=X, y=y)"
        )
    if not magic.startswith(b"PK"):
        raise DataError(
            f"{path} is not a .npz file (no zip header); write X and y with "
            "numpy.savez(path, X=X, y=y)"
        )
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"cannot read {path} as .npz: {exc}") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise DataError(
            f"{path} holds one array (a .npy file), not X and y; write them with "
            "numpy.savez(path, X=X, y=y)"
        )
    try:
        with data:
            missing = [k for k in ("X", "y") if k not in data.files]
            if missing:
                raise DataError(
                    f"{path.name} has no array(s) {', '.join(missing)}; it holds "
                    f"{', '.join(data.files) or 'nothing'}"
                )
            X, y = data["X"], data["y"]
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"cannot read {path} as .npz: {exc}") from None
    if X.ndim == 0 or y.ndim != 1 or len(X) != len(y) or len(X) < 4:
        raise DataError(
            f"X and y need the same number of samples (>= 4) and y one "
            f"dimension; got X of shape {X.shape} and y of shape {y.shape}"
        )
    if not np.issubdtype(X.dtype, np.number):
        raise DataError(f"X must be numeric, got dtype {X.dtype}")
    X = X.astype(np.float32)
    if np.issubdtype(y.dtype, np.integer):
        y = y.astype(np.int64)
    return X, y


def _names_a_setting(exc, settings):
    """Does a compressor's error at ``fit`` name one of the user's settings?

    Cross-parameter checks (``bits=1`` with ``method='uniform'``) and
    checks against the net (``rank`` above a layer's full rank) only run at
    ``fit``; they are usage errors when they name what the user set.
    """
    import re

    from sklearn.utils._param_validation import InvalidParameterError

    if isinstance(exc, InvalidParameterError):
        return True
    text = str(exc)
    return any(re.search(rf"(?<![\w.]){re.escape(key)}\s*=|'{re.escape(key)}'",
                         text) for key in settings)


def _check_onnx(path):
    if path is None:
        return
    import importlib.util

    missing = [m for m in ("onnx", "onnxruntime")
               if importlib.util.find_spec(m) is None]
    if missing:
        raise UsageError(
            f"--onnx needs {' and '.join(missing)}; install the deploy extra: "
            "pip install 'skcompress[deploy]'"
        )
    _check_output(path, "--onnx")


def _run_compress(args):
    cls = _compressor_class(args.technique)
    settings = dict(args.settings)
    _check_settings(cls, settings)
    if not 0 < args.test_size < 1:
        raise UsageError(f"--test-size must be in (0, 1), got {args.test_size}")
    _check_onnx(args.onnx)
    if not args.model.is_file():
        raise DataError(f"model file not found: {args.model}")
    _check_output(args.output)
    if args.onnx is not None and args.onnx.resolve() == args.output.resolve():
        raise UsageError("--onnx and --output must be different files")

    from sklearn.base import is_classifier
    from sklearn.model_selection import train_test_split

    from skcompress.io import FormatError, load, save

    if args.npz is not None:
        X, y = _load_npz(args.npz)
        source = args.npz.name
    else:
        from skcompress.datasets import load_digits_images

        X, y = load_digits_images()
        source = "digits"
    try:
        net = load(args.model)
    except (FormatError, OSError) as exc:
        raise DataError(f"cannot load {args.model}: {exc}") from None
    stratify = y if is_classifier(net) else None
    try:
        Xtr, Xte, ytr, yte = train_test_split(
            X, y, test_size=args.test_size, stratify=stratify,
            random_state=args.random_state,
        )
    except ValueError as exc:
        raise DataError(f"cannot split {source}: {exc}") from None
    try:
        score_before = float(net.score(Xte, yte))
    except Exception as exc:  # the user's net and data: report, never a traceback
        raise DataError(
            f"the model in {args.model.name} cannot score X of shape "
            f"{tuple(X.shape)} from {source}: {exc}"
        ) from None

    params = {"random_state": args.random_state, **settings}  # --set wins
    compressor = cls(net, prefit=True, **params)
    shown = ", ".join(f"{k}={v!r}" for k, v in settings.items())
    print(
        f"compressing {args.model} with {cls.__name__}({shown}), fine-tuning on "
        f"{len(Xtr)} samples of {source}...",
        file=sys.stderr,
    )
    from skcompress.demo import finetune_bar

    try:
        with finetune_bar(net, enabled=sys.stderr.isatty()):
            compressor.fit(Xtr, ytr)
    except (ValueError, TypeError) as exc:
        if _names_a_setting(exc, params):
            raise UsageError(f"--set: {exc}") from None
        raise DataError(f"{cls.__name__} failed: {exc}") from None
    score_after = float(compressor.score(Xte, yte))
    try:
        n_bytes = save(compressor, args.output)
    except OSError as exc:
        raise DataError(f"cannot write {args.output}: {exc}") from None
    before = args.model.stat().st_size
    metric = "accuracy" if is_classifier(net) else "R^2"
    print(f"technique : {cls.__name__}({shown})")
    print(
        f"{metric:<9} : {score_before:.4f} -> {score_after:.4f} on {len(Xte)} "
        f"held-out samples ({100 * (score_after - score_before):+.2f} points)"
    )
    print(
        f"file size : {before} -> {n_bytes} bytes ({before / n_bytes:.2f}x smaller "
        f"file; {compressor.compression_ratio_:.2f}x vs fp32 dense "
        f"{compressor.original_size_bytes_} bytes)"
    )
    print(f"wrote {args.output}")
    if n_bytes >= before:
        print(
            f"skcompress compress: warning: {args.output} ({n_bytes} bytes) is not "
            f"smaller than {args.model} ({before} bytes); the model looks already "
            "compressed: compress the uncompressed net instead (e.g. the base net "
            "saved with skcompress.save before compressing)",
            file=sys.stderr,
        )
    if args.onnx is not None:
        from skcompress.export import export_onnx

        try:
            export = export_onnx(compressor, args.onnx, tuple(X.shape[1:]))
        except (OSError, ValueError, TypeError, RuntimeError) as exc:
            raise DataError(f"cannot export {args.onnx}: {exc}") from None
        print(f"wrote {export.path} ({export.format} ONNX graph, "
              f"{export.n_bytes} bytes)")
    return 0
