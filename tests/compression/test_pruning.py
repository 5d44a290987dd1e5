import copy

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import prune

import skcompress
from skcompress.accounting import count_macs, count_parameters
from skcompress.compression import Pruner
from skcompress.compression._base import FINETUNE_LR_FACTOR, scheduled_lr
from skcompress.compression._constraints import Mask, constraints_of
from skcompress.compression._pruning import (
    FILTER_LR_FACTOR,
    agp_schedule,
    allocate_sparsity,
    is_depthwise,
    lamp_scores,
    min_kept_count,
    split_epochs,
    weight_importance,
    weight_masks,
)
from skcompress.models import make_digits_net

from .helpers import LrSpy

PRUNED = ("conv1", "conv2", "fc1")


def prune_net(fitted_net, data, **params):
    params = {"prefit": True, "finetune_epochs": 1, "random_state": 0, **params}
    return Pruner(fitted_net, **params).fit(*data)


def layer(pruner, name):
    return pruner.estimator_.module_.get_submodule(name)


def test_agp_schedule_and_epoch_split():
    schedule = agp_schedule(0.9, 3)
    assert schedule[0] == 0 and schedule[-1] == pytest.approx(0.9)
    assert schedule == sorted(schedule)
    # cubic: most of the pruning happens in the first round
    assert schedule[1] == pytest.approx(0.9 * (1 - (2 / 3) ** 3))
    assert split_epochs(5, 3) == [1, 2, 2]
    assert sum(split_epochs(2, 3)) == 2


@pytest.mark.parametrize("granularity", ["weight", "filter"])
def test_sparsity_zero_reproduces_the_base(fitted_net, data, granularity):
    pruner = prune_net(fitted_net, data, sparsity=0.0, granularity=granularity,
                       finetune_epochs=0)
    np.testing.assert_allclose(
        pruner.transform(data[0]),
        fitted_net.forward(data[0]).numpy(),
        rtol=1e-5,
        atol=1e-6,
    )


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_weight_masks_equal_torch_prune(fitted_net, data, scope):
    """Reference: torch.nn.utils.prune's L1 masks for the same sparsity."""
    pruner = prune_net(fitted_net, data, sparsity=0.7, scope=scope, criterion="l1",
                       finetune_epochs=0)
    reference = copy.deepcopy(fitted_net.module_)
    targets = [(reference.get_submodule(name), "weight") for name in PRUNED]
    if scope == "global":
        prune.global_unstructured(targets, prune.L1Unstructured, amount=0.7)
    else:
        for module, tensor_name in targets:
            prune.l1_unstructured(module, tensor_name, amount=0.7)
    for name in PRUNED:
        expected = reference.get_submodule(name).weight_mask.bool()
        (mask,) = constraints_of(layer(pruner, name))
        assert torch.equal(mask.mask, expected), name


@pytest.mark.parametrize(
    "params",
    [
        {"scope": "global"},
        {"scope": "layer"},
        {"scope": "layer", "n_steps": 3, "finetune_epochs": 3},
        {"criterion": "random"},
        {"criterion": "taylor", "n_steps": 2},
    ],
)
def test_exact_sparsity_and_masks_stay_exact(fitted_net, data, params):
    pruner = prune_net(fitted_net, data, sparsity=0.6, **params)
    assert pruner.sparsity_ == pytest.approx(0.6, abs=1e-3)
    total = zeros = expected_layer_zeros = 0
    for name in PRUNED:
        module = layer(pruner, name)
        (mask,) = constraints_of(module)
        assert isinstance(mask, Mask)
        # fine-tuning moved the weights, yet the zeros are exactly the mask
        assert torch.equal(module.weight == 0, ~mask.mask), name
        latent = module.parametrizations.weight.original
        assert not torch.equal(latent == 0, ~mask.mask)  # latent is untouched
        zeros += int((~mask.mask).sum())
        total += mask.mask.numel()
        expected_layer_zeros += round(0.6 * mask.mask.numel())
        if params.get("scope") == "layer":
            assert (~mask.mask).sum() == round(0.6 * mask.mask.numel()), name
    if params.get("scope") == "layer":
        assert zeros == expected_layer_zeros
    else:
        assert zeros == round(0.6 * total)
    assert not constraints_of(layer(pruner, "fc2"))  # output layer left alone


