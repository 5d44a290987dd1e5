"""The shared compressor behaviour (``BaseCompressor``), exercised through Pruner."""

import copy
import os
import pickle

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer
from skorch import NeuralNetClassifier, NeuralNetRegressor
from skorch.callbacks import Callback
from torch import nn

import skcompress
from skcompress.compression import Pruner, Quantizer
from skcompress.io import dumps
from skcompress.models import make_digits_net

TINY = dict(max_epochs=2, module__channels=(4, 8), module__hidden=16)


# ------------------------------------------------------------- no mutation
@pytest.mark.parametrize(
    "params", [{}, {"granularity": "filter"}, {"n_steps": 2, "scope": "layer"}]
)
def test_user_net_is_bit_identical_after_fit(
    data, fitted_net, params, state, assert_same_state
):
    before = state(fitted_net)
    modules_before = dict(fitted_net.module_.named_modules())
    Pruner(fitted_net, prefit=True, finetune_epochs=1, **params).fit(*data)
    assert_same_state(before, fitted_net)
    assert dict(fitted_net.module_.named_modules()).keys() == modules_before.keys()
    assert all(
        type(m) is type(modules_before[n])
        for n, m in fitted_net.module_.named_modules()
    )


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "params, match",
    [
        ({"sparsity": 1.0}, "sparsity"),
        ({"sparsity": -0.1}, "sparsity"),
        ({"granularity": "channel"}, "granularity"),
        ({"criterion": "l3"}, "criterion"),
        ({"scope": "net"}, "scope"),
        ({"n_steps": 0}, "n_steps"),
        ({"layers": ["nope"]}, "layers"),
        ({"criterion": "bn_scale"}, "criterion"),
    ],
)
def test_bad_params_raise_naming_the_parameter(
    data, fitted_net, params, match, state, assert_same_state
):
    before = state(fitted_net)
    pruner = Pruner(fitted_net, prefit=True, **params)
    with pytest.raises(ValueError, match=match):
        pruner.fit(*data)
    assert not hasattr(pruner, "estimator_")
    assert_same_state(before, fitted_net)


def test_estimator_must_be_a_net(data):
    from sklearn.linear_model import LogisticRegression

    with pytest.raises(TypeError, match="estimator must be a skorch NeuralNet"):
        Pruner(LogisticRegression()).fit(data[0].reshape(len(data[0]), -1), data[1])


def test_prefit_with_unfitted_net_raises(data):
    with pytest.raises(NotFittedError):
        Pruner(make_digits_net(**TINY), prefit=True).fit(*data)


