"""The shared compressor behaviour (``BaseCompressor``), exercised through Pruner."""

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
    chain = Quantizer(pruner, bits=4, finetune_epochs=1, random_state=0).fit(*data)
    assert chain.base_estimator_.estimator is not fitted_net
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
