"""Finding the skorch net inside a compressor (or a chain of them)."""

__all__ = ["find_net"]

# A chain deeper than this is a cycle, not a chain.
_MAX_DEPTH = 64


def find_net(obj):
    """The fitted skorch net of ``obj``: itself, or the end of its ``estimator_`` chain.

    A fitted compressor holds its compressed net in ``estimator_``; following
    ``estimator_`` also goes through compressors that wrap compressors.

    Parameters
    ----------
    obj : skorch NeuralNet or fitted compressor

    Returns
    -------
    skorch NeuralNet
        Initialized (fitted, or at least set up with ``initialize()``).

    Raises
    ------
    TypeError
        ``obj`` is neither a skorch net nor a fitted compressor (an unfitted
        compressor is told to be fitted first).
    ValueError
        The net found is not initialized.

    Examples
    --------
    >>> from skcompress._nets import find_net
    >>> from skcompress.models import make_digits_net
    >>> net = make_digits_net().initialize()
    >>> find_net(net) is net
    True
    """
    from skorch import NeuralNet

    seen = 0
    while (not isinstance(obj, NeuralNet) and hasattr(obj, "estimator_")
           and seen < _MAX_DEPTH):
        obj, seen = obj.estimator_, seen + 1
    if not isinstance(obj, NeuralNet):
        name = type(obj).__name__
        if hasattr(obj, "fit") and hasattr(obj, "get_params"):
            # an estimator without estimator_: most often a compressor that
            # was built but never fitted
            raise TypeError(
                f"This {name} is not fitted: it holds no compressed net yet. "
                f"Call {name}.fit(X, y) first, then pass the fitted object."
            )
        raise TypeError(
            f"obj must be a fitted compressor or skorch net, got {name}."
        )
    if not getattr(obj, "initialized_", False):
        raise ValueError("obj is a skorch net that is not initialized; fit it first.")
    return obj