class NoLayers(nn.Module):
    """A linear map held as a bare Parameter: nothing Pruner can select."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(64, 10))

    def forward(self, X):
        return X.flatten(1) @ self.weight


def test_module_without_layers_to_compress(data):
    net = NeuralNetClassifier(NoLayers, max_epochs=1, train_split=None).initialize()
    with pytest.raises(ValueError, match="no Conv2d/Linear layer"):
        Pruner(net, prefit=True).fit(*data)


def test_wrong_input_shape_is_wrapped_with_compressor_name(
    data, fitted_net, state, assert_same_state
):
    before = state(fitted_net)
    X_flat = data[0].reshape(len(data[0]), -1)
    with pytest.raises(ValueError, match=r"Pruner: the net's module DigitsCNN cannot"):
        Pruner(fitted_net, prefit=True).fit(X_flat, data[1])
    with pytest.raises(ValueError, match=r"Pruner: .* of shape \(300, 64\)"):
        Pruner(make_digits_net(**TINY)).fit(X_flat, data[1])
    assert_same_state(before, fitted_net)


# ------------------------------------------------------ sizes and the format
@pytest.fixture(scope="module")
def pruned(data, fitted_net):
    return Pruner(
        fitted_net, sparsity=0.8, prefit=True, finetune_epochs=1, random_state=0
    ).fit(*data)


def test_size_bytes_is_the_saved_file_size(pruned, tmp_path):
    path = tmp_path / "pruned.skc"
    skcompress.save(pruned, path)
    assert pruned.size_bytes_ == os.path.getsize(path)
    assert pruned.compression_ratio_ == pruned.original_size_bytes_ / pruned.size_bytes_
    assert pruned.compression_ratio_ > 2
    assert pruned.report_.loc["total", "nonzeros"] < pruned.report_.loc[
        "total", "parameters"
    ]


def test_save_load_predict_round_trip(pruned, data, tmp_path):
    path = tmp_path / "pruned.skc"
    skcompress.save(pruned, path)
    loaded = skcompress.load(path)
    np.testing.assert_allclose(
        loaded.predict_proba(data[0]), pruned.predict_proba(data[0]), rtol=1e-6
    )
    np.testing.assert_array_equal(loaded.predict(data[0]), pruned.predict(data[0]))


def test_same_random_state_same_file(data, fitted_net):
    def fit(seed):
        return Pruner(
            fitted_net,
            criterion="random",
            prefit=True,
            finetune_epochs=1,
            random_state=seed,
        ).fit(*data)

    assert dumps(fit(3)) == dumps(fit(3))
    assert dumps(fit(3)) != dumps(fit(4))


# --------------------------------------------------------- sklearn protocol
def test_clone_get_set_params_and_pickle(pruned, data):
    params = pruned.get_params(deep=True)
    assert params["sparsity"] == 0.8 and "estimator__lr" in params
    copy = clone(pruned).set_params(estimator__lr=0.5, sparsity=0.3)
    assert copy.estimator.lr == 0.5 and copy.sparsity == 0.3
    assert pruned.estimator.lr != 0.5  # clone, not the original
    assert not hasattr(copy, "estimator_")
    restored = pickle.loads(pickle.dumps(pruned))
    np.testing.assert_array_equal(restored.predict(data[0]), pruned.predict(data[0]))
    np.testing.assert_allclose(restored.transform(data[0]), pruned.transform(data[0]))


def test_grid_search_over_sparsity(data):
    net = make_digits_net(**{**TINY, "max_epochs": 15})
    search = GridSearchCV(
        Pruner(net, finetune_epochs=0, random_state=0),
        {"sparsity": [0.0, 0.99]},
        cv=3,
    ).fit(*data)
    assert search.best_params_ == {"sparsity": 0.0}
    scores = search.cv_results_["mean_test_score"]
    assert scores[0] > scores[1]


def _double(X):
    return X * 2.0


def test_clone_keeps_a_prefit_estimator_fitted(
    data, fitted_net, state, assert_same_state
):
    before = state(fitted_net)
    pruner = Pruner(fitted_net, prefit=True, finetune_epochs=1)
    cloned = clone(pruner).estimator
    assert cloned is not fitted_net and cloned.initialized_
    for a, b in zip(cloned.module_.parameters(), fitted_net.module_.parameters()):
        assert torch.equal(a, b)
    assert not clone(Pruner(fitted_net)).estimator.initialized_
    # GridSearchCV clones the compressor per candidate: prefit must survive.
    search = GridSearchCV(pruner, {"sparsity": [0.3, 0.6]}, cv=2).fit(*data)
    assert search.best_estimator_.sparsity in (0.3, 0.6)
    # Chaining clones the inner compressor: its prefit net must survive too.
    # The fit's own clone shares it (a parameter nothing modifies) instead of
    # keeping a copy; the fitted nets share no tensor with it.
    chain = Quantizer(pruner, bits=4, finetune_epochs=1, random_state=0).fit(*data)
    assert chain.base_estimator_.estimator is fitted_net
    user = {t.untyped_storage().data_ptr() for t in fitted_net.module_.state_dict(
        keep_vars=True).values()}
    for net in (chain.base_estimator_.estimator_, chain.estimator_):
        assert user.isdisjoint(t.untyped_storage().data_ptr()
                               for t in net.module_.state_dict(keep_vars=True).values())
    assert_same_state(before, fitted_net)


def test_pipeline_ending_in_a_compressor(data):
    pipe = Pipeline(
        [
            ("scale", FunctionTransformer(_double)),
            ("prune", Pruner(make_digits_net(**TINY), sparsity=0.5, finetune_epochs=1)),
        ]
    )
    search = GridSearchCV(pipe, {"prune__sparsity": [0.0, 0.99]}, cv=2).fit(*data)
    assert search.best_params_ == {"prune__sparsity": 0.0}
    assert search.predict(data[0]).shape == data[1].shape


N_BASE_FITS = 0


class CountFits(Callback):
    """Counts fresh trainings (fit, not the fine-tuning partial_fit)."""

    def on_train_begin(self, net, X=None, y=None, **kwargs):
        global N_BASE_FITS
        if len(net.history) <= 1:
            N_BASE_FITS += 1


def test_memory_fits_the_base_once_per_fold(data, tmp_path):
    global N_BASE_FITS
    N_BASE_FITS = 0
    net = make_digits_net(**TINY, callbacks=[("count", CountFits())])
    search = GridSearchCV(
        Pruner(net, finetune_epochs=1, memory=str(tmp_path)),
        {"sparsity": [0.2, 0.5, 0.8]},
        cv=3,
    ).fit(*data)
    # 3 folds + the refit on all the data, not 3 x 3 + 1
    assert N_BASE_FITS == 4
    assert search.best_params_["sparsity"] in (0.2, 0.5, 0.8)


def test_memory_reuses_the_inner_compressor_of_a_chain(data, tmp_path, monkeypatch):
    # a grid over the outer Quantizer's bits: the inner Pruner (and its base)
    # runs once per fold + the refit, not once per candidate and fold
    global N_BASE_FITS
    N_BASE_FITS = 0
    n_prunes = []
    prune = Pruner._compress_and_finetune

    def counting_prune(self, *args, **kwargs):
        n_prunes.append(self.sparsity)
        return prune(self, *args, **kwargs)

    monkeypatch.setattr(Pruner, "_compress_and_finetune", counting_prune)
    net = make_digits_net(**TINY, callbacks=[("count", CountFits())])
    search = GridSearchCV(
        Quantizer(Pruner(net, sparsity=0.5, finetune_epochs=1, memory=str(tmp_path)),
                  finetune_epochs=1, memory=str(tmp_path)),
        {"bits": [2, 3, 4]},
        cv=2,
    ).fit(*data)
    assert N_BASE_FITS == 3  # 2 folds + the refit, not 2 x 3 + 1
    assert len(n_prunes) == 3
    # the chain still holds both constraints: 50% zeros on a 2**bits codebook
    w = search.best_estimator_.estimator_.module_.fc1.weight.detach()
    assert (w == 0).float().mean() >= 0.5 - 1e-3
    assert torch.unique(w[w != 0]).numel() <= 2 ** search.best_params_["bits"]


# ------------------------------------------------------- net conventions
def test_softmax_module_with_nll_loss(data):
    module = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(256, 16),
        nn.ReLU(),
        nn.Linear(16, 10),
        nn.Softmax(dim=-1),
    )
    net = NeuralNetClassifier(
        module,
        criterion=nn.NLLLoss,
        optimizer=torch.optim.Adam,
        lr=0.01,
        max_epochs=10,
        train_split=None,
        verbose=0,
    ).fit(*data)
    pruner = Pruner(net, sparsity=0.5, prefit=True, finetune_epochs=1).fit(*data)
    proba = pruner.predict_proba(data[0])
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    assert pruner.sparsity_ == pytest.approx(0.5, abs=1e-3)
    assert pruner.layer_sparsity_.keys() == {"0", "3"}  # output layer "5" kept
    assert pruner.score(*data) > 0.6


def test_regressor(data, state, assert_same_state):
    X, y = data
    target = (y.astype(np.float32) / 9.0)[:, None]
    net = NeuralNetRegressor(
        nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 1)),
        max_epochs=3,
        lr=0.05,
        train_split=None,
        verbose=0,
    ).fit(X, target)
    before = state(net)
    pruner = Pruner(net, sparsity=0.5, prefit=True, finetune_epochs=1).fit(X, target)
    assert pruner.predict(X).shape == (len(X), 1)
    assert np.isfinite(pruner.score(X, target))
    assert_same_state(before, net)
    with pytest.raises(AttributeError):
        pruner.classes_  # noqa: B018


# ------------------------------------------------------ input validation
def _assert_unfitted(compressor):
    fitted = [name for name in vars(compressor) if name.endswith("_")]
    assert fitted == [], fitted


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("as_tensor", [False, True])
def test_non_finite_X_raises_naming_X_before_training(data, value, as_tensor):
    X, y = data
    X = X.copy()
    X[7, 0, 3, 3] = value
    if as_tensor:
        X, y = torch.from_numpy(X), torch.from_numpy(y)
    trained = []

    class Spy(Callback):
        def on_train_begin(self, net, **kwargs):
            trained.append(True)

    net = make_digits_net(callbacks=[Spy()], **TINY)
    pruner = Pruner(net)
    with pytest.raises(ValueError, match=r"Pruner: X contains NaN or infinity"):
        pruner.fit(X, y)
    assert trained == []  # checked before the base is trained
    _assert_unfitted(pruner)


@pytest.mark.parametrize(
    "labels, match",
    [
        (lambda y: np.array(["cat", "dog"])[y % 2], r"y holds class labels of dtype"),
        (lambda y: y.astype(object), r"y holds class labels of dtype object"),
        (lambda y: y + 0.5, r"y holds non-integral class labels"),
        (lambda y: np.where(y == 3, np.nan, y), r"y holds non-integral class labels"),
        (lambda y: y - 1, r"y holds negative class labels"),
        (lambda y: y + 5, r"y holds class label 14, but the net has 10 outputs"),
    ],
)
@pytest.mark.parametrize("prefit", [True, False])
def test_labels_a_classifier_cannot_predict_raise_naming_y(
    data, fitted_net, labels, match, prefit
):
    X, y = data
    estimator = fitted_net if prefit else make_digits_net(**TINY)
    pruner = Pruner(estimator, prefit=prefit, finetune_epochs=1)
    with pytest.raises(ValueError, match=match) as info:
        pruner.fit(X, labels(y))
    assert "LabelEncoder" in str(info.value) or "outputs" in str(info.value)
    _assert_unfitted(pruner)


def test_integral_float_labels_work_like_integers(data, fitted_net):
    X, y = data

    def fit(labels):
        return Pruner(fitted_net, prefit=True, finetune_epochs=1,
                      random_state=0).fit(X, labels)

    as_float, as_int = fit(y.astype(np.float64)), fit(y)
    assert dumps(as_float) == dumps(as_int)
    np.testing.assert_array_equal(as_float.predict(X), as_int.predict(X))
    assert as_float.score(X, y.astype(np.float64)) == as_int.score(X, y)


def test_non_finite_y_of_a_regressor_raises_naming_y(data):
    X, y = data
    target = y.astype(np.float32)[:, None]
    target[5] = np.inf
    net = NeuralNetRegressor(
        nn.Sequential(nn.Flatten(), nn.Linear(64, 1)), max_epochs=1,
        train_split=None, verbose=0,
    )
    with pytest.raises(ValueError, match=r"Pruner: y contains NaN or infinity"):
        Pruner(net).fit(X, target)


def test_non_finite_loss_during_finetuning_raises_naming_the_step(
    data, fitted_net, state, assert_same_state
):
    before = state(fitted_net)
    # Adam's steps are about lr long: weights near 1e36 overflow the logits.
    pruner = Pruner(fitted_net, prefit=True, finetune_epochs=2, finetune_lr=1e36)
    with pytest.raises(FloatingPointError,
                       match=r"Pruner: the training loss became nan during "
                             r"fine-tuning \(epoch 1, batch \d+\)"):
        pruner.fit(*data)
    _assert_unfitted(pruner)  # no compression_ratio_ for a failed fit
    assert_same_state(before, fitted_net)


def test_non_finite_base_weights_raise_naming_the_base(data, fitted_net):
    broken = copy.deepcopy(fitted_net)
    with torch.no_grad():
        broken.module_.conv1.weight[0, 0, 0, 0] = float("nan")
    pruner = Pruner(broken, prefit=True, finetune_epochs=0)
    with pytest.raises(FloatingPointError,
                       match=r"Pruner: the base net gave NaN or infinite weights"
                             r" in \['conv1.weight'\]"):
        pruner.fit(*data)
    _assert_unfitted(pruner)


# ------------------------------------------------------------ random_state
@pytest.mark.parametrize(
    "make",
    [
        lambda net, seed: Pruner(net, random_state=seed),
        lambda net, seed: Quantizer(net, bits=4, random_state=seed),
        lambda net, seed: skcompress.Binarizer(net, random_state=seed),
        lambda net, seed: skcompress.LowRankCompressor(net, random_state=seed),
        lambda net, seed: Pruner(net, granularity="filter", random_state=seed),
        lambda net, seed: skcompress.Compactor(net, random_state=seed),
    ],
    ids=["pruner-l1", "quantizer-kmeans", "binarizer", "lowrank", "pruner-filter",
         "compactor"],
)
def test_random_state_seeds_the_finetuning(data, fitted_net, make):
    """The net seeds its own training (``SeedTorch``); the compressor's
    ``random_state`` still decides the fine-tuning batches."""

    def fit(seed):
        compressor = make(fitted_net, seed).set_params(prefit=True, finetune_epochs=1)
        return dumps(compressor.fit(*data))

    first = fit(1)
    assert fit(1) == first
    assert fit(2) != first


# ------------------------------------------------------------------ memory
def _tensors(net):
    return {t.data_ptr() for t in net.module_.state_dict().values() if t.numel()}


@pytest.mark.parametrize("prefit", [True, False])
def test_fitted_nets_hold_no_optimizer_state_and_share_nothing(
    data, fitted_net, prefit
):
    assert fitted_net.optimizer_.state  # Adam's moments of the user's training
    estimator = fitted_net if prefit else make_digits_net(**TINY)
    pruner = Pruner(estimator, prefit=prefit, finetune_epochs=1).fit(*data)
    for net in (pruner.estimator_, pruner.base_estimator_):
        assert net.optimizer_.state == {}
        assert not _tensors(net) & _tensors(fitted_net)
    assert not _tensors(pruner.estimator_) & _tensors(pruner.base_estimator_)
    assert fitted_net.optimizer_.state  # the user's net is left as it was
    # a later partial_fit trains on with a fresh optimizer state
    pruner.estimator_.partial_fit(*data, epochs=1)
    assert pruner.estimator_.optimizer_.state


def test_class_probability_targets_pass_unchanged(data, fitted_net):
    """2-d float targets are class probabilities for CrossEntropyLoss, not
    labels: they are neither converted nor refused."""
    X, y = data
    soft = np.eye(10, dtype=np.float32)[y] * 0.9 + 0.01
    pruner = Pruner(fitted_net, prefit=True, finetune_epochs=1).fit(X, soft)
    assert pruner.predict(X).shape == y.shape and pruner.sparsity_ > 0


def test_random_state_seeds_the_distillers_student(data, fitted_net):
    def fit(seed):
        student = make_digits_net(max_epochs=1, **{k: v for k, v in TINY.items()
                                                   if k != "max_epochs"})
        return dumps(skcompress.Distiller(student, teacher=fitted_net,
                                          finetune_epochs=1,
                                          random_state=seed).fit(*data))

    first = fit(1)
    assert fit(1) == first
    assert fit(2) != first
