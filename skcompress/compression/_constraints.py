"""Weight constraints shared by the compressors.

A constraint is a ``torch.nn.utils.parametrize`` parametrization: a small
``nn.Module`` whose ``forward`` maps the stored (latent) weight to the
effective one. Constraints stack (mask, then codebook), stay exact through
fine-tuning because the optimizer only ever sees the latent tensor, and are
made permanent at export by :func:`skcompress.io.bake`.

Rules for every parametrization written for skcompress:

- no ``right_inverse``: registering must keep the latent tensor as it is,
  because pickling stores the latent tensor and registers the constraints on
  it again (:func:`add_constraint`), and that must give back the same module;
- plain tensors as buffers / parameters, so the object pickles;
- optionally ``encoding_hint()`` telling the file format how the effective
  tensor can be stored (see :mod:`skcompress.io`).

See docs/design.md, "Constraints".
"""

import copy

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..io.parametrize import give_own_class

__all__ = [
    "Mask",
    "add_constraint",
    "constraints_of",
    "effective_weight",
    "give_own_class",
    "latent_weight",
    "layer_execution_order",
    "pack_mask",
    "run_with_hooks",
    "select_layers",
    "unpack_mask",
]


class Mask(nn.Module):
    """Keep the weight only where ``mask`` is 1 (unstructured pruning).

    The effective weight is ``W * mask``: masked entries are exactly zero in
    the forward pass and receive zero gradient, whatever the optimizer does to
    the latent tensor.

    The mask is stored packed, one bit per weight (the ``bits`` buffer,
    :func:`pack_mask`), not one byte: a fitted chain keeps a mask per masked
    net, and on ResNet-18 a boolean mask is a quarter of the fp32 weights.
    ``mask`` unpacks it into a new tensor; assigning to it (``m.mask = keep``,
    ``m.mask &= keep``) or :meth:`set_mask` packs the new mask in place.
    """

    def __init__(self, mask):
        super().__init__()
        self.shape = tuple(mask.shape)
        self.register_buffer("bits", pack_mask(mask))

    @property
    def mask(self):
        """The boolean keep-mask, shaped like the weight (unpacked anew)."""
        return unpack_mask(self.bits, self.shape)

    @mask.setter
    def mask(self, mask):
        self.set_mask(mask)

    def set_mask(self, mask):
        """Replace the mask in place (same shape), e.g. a tighter one."""
        if tuple(mask.shape) != self.shape:
            raise ValueError(
                f"Mask.set_mask: shape {tuple(mask.shape)} differs from the "
                f"mask's {self.shape}."
            )
        self.bits.copy_(pack_mask(mask).to(self.bits.device))

    def forward(self, weight):
        return weight * unpack_mask(self.bits, self.shape, dtype=weight.dtype)

    def encoding_hint(self):
        return {"kind": "sparse"}

    def extra_repr(self):
        density = self.mask.float().mean().item()
        return f"density={density:.3f}"


_BIT_WEIGHTS = (1, 2, 4, 8, 16, 32, 64, 128)


def pack_mask(mask):
    """Eight entries of a boolean tensor per uint8, first entry in bit 0.

    Examples
    --------
    >>> import torch
    >>> bits = pack_mask(torch.tensor([[True, False, True], [False, False, True]]))
    >>> bits.tolist(), unpack_mask(bits, (2, 3)).tolist()
    ([37], [[True, False, True], [False, False, True]])
    """
    flat = mask.detach().reshape(-1).to(torch.uint8)
    pad = -flat.numel() % 8
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    weights = torch.tensor(_BIT_WEIGHTS, dtype=torch.uint8, device=flat.device)
    return (flat.view(-1, 8) * weights).sum(1, dtype=torch.uint8)


def unpack_mask(bits, shape, dtype=torch.bool):
    """The tensor of ``shape`` that :func:`pack_mask` packed, as ``dtype``
    (ones and zeros for a floating ``dtype``, the forward pass's multiplier).

    One table lookup per byte (``embedding`` into the 256 x 8 table of bit
    patterns), about 3x faster than shifting every byte eight times.
    """
    n = 1
    for size in shape:
        n *= int(size)
    table = _bit_table(bits.device, torch.float32 if dtype == torch.bool else dtype)
    flat = torch.nn.functional.embedding(bits.long(), table).view(-1)[:n].view(shape)
    return flat.bool() if dtype == torch.bool else flat


_BIT_TABLES = {}


def _bit_table(device, dtype):
    """``table[b, i]`` is bit ``i`` of the byte ``b``, as ``dtype``."""
    key = (str(device), dtype)
    if key not in _BIT_TABLES:
        rows = torch.arange(256).unsqueeze(1).bitwise_right_shift(torch.arange(8))
        _BIT_TABLES[key] = rows.bitwise_and(1).to(device=device, dtype=dtype)
    return _BIT_TABLES[key]


def add_constraint(module, constraint, tensor_name="weight"):
    """Stack ``constraint`` on ``module.<tensor_name>``.

    Always register constraints through this function: besides
    ``register_parametrization`` it makes the module picklable (torch refuses
    to pickle parametrized modules), which skorch needs for ``deepcopy``,
    ``clone`` of fitted nets, ``joblib.Memory`` and ``GridSearchCV``.
    """
    parametrize.register_parametrization(module, tensor_name, constraint, unsafe=True)
    cls = type(module)
    if cls.__dict__.get("__reduce_ex__") is not _reduce_parametrized:
        cls.__reduce_ex__ = _reduce_parametrized
        cls.__deepcopy__ = _deepcopy_parametrized


