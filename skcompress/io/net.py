"""The skorch part of the header: net class, its params and its criterion."""

import warnings

import numpy as np
import torch
from torch import nn

from .._nets import find_net
from .errors import FormatError
from .registry import check_saveable, resolve
from .tree import decode_value, encode_value

__all__ = ["find_net", "make_net", "net_header"]

_NET_PARAMS = ("batch_size", "lr", "max_epochs", "verbose", "threshold")
_PARAMS = _NET_PARAMS + ("classes", "predict_nonlinearity")


def _prefixed(params, prefix, what):
    out = {}
    for key, value in params.items():
        if not key.startswith(prefix) or "__" in key[len(prefix):]:
            continue
        try:
            out[key[len(prefix):]] = encode_value(value, key)
        except ValueError as exc:
            warnings.warn(f"{what} parameter not saved: {exc}", stacklevel=4)
    return out


def net_header(net):
    """``(header, root kwargs)``: the net's header, and the module's kwargs
    when ``module_`` is an instance of the net's ``module`` class (else None)."""
    params = net.get_params(deep=False)
    module_cls = net.module if isinstance(net.module, type) else None
    kwargs = None
    if type(net.module_) is module_cls:
        kwargs = {key[8:]: encode_value(value, key) for key, value in params.items()
                  if key.startswith("module__")}
    criterion = net.criterion if isinstance(net.criterion, type) else type(
        net.criterion)
    header = {
        "class": check_saveable(type(net)),
        "criterion": {"class": check_saveable(criterion),
                      "kwargs": _prefixed(params, "criterion__", "criterion")},
        "params": {},
    }
    for key in _NET_PARAMS:
        if key in params:
            try:
                header["params"][key] = encode_value(params[key], key)
            except ValueError:
                pass
    nonlinearity = params.get("predict_nonlinearity", "auto")
    if nonlinearity is not None and nonlinearity != "auto":
        raise ValueError("predict_nonlinearity must be 'auto' or None to be saved; "
                         f"got {nonlinearity!r}.")
    header["params"]["predict_nonlinearity"] = nonlinearity
    classes = getattr(net, "classes_", None) if hasattr(net, "classes_") else None
    if classes is not None:
        header["params"]["classes"] = encode_value(np.asarray(classes).tolist(),
                                                   "classes_")
    return header, kwargs


def _number(value, low, high, integer=False):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if integer and not isinstance(value, int):
        return False
    return low <= value <= high


# what each saved net parameter may be (anything else is a crafted file)
_CHECKS = {
    "batch_size": lambda v: v == -1 or _number(v, 1, 2**31, integer=True),
    "lr": lambda v: _number(v, 0, 1e6),
    "max_epochs": lambda v: _number(v, 0, 2**31, integer=True),
    "verbose": lambda v: _number(v, 0, 100, integer=True),
    "threshold": lambda v: _number(v, -1e6, 1e6),
    "predict_nonlinearity": lambda v: v is None or v == "auto",
    "classes": lambda v: isinstance(v, list) and len(v) <= 1_000_000 and all(
        isinstance(c, (str, int, float, bool)) for c in v),
}


def make_net(info, module, root_cls, root_kwargs, registry):
    """An initialized skorch net around the loaded ``module`` (on CPU).

    The net is initialized around the module instance (nothing is built
    twice), then its ``module`` / ``module__*`` params are set to the class
    and kwargs, so that it clones and refits like the net that was saved.
    """
    from skorch import NeuralNet

    if not isinstance(info, dict) or set(info) != {"class", "criterion", "params"}:
        raise FormatError("the net header has unknown or missing fields")
    net_cls = resolve(info["class"], NeuralNet, registry)
    criterion = info["criterion"]
    if not isinstance(criterion, dict) or set(criterion) != {"class", "kwargs"}:
        raise FormatError("the criterion header has unknown or missing fields")
    criterion_cls = resolve(criterion["class"], nn.Module, registry)
    kwargs = {f"criterion__{k}": decode_value(v, registry)
              for k, v in criterion["kwargs"].items()}
    params = info["params"]
    if not isinstance(params, dict):
        raise FormatError("the net params must be an object")
    for key, value in params.items():
        if key not in _PARAMS:
            raise FormatError(f"unexpected net parameter {key!r}")
        if not _CHECKS[key](value):
            raise FormatError(f"net parameter {key}={str(value)[:40]!r} is invalid")
        kwargs[key] = list(value) if key == "classes" else value
    net = net_cls(module=module, criterion=criterion_cls, device="cpu", **kwargs)
    with torch.random.fork_rng(devices=[]):
        net.initialize()
    if root_cls is not None:
        net.module = root_cls
        for key, value in (root_kwargs or {}).items():
            setattr(net, f"module__{key}", decode_value(value, registry))
    return net
