import numpy as np
import pytest
import torch

from skcompress.datasets import load_digits_images
from skcompress.models import MODELS, make_digits_net


def test_load_digits_images_shapes_and_range():
    X, y = load_digits_images()
    assert X.shape == (1797, 1, 8, 8)
    assert X.dtype == np.float32 and y.dtype == np.int64
    assert X.min() == 0.0 and X.max() == 1.0
    assert set(np.unique(y)) == set(range(10))


@pytest.mark.parametrize("arch", sorted(MODELS))
def test_models_output_logits(arch):
    module = MODELS[arch]()
    out = module(torch.zeros(5, 1, 8, 8))
    assert out.shape == (5, 10)


def test_default_cnn_has_about_150k_parameters():
    module = MODELS["cnn"]()
    n_params = sum(p.numel() for p in module.parameters())
    assert 120_000 <= n_params <= 180_000


def test_make_digits_net_is_reproducible():
    X, y = load_digits_images()
    X, y = X[:200], y[:200]
    a = make_digits_net(random_state=3, max_epochs=1).fit(X, y)
    b = make_digits_net(random_state=3, max_epochs=1).fit(X, y)
    for pa, pb in zip(a.module_.parameters(), b.module_.parameters()):
        assert torch.equal(pa, pb)


def test_make_digits_net_rejects_unknown_arch():
    with pytest.raises(ValueError, match="arch"):
        make_digits_net(arch="nope")
