"""Shared test helpers for the compressors' tests."""

from skorch.callbacks import Callback


class LrSpy(Callback):
    """Records the learning rate every training batch was stepped with."""

    def __init__(self):
        self.lrs_ = []

    def on_batch_end(self, net, training=False, **kwargs):
        if training:
            self.lrs_.append(net.optimizer_.param_groups[0]["lr"])
