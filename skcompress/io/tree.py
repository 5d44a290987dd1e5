"""The module tree: a module as constructor kwargs plus what differs.

A node is ``{"class": path, "kwargs": {...}}`` plus, where the module differs
from a fresh instance built with those kwargs: ``attrs`` (plain attributes),
``none`` (parameters or buffers set to ``None``), ``children`` (replaced or
patched submodules, ``[name, node or null]``) and ``drop`` (removed
submodules). Reference instances are built on the ``meta`` device: building
one allocates nothing and draws no random numbers.
"""

import inspect
import math
import threading
import time
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from .errors import LIMITS, FormatError
from .parametrize import own_shapes, plain_type, submodules
from .registry import check_saveable, resolve

__all__ = ["build", "describe", "encode_value"]


def encode_value(value, what):
    """JSON form of a constructor kwarg or attribute, else raise ValueError."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(value):
            raise ValueError(f"{what} is not finite")
        return float(value)
    if isinstance(value, (list, tuple)):
        return [encode_value(v, what) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        if "__class__" in value:
            raise ValueError(f"{what} uses the reserved key '__class__'")
        return {k: encode_value(v, what) for k, v in value.items()}
    if isinstance(value, type) and issubclass(value, nn.Module):
        return {"__class__": check_saveable(value)}
    raise ValueError(f"{what}={value!r} is not a JSON value or nn.Module class")


class _InProcess(dict):
    """While saving: every class a kwarg names is one this process holds."""

    def get(self, path, default=None):
        import sys

        module, _, qualname = path.partition(":")
        obj = sys.modules.get(module)
        for part in qualname.split("."):
            obj = getattr(obj, part, None)
        return obj if obj is not None else default


_IN_PROCESS = _InProcess()


def decode_value(value, registry):
    if isinstance(value, list):
        return tuple(decode_value(v, registry) for v in value)
    if isinstance(value, dict):
        if set(value) == {"__class__"}:
            return resolve(value["__class__"], nn.Module, registry)
        return {k: decode_value(v, registry) for k, v in value.items()}
    return value


def init_kwargs_of(module):
    """Constructor kwargs of ``module``: ``_init_kwargs`` or read from attributes."""
    cls = plain_type(module)
    recorded = getattr(module, "_init_kwargs", None)
    if isinstance(recorded, dict):
        return {k: encode_value(v, f"{cls.__name__}._init_kwargs[{k!r}]")
                for k, v in recorded.items()}
    kwargs = {}
    for name, param in inspect.signature(cls.__init__).parameters.items():
        if name in ("self", "device", "dtype") or param.kind in (
                param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        value = getattr(module, name, inspect.Parameter.empty)
        if name == "bias" and (value is None or isinstance(value, torch.Tensor)):
            value = value is not None
        try:
            if value is inspect.Parameter.empty or isinstance(value, torch.Tensor):
                raise ValueError
            kwargs[name] = encode_value(value, name)
        except ValueError:
            if param.default is inspect.Parameter.empty:
                raise ValueError(
                    f"cannot tell the constructor argument {name!r} of "
                    f"{cls.__qualname__}; store the constructor kwargs in an "
                    "attribute `_init_kwargs` (a dict of JSON values).") from None
    return kwargs


def _skip_on_meta(init):
    """``init`` that leaves meta tensors alone (nothing to initialize)."""
    if getattr(init, "_skcompress_meta_aware", False):
        return init

    def wrapped(tensor, *args, **kwargs):
        if isinstance(tensor, torch.Tensor) and tensor.is_meta:
            return tensor
        return init(tensor, *args, **kwargs)

    wrapped._skcompress_meta_aware = True
    wrapped.__wrapped__ = init
    wrapped.__doc__ = init.__doc__
    wrapped.__name__ = init.__name__
    return wrapped


def _meta_aware_init():
    # Weight initializers cost as much on meta tensors as on real ones (they
    # run through decompositions) and change nothing there: skip them for
    # meta tensors only, so other threads building real modules are unaffected.
    for name in dir(torch.nn.init):
        value = getattr(torch.nn.init, name)
        if name.endswith("_") and not name.startswith("_") and callable(value):
            setattr(torch.nn.init, name, _skip_on_meta(value))


class _Budget:
    """Counts the submodules and tensors a constructor registers in this
    thread, and the time it takes, while a file's modules are built: a
    crafted kwarg (``num_layers=20000``) is refused at the limit instead of
    being built (docs/format.md, "Limits")."""

    def __init__(self):
        self.thread = threading.get_ident()
        self.registered = 0
        self.deadline = time.monotonic() + LIMITS["build_seconds"]

    def __call__(self, *args):
        if threading.get_ident() != self.thread:
            return None
        self.registered += 1
        if self.registered > LIMITS["modules"]:
            raise FormatError("the module the file describes has too many parts")
        if time.monotonic() > self.deadline:
            raise FormatError("the module the file describes takes too long to build")
        return None


@contextmanager
def _budget():
    from torch.nn.modules import module as torch_module

    budget = _Budget()
    handles = [torch_module.register_module_module_registration_hook(budget),
               torch_module.register_module_parameter_registration_hook(budget),
               torch_module.register_module_buffer_registration_hook(budget)]
    try:
        yield budget
    finally:
        for handle in handles:
            handle.remove()


def construct(cls, kwargs):
    """``cls(**kwargs)`` on the meta device: no memory, no random numbers."""
    _meta_aware_init()
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        return cls(**kwargs)


_PLAIN = (bool, int, float, str, type(None))


def _plain_equal(a, b):
    """``a == b`` for plain values and tuples of them (no encoding needed)."""
    if type(a) is not type(b):
        return False
    if type(a) is tuple:
        return len(a) == len(b) and all(_plain_equal(x, y) for x, y in zip(a, b))
    return type(a) in _PLAIN and a == b


def _changed_attrs(module, ref):
    """The public attributes of ``module`` that differ from ``ref``'s, both
    encodable, in JSON form (plain values are compared before encoding)."""
    theirs = vars(ref)
    out = {}
    for key, value in vars(module).items():
        if key.startswith("_") or key == "training" or key not in theirs:
            continue
        other = theirs[key]
        if value is other or _plain_equal(value, other):
            continue
        try:
            mine = encode_value(value, key)
            if encode_value(other, key) == mine:
                continue
        except ValueError:
            continue
        out[key] = mine
    return out


def _diff(module, ref):
    """What to change on ``ref`` (a fresh instance) to get ``module``'s layout."""
    mine, theirs = own_shapes(module), own_shapes(ref)
    if any(theirs.get(name, shape) != shape for name, shape in mine.items()):
        raise ValueError(
            f"the tensors of {plain_type(module).__qualname__} do not have the shapes "
            "its constructor kwargs give; store the kwargs that rebuild it in "
            "`_init_kwargs`.")
    node = {}
    attrs = _changed_attrs(module, ref)
    if attrs:
        node["attrs"] = attrs
    none = [name for store in ("_parameters", "_buffers")
            for name, value in getattr(module, store).items()
            if value is None and getattr(ref, store).get(name) is not None]
    if none:
        node["none"] = none
    children = []
    names = set()
    for name, child in submodules(module):
        names.add(name)
        ref_child = ref._modules.get(name)
        if child is None:
            if ref_child is not None:
                children.append([name, None])
        elif (ref_child is None or plain_type(child) is not type(ref_child)
              or own_shapes(child) != own_shapes(ref_child)):
            # replaced, or reshaped (channel pruning): rebuilt from its own
            # constructor kwargs, which the pruner updated
            children.append([name, describe(child)])
        else:
            sub = _diff(child, ref_child)
            if sub:
                children.append([name, sub])
    if children:
        node["children"] = children
    dropped = [name for name in ref._modules if name not in names]
    if dropped:
        node["drop"] = dropped
    return node


