import copy

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.cluster import KMeans
from sklearn.model_selection import GridSearchCV
from torch import nn

import skcompress
from skcompress.compression import Pruner, Quantizer
from skcompress.compression._constraints import Mask, add_constraint, constraints_of
from skcompress.compression._quantization import (
    Codebook,
    HalfPrecision,
    UniformQuantize,
    allocate_bits,
    kmeans_codebook,
    uniform_grid,
)
from skcompress.io import (
    dumps,
    encode_tensor,
    load,
    loads,
    save,
    tensor_storage_report,
)
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
        ({"bias_bits": 0}, ValueError, "bias_bits"),
        ({"bias_bits": 12}, ValueError, "bias_bits"),
        ({"bias_bits": 4.0}, ValueError, "bias_bits"),
        ({"bias_bits": True}, TypeError, "bias_bits"),
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


# ----------------------------------------------- mixed precision: bits="auto"
def _mean_bits(bits, n_weights):
    return sum(n_weights[k] * b for k, b in bits.items()) / sum(n_weights.values())


def test_allocate_bits_gives_the_fragile_layer_more_bits():
    robust = {b: 0.0 if b >= 4 else 0.01 * (4 - b) for b in range(2, 9)}
    fragile = {b: 0.0 if b >= 7 else 0.1 * (7 - b) for b in range(2, 9)}
    n_weights = {"a": 1000, "b": 1000, "c": 100}
    bits = allocate_bits({"a": robust, "b": fragile, "c": robust}, n_weights, 4.0)
    # free steps first (a, c to 4, b to 7), then the cheapest per weight:
    # a to 2 (0.01 per 1000 weights), then b to 6 (a tie with c, b is larger)
    assert bits == {"a": 2, "b": 6, "c": 4}
    assert _mean_bits(bits, n_weights) <= 4.0
    drops = {"a": robust, "b": fragile}
    assert allocate_bits(drops, n_weights, 8.0) == {"a": 8, "b": 8}
    assert allocate_bits(drops, n_weights, 2.0) == {"a": 2, "b": 2}


@pytest.fixture(scope="module")
def trained():
    """A well-trained tiny net (~0.9 accuracy) and its 1000 training images."""
    from skcompress.datasets import load_digits_images

    X, y = load_digits_images()
    torch.set_num_threads(1)
    return tiny_net(max_epochs=10).fit(X[:1000], y[:1000]), X[:1000], y[:1000]


def test_auto_bits_budget_holds_in_the_file(trained):
    net, X, y = trained
    q = Quantizer(net, bits="auto", target_bits=3.0, method="uniform",
                  finetune_epochs=0, prefit=True, random_state=0).fit(X, y)
    module = q.estimator_.module_
    assert list(q.bits_) == q.layers_ == list(LAYERS)
    assert set(q.bits_.values()) <= set(range(2, 9))
    assert len(set(q.bits_.values())) > 1  # mixed precision
    n_weights = {name: module.get_submodule(name).weight.numel() for name in LAYERS}
    assert _mean_bits(q.bits_, n_weights) <= 3.0
    for name in LAYERS:
        grid = constraints_of(module.get_submodule(name))[-1]
        assert grid.bits == q.bits_[name]
        assert grid.qmax - grid.qmin + 1 <= 2 ** q.bits_[name]
    # the file: the weights' integers within the budget, plus their scales
    report = tensor_storage_report(module)
    stored = sum(report[f"{name}.weight"]["stored_bytes"] for name in LAYERS)
    channels = sum(module.get_submodule(name).weight.shape[0] for name in LAYERS)
    assert stored <= 3.0 * sum(n_weights.values()) / 8 + 4 * channels + 8 * 4
    assert q.score(X, y) > net.score(X, y) - 0.05


def test_auto_bits_protects_an_artificially_fragile_layer(trained):
    net, X, y = trained
    fragile = copy.deepcopy(net)
    with torch.no_grad():
        # hidden unit 0 never fires, so fc2's huge weights on it change
        # nothing, but they stretch every row's grid: fc2 needs many bits
        fragile.module_.fc1.bias[0] = -1e3
        fragile.module_.fc2.weight[:, 0] = 10 * net.module_.fc2.weight.abs().max()
    params = dict(bits="auto", target_bits=3.0, method="uniform",
                  finetune_epochs=0, prefit=True, random_state=0)
    normal = Quantizer(net, **params).fit(X[:500], y[:500]).bits_
    protected = Quantizer(fragile, **params).fit(X[:500], y[:500]).bits_
    assert protected["fc2"] > normal["fc2"]
    assert protected["fc2"] == max(protected.values())


