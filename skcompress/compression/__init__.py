"""Network compressors: scikit-learn meta-estimators over skorch nets.

One private module per technique; the shared fit flow lives in ``_base`` and
the weight constraints in ``_constraints``. Techniques are imported on first
use, so ``import skcompress.compression`` stays light.
"""

import importlib

from ._base import BaseCompressor, ConstraintCallback

_TECHNIQUES = {
    "Binarizer": "._binarization",
    "Compactor": "._compaction",
    "Distiller": "._distillation",
    "LowRankCompressor": "._lowrank",
    "Pruner": "._pruning",
    "Quantizer": "._quantization",
}

__all__ = ["BaseCompressor", "ConstraintCallback", *sorted(_TECHNIQUES)]


def __getattr__(name):
    if name in _TECHNIQUES:
        value = getattr(importlib.import_module(_TECHNIQUES[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