def describe(module, kwargs=None):
    """A full node: class, constructor kwargs and the differences from them."""
    cls = plain_type(module)
    if kwargs is None:
        kwargs = init_kwargs_of(module)
    node = {"class": check_saveable(cls)}
    if kwargs:
        node["kwargs"] = kwargs
    try:
        ref = construct(cls, {k: decode_value(v, _IN_PROCESS)
                              for k, v in kwargs.items()})
    except Exception as exc:
        raise ValueError(
            f"{cls.__qualname__}(**{kwargs}) cannot be rebuilt on the meta device "
            f"({exc}); store the constructor kwargs in an attribute "
            "`_init_kwargs`.") from None
    node.update(_diff(module, ref))
    return node


# Sizes that constructors accept as zero or negative, which no forward pass
# can use: checked before anything is built (padding may be 0 or a mode).
_POSITIVE = ("kernel_size", "stride", "dilation", "groups")


def _check_sizes(cls, kwargs):
    for key, value in kwargs.items():
        values = value if isinstance(value, (tuple, list)) else (value,)
        ints = [v for v in values if isinstance(v, int) and not isinstance(v, bool)]
        if key in _POSITIVE and any(v <= 0 for v in ints):
            raise FormatError(f"{cls.__qualname__} {key}={value!r} must be positive")
        if key in _POSITIVE + ("padding",) and any(v > 1 << 16 for v in ints):
            raise FormatError(f"{cls.__qualname__} {key}={value!r} is too large")
        if key == "padding" and any(v < 0 for v in ints):
            raise FormatError(f"{cls.__qualname__} padding={value!r} is negative")