def test_chaining_keeps_the_inner_zeros(fitted_net, data):
    inner = prune_net(fitted_net, data, sparsity=0.5, scope="layer")
    outer = Pruner(inner, sparsity=0.8, prefit=True, finetune_epochs=1).fit(*data)
    assert outer.sparsity_ == pytest.approx(0.8, abs=1e-3)
    for name in PRUNED:
        inner_zeros = layer(inner, name).weight == 0
        outer_weight = layer(outer, name).weight
        assert torch.all(outer_weight[inner_zeros] == 0), name
        assert len(constraints_of(layer(outer, name))) == 2
    assert outer.original_size_bytes_ == inner.original_size_bytes_
    assert outer.size_bytes_ < inner.size_bytes_


def test_unstructured_file_shrinks(fitted_net, data):
    dense = prune_net(fitted_net, data, sparsity=0.0, finetune_epochs=0)
    sparse = prune_net(fitted_net, data, sparsity=0.9, finetune_epochs=0)
    assert sparse.size_bytes_ < 0.5 * dense.size_bytes_


# ------------------------------------------------------------------ filters
def plain(module):
    """No torch-pruning hooks, no parametrizations, only torch classes."""
    for sub in module.modules():
        assert not sub._forward_hooks and not sub._forward_pre_hooks
        assert not sub._backward_hooks
        assert not constraints_of(sub)
    return True


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_filter_pruning_gives_a_smaller_module(fitted_net, data, scope, tmp_path):
    pruner = prune_net(fitted_net, data, sparsity=0.5, granularity="filter",
                       criterion="l1", scope=scope, n_steps=2, finetune_epochs=2)
    base, small = fitted_net.module_, pruner.estimator_.module_
    assert plain(small) and type(small.conv1) is nn.Conv2d
    assert count_parameters(small) < 0.5 * count_parameters(base)
    assert count_macs(small, (1, 8, 8)) < 0.5 * count_macs(base, (1, 8, 8))
    assert small.fc2.out_features == 10  # output layer kept
    assert small.fc2.in_features == small.fc1.out_features
    assert small.conv2.in_channels == small.conv1.out_channels
    if scope == "layer":
        assert pruner.layer_sparsity_ == {"conv1": 0.5, "conv2": 0.5, "fc1": 0.5}
        assert small.fc1.in_features == small.conv2.out_channels * 16
    path = tmp_path / "filters.skc"
    skcompress.save(pruner, path)
    loaded = skcompress.load(path)
    assert count_parameters(loaded.module_) == count_parameters(small)
    np.testing.assert_allclose(
        loaded.predict_proba(data[0]), pruner.predict_proba(data[0]), rtol=1e-6
    )


@pytest.mark.parametrize("criterion", ["l2", "lamp", "random", "taylor", "bn_scale"])
def test_filter_pruning_with_batchnorm_and_residual(data, criterion, tmp_path):
    net = make_digits_net(arch="residual", max_epochs=2, module__channels=8).fit(*data)
    pruner = prune_net(net, data, sparsity=0.5, granularity="filter",
                       criterion=criterion, scope="layer")
    small = pruner.estimator_.module_
    assert plain(small)
    # the residual sum forces conv1 / conv3 (and their BatchNorms) to agree
    assert small.conv1.out_channels == small.conv3.out_channels
    assert small.bn1.num_features == small.conv1.out_channels
    assert small.bn2.num_features == small.conv2.out_channels
    assert count_parameters(small) < count_parameters(net.module_)
    path = tmp_path / "residual.skc"
    skcompress.save(pruner, path)
    np.testing.assert_allclose(
        skcompress.load(path).predict_proba(data[0]),
        pruner.predict_proba(data[0]),
        rtol=1e-5,
        atol=1e-6,
    )


def test_filter_pruning_of_a_constrained_net_bakes_and_warns(fitted_net, data):
    inner = prune_net(fitted_net, data, sparsity=0.5)
    with pytest.warns(UserWarning, match="bakes the constraints"):
        outer = Pruner(inner, sparsity=0.25, granularity="filter", criterion="l1",
                       prefit=True, finetune_epochs=0).fit(*data)
    small = outer.estimator_.module_
    assert plain(small)
    assert small.conv2.out_channels < inner.estimator_.module_.conv2.out_channels
    assert constraints_of(inner.estimator_.module_.conv2)  # inner untouched