def _reduce_parametrized(module, protocol):
    """Pickle a parametrized module as (plain module, constraints).

    The plain module shares the latent Parameter objects with ``module`` (no
    copy), so an optimizer pickled alongside still points at the same tensors
    after unpickling.
    """
    plain_cls = type(module).__bases__[0]
    plain = plain_cls.__new__(plain_cls)
    plain.__dict__.update(module.__dict__)
    plain._parameters = dict(module._parameters)
    plain._buffers = dict(module._buffers)
    plain._modules = {
        name: sub for name, sub in module._modules.items() if name != "parametrizations"
    }
    records = []
    for tensor_name, plist in module.parametrizations.items():
        if not hasattr(plist, "original"):
            raise TypeError(
                f"Cannot pickle {plain_cls.__name__}.{tensor_name}: only "
                "parametrizations of a single tensor are supported."
            )
        if plist.is_tensor and isinstance(plist.original, nn.Parameter):
            plain._parameters[tensor_name] = plist.original
        else:
            plain._buffers[tensor_name] = plist.original
        records.append((tensor_name, list(plist)))
    return _rebuild_parametrized, (plain, records)


def _deepcopy_parametrized(module, memo):
    """torch's deep copy of a parametrized module, with a class of its own."""
    copied = module.__new__(type(module))
    memo[id(module)] = copied
    copied.__dict__ = copy.deepcopy(module.__dict__, memo)
    return give_own_class(copied)


def _rebuild_parametrized(plain, records):
    for tensor_name, constraints in records:
        for constraint in constraints:
            add_constraint(plain, constraint, tensor_name)
    return plain


def constraints_of(module, tensor_name="weight"):
    """The parametrizations stacked on ``module.<tensor_name>`` (oldest first)."""
    if parametrize.is_parametrized(module, tensor_name):
        return list(module.parametrizations[tensor_name])
    return []


def effective_weight(module, tensor_name="weight"):
    """The tensor the forward pass uses, detached."""
    return getattr(module, tensor_name).detach()


def latent_weight(module, tensor_name="weight"):
    """The stored tensor under the constraints: the one the optimizer updates.

    ``module.<tensor_name>`` itself when it carries no constraint.
    """
    if parametrize.is_parametrized(module, tensor_name):
        return module.parametrizations[tensor_name].original
    return getattr(module, tensor_name)


def run_with_hooks(module, example_input, handles):
    """One no-grad eval-mode forward pass, then remove the hook ``handles``.

    The module's training mode is restored, whatever the forward does.
    """
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            module(example_input)
    finally:
        module.train(was_training)
        for handle in handles:
            handle.remove()


def layer_execution_order(module, example_input):
    """Names of the leaf layers with parameters, in the order forward runs them."""
    order = []
    handles = []
    for name, sub in module.named_modules():
        if isinstance(sub, (nn.Conv2d, nn.Conv1d, nn.Linear)):
            handles.append(
                sub.register_forward_hook(
                    lambda mod, inp, out, name=name: order.append(name)
                )
            )
    run_with_hooks(module, example_input, handles)
    seen = []
    for name in order:
        if name not in seen:
            seen.append(name)
    return seen


def select_layers(
    module,
    layers=None,
    *,
    types=(nn.Conv2d, nn.Linear),
    example_input=None,
    skip_first=False,
    skip_last=True,
    param_name="layers",
):
    """Choose the layers a compressor works on.

    Parameters
    ----------
    module : nn.Module
    layers : None, "all" or list of str
        ``None``: every layer of ``types`` except the output layer (and the
        input layer when ``skip_first``); ``"all"``: every layer of ``types``;
        a list: exactly those dotted names.
    types : tuple of types
    example_input : Tensor, optional
        One small batch; when given, "first" and "last" follow the forward
        pass, otherwise the module registration order.

    Returns
    -------
    list of (name, layer)
    """
    candidates = [
        (name, sub) for name, sub in module.named_modules() if isinstance(sub, types)
    ]
    type_names = "/".join(t.__name__ for t in types)
    if not candidates:
        raise ValueError(
            f"The module {type(module).__name__} has no {type_names} layer to "
            "compress."
        )
    by_name = dict(candidates)
    if isinstance(layers, str) and layers == "all":
        return candidates
    if layers is not None:
        if isinstance(layers, str):
            layers = [layers]
        unknown = [name for name in layers if name not in by_name]
        if unknown:
            raise ValueError(
                f"{param_name}={list(layers)!r} names layers that are not "
                f"{type_names} layers of the module: {unknown}. Available: "
                f"{sorted(by_name)}."
            )
        return [(name, by_name[name]) for name in layers]
    order = [name for name, _ in candidates]
    if example_input is not None:
        executed = [
            name
            for name in layer_execution_order(module, example_input)
            if name in by_name
        ]
        if executed:
            order = executed
    drop = set()
    if skip_last and len(order) > 1:
        drop.add(order[-1])
    if skip_first and len(order) > 1:
        drop.add(order[0])
    chosen = [(name, by_name[name]) for name in order if name not in drop]
    if not chosen:
        raise ValueError(
            f"No {type_names} layer is left to compress once the input/output "
            f"layers are kept; pass {param_name}='all' or a list of names."
        )
    return chosen
