"""Straight-through estimators shared by the quantizing compressors.

A straight-through estimator (STE) uses a non-differentiable value (rounded,
sign) in the forward pass and pretends, in the backward pass, that it was the
identity of a latent tensor (Bengio et al., 2013). The forward value is
returned bit for bit, so the effective weights stay exactly on their grid.
"""

import torch

__all__ = ["straight_through"]


class _StraightThrough(torch.autograd.Function):
    @staticmethod
    def forward(ctx, latent, value, limit):
        ctx.limit = limit
        if limit is not None:
            ctx.save_for_backward(latent)
        return value.clone()

    @staticmethod
    def backward(ctx, grad):
        if ctx.limit is None:
            return grad, None, None
        (latent,) = ctx.saved_tensors
        inside = (latent.abs() <= ctx.limit).to(grad.dtype)
        return grad * inside, None, None


def straight_through(latent, value, limit=None):
    """Return ``value`` in the forward pass, pass gradients to ``latent``.

    Parameters
    ----------
    latent : Tensor
        The tensor that receives the gradient.
    value : Tensor
        What the forward pass uses (same shape; detached here).
    limit : float or None, default=None
        ``None``: the gradient passes unchanged (identity STE). A number: it
        passes only where ``|latent| <= limit`` (the STE of Htanh for
        ``limit=1``, as in BinaryConnect / BNN).

    Returns
    -------
    Tensor
        Equal to ``value`` exactly.
    """
    return _StraightThrough.apply(latent, value.detach(), limit)
