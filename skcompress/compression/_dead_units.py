"""Dead units: the output channels that no later layer reads.

Unstructured pruning leaves whole units of a layer (output neurons of a
Linear, output channels of a Conv2d) whose outgoing weights, the columns of
the next layer that read them, are all zero. Such a unit cannot influence
the net's output, whatever its input and its activation; its incoming
weights and its bias are stored for nothing. :func:`prune_dead_units` finds
these units and masks their incoming weights and biases, which changes no
output (exactly: each removed term was multiplied by a zero weight), and
repeats, since masking a layer's rows can leave units of the layer before
it unread in turn.

Which columns of a consumer read which unit comes from torch-pruning's
dependency graph (the same machinery as ``Pruner(granularity="filter")``),
through activations, pooling, BatchNorm and flattening. Only units whose
every path is such a chain are candidates: a group that meets anything else
(a residual sum, a concatenation, a grouped convolution, the net's output)
is left alone. The result is checked by a forward pass in which the units
found dead output large random values: the outputs must stay exactly equal,
or nothing is changed.

A unit with no incoming weights (a constant ``act(bias)``) is not removed:
folding its constant into the next layer's bias would change the rounding
of that layer's sums.
"""

import copy
import warnings

import torch
from torch import nn

from ._constraints import Mask, add_constraint, constraints_of

__all__ = ["prune_dead_units"]

# ops that map each channel to the same channel (torch autograd names)
_CHANNELWISE = (
    "relu", "relu6", "hardtanh", "leakyrelu", "elu", "gelu", "silu",
    "sigmoid", "tanh", "hardswish", "hardsigmoid", "mish", "softplus",
    "maxpool", "avgpool", "adaptiveavgpool", "adaptivemaxpool",
    "tbackward",  # the transpose of a Linear's own weight
)
_PERTURBATION = 1e3


def _channelwise(op):
    name = str(getattr(op, "_grad_fn", "")).lower()
    return any(name.startswith(prefix) for prefix in _CHANNELWISE)


def _consumer(module):
    return isinstance(module, nn.Linear) or (
        isinstance(module, nn.Conv2d) and module.groups == 1)


def _groups(module, example_input):
    """``[(root name, units, [(consumer name, columns, roots)])]`` for every
    Conv2d / Linear whose units reach the output only through the input
    channels of Conv2d / Linear consumers (``columns[i]`` of the consumer
    reads unit ``roots[i]``)."""
    import torch_pruning as tp
    from torch_pruning import ops

    from ..io import bake

    plain = bake(module).eval()
    names = {id(sub): name for name, sub in plain.named_modules()}
    graph = tp.DependencyGraph().build_dependency(plain, example_inputs=example_input)
    groups = []
    for name, layer in plain.named_modules():
        if not isinstance(layer, (nn.Conv2d, nn.Linear)):
            continue
        node = graph.module2node.get(layer)
        if node is None or not node.outputs:  # not run, or an output
            continue
        pruner = graph.get_pruner_of_module(layer)
        units = pruner.get_out_channels(layer)
        group = graph.get_pruning_group(layer, pruner.prune_out_channels,
                                        idxs=list(range(units)))
        consumers, eligible = [], True
        for item in group.items:
            target, handler = item.dep.target, item.dep.handler
            sub = target.module
            if sub is layer and handler == pruner.prune_out_channels:
                continue
            if _consumer(sub) and handler == graph.get_pruner_of_module(
                    sub).prune_in_channels:
                consumers.append((names[id(sub)], torch.as_tensor(item.idxs),
                                  torch.as_tensor(item.root_idxs)))
                continue
            passes = (isinstance(sub, ops._ElementWiseOp) and _channelwise(sub)
                      or isinstance(sub, ops._ReshapeOp)
                      or isinstance(sub, nn.modules.batchnorm._BatchNorm))
            if not (passes and target.outputs):  # unknown op, or an output
                eligible = False
                break
        if eligible and consumers:
            groups.append((name, units, consumers))
    return groups


def _read(layer, dead_rows=None):
    """Per input column of a consumer: is any of its weights nonzero (in the
    rows not already found dead)?"""
    weight = layer.weight.detach() != 0
    if dead_rows is not None:
        weight = weight & ~dead_rows.to(weight.device).reshape(
            (-1,) + (1,) * (weight.dim() - 1))
    return weight.transpose(0, 1).reshape(weight.shape[1], -1).any(dim=1)


