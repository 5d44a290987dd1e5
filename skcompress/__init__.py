"""skcompress: data and neural-network compression as scikit-learn estimators.

Public names are imported lazily so that ``import skcompress.decomposition``
(tabular users) never pays for importing torch.
"""

import importlib

__version__ = "0.1.0.dev0"

_LAZY = {
    # reducers (no torch)
    "PCA": "skcompress.decomposition",
    "SVD": "skcompress.decomposition",
    "LDA": "skcompress.decomposition",
    "LLE": "skcompress.decomposition",
    "LaplacianEigenmaps": "skcompress.decomposition",
    "compare_reducers": "skcompress.decomposition",
    "plot_comparison": "skcompress.decomposition",
    # compressors
    "BaseCompressor": "skcompress.compression",
    "LowRankCompressor": "skcompress.compression",
    "Pruner": "skcompress.compression",
    "Quantizer": "skcompress.compression",
    "Binarizer": "skcompress.compression",
    "Distiller": "skcompress.compression",
    "Compactor": "skcompress.compression",
    # accounting + format
    "model_report": "skcompress.accounting",
    "measure_latency": "skcompress.accounting",
    "save": "skcompress.io",
    "load": "skcompress.io",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'skcompress' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
