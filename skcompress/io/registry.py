"""Trusted classes: the only classes :func:`skcompress.load` instantiates.

A file names classes as ``"module:QualName"``; ``load`` never imports
anything: a name resolves only through this registry, which holds the
``torch.nn`` layers and losses, skorch's nets, skcompress's own modules, and
whatever the caller passes as ``trusted=[MyNet, ...]``
(docs/format.md, "Threat model").
"""

import functools
import importlib
import inspect

from torch import nn

from .errors import FormatError

__all__ = ["class_path", "resolve"]

# skcompress modules whose nn.Module classes are trusted (imported here, by
# us, never because a file asked)
_OWN_MODULES = (
    "skcompress.models",
    "skcompress.blocks",
    "skcompress.compression._binarization",
    "skcompress.compression._lowrank",
    "skcompress.compression._compaction",
    "skcompress.compression._ste",
)


def class_path(cls):
    return f"{cls.__module__}:{cls.__qualname__}"


@functools.cache
def _builtin():
    from skorch import NeuralNet

    found = {}
    for obj in vars(nn).values():
        if inspect.isclass(obj) and issubclass(obj, nn.Module):
            found[class_path(obj)] = obj
    import skorch

    for obj in vars(skorch).values():
        if inspect.isclass(obj) and issubclass(obj, NeuralNet):
            found[class_path(obj)] = obj
    for name in _OWN_MODULES:
        module = importlib.import_module(name)
        for obj in vars(module).values():
            if (inspect.isclass(obj) and issubclass(obj, nn.Module)
                    and obj.__module__ == name):
                found[class_path(obj)] = obj
    return found


def trusted_classes(trusted=()):
    """``{path: class}`` of the built-in registry plus ``trusted``."""
    found = dict(_builtin())
    for cls in trusted or ():
        if not inspect.isclass(cls):
            raise TypeError(f"trusted must hold classes, got {cls!r}.")
        found[class_path(cls)] = cls
    return found


def resolve(path, base, registry):
    """The trusted subclass of ``base`` named ``path``, or ``FormatError``."""
    if not isinstance(path, str) or path.count(":") != 1 or len(path) > 512:
        raise FormatError(f"invalid class path {str(path)[:80]!r}")
    cls = registry.get(path)
    if cls is None:
        raise FormatError(
            f"the file needs class {path!r}, which is not trusted: pass it as "
            f"load(..., trusted=[{path.split(':')[1].split('.')[-1]}]) if you "
            "trust this file")
    if not (inspect.isclass(cls) and issubclass(cls, base)):
        raise FormatError(f"{path!r} is not a {base.__qualname__} subclass")
    return cls


def check_saveable(cls):
    """The class path of ``cls``, checked to name it (module level class)."""
    module = importlib.import_module(cls.__module__) if cls.__module__ else None
    obj = module
    for part in cls.__qualname__.split("."):
        obj = getattr(obj, part, None)
    if obj is not cls:
        raise ValueError(
            f"class {cls.__qualname__} cannot be saved by name: define it at "
            "module level in an importable module.")
    return class_path(cls)
