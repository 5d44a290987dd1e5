"""skcompress: data and neural-network compression as scikit-learn estimators.

Public names are imported lazily so that ``import skcompress.decomposition``
(tabular users) never pays for importing torch.
"""

import importlib

from .compression import _registry

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
    # compressors: their base class here, the techniques from the registry
    "BaseCompressor": "skcompress.compression",
    # accounting + format
    "model_report": "skcompress.accounting",
    "measure_latency": "skcompress.accounting",
    "save": "skcompress.io",
    "load": "skcompress.io",
    "FormatError": "skcompress.io",
    # per-layer sensitivity analysis
    "sensitivity": "skcompress._sensitivity",
    "plot_sensitivity": "skcompress._sensitivity",
    # deployment (optional extra "deploy")
    "export_onnx": "skcompress.export",
    "measure_onnx_latency": "skcompress.export",
}

__all__ = sorted({*_LAZY, *_registry.classes()})


def __getattr__(name):
    if name in _registry.classes():
        module = "skcompress.compression"
    elif name in _LAZY:
        module = _LAZY[name]
    else:
        raise AttributeError(f"module 'skcompress' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
