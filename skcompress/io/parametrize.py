"""Parametrized modules as the file format sees them: baked, with hints.

A compressor's constraints are ``torch.nn.utils.parametrize``
parametrizations; the file stores the effective tensors they produce, and
picks each tensor's encoding from their ``encoding_hint()``.
"""

import copy

import torch
from torch.nn.utils import parametrize

__all__ = ["bake", "collect_hints", "give_own_class"]


def give_own_class(module):
    """Give a parametrized ``module`` its own ``ParametrizedX`` class.

    torch creates one dynamic class per parametrized module, and a deep copy
    shares it with the original; removing a parametrization deletes the
    property from that class, which would break the other copy.
    """
    cls = type(module)
    namespace = {k: v for k, v in vars(cls).items()
                 if k not in ("__dict__", "__weakref__")}
    module.__class__ = type(cls.__name__, cls.__bases__, namespace)
    return module


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
            for constraint in stack:
                method = getattr(constraint, "encoding_hint", None)
                hint = method() if callable(method) else None
                if isinstance(hint, dict):
                    found.append({k: v.detach().cpu().numpy()
                                  if isinstance(v, torch.Tensor) else v
                                  for k, v in hint.items()})
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
