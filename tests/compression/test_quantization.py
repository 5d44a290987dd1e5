import copy

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans
from sklearn.model_selection import GridSearchCV
from torch import nn

from skcompress.compression import Pruner, Quantizer
from skcompress.compression._constraints import Mask, add_constraint, constraints_of
from skcompress.compression._quantization import (
    Codebook,
    UniformQuantize,
    kmeans_codebook,
    uniform_grid,
)
from skcompress.io import dumps, encode_tensor, load, save, tensor_storage_report
from skcompress.models import make_digits_net

LAYERS = ("conv1", "conv2", "fc1", "fc2")


def tiny_net(**overrides):
    params = dict(max_epochs=2, module__channels=(4, 8), module__hidden=16)
    return make_digits_net(random_state=0, **{**params, **overrides})


@pytest.fixture(scope="module")
def kmeans(fitted_net, data):
    X, y = data
    return Quantizer(
        fitted_net, bits=2, finetune_epochs=2, prefit=True, random_state=0
    ).fit(X, y)


@pytest.fixture(scope="module")
def uniform(fitted_net, data):
    X, y = data
    return Quantizer(fitted_net, bits=4, method="uniform", finetune_epochs=1,
                     prefit=True, random_state=0).fit(X, y)


@pytest.fixture(scope="module")
def chained(fitted_net, data):
    X, y = data
    pruner = Pruner(fitted_net, sparsity=0.8, finetune_epochs=1, prefit=True,
                    random_state=0)
    pruner.fit(X, y)
    quantizer = Quantizer(
        pruner, bits=3, finetune_epochs=1, prefit=True, random_state=0
    )
    return quantizer.fit(X, y)


def test_kmeans_layers_hold_at_most_2_to_bits_values(kmeans, fitted_net, data):
    X, y = data
    module = kmeans.estimator_.module_
    assert kmeans.layers_ == list(LAYERS)  # output layer included by default
    untuned = Quantizer(
        fitted_net, bits=2, finetune_epochs=0, prefit=True, random_state=0
    ).fit(X, y)
    for name in LAYERS:
        weight = getattr(module, name).weight.detach()
        assert len(torch.unique(weight)) <= 4
        before = getattr(untuned.estimator_.module_, name).weight.detach()
        codebook, codebook0 = (
            constraints_of(getattr(m, name))[-1]
            for m in (module, untuned.estimator_.module_)
        )
        # indices fixed, centroids trained by fine-tuning
        assert torch.equal(codebook.indices, codebook0.indices)
        assert not torch.equal(codebook.centroids, codebook0.centroids)
        assert not torch.equal(weight, before)


def test_kmeans_codebook_matches_sklearn_linear_init(fitted_net):
    weight = fitted_net.module_.fc1.weight.detach()
    centroids, indices = kmeans_codebook(weight, 3, random_state=0)
    values = weight.double().reshape(-1, 1).numpy()
    init = np.linspace(values.min(), values.max(), 8)[:, None]
    ref = KMeans(n_clusters=8, init=init, n_init=1, random_state=0).fit(values)
    np.testing.assert_array_equal(centroids, ref.cluster_centers_.ravel().astype("f4"))
    np.testing.assert_array_equal(indices.ravel(), ref.labels_)


def test_kmeans_fewer_distinct_values_than_clusters_is_exact():
    weight = torch.tensor([[0.5, -0.25, 0.5], [0.0, 0.125, -0.25]])
    centroids, indices = kmeans_codebook(weight, 4, random_state=0)
    assert len(centroids) == 3  # zero gets no centroid
    assert indices[1, 0] == -1
    effective = Codebook(torch.from_numpy(centroids), torch.from_numpy(indices), 4)(
        weight
    )
    assert torch.equal(effective, weight)


