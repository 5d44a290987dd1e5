"""Network compressors: scikit-learn meta-estimators over skorch nets.

One private module per technique, listed in ``_registry`` (the one list of
techniques: command line, demo and these lazy imports read it); the shared
fit flow lives in ``_base`` and the weight constraints in ``_constraints``.
Everything is imported on first use, so ``import skcompress.compression``
stays light.
"""

import importlib

from . import _registry

_SHARED = {
    "BaseCompressor": "._base",
    "CompressionResult": "._base",
    "ConstraintCallback": "._base",
    "prune_dead_units": "._dead_units",
}

__all__ = sorted({*_SHARED, *_registry.classes()})


def __getattr__(name):
    modules = {**{k: f"{__name__}{v}" for k, v in _SHARED.items()},
               **_registry.classes()}
    if name in modules:
        value = getattr(importlib.import_module(modules[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