def test_auto_bits_budget_counts_the_stored_weights_of_a_pruned_net(trained):
    """After pruning, the budget is over the nonzeros (the symbols the file
    stores): a layer's zeros do not buy bits for the others."""
    net, X, y = trained
    pruner = Pruner(net, sparsity=0.9, finetune_epochs=0, prefit=True,
                    random_state=0).fit(X[:300], y[:300])
    q = Quantizer(pruner, bits="auto", target_bits=3.0, method="uniform",
                  finetune_epochs=0, prefit=True, random_state=0).fit(
        X[:300], y[:300])
    module = q.estimator_.module_
    nonzeros = {name: int((module.get_submodule(name).weight != 0).sum())
                for name in q.bits_}
    assert _mean_bits(q.bits_, nonzeros) <= 3.0


def test_auto_bits_is_grid_searchable(trained):
    net, X, y = trained
    template = Quantizer(net, bits="auto", method="uniform", layers=["fc1", "fc2"],
                         finetune_epochs=0, prefit=True, random_state=0)
    search = GridSearchCV(template, {"target_bits": [2.5, 6.0]}, cv=2).fit(
        X[:300], y[:300])
    assert len(search.cv_results_["params"]) == 2
    best = search.best_estimator_
    n_weights = {name: best.estimator_.module_.get_submodule(name).weight.numel()
                 for name in best.bits_}
    assert _mean_bits(best.bits_, n_weights) <= best.target_bits
    assert clone(template).get_params()["bits"] == "auto"
    assert not hasattr(template, "bits_")


def test_auto_bits_needs_target_bits(trained):
    net, X, y = trained
    with pytest.raises(ValueError, match="target_bits"):
        Quantizer(net, bits="auto", prefit=True).fit(X[:50], y[:50])
    with pytest.raises(ValueError, match="target_bits"):
        Quantizer(net, bits="auto", target_bits=1.5, prefit=True).fit(X[:50], y[:50])


@pytest.fixture(scope="module")
def low_bias(fitted_net, data):
    """bias_bits=16 and bias_bits=2 chains on the tiny net (biases: conv1 4,
    conv2 8, fc1 16, fc2 10)."""
    return {b: Quantizer(fitted_net, bits=3, bias_bits=b, finetune_epochs=1,
                         prefit=True, random_state=0).fit(*data)
            for b in (None, 16, 2)}


def test_bias_bits_16_rounds_biases_to_float16(low_bias, X_test):
    fitted = low_bias[16]
    table = skcompress.io.encode_net(fitted).tensors
    for name in ("conv1", "conv2", "fc1", "fc2"):
        layer = fitted.estimator_.module_.get_submodule(name)
        assert [type(c) for c in constraints_of(layer, "bias")] == [HalfPrecision]
        bias = layer.bias.detach()
        assert torch.equal(bias.half().float(), bias)
        assert table.loc[f"{name}.bias", "encoding"] == "fp16"
        assert table.loc[f"{name}.bias", "stored_bytes"] == 2 * bias.numel()
    # float32 biases without it
    plain = skcompress.io.encode_net(low_bias[None]).tensors
    assert (plain.loc["fc1.bias", "stored_bytes"]
            == 2 * table.loc["fc1.bias", "stored_bytes"])
    data = dumps(fitted)
    assert len(data) == fitted.size_bytes_
    loaded = loads(data)
    for key, value in loaded.module_.state_dict().items():
        assert torch.equal(value, skcompress.io.bake(
            fitted.estimator_.module_).state_dict()[key]), key
    np.testing.assert_array_equal(loaded.predict_proba(X_test),
                                  fitted.predict_proba(X_test))


def test_bias_bits_codebook_where_it_is_smaller_than_float16(low_bias, X_test,
                                                             fitted_net, data):
    fitted = low_bias[2]
    module = fitted.estimator_.module_
    table = skcompress.io.encode_net(fitted).tensors
    # 4 * 4 centroid bytes + 2 bits a bias: smaller than 2 bytes a bias for
    # fc1 (16 biases) and fc2 (10); not for conv1 (4) and conv2 (8)
    for name, kind in (("conv1", HalfPrecision), ("conv2", HalfPrecision),
                       ("fc1", Codebook), ("fc2", Codebook)):
        layer = module.get_submodule(name)
        assert [type(c) for c in constraints_of(layer, "bias")] == [kind]
        bias = layer.bias.detach()
        if kind is Codebook:
            assert bias.unique().numel() <= 4
            assert table.loc[f"{name}.bias", "encoding"] == "codebook"
        else:
            assert torch.equal(bias.half().float(), bias)
    assert fitted.size_bytes_ < low_bias[16].size_bytes_ < low_bias[None].size_bytes_
    data_bytes = dumps(fitted)
    assert len(data_bytes) == fitted.size_bytes_
    np.testing.assert_array_equal(loads(data_bytes).predict_proba(X_test),
                                  fitted.predict_proba(X_test))
    # the same seed gives the same bytes, and clone keeps the parameter
    again = clone(fitted).set_params(estimator=fitted_net).fit(*data)
    assert dumps(again) == data_bytes