def test_codebook_gradient_is_summed_per_cluster():
    codebook = Codebook(torch.tensor([-1.0, 2.0]), torch.tensor([0, 1, 1, -1, 1]), 1)
    out = codebook(torch.zeros(5))
    assert torch.equal(out, torch.tensor([-1.0, 2.0, 2.0, 0.0, 2.0]))
    (out * torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])).sum().backward()
    assert torch.equal(codebook.centroids.grad, torch.tensor([1.0, 10.0]))


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("per_channel", [True, False])
@pytest.mark.parametrize("bits", [2, 4, 8])
def test_uniform_error_is_at_most_half_a_step(fitted_net, bits, symmetric, per_channel):
    for name in LAYERS:
        weight = getattr(fitted_net.module_, name).weight.detach()
        scale, zero_point, qmin, qmax = uniform_grid(
            weight, bits, symmetric=symmetric, per_channel=per_channel
        )
        quantize = UniformQuantize(scale, zero_point, bits, qmin, qmax)
        error = (weight - quantize(weight)).abs()
        half_step = scale.view(-1, *[1] * (weight.dim() - 1)) / 2
        assert (error <= half_step * (1 + 1e-5)).all()
        levels = quantize.integers(weight)
        assert levels.min() >= qmin and levels.max() <= qmax
        assert qmax - qmin + 1 <= 2**bits
        # the format stores it exactly in a compact encoding (never dense)
        encoding, _, _ = encode_tensor(
            quantize(weight), quantize.encoding_hint()
        )
        assert encoding not in {"dense", "fp16", "raw"}
        if bits == 8 and per_channel and name == "fc1":
            assert encoding == "uniform"


def test_uniform_straight_through_gradient():
    quantize = UniformQuantize(torch.tensor([0.5]), torch.tensor([0.0]), 3, -3, 3)
    latent = torch.tensor([[0.2, -0.9, 0.0, 5.0]], requires_grad=True)
    out = quantize(latent)
    assert torch.equal(out.detach(), torch.tensor([[0.0, -1.0, 0.0, 1.5]]))
    out.sum().backward()
    assert torch.equal(latent.grad, torch.ones_like(latent))


def test_uniform_fitted_weights_on_the_grid(uniform):
    module = uniform.estimator_.module_
    report = tensor_storage_report(module)
    for name in LAYERS:
        layer = getattr(module, name)
        grid = constraints_of(layer)[-1]
        assert isinstance(grid, UniformQuantize)
        weight = layer.weight.detach()
        q = grid.integers(weight)
        shape = (-1,) + (1,) * (weight.dim() - 1)
        scale, zero_point = grid.scale.view(shape), grid.zero_point.view(shape)
        assert torch.equal(weight, scale * (q - zero_point))
        assert report[f"{name}.weight"]["encoding"] == "uniform"
        # 4-bit integers plus two numbers per output channel
        n_out, n_weights = weight.shape[0], weight.numel()
        assert report[f"{name}.weight"]["stored_bytes"] <= n_weights / 2 + 8 * n_out + 1
        assert report[f"{name}.bias"]["encoding"] in {"dense", "fp16", "codebook"}


def test_pruned_zeros_survive_quantization(chained):
    module = chained.estimator_.module_
    for name in ("conv1", "conv2", "fc1"):
        layer = getattr(module, name)
        mask, codebook = constraints_of(layer)
        assert isinstance(mask, Mask) and isinstance(codebook, Codebook)
        weight = layer.weight.detach()
        assert (weight[~mask.mask] == 0).all()
        assert len(torch.unique(weight[mask.mask])) <= 8
    assert tensor_storage_report(module)["fc1.weight"]["encoding"] == "sparse"


def test_hand_registered_mask_then_uniform(fitted_net, data):
    X, y = data
    net = copy.deepcopy(fitted_net)
    layer = net.module_.fc1
    mask = torch.rand(layer.weight.shape) > 0.7
    add_constraint(layer, Mask(mask), "weight")
    fitted = Quantizer(
        net, bits=4, method="uniform", symmetric=False, finetune_epochs=1,
        prefit=True, random_state=0,
    ).fit(X, y)
    weight = fitted.estimator_.module_.fc1.weight.detach()
    assert (weight[~mask] == 0).all()