def test_layers_parameter_chooses_what_is_pruned(fitted_net, data):
    pruner = prune_net(fitted_net, data, sparsity=0.5, layers=["fc1"])
    assert list(pruner.layer_sparsity_) == ["fc1"]
    assert not constraints_of(layer(pruner, "conv1"))
    everything = prune_net(fitted_net, data, sparsity=0.5, layers="all",
                           scope="layer", finetune_epochs=0)
    assert everything.layer_sparsity_["fc2"] == 0.5


def test_lamp_scores_match_the_definition():
    w = torch.tensor([[0.5, -2.0, 0.0], [1.0, -0.5, 3.0]])
    scores = lamp_scores(w)
    squares = (w.flatten().double() ** 2).tolist()
    for i, square in enumerate(squares):
        larger = sum(s for j, s in enumerate(squares)
                     if s > square or (s == square and j >= i))
        expected = square / larger if larger else 0.0
        assert scores.flatten()[i].item() == pytest.approx(expected)
    assert scores.max().item() == 1.0  # the largest weight of a layer
    # within a layer LAMP ranks like the magnitude
    assert torch.equal(torch.argsort(scores.flatten(), stable=True),
                       torch.argsort(w.abs().flatten().double(), stable=True))


def test_lamp_global_masks_keep_every_layer_and_exact_sparsity():
    torch.manual_seed(0)
    small, big = nn.Linear(4, 4), nn.Linear(64, 64)
    with torch.no_grad():
        big.weight.mul_(100)  # global magnitude would empty the small layer
    layers = [("small", small), ("big", big)]
    n_off = round(0.9 * (16 + 4096))
    l1 = weight_masks(weight_importance(layers, "l1"), 0.9, "global")
    lamp = weight_masks(weight_importance(layers, "lamp"), 0.9, "global")
    assert not l1["small"].any()
    assert lamp["small"].any() and lamp["big"].any()
    assert sum(int((~m).sum()) for m in lamp.values()) == n_off


def test_lamp_pruner_layer_scope_equals_l1_and_global_is_exact(fitted_net, data):
    lamp = prune_net(fitted_net, data, sparsity=0.8, criterion="lamp",
                     scope="layer", finetune_epochs=0)
    l1 = prune_net(fitted_net, data, sparsity=0.8, criterion="l1", scope="layer",
                   finetune_epochs=0)
    for name in PRUNED:
        assert torch.equal(constraints_of(layer(lamp, name))[0].mask,
                           constraints_of(layer(l1, name))[0].mask)
    before = {k: v.clone() for k, v in fitted_net.module_.state_dict().items()}
    glob = prune_net(fitted_net, data, sparsity=0.8, criterion="lamp", n_steps=2)
    assert glob.sparsity_ == pytest.approx(0.8, abs=1e-3)
    assert all(0 < s < 1 for s in glob.layer_sparsity_.values())
    assert all(torch.equal(before[k], v)
               for k, v in fitted_net.module_.state_dict().items())


# ------------------------------------------------- no layer is destroyed
@pytest.fixture(scope="module")
def mobilenet(data):
    """A tiny MobileNetV2 (depthwise convs, inverted residuals) on the digits."""
    from skcompress.models import make_mobilenet_net

    torch.manual_seed(0)
    net = make_mobilenet_net(max_epochs=2, module__width_mult=0.25,
                             module__in_channels=1, module__num_classes=10)
    return net.fit(*data)


def prunable(module):
    return [(name, sub) for name, sub in module.named_modules()
            if isinstance(sub, (nn.Conv2d, nn.Linear))]


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_default_pruner_empties_no_layer_of_mobilenet(mobilenet, data, scope):
    pruner = Pruner(mobilenet, sparsity=0.9, scope=scope, prefit=True,
                    finetune_epochs=0).fit(*data)
    assert pruner.sparsity_ == pytest.approx(0.9, abs=1e-4)
    emptied = [name for name, sub in prunable(pruner.estimator_.module_)
               if not sub.weight.any()]
    assert emptied == []
    # depthwise convs are left alone by default
    depthwise = [name for name, sub in prunable(pruner.estimator_.module_)
                 if is_depthwise(sub)]
    assert depthwise and not set(depthwise) & set(pruner.layer_sparsity_)
    assert all(not constraints_of(pruner.estimator_.module_.get_submodule(n))
               for n in depthwise)