def _same_kind(value, reference):
    """An attribute may change value, never kind: same type, and for tuples
    and lists the same length and kinds of items (an int may become a float
    where the reference is a float)."""
    if isinstance(reference, bool) or isinstance(value, bool):
        return type(value) is type(reference)
    if isinstance(reference, float):
        return isinstance(value, (int, float))
    if isinstance(reference, (tuple, list)):
        return (type(value) is type(reference) and len(value) == len(reference)
                and all(_same_kind(v, r) for v, r in zip(value, reference)))
    if reference is None:
        return value is None
    return type(value) is type(reference)


class _Builder:
    """Rebuilds nodes on the meta device, counting them against the limit."""

    def __init__(self, registry):
        self.registry = registry
        self.n_nodes = 0

    def instance(self, cls, kwargs):
        if not isinstance(kwargs, dict):
            raise FormatError("module kwargs must be an object")
        kwargs = {k: decode_value(v, self.registry) for k, v in kwargs.items()}
        _check_sizes(cls, kwargs)
        try:
            return construct(cls, kwargs)
        except FormatError:
            raise
        except Exception as exc:
            raise FormatError(
                f"{cls.__qualname__} cannot be built from the file's kwargs "
                f"({type(exc).__name__}: {exc})") from None

    def _validate(self, module):
        """Changed attributes that are constructor arguments must be values
        the constructor accepts: build one (on meta) with them."""
        cls = type(module)
        try:
            kwargs = {k: decode_value(v, self.registry)
                      for k, v in init_kwargs_of(module).items()}
            _check_sizes(cls, kwargs)
            reference = construct(cls, kwargs)
        except FormatError:
            raise
        except Exception as exc:
            raise FormatError(
                f"the attributes of {cls.__qualname__} are not values its "
                f"constructor accepts ({type(exc).__name__}: {exc})") from None
        if own_shapes(reference) != own_shapes(module):
            raise FormatError(
                f"the attributes of {cls.__qualname__} do not agree with its tensors")

    def build(self, node):
        if not isinstance(node, dict) or "class" not in node:
            raise FormatError("a module node has no class")
        cls = resolve(node["class"], nn.Module, self.registry)
        module = self.instance(cls, node.get("kwargs", {}))
        self.patch(module, node)
        return module

    def patch(self, module, node):
        self.n_nodes += 1
        if self.n_nodes > LIMITS["modules"]:
            raise FormatError("the module tree has too many nodes")
        if not isinstance(node, dict) or set(node) - {
                "class", "kwargs", "attrs", "none", "children", "drop"}:
            raise FormatError("a module node has unknown fields")
        attrs = node.get("attrs", {})
        if not isinstance(attrs, dict):
            raise FormatError("a module node's attrs must be an object")
        for key, value in attrs.items():
            if key.startswith("_") or key not in vars(module):
                raise FormatError(f"unexpected attribute {key!r}")
            reference = vars(module)[key]
            value = decode_value(value, self.registry)
            if isinstance(reference, list) and isinstance(value, tuple):
                value = list(value)
            if not _same_kind(value, reference):
                raise FormatError(
                    f"attribute {key!r} of {type(module).__qualname__} changes kind "
                    f"({type(reference).__name__} to {type(value).__name__})")
            setattr(module, key, value)
        if attrs:
            self._validate(module)
        for name in node.get("none", []):
            if name in module._parameters:
                module.register_parameter(name, None)
            elif name in module._buffers:
                module.register_buffer(name, None)
            else:
                raise FormatError(f"unexpected tensor name {name!r}")
        for name in node.get("drop", []):
            if module._modules.pop(name, False) is False:
                raise FormatError(f"cannot drop missing submodule {name!r}")
        for item in node.get("children", []):
            if not isinstance(item, list) or len(item) != 2:
                raise FormatError("invalid submodule entry")
            name, child = item
            if not isinstance(name, str) or not name or "." in name:
                raise FormatError(f"invalid submodule name {name!r}")
            if child is None:
                module._modules[name] = None
            elif "class" in child:
                if hasattr(module, name) and name not in module._modules:
                    raise FormatError(f"invalid submodule name {name!r}")
                module.add_module(name, self.build(child))
            elif isinstance(module._modules.get(name), nn.Module):
                self.patch(module._modules[name], child)
            else:
                raise FormatError(f"submodule {name!r} is not in the rebuilt module")


def build(node, registry, root_cls=None, root_kwargs=None):
    """The module a node describes, on the meta device (tensors not loaded),
    within the limits of parts and time."""
    builder = _Builder(registry)
    with _budget():
        if root_cls is None:
            return builder.build(node)
        module = builder.instance(root_cls, root_kwargs or {})
        builder.patch(module, node)
        return module