@pytest.mark.parametrize("name", ["kmeans", "uniform", "chained"])
def test_save_load_is_exact_and_size_is_file_size(name, request, X_test, tmp_path):
    fitted = request.getfixturevalue(name)
    path = tmp_path / "model.skcz"
    save(fitted, path)
    assert fitted.size_bytes_ == path.stat().st_size
    loaded = load(path)
    np.testing.assert_array_equal(
        loaded.predict_proba(X_test), fitted.predict_proba(X_test)
    )
    assert fitted.compression_ratio_ > 4


def test_same_random_state_same_bytes(fitted_net, data):
    X, y = data
    def fitted():
        return Quantizer(
            fitted_net, bits=3, finetune_epochs=1, prefit=True, random_state=3
        ).fit(X, y)

    assert dumps(fitted()) == dumps(fitted())


@pytest.mark.parametrize(
    "params, error, match",
    [
        ({"bits": 0}, ValueError, "bits"),
        ({"bits": 9}, ValueError, "bits"),
        ({"bits": 4.0}, ValueError, "bits"),
        ({"bits": True}, TypeError, "bits"),
        ({"method": "lloyd"}, ValueError, "method"),
        ({"method": "uniform", "bits": 1}, ValueError, "bits=1"),
        ({"layers": ["nope"]}, ValueError, "layers"),
    ],
)
def test_bad_params_fail_at_fit_and_leave_net_alone(
    fitted_net, data, params, error, match, state, assert_same_state
):
    X, y = data
    before = state(fitted_net)
    quantizer = Quantizer(fitted_net, prefit=True, finetune_epochs=1, **params)
    with pytest.raises(error, match=match):
        quantizer.fit(X, y)
    assert not hasattr(quantizer, "estimator_")
    assert_same_state(before, fitted_net)


def test_user_net_unchanged(
    fitted_net, data, kmeans, uniform, chained, state, assert_same_state
):
    X, y = data
    before = state(fitted_net)
    Quantizer(fitted_net, bits=2, finetune_epochs=1, prefit=True,
              random_state=1).fit(X, y)
    assert_same_state(before, fitted_net)
    assert not any(constraints_of(m) for m in fitted_net.module_.modules())


@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor:UserWarning")
def test_export_int8_uses_the_fitted_integers(fitted_net, data, X_test):
    X, y = data
    fitted = Quantizer(fitted_net, bits=8, method="uniform", finetune_epochs=0,
                       prefit=True, random_state=0).fit(X, y)
    int8 = fitted.export_int8()
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    assert isinstance(int8.fc1, DynamicLinear) and isinstance(int8.fc2, DynamicLinear)
    grid = constraints_of(fitted.estimator_.module_.fc1)[-1]
    expected = grid.integers(fitted.estimator_.module_.fc1.weight.detach())
    assert torch.equal(int8.fc1.weight().int_repr().float(), expected)
    with torch.no_grad():
        out = int8(torch.as_tensor(X_test))
    np.testing.assert_allclose(out.numpy(), fitted.transform(X_test), atol=0.05)
    assert (out.argmax(1).numpy() == fitted.predict(X_test)).mean() > 0.95
    with pytest.raises(ValueError, match="method='uniform'"):
        Quantizer(fitted_net, prefit=True, finetune_epochs=0).fit(X, y).export_int8()


def test_grid_search_over_chain(data):
    X, y = data
    net = tiny_net(max_epochs=1)
    search = GridSearchCV(
        Quantizer(
            Pruner(net, finetune_epochs=1, random_state=0),
            finetune_epochs=1,
            random_state=0,
        ),
        {"bits": [2, 4, 8], "estimator__sparsity": [0.5, 0.9]},
        cv=2,
    ).fit(X[:200], y[:200])
    assert len(search.cv_results_["params"]) == 6
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    assert isinstance(search.best_estimator_.estimator_.module_.fc1, nn.Linear)
