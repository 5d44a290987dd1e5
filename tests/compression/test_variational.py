import copy
import io
import pickle

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV

import skcompress
from skcompress.compression import Quantizer, VariationalPruner
from skcompress.compression._constraints import Mask, constraints_of
from skcompress.compression._pruning import is_depthwise
from skcompress.compression._variational import (
    K1,
    K2,
    K3,
    _Variational,
    kl_approximation,
)
from skcompress.models import make_lenet5_net

LAYERS = ("conv1", "conv2", "fc1", "fc2")


def fit_vp(net, data, **params):
    params = {"prefit": True, "finetune_epochs": 2, "random_state": 0, **params}
    return VariationalPruner(net, **params).fit(*data)


@pytest.fixture(scope="module")
def sparse(fitted_net, data):
    return fit_vp(fitted_net, data, strength=3.0)


def test_kl_equals_the_papers_formula():
    log_alpha = torch.tensor([-8.0, -2.0, 0.0, 1.5, 3.0, 8.0])
    expected = [
        K1 - K1 / (1 + np.exp(-(K2 + K3 * a))) + 0.5 * np.log1p(np.exp(-a))
        for a in log_alpha.tolist()
    ]
    np.testing.assert_allclose(kl_approximation(log_alpha).numpy(), expected,
                               rtol=1e-6, atol=1e-7)
    # a pure-noise weight is free, a precise one costs k1 - log_alpha / 2
    assert float(kl_approximation(torch.tensor(40.0))) < 1e-6
    assert float(kl_approximation(torch.tensor(-40.0))) == pytest.approx(20 + K1,
                                                                  abs=1e-4)
    # the KL decreases as the dropout rate grows
    values = kl_approximation(torch.linspace(-10, 10, 50))
    assert (values.diff() < 0).all()


