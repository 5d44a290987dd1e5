"""Parametrized modules as the file format sees them: baked, with hints.

A compressor's constraints are ``torch.nn.utils.parametrize``
parametrizations; the file stores the effective tensors they produce, and
picks each tensor's encoding from their ``encoding_hint()``.
"""

import copy

import torch
from torch.nn.utils import parametrize

__all__ = ["bake", "collect_hints", "give_own_class", "plain_type", "tensors_of"]


def plain_type(module):
    """The class ``module`` had before torch parametrized it."""
    if parametrize.is_parametrized(module):
        return type(module).__bases__[0]
    return type(module)


def submodules(module):
    """``(name, child)`` of ``module``, without torch's ``parametrizations``."""
    skip = parametrize.is_parametrized(module)
    return [(name, child) for name, child in module._modules.items()
            if not (skip and name == "parametrizations")]


def own_shapes(module):
    """``leaf -> shape`` of the tensors ``module`` holds itself (parametrized
    ones by their stored tensor: constraints keep the shape)."""
    out = {leaf: tuple(value.shape) for store in (module._parameters, module._buffers)
           for leaf, value in store.items() if value is not None}
    if parametrize.is_parametrized(module):
        for leaf, stack in module.parametrizations.items():
            out[leaf] = tuple(stack.original.shape)
    return out


def own_tensors(module):
    """``leaf -> (kind, tensor)`` that the baked ``module`` holds itself: its
    parameters and buffers, parametrized ones as their effective value
    (computed once, no copy of the module)."""
    out = {}
    for kind, store in (("p", module._parameters), ("b", module._buffers)):
        for leaf, value in store.items():
            out[leaf] = (kind, value)
    if parametrize.is_parametrized(module):
        for leaf, stack in module.parametrizations.items():
            kind = "p" if isinstance(stack.original, torch.nn.Parameter) else "b"
            out[leaf] = (kind, Effective(module, leaf, stack.original))
    return out


class Effective:
    """A parametrized tensor's effective value, computed only when asked:
    an encoding that follows from the constraint alone never needs it."""

    def __init__(self, module, leaf, original):
        self.module, self.leaf = module, leaf
        self.shape, self.dtype = original.shape, original.dtype
        self.requires_grad = original.requires_grad

    def numel(self):
        return self.shape.numel()

    def detach(self):
        with torch.no_grad():
            return getattr(self.module, self.leaf).detach()


def tensors_of(module):
    """Yield ``(name, kind, tensor or alias name, extra)`` for every tensor of
    the baked ``module``, reading parametrized modules in place."""
    seen = {}

    def walk(prefix, sub):
        for leaf, (kind, value) in own_tensors(sub).items():
            if value is None:
                continue
            name = f"{prefix}.{leaf}" if prefix else leaf
            extra = {}
            if kind == "p" and not value.requires_grad:
                extra["frozen"] = True
            if kind == "b" and leaf in sub._non_persistent_buffers_set:
                extra["persistent"] = False
            key = id(value)
            if key in seen:
                yield name, kind, seen[key][0], extra
            else:
                seen[key] = (name, value)  # keeps value alive: ids stay unique
                yield name, kind, value, extra
        for child_name, child in submodules(sub):
            if child is not None:
                yield from walk(f"{prefix}.{child_name}" if prefix else child_name,
                                child)

    yield from walk("", module)


def give_own_class(module):
    """Give a parametrized ``module`` a class of its own (in place); return it.

    torch makes one ``ParametrizedX`` class per parametrized module and keeps
    the parametrized tensors as properties of that class. torch's deep copy of
    such a module shares the class with the original, and removing a
    parametrization from the copy (baking it) deletes the property from the
    shared class, which breaks the original. A copy that is given its own
    class (same bases, same namespace) can be baked safely.

    Examples
    --------
    >>> import copy, torch
    >>> from torch.nn.utils import parametrize
    >>> from skcompress.io import give_own_class
    >>> layer = torch.nn.Linear(2, 2)
    >>> _ = parametrize.register_parametrization(layer, "weight", torch.nn.Identity())
    >>> twin = give_own_class(copy.deepcopy(layer))
    >>> _ = parametrize.remove_parametrizations(twin, "weight")
    >>> type(twin) is torch.nn.Linear, tuple(layer.weight.shape)
    (True, (2, 2))
    """
    cls = type(module)
    namespace = {k: v for k, v in vars(cls).items()
                 if k not in ("__dict__", "__weakref__")}
    module.__class__ = type(cls.__name__, cls.__bases__, namespace)
    return module


def _first_input(method, position, stack):
    """``(stack.original,)`` when ``method`` takes a weight and is first."""
    import inspect

    if position:
        return ()
    try:
        accepts = "weight" in inspect.signature(method).parameters
    except (TypeError, ValueError):
        accepts = False
    return (stack.original.detach(),) if accepts else ()


def collect_hints(module):
    """``{"layer.weight": [hint, ...]}`` from the parametrizations' hints.

    For every parametrized tensor, each parametrization in the stack (in
    order) with a callable ``encoding_hint()`` contributes the dict it
    returns; tensors in it are converted to numpy arrays.
    """
    hints = {}
    for prefix, sub in module.named_modules():
        if not parametrize.is_parametrized(sub):
            continue
        for name, stack in sub.parametrizations.items():
            found = []
            for position, constraint in enumerate(stack):
                method = getattr(constraint, "encoding_hint", None)
                hint = None
                if callable(method):
                    # the first constraint's input is the stored tensor: it
                    # may describe its output from it (integers of a grid)
                    hint = method(*_first_input(method, position, stack))
                if isinstance(hint, dict):
                    hint = {k: v.detach().cpu().numpy()
                            if isinstance(v, torch.Tensor) else v
                            for k, v in hint.items()}
                    # the last constraint alone makes the effective tensor
                    hint["last"] = position == len(stack) - 1
                    found.append(hint)
            if found:
                hints[f"{prefix}.{name}" if prefix else name] = found
    return hints


def bake(module):
    """Return a deep copy of ``module`` with every parametrization made permanent.

    Examples
    --------
    >>> import torch
    >>> from torch.nn.utils import parametrize
    >>> from skcompress.io import bake
    >>> class Zero(torch.nn.Module):
    ...     def forward(self, w):
    ...         return torch.zeros_like(w)
    >>> layer = torch.nn.Linear(2, 2)
    >>> _ = parametrize.register_parametrization(layer, "weight", Zero())
    >>> baked = bake(layer)
    >>> parametrize.is_parametrized(baked), float(baked.weight.detach().sum())
    (False, 0.0)
    """
    baked = copy.deepcopy(module)
    with torch.no_grad():
        for sub in list(baked.modules()):
            if parametrize.is_parametrized(sub):
                give_own_class(sub)
            while parametrize.is_parametrized(sub):
                name = next(iter(sub.parametrizations))
                parametrize.remove_parametrizations(sub, name, leave_parametrized=True)
    return baked
