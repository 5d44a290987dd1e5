"""Fixtures shared by the whole suite.

The digits fixtures are session-scoped: every test file that compresses the
tiny digits net uses the same data and the same trained net, which no test
may modify (tests check that compressors do not).
"""

import numpy as np
import pytest

TINY_NET = dict(max_epochs=3, module__channels=(4, 8), module__hidden=16)


@pytest.fixture(autouse=True)
def _seed_everything():
    """Fix global seeds so tests are reproducible whatever their order."""
    np.random.seed(0)
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a core dependency
        return
    torch.manual_seed(0)
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def data():
    """300 digits images ``(300, 1, 8, 8)`` and their labels."""
    from skcompress.datasets import load_digits_images

    X, y = load_digits_images()
    return X[:300], y[:300]


@pytest.fixture(scope="session")
def X_test():
    """100 more digits images, never trained on."""
    from skcompress.datasets import load_digits_images

    return load_digits_images()[0][300:400]


@pytest.fixture(scope="session")
def fitted_net(data):
    """The tiny digits CNN (``TINY_NET``, seed 0) trained on ``data``."""
    import torch

    from skcompress.models import make_digits_net

    torch.set_num_threads(1)
    return make_digits_net(random_state=0, **TINY_NET).fit(*data)


def _state(net):
    return {k: v.clone() for k, v in net.module_.state_dict().items()}


def _assert_same_state(before, net):
    import torch

    after = net.module_.state_dict()
    assert before.keys() == after.keys()
    for key, value in before.items():
        assert torch.equal(value, after[key]), key


@pytest.fixture
def state():
    """``state(net)``: a copy of the net's module state, for ``assert_same_state``."""
    return _state


@pytest.fixture
def assert_same_state():
    """``assert_same_state(before, net)``: the module state is bit for bit
    ``before`` (a ``state(net)`` taken earlier)."""
    return _assert_same_state