def test_local_reparameterization_moments():
    """Training-mode outputs have mean x @ theta and variance x**2 @ sigma**2."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(3, 2)
    v = _Variational(layer, threshold=3.0, init_log_sigma2=-2.0).train()
    x = torch.tensor([[1.0, -2.0, 0.5]]).repeat(20000, 1)
    with torch.no_grad():
        out = v(x)
        sigma2 = torch.exp(v.log_alpha()) * layer.weight**2
        np.testing.assert_allclose(out.mean(0), layer(x[:1])[0], atol=0.01)
        np.testing.assert_allclose(out.var(0), ((x[:1] ** 2) @ sigma2.T)[0],
                                   rtol=0.05)
        # eval mode: deterministic, weights above the threshold removed
        kept = torch.nn.functional.linear(x[:1], layer.weight * v.keep(), layer.bias)
        assert torch.equal(v.eval()(x[:1]), kept)


def test_mask_exact_and_learned_per_layer(sparse, fitted_net, data):
    module = sparse.estimator_.module_
    total = kept = 0
    for name in LAYERS:
        layer = module.get_submodule(name)
        masks = [c for c in constraints_of(layer) if isinstance(c, Mask)]
        assert len(masks) == 1
        mask = masks[0].mask
        assert torch.all(layer.weight[~mask] == 0)
        assert sparse.layer_sparsity_[name] == pytest.approx(
            1 - mask.sum().item() / mask.numel())
        assert sparse.layer_report_.loc[name, "kept"] == mask.sum().item()
        total += mask.numel()
        kept += mask.sum().item()
    assert sparse.sparsity_ == pytest.approx(1 - kept / total)
    assert 0 < sparse.sparsity_ < 1
    # no variational layer or parameter is left in the fitted net
    assert not any(isinstance(m, _Variational) for m in module.modules())
    assert not any("log_sigma2" in n for n, _ in module.named_parameters())


def test_strength_sets_the_sparsity(fitted_net, data, sparse):
    weak = fit_vp(fitted_net, data, strength=0.05)
    assert weak.sparsity_ < sparse.sparsity_
    assert weak.size_bytes_ > sparse.size_bytes_


def test_file_is_sparse_and_round_trips(sparse, fitted_net, data):
    buffer = io.BytesIO()
    skcompress.save(sparse, buffer)
    assert len(buffer.getvalue()) == sparse.size_bytes_
    assert sparse.size_bytes_ < skcompress.accounting.dense_size_bytes(fitted_net)
    loaded = skcompress.load(io.BytesIO(buffer.getvalue()))
    X = data[0][:50]
    np.testing.assert_allclose(loaded.forward(X).numpy(),
                               sparse.estimator_.forward(X).numpy(),
                               rtol=1e-5, atol=1e-6)


def test_chained_quantizer_keeps_the_mask_exact(sparse, data):
    chain = Quantizer(sparse, bits=3, prefit=True, finetune_epochs=1,
                      random_state=0).fit(*data)
    for name in LAYERS:
        before = sparse.estimator_.module_.get_submodule(name).weight
        after = chain.estimator_.module_.get_submodule(name).weight
        assert torch.equal(before == 0, after == 0)
        assert after[after != 0].unique().numel() <= 2**3
    assert chain.size_bytes_ < sparse.size_bytes_


def test_same_seed_same_weights_and_user_net_untouched(fitted_net, data, sparse):
    before = copy.deepcopy(fitted_net.module_.state_dict())
    again = fit_vp(fitted_net, data, strength=3.0)
    for key, value in sparse.estimator_.module_.state_dict().items():
        assert torch.equal(value, again.estimator_.module_.state_dict()[key])
    for key, value in fitted_net.module_.state_dict().items():
        assert torch.equal(value, before[key])


def test_clone_pickle_and_grid_search(fitted_net, data, sparse):
    assert clone(sparse).get_params()["strength"] == 3.0
    restored = pickle.loads(pickle.dumps(sparse))
    X = data[0][:20]
    np.testing.assert_array_equal(restored.predict(X), sparse.predict(X))
    grid = GridSearchCV(
        VariationalPruner(fitted_net, prefit=True, finetune_epochs=1,
                          random_state=0),
        {"strength": [0.1, 3.0]}, cv=2,
    ).fit(*data)
    assert grid.best_params_["strength"] in (0.1, 3.0)
    assert hasattr(grid.best_estimator_, "sparsity_")


@pytest.mark.parametrize(("param", "value"), [
    ("strength", -1.0), ("threshold", float("nan")), ("init_log_sigma2", "a"),
    ("masked_epochs", -1), ("layers", "some"),
])
def test_bad_parameters_are_named_and_leave_no_state(fitted_net, data, param, value):
    vp = VariationalPruner(fitted_net, prefit=True, **{param: value})
    with pytest.raises((ValueError, TypeError), match=param):
        vp.fit(*data)
    assert not hasattr(vp, "estimator_") and not hasattr(vp, "sparsity_")


def test_warns_when_a_layer_is_emptied_or_accuracy_collapses(fitted_net, data):
    with pytest.warns(UserWarning, match="removed every weight|accuracy fell"):
        fit_vp(fitted_net, data, strength=1e5, threshold=-20.0, finetune_epochs=1)


def test_lenet5_caffe_sparsified_on_16x16():
    rng = np.random.RandomState(0)
    X = rng.rand(64, 1, 16, 16).astype(np.float32)
    y = rng.randint(0, 10, 64)
    net = make_lenet5_net(max_epochs=1, module__image_size=16,
                          module__channels=(4, 8), module__hidden=16)
    vp = VariationalPruner(net, strength=1.0, finetune_epochs=1,
                           random_state=0).fit(X, y)
    assert set(vp.layer_sparsity_) == set(LAYERS)
    assert vp.predict(X).shape == (64,)


@pytest.mark.parametrize("arch", ["resnet8", "mobilenetv2"])
def test_zoo_architectures(data, arch):
    """BatchNorm, residual sums, depthwise convolutions: masks exact, depthwise
    layers left alone, the file loads back to the same predictions."""
    from skcompress.models import make_mobilenet_net, make_resnet_net

    if arch == "resnet8":
        net = make_resnet_net(8, module__width=4, module__in_channels=1,
                              max_epochs=1)
    else:
        net = make_mobilenet_net(module__width_mult=0.1, module__in_channels=1,
                                 max_epochs=1)
    X, y = data[0][:64], data[1][:64]
    vp = VariationalPruner(net, strength=5.0, finetune_epochs=1,
                           random_state=0).fit(X, y)
    module = vp.estimator_.module_
    for name in vp.layer_sparsity_:
        layer = module.get_submodule(name)
        (mask,) = [c.mask for c in constraints_of(layer) if isinstance(c, Mask)]
        assert torch.all(layer.weight[~mask] == 0)
        assert not is_depthwise(layer)
    assert not any(isinstance(m, _Variational) for m in module.modules())
    data_bytes = skcompress.io.dumps(vp)
    assert len(data_bytes) == vp.size_bytes_
    np.testing.assert_array_equal(skcompress.io.loads(data_bytes).predict(X),
                                  vp.predict(X))
