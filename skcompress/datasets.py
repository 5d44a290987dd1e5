"""Small image data sets shipped with scikit-learn, shaped for CNNs."""

import numpy as np
from sklearn.datasets import load_digits

__all__ = ["load_digits_images"]


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
