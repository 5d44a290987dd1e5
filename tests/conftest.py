import numpy as np
import pytest


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
