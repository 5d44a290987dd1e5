"""The ``skcompress`` command line.

Each subcommand is one ``_add_<name>`` function that registers its parser on
the subparsers and sets ``handler``; add new subcommands the same way.
Heavy imports (torch, skorch) stay inside the handlers that need them.
"""

import argparse
import sys
from pathlib import Path

__all__ = ["main"]

BUILTIN_DATASETS = ("breast_cancer", "wine", "digits", "diabetes")
METHODS = ("PCA", "SVD", "LDA", "LLE", "LaplacianEigenmaps")


class DataError(Exception):
    """Bad user data: reported as one line on stderr, exit status 1."""


def main(argv=None):
    """Run the command line; return the exit status.

    Parameters
    ----------
    argv : list of str, default=None
        Arguments without the program name; ``None`` reads ``sys.argv``.

    Returns
    -------
    status : int
        0 on success, 1 on a data error (argparse usage errors exit 2).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help(sys.stderr)
        return 2
    try:
        return args.handler(args)
    except DataError as exc:
        print(f"skcompress {args.command}: error: {exc}", file=sys.stderr)
        return 1


def build_parser():
    """The argument parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="skcompress",
        description="Data and neural-network compression as scikit-learn estimators.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
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
    parser.add_argument("--cv", type=int, default=5, help="folds (default: 5)")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("skcompress-report"),
        help="output folder (default: ./skcompress-report)",
    )
    parser.set_defaults(handler=_run_compare)


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


def _run_compare(args):
    import pandas as pd

    from skcompress.decomposition import compare_reducers, plot_comparison
    from skcompress.decomposition._compare import default_reducers

    if args.csv is not None:
        X, y = _load_csv(args.csv, args.target)
        source = str(args.csv)
    else:
        if args.target is not None:
            raise DataError("--target needs --csv")
        X, y = _load_builtin(args.dataset)
        source = args.dataset
    reducers = {name: est for name, est in default_reducers().items()}
    reducers = {name: reducers[name] for name in args.methods}
    print(
        f"comparing {', '.join(args.methods)} on {source} "
        f"({X.shape[0]} x {X.shape[1]}), k = {args.n_components}",
        file=sys.stderr,
    )
    try:
        table = compare_reducers(
            X.to_numpy(dtype=float),
            None if y is None else y.to_numpy(),
            reducers=reducers,
            n_components=args.n_components,
            cv=args.cv,
            verbose=True,
        )
    except ValueError as exc:
        raise DataError(str(exc)) from None
    args.out.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out / "comparison.csv", index=False)
    plot_comparison(table).savefig(args.out / "comparison.png", dpi=100)
    with pd.option_context("display.width", 160, "display.max_columns", None):
        print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"wrote {args.out / 'comparison.csv'} and {args.out / 'comparison.png'}")
    return 0
