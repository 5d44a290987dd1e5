"""Shared test helpers for the compressors' tests."""

import torch
from skorch.callbacks import Callback


class LrSpy(Callback):
    """Records the learning rate every training batch was stepped with."""

    def __init__(self):
        self.lrs_ = []

    def on_batch_end(self, net, training=False, **kwargs):
        if training:
            self.lrs_.append(net.optimizer_.param_groups[0]["lr"])


def net_state(net):
    """A detached copy of a fitted skorch net's ``module_`` state."""
    return {k: v.detach().clone() for k, v in net.module_.state_dict().items()}


def assert_same_state(a, b):
    """Two states (:func:`net_state`) are equal key for key, bit for bit."""
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