def test_l1_global_would_empty_layers_the_default_keeps(mobilenet, data):
    """The issue's failure: one magnitude threshold for all layers empties
    layers; the floor of min_density keeps one weight of each, and says so."""
    with pytest.warns(UserWarning, match=r"min_density=0\) removed every weight"):
        bare = Pruner(mobilenet, sparsity=0.9, criterion="l1", min_density=0,
                      prefit=True, finetune_epochs=0).fit(*data)
    emptied = [n for n, s in bare.layer_sparsity_.items() if s == 1.0]
    assert emptied
    floored = Pruner(mobilenet, sparsity=0.9, criterion="l1", prefit=True,
                     finetune_epochs=0).fit(*data)
    assert floored.sparsity_ == pytest.approx(0.9, abs=1e-4)
    assert max(floored.layer_sparsity_.values()) < 1.0


def test_min_density_keeps_the_most_important_weights_of_each_layer(fitted_net, data):
    pruner = prune_net(fitted_net, data, sparsity=0.9, criterion="l1",
                       min_density=0.05, finetune_epochs=0)
    assert pruner.sparsity_ == pytest.approx(0.9, abs=1e-3)
    for name in PRUNED:
        weight = fitted_net.module_.get_submodule(name).weight.detach()
        kept = layer(pruner, name).weight != 0
        assert int(kept.sum()) >= np.ceil(0.05 * weight.numel())
        # the kept weights are the layer's largest
        assert weight[kept].abs().min() >= weight[~kept].abs().max()


@pytest.mark.parametrize("sparsity", [0.97, 0.99])
@pytest.mark.parametrize("scope", ["global", "layer"])
def test_filter_pruning_at_high_sparsity_warns_naming_the_layers(
    fitted_net, data, sparsity, scope
):
    """torch-pruning skips a layer it would empty, silently: at 0.97 the
    digits net used to keep conv1 whole, at 0.99 both convs."""
    with pytest.warns(UserWarning, match=r"less than the requested sparsity="
                                         r"0\.9\d: the layers \[.*'conv1'.*\]"):
        pruner = prune_net(fitted_net, data, sparsity=sparsity, scope=scope,
                           granularity="filter", finetune_epochs=0)
    small = pruner.estimator_.module_
    # every layer pruned down to its floor of one channel
    assert (small.conv1.out_channels, small.conv2.out_channels,
            small.fc1.out_features) == (1, 1, 1)


def test_filter_pruning_of_mobilenet_reaches_the_sparsity_or_warns(mobilenet, data):
    pruner = Pruner(mobilenet, sparsity=0.9, granularity="filter", prefit=True,
                    finetune_epochs=0).fit(*data)
    assert pruner.sparsity_ == pytest.approx(0.9, abs=0.01)
    assert all(sub.weight.shape[0] >= 1
               for _, sub in prunable(pruner.estimator_.module_))
    with pytest.warns(UserWarning, match="could not be pruned further"):
        Pruner(mobilenet, sparsity=0.99, granularity="filter", prefit=True,
               finetune_epochs=0).fit(*data)


def test_min_density_zero_warns_when_a_layer_is_emptied(fitted_net, data):
    with pytest.warns(UserWarning, match=r"removed every weight of \['conv1'"):
        pruner = prune_net(fitted_net, data, sparsity=0.999, scope="layer",
                           min_density=0, finetune_epochs=0)
    assert pruner.layer_sparsity_["conv1"] == 1.0


@pytest.mark.parametrize("value", [1.0, -0.1, "high"])
def test_bad_min_density_raises_naming_it(fitted_net, data, value):
    with pytest.raises((ValueError, TypeError), match="min_density"):
        prune_net(fitted_net, data, min_density=value)


def test_min_kept_count():
    assert [min_kept_count(n, 0.01) for n in (1, 9, 100, 101)] == [1, 1, 1, 2]
    assert min_kept_count(9, 0.0) == 0
    assert min_kept_count(9, 0.0, structural=True) == 1
    assert min_kept_count(4, 0.9) == 4