def _dead_units(modules, groups):
    """``{layer: bool tensor of its units}`` that no consumer reads, to a
    fixed point: a unit read only by dead units is dead too (the sets only
    grow, so this ends)."""
    dead = {}
    changed = True
    while changed:
        changed = False
        for root, units, consumers in groups:
            read = torch.zeros(units, dtype=torch.bool)
            for consumer, columns, roots in consumers:
                used = _read(modules[consumer], dead.get(consumer)).cpu()[columns]
                read[roots[used]] = True
            if root not in dead or not torch.equal(~read, dead[root]):
                dead[root] = ~read
                changed = True
    return {root: rows for root, rows in dead.items() if bool(rows.any())}


def _outputs(module, example_input, noise=None):
    handles = []
    if noise:
        modules = dict(module.named_modules())
        for name, rows in noise.items():
            def hook(layer, inputs, output, rows=rows):
                output = output.clone()
                shape = output[:, rows].shape
                output[:, rows] = _PERTURBATION * (1 + torch.rand(
                    shape, generator=torch.Generator().manual_seed(0)).to(output))
                return output
            handles.append(modules[name].register_forward_hook(hook))
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            out = module(example_input)
    finally:
        module.train(was_training)
        for handle in handles:
            handle.remove()
    return out if isinstance(out, (tuple, list)) else (out,)


def _equal(first, second):
    return len(first) == len(second) and all(
        torch.equal(a, b) for a, b in zip(first, second))


def _mask(layer, tensor_name, keep):
    """Zero ``layer.<tensor_name>`` where ``keep`` is False: tighten its last
    constraint when that is a Mask, else stack one."""
    stack = constraints_of(layer, tensor_name)
    keep = keep.to(getattr(layer, tensor_name).device)
    if stack and isinstance(stack[-1], Mask):
        stack[-1].mask &= keep
    else:
        add_constraint(layer, Mask(keep), tensor_name)


def prune_dead_units(module, example_input):
    """Mask the incoming weights and biases of the units nothing reads.

    A unit (output neuron of a Linear, output channel of a Conv2d) whose
    outgoing weights are all zero in every layer that reads it cannot change
    the output; this masks its row of weights and its bias (through
    :class:`~skcompress.compression._constraints.Mask`, tightened in place
    when the layer's last constraint is a Mask), and repeats until no unit is
    left unread. The module's outputs stay exactly equal; the file is
    smaller. ``module`` is changed in place. Where torch-pruning cannot
    trace the module, or the check finds an output changed, it warns and
    masks nothing.

    Parameters
    ----------
    module : nn.Module
    example_input : Tensor
        One small batch, to trace the graph and check the result.

    Returns
    -------
    dict
        Layer name -> number of units masked (those that still had a nonzero
        weight or bias; layers with at least one).

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from skcompress.compression._constraints import Mask, add_constraint
    >>> net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    >>> keep = torch.ones(2, 3, dtype=torch.bool)
    >>> keep[:, 1] = False  # nothing reads unit 1 of the first layer
    >>> add_constraint(net[2], Mask(keep))
    >>> prune_dead_units(net, torch.randn(5, 4))
    {'0': 1}
    >>> int(net[0].weight[1].count_nonzero()), int(net[0].bias[1].count_nonzero())
    (0, 0)
    """
    try:
        groups = _groups(module, example_input)
    except Exception as exc:  # torch-pruning cannot trace every module
        warnings.warn(
            f"prune_dead_units: the dependency graph of {type(module).__name__} "
            f"could not be built ({type(exc).__name__}: {exc}); no unit was "
            "masked.", UserWarning, stacklevel=2)
        return {}
    modules = dict(module.named_modules())
    dead = {}
    for root, rows in _dead_units(modules, groups).items():
        layer = modules[root]
        # units already without weights and bias need nothing more
        live = (layer.weight.detach() != 0).reshape(len(rows), -1).any(dim=1).cpu()
        if layer.bias is not None:
            live |= (layer.bias.detach() != 0).cpu()
        if bool((rows & live).any()):
            dead[root] = rows & live
    if not dead:
        return {}
    # large values out of the dead units, and their masks, must leave every
    # output exactly as it was
    before = _outputs(module, example_input)
    candidate = copy.deepcopy(module)
    _apply(dict(candidate.named_modules()), dead)
    if not (_equal(before, _outputs(module, example_input, dead))
            and _equal(before, _outputs(candidate, example_input))):
        warnings.warn(
            f"prune_dead_units: the units found unread in {sorted(dead)} change "
            "the output (the dependency graph was misread); nothing was masked.",
            UserWarning, stacklevel=2)
        return {}
    _apply(modules, dead)
    return {root: int(rows.sum()) for root, rows in dead.items()}


def _apply(modules, masks):
    for root, rows in masks.items():
        layer = modules[root]
        keep = ~rows
        shape = (len(rows),) + (1,) * (layer.weight.dim() - 1)
        _mask(layer, "weight", keep.reshape(shape).expand_as(layer.weight).clone())
        if layer.bias is not None:
            _mask(layer, "bias", keep.clone())