# ----------------------------------------------- allocation="sensitivity"
@pytest.fixture(scope="module")
def trained_net(data):
    """The tiny CNN trained long enough to be sensitive (~0.9 training
    accuracy; the shared ``fitted_net`` is barely trained)."""
    torch.set_num_threads(1)
    return make_digits_net(random_state=0, max_epochs=20, module__channels=(4, 8),
                           module__hidden=16).fit(*data)


def _fragile(fitted_net, scales):
    """A copy of ``fitted_net`` computing the same function, with fc1 fragile.

    Row ``i`` of fc1 (weights and bias) is multiplied by ``scales[i] > 0`` and
    column ``i`` of fc2 divided by it: ReLU is positively homogeneous, so the
    outputs do not change, but fc1's smallest weights are now whole hidden
    units, and pruning fc1 by magnitude removes them entirely.
    """
    net = copy.deepcopy(fitted_net)
    module = net.module_
    scales = torch.as_tensor(scales, dtype=torch.float32)
    with torch.no_grad():
        module.fc1.weight.mul_(scales[:, None])
        module.fc1.bias.mul_(scales)
        module.fc2.weight.div_(scales[None, :])
    return net


def test_allocate_sparsity_is_exact_and_spares_the_fragile_layer():
    drops = {"fragile": {0.5: 0.4, 0.9: 0.9}, "robust": {0.5: 0.0, 0.9: 0.1}}
    n = {"fragile": 100, "robust": 300}
    for sparsity in (0.1, 0.33, 0.5, 0.7, 0.9):
        counts = allocate_sparsity(drops, n, sparsity)
        assert sum(counts.values()) == round(sparsity * 400)
        # the robust layer goes first, the fragile one only once it is spent
        assert counts["fragile"] == max(0, round(sparsity * 400) - 300)
    # swapping the curves swaps the result
    swapped = allocate_sparsity({"fragile": drops["robust"],
                                 "robust": drops["fragile"]},
                                {"fragile": 300, "robust": 100}, 0.5)
    assert swapped == {"fragile": 200, "robust": 0}


def test_allocate_sparsity_keeps_floors_and_inner_zeros():
    drops = {"a": {0.5: 0.0, 0.99: 0.0}, "b": {0.5: 1.0, 0.99: 2.0}}
    n = {"a": 100, "b": 100}
    counts = allocate_sparsity(drops, n, 0.5, floors={"a": 10}, zeros={"b": 30})
    assert counts == {"a": 70, "b": 30}
    # more than the floors allow: every layer at its floor
    counts = allocate_sparsity(drops, n, 0.99, floors={"a": 10, "b": 5})
    assert counts == {"a": 90, "b": 95}


def test_sensitivity_allocation_spares_a_fragile_layer(trained_net, data):
    scales = torch.logspace(-3, 3, trained_net.module_.fc1.out_features)
    fragile = _fragile(trained_net, scales[torch.randperm(len(scales))])
    np.testing.assert_allclose(fragile.predict_proba(data[0]),
                               trained_net.predict_proba(data[0]), rtol=1e-4,
                               atol=1e-5)
    params = dict(sparsity=0.5, allocation="sensitivity", finetune_epochs=0)
    plain = prune_net(trained_net, data, **params)
    spared = prune_net(fragile, data, **params)
    assert spared.layer_sparsity_["fc1"] < plain.layer_sparsity_["fc1"] - 0.05
    for pruner in (plain, spared):
        total = sum(layer(pruner, name).weight.numel() for name in PRUNED)
        zeros = sum(int((layer(pruner, name).weight == 0).sum()) for name in PRUNED)
        assert zeros == round(0.5 * total)
        assert pruner.sparsity_ == zeros / total
    # the default allocation prunes the fragile layer as much as the plain one
    # and loses more than the sensitivity allocation does
    default = prune_net(fragile, data, sparsity=0.5, finetune_epochs=0)
    assert default.layer_sparsity_["fc1"] > spared.layer_sparsity_["fc1"]
    assert spared.score(*data) > default.score(*data)


def test_sensitivity_allocation_rounds_keep_masks_exact(fitted_net, data,
                                                        state, assert_same_state):
    before = state(fitted_net)
    pruner = prune_net(fitted_net, data, sparsity=0.8, allocation="sensitivity",
                       n_steps=2, finetune_epochs=2)
    assert_same_state(before, fitted_net)
    assert set(pruner.layer_sparsity_) == set(PRUNED)
    assert pruner.sparsity_ == pytest.approx(0.8, abs=1 / 2000)
    for name in PRUNED:
        (mask,) = constraints_of(layer(pruner, name))
        weight = layer(pruner, name).weight
        assert torch.equal(weight != 0, mask.mask.bool() & (weight != 0))
        assert int((~mask.mask.bool()).sum()) == int((weight == 0).sum())
        assert pruner.layer_sparsity_[name] == pytest.approx(
            1 - int(mask.mask.sum()) / weight.numel())
    again = prune_net(fitted_net, data, sparsity=0.8, allocation="sensitivity",
                      n_steps=2, finetune_epochs=2)
    assert again.layer_sparsity_ == pruner.layer_sparsity_


def test_sensitivity_allocation_keeps_an_inner_pruners_zeros(fitted_net, data):
    inner = prune_net(fitted_net, data, sparsity=0.5, scope="layer")
    outer = Pruner(inner, sparsity=0.7, allocation="sensitivity", prefit=True,
                   finetune_epochs=0, random_state=0).fit(*data)
    for name in PRUNED:
        assert outer.layer_sparsity_[name] >= inner.layer_sparsity_[name] - 1e-9
    assert outer.sparsity_ == pytest.approx(0.7, abs=1 / 2000)


def test_sensitivity_allocation_is_a_grid_searchable_setting(fitted_net, data,
                                                             tmp_path):
    import pickle

    from sklearn.base import clone
    from sklearn.model_selection import GridSearchCV

    pruner = Pruner(fitted_net, sparsity=0.6, prefit=True, finetune_epochs=0,
                    random_state=0)
    search = GridSearchCV(pruner, {"allocation": ["criterion", "sensitivity"]},
                          cv=2).fit(*data)
    assert search.best_params_["allocation"] in ("criterion", "sensitivity")
    fitted = clone(pruner).set_params(allocation="sensitivity").fit(*data)
    restored = pickle.loads(pickle.dumps(fitted))
    assert restored.layer_sparsity_ == fitted.layer_sparsity_
    np.testing.assert_array_equal(restored.predict(data[0]), fitted.predict(data[0]))
    skcompress.save(fitted, tmp_path / "pruned.skc")
    loaded = skcompress.load(tmp_path / "pruned.skc")
    np.testing.assert_array_equal(loaded.predict(data[0]), fitted.predict(data[0]))


@pytest.mark.parametrize(
    "params, match",
    [
        ({"allocation": "hessian"}, "allocation"),
        ({"allocation": "sensitivity", "granularity": "filter"}, "allocation"),
    ],
)
def test_bad_allocation_raises_naming_it(fitted_net, data, params, match):
    with pytest.raises(ValueError, match=match):
        prune_net(fitted_net, data, **params)



@pytest.mark.parametrize("granularity, factor", [
    ("filter", FILTER_LR_FACTOR), ("weight", FINETUNE_LR_FACTOR)])
def test_finetuning_peaks_at_the_granularitys_share_of_the_nets_lr(
        data, granularity, factor):
    X, y = data[0][:96], data[1][:96]
    net = make_digits_net(max_epochs=1, lr=0.004, batch_size=32,
                          module__channels=(4, 8), module__hidden=16,
                          callbacks=[("spy", LrSpy())], random_state=0).fit(X, y)
    base_lrs = list(dict(net.callbacks_)["spy"].lrs_)
    batches = len(base_lrs)  # per epoch: the base trained for one
    fitted = Pruner(net, sparsity=0.5, granularity=granularity, n_steps=2,
                    finetune_epochs=2, prefit=True, random_state=0).fit(X, y)
    lrs = dict(fitted.estimator_.callbacks_)["spy"].lrs_[batches:]
    # two rounds of one epoch, each with its own schedule peaking at the share
    one_round = [scheduled_lr(factor * net.lr, s, batches) for s in range(batches)]
    np.testing.assert_allclose(lrs, one_round * 2)
    assert max(lrs) == pytest.approx(factor * net.lr)
    assert net.lr == fitted.estimator_.lr == 0.004  # the nets keep their lr
    assert dict(net.callbacks_)["spy"].lrs_ == base_lrs  # the base is untouched
    explicit = Pruner(net, granularity=granularity, finetune_lr=0.01, prefit=True)
    assert explicit._lr_schedule(net, 2).lr == 0.01

