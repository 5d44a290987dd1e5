import copy
import io

import numpy as np
import pytest
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.dummy import DummyClassifier
from sklearn.ensemble import RandomForestClassifier
from sklearn.exceptions import NotFittedError
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LinearRegression
from sklearn.model_selection import GridSearchCV
from torch import nn

from skcompress import load, save
from skcompress.accounting import count_parameters, dense_size_bytes
from skcompress.compression import Distiller
from skcompress.compression._base import recalibrate_batchnorm
from skcompress.compression._distillation import DistillationLoss, teacher_logits
from skcompress.models import DigitsCNN, make_digits_net, make_resnet_net

from .helpers import assert_same_state, net_state

TINY = dict(module__channels=(4, 8), module__hidden=16)


def tiny_student(max_epochs=2, **kwargs):
    return make_digits_net(max_epochs=max_epochs, **{**TINY, **kwargs})


@pytest.fixture(scope="module")
def teacher(data):
    X, y = data
    return make_digits_net(max_epochs=4, module__channels=(8, 16),
                           module__hidden=32).fit(X, y)


@pytest.fixture(scope="module")
def forest(data):
    X, y = data
    return RandomForestClassifier(30, random_state=0).fit(X.reshape(len(X), -1), y)


# ------------------------------------------------------------------ the loss
@pytest.mark.parametrize("T, alpha", [(1.0, 0.5), (3.0, 0.7), (4.0, 1.0), (2.0, 0.0)])
def test_loss_equals_the_formula(T, alpha):
    gen = torch.Generator().manual_seed(0)
    student = torch.randn(6, 5, generator=gen)
    teacher = 3 * torch.randn(6, 5, generator=gen)
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    # by hand: KL(p_t || p_s) = sum p_t (log p_t - log p_s), averaged over rows
    log_ps = torch.log_softmax(student / T, dim=1)
    log_pt = torch.log_softmax(teacher / T, dim=1)
    kl = (torch.softmax(teacher / T, dim=1) * (log_pt - log_ps)).sum(1).mean()
    ce = -torch.log_softmax(student, dim=1)[torch.arange(6), y].mean()
    expected = alpha * T**2 * kl + (1 - alpha) * ce
    loss = DistillationLoss(temperature=T, alpha=alpha)(student, (y, teacher))
    torch.testing.assert_close(loss, expected)


def test_loss_on_probabilities_equals_loss_on_their_logits():
    gen = torch.Generator().manual_seed(1)
    student = torch.randn(4, 3, generator=gen)
    teacher = torch.randn(4, 3, generator=gen)
    y = torch.tensor([0, 2, 1, 1])
    on_logits = DistillationLoss(2.0, 0.6)(student, (y, teacher))
    on_proba = DistillationLoss(2.0, 0.6, student_outputs="probabilities")(
        torch.softmax(student, dim=1), (y, teacher))
    torch.testing.assert_close(on_proba, on_logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("T, alpha", [(1.0, 0.9), (4.0, 0.9), (8.0, 0.5)])
def test_loss_gradient_is_kl_teacher_to_student_averaged_over_the_batch(T, alpha):
    # d/ds of alpha*T**2*KL(p_t || softmax(s/T)) + (1-alpha)*CE(s, y), batchmean:
    # (alpha*T*(softmax(s/T) - p_t) + (1-alpha)*(softmax(s) - onehot(y))) / n.
    # Checks the KL direction (teacher -> student), the reduction and the T**2.
    gen = torch.Generator().manual_seed(2)
    student = torch.randn(5, 4, generator=gen, requires_grad=True)
    teacher = 4 * torch.randn(5, 4, generator=gen)
    y = torch.tensor([0, 1, 2, 3, 1])
    DistillationLoss(temperature=T, alpha=alpha)(student, (y, teacher)).backward()
    s = student.detach()
    expected = (alpha * T * (torch.softmax(s / T, 1) - torch.softmax(teacher / T, 1))
                + (1 - alpha) * (torch.softmax(s, 1) - nn.functional.one_hot(y, 4)))
    torch.testing.assert_close(student.grad, expected / 5)


def test_teacher_logits_are_the_eval_mode_outputs(data, teacher):
    X, _ = data
    assert teacher.module_.dropout.p > 0  # dropout must be off for the targets
    first, second = teacher_logits(teacher, X), teacher_logits(teacher, X)
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    module = copy.deepcopy(teacher.module_).eval()
    with torch.no_grad():
        expected = module(torch.as_tensor(X))
    torch.testing.assert_close(first, expected)


# ------------------------------------------------------------- the training
def test_alpha_zero_trains_the_same_whatever_the_teacher(data, forest):
    """With alpha=0 the loss is the plain cross-entropy, and the teacher's
    logits are computed outside the student's seeded stream: the student does
    not depend on the teacher at all."""
    X, y = data
    constant = DummyClassifier(strategy="prior").fit(X.reshape(len(X), -1), y)
    by_forest, by_constant = (
        Distiller(tiny_student(), teacher=teacher, alpha=0.0, random_state=0).fit(X, y)
        for teacher in (forest, constant)
    )
    for a, b in zip(by_forest.estimator_.module_.parameters(),
                    by_constant.estimator_.module_.parameters()):
        assert torch.equal(a, b)
    assert (by_forest.estimator_.history[:, "train_loss"]
            == by_constant.estimator_.history[:, "train_loss"])


class CountingTeacher(ClassifierMixin, BaseEstimator):
    """Wraps a fitted classifier and counts predict_proba calls (all copies)."""

    calls = 0

    def __init__(self, model=None):
        self.model = model

    def fit(self, X, y):  # pragma: no cover - used prefit
        return self

    def __sklearn_is_fitted__(self):
        return True

    @property
    def classes_(self):
        return self.model.classes_

    def predict_proba(self, X):
        type(self).calls += 1
        return self.model.predict_proba(X)


def test_teacher_outputs_are_computed_once_per_fit(data, forest):
    X, y = data
    CountingTeacher.calls = 0
    distiller = Distiller(tiny_student(max_epochs=3), teacher=CountingTeacher(forest),
                          random_state=0).fit(X, y)
    assert len(distiller.estimator_.history) == 3
    assert CountingTeacher.calls == 1


def test_random_forest_teacher_is_distilled_and_left_untouched(data, forest):
    X, y = data
    trees = list(forest.estimators_)
    proba = forest.predict_proba(X.reshape(len(X), -1))
    student = tiny_student(max_epochs=8, lr=1e-2)
    distiller = Distiller(student, teacher=forest, random_state=0).fit(X, y)
    # the student learnt from the forest: it mostly agrees with it
    agreement = (distiller.predict(X) == forest.predict(X.reshape(len(X), -1))).mean()
    assert agreement > 0.6
    assert distiller.teacher_ is not forest
    assert all(a is b for a, b in zip(forest.estimators_, trees))
    np.testing.assert_array_equal(forest.predict_proba(X.reshape(len(X), -1)), proba)
    assert not hasattr(student, "module_")  # the user's student stays unfitted
    # not a net: the teacher row of the comparison is empty, sizes are the student's
    assert distiller.size_comparison_.loc["teacher"].isna().all()
    assert distiller.original_size_bytes_ == dense_size_bytes(distiller.estimator_)


def test_net_teacher_sizes_and_the_saved_student(
    data, teacher, state, assert_same_state
):
    X, y = data
    before = state(teacher)
    distiller = Distiller(tiny_student(), teacher=teacher, temperature=3.0,
                          random_state=0).fit(X, y)
    assert_same_state(before, teacher)
    assert distiller.original_size_bytes_ == dense_size_bytes(teacher)
    assert distiller.compression_ratio_ == pytest.approx(
        dense_size_bytes(teacher) / distiller.size_bytes_)
    comparison = distiller.size_comparison_
    assert comparison.loc["teacher", "params"] == count_parameters(teacher.module_)
    assert comparison.loc["student", "params"] == count_parameters(
        distiller.estimator_.module_)
    assert comparison.loc["student", "file_bytes"] == distiller.size_bytes_
    # a plain net of the user's class, its own criterion back in place
    net = distiller.estimator_
    assert type(net) is type(teacher) and type(net.module_) is DigitsCNN
    assert type(net.criterion_) is nn.CrossEntropyLoss
    buffer = io.BytesIO()
    save(distiller, buffer)
    loaded = load(io.BytesIO(buffer.getvalue()))
    np.testing.assert_array_equal(loaded.predict(X), distiller.predict(X))


def test_prefit_student_is_finetuned_for_finetune_epochs(
    data, teacher, state, assert_same_state
):
    X, y = data
    student = tiny_student().fit(X, y)
    before = state(student)
    distiller = Distiller(student, teacher=teacher, prefit=True, finetune_epochs=2,
                          random_state=0).fit(X, y)
    assert_same_state(before, student)
    assert len(distiller.estimator_.history) == len(student.history) + 2
    assert_same_state(before, distiller.base_estimator_)


def test_same_random_state_same_student(data, teacher):
    X, y = data
    student = tiny_student(random_state=None)  # no SeedTorch callback
    a = Distiller(student, teacher=teacher, random_state=3).fit(X, y)
    b = Distiller(student, teacher=teacher, random_state=3).fit(X, y)
    for pa, pb in zip(a.estimator_.module_.parameters(),
                      b.estimator_.module_.parameters()):
        assert torch.equal(pa, pb)


class ProbaCNN(DigitsCNN):
    """NLLLoss convention: the module returns probabilities."""

    def forward(self, X):
        return torch.softmax(super().forward(X), dim=1)


def test_nll_convention_teacher_and_student(data):
    X, y = data
    kwargs = dict(module=ProbaCNN, criterion=nn.NLLLoss)
    teacher = tiny_student(max_epochs=2, **kwargs).fit(X, y)
    with torch.no_grad():
        expected = torch.log(teacher.forward(X, training=False))
    torch.testing.assert_close(teacher_logits(teacher, X), expected)
    distiller = Distiller(tiny_student(**kwargs), teacher=teacher,
                          random_state=0).fit(X, y)
    assert type(distiller.estimator_.criterion_) is nn.NLLLoss
    assert np.isfinite(distiller.estimator_.history[:, "train_loss"]).all()


def test_unfitted_teacher_is_fitted_when_teacher_prefit_false(data):
    X, y = data
    teacher = tiny_student(max_epochs=1)
    distiller = Distiller(tiny_student(), teacher=teacher, teacher_prefit=False,
                          random_state=0).fit(X, y)
    assert not hasattr(teacher, "module_")
    assert len(distiller.teacher_.history) == 1


def test_grid_search_over_temperature_and_alpha(data, forest):
    X, y = data
    search = GridSearchCV(
        Distiller(tiny_student(max_epochs=1), teacher=FrozenEstimator(forest),
                  random_state=0),
        {"temperature": [2.0, 4.0], "alpha": [0.5]},
        cv=2,
    ).fit(X[:200], y[:200])
    assert search.best_params_["temperature"] in (2.0, 4.0)
    assert len(search.cv_results_["mean_test_score"]) == 2


class CountingForest(RandomForestClassifier):
    """Counts its fits (all clones together)."""

    fits = 0

    def fit(self, X, y, sample_weight=None):
        type(self).fits += 1
        return super().fit(X, y, sample_weight=sample_weight)


def test_grid_search_refits_the_teacher_once_per_fold_with_memory(data, tmp_path):
    # What benchmarks/bench_distill.py relies on: the teacher is fitted on the
    # training folds only, once per fold whatever the number of candidates.
    X, y = data
    CountingForest.fits = 0
    search = GridSearchCV(
        Distiller(tiny_student(max_epochs=1),
                  teacher=CountingForest(10, random_state=0), teacher_prefit=False,
                  memory=str(tmp_path), random_state=0),
        {"temperature": [2.0, 4.0], "alpha": [0.5, 0.9]},
        cv=2, refit=False,
    ).fit(X[:200], y[:200])
    assert len(search.cv_results_["mean_test_score"]) == 4
    assert CountingForest.fits == 2


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("params, match", [
    ({"temperature": 0.0}, "temperature"),
    ({"temperature": -1.0}, "temperature"),
    ({"alpha": 1.5}, "alpha"),
    ({"alpha": -0.1}, "alpha"),
    ({"recalibrate_teacher": "yes"}, "recalibrate_teacher"),
])
def test_bad_parameters_name_themselves(data, forest, params, match):
    X, y = data
    student = tiny_student()
    with pytest.raises(ValueError, match=match):
        Distiller(student, teacher=forest, **params).fit(X, y)
    assert not hasattr(student, "module_")


def test_teacher_without_predict_proba_is_a_type_error(data):
    X, y = data
    with pytest.raises(TypeError, match="teacher"):
        Distiller(tiny_student(), teacher=LinearRegression()).fit(X, y)


def test_teacher_and_student_disagree_on_classes(data):
    X, y = data
    keep = y < 5
    five = RandomForestClassifier(5, random_state=0).fit(
        X[keep].reshape(keep.sum(), -1), y[keep])
    with pytest.raises(ValueError, match=r"classes \[0, 1, 2, 3, 4\].*outputs 10"):
        Distiller(tiny_student(), teacher=five).fit(X, y)


def test_prefit_teacher_must_be_fitted(data, teacher):
    X, y = data
    with pytest.raises(NotFittedError, match="teacher"):
        Distiller(tiny_student(), teacher=RandomForestClassifier()).fit(X, y)
    with pytest.raises(NotFittedError, match="teacher"):
        Distiller(tiny_student(), teacher=tiny_student()).fit(X, y)


def test_failed_fit_leaves_student_and_teacher_untouched(
    data, teacher, state, assert_same_state
):
    X, y = data
    student = tiny_student().fit(X, y)
    before_student, before_teacher = state(student), state(teacher)
    wrong = copy.deepcopy(student)
    wrong.set_params(criterion=nn.MSELoss)  # neither CE nor NLL
    wrong.initialize()
    with pytest.raises(ValueError, match="criterion"):
        Distiller(wrong, teacher=teacher, prefit=True).fit(X, y)
    distiller = Distiller(student, teacher=teacher, prefit=True, alpha=2.0)
    with pytest.raises(ValueError, match="alpha"):
        distiller.fit(X, y)
    assert not hasattr(distiller, "estimator_")
    assert_same_state(before_student, student)
    assert_same_state(before_teacher, teacher)


def test_student_with_a_validation_split_and_scoring(data, forest):
    from skorch.dataset import ValidSplit

    X, y = data
    student = tiny_student(train_split=ValidSplit(5, stratified=True))
    distiller = Distiller(student, teacher=forest, random_state=0).fit(X, y)
    history = distiller.estimator_.history
    assert len(history[:, "valid_acc"]) == 2  # scorers saw the labels
    scorer = dict(distiller.estimator_.callbacks_)["valid_acc"]
    assert scorer.target_extractor.__name__ == "to_numpy"  # restored after training


def test_clone_keeps_a_prefit_teacher_fitted():
    from sklearn.base import clone
    from sklearn.ensemble import RandomForestClassifier

    X = np.random.RandomState(0).rand(20, 1, 8, 8).astype(np.float32)
    y = np.arange(20) % 2
    forest = RandomForestClassifier(n_estimators=3, random_state=0).fit(
        X.reshape(20, -1), y
    )
    cloned = clone(Distiller(tiny_student(max_epochs=1), teacher=forest)).teacher
    assert cloned is not forest
    np.testing.assert_array_equal(
        cloned.predict(X.reshape(20, -1)), forest.predict(X.reshape(20, -1))
    )
    unfitted = clone(
        Distiller(tiny_student(max_epochs=1), teacher=forest, teacher_prefit=False)
    ).teacher
    assert not hasattr(unfitted, "estimators_")


# ------------------------------------------------- a teacher with stale BN
@pytest.fixture(scope="module")
def stale_teacher(data):
    """A tiny ResNet whose BatchNorm running statistics lag its weights (as
    after a few epochs of Adam)."""
    X, y = data
    net = make_resnet_net(8, module__width=4, module__in_channels=1,
                          max_epochs=1, random_state=0).fit(X[:96], y[:96])
    with torch.no_grad():
        for m in net.module_.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.add_(0.5)
                m.running_var.mul_(3.0)
    return net


def test_a_net_teacher_teaches_with_its_batchnorm_recalibrated(
    data, stale_teacher, monkeypatch
):
    X, y = data[0][:96], data[1][:96]
    before = net_state(stale_teacher)
    expected = copy.deepcopy(stale_teacher)
    recalibrate_batchnorm(expected, X, y)
    # the logits the student learns from are those of the recalibrated net
    from skcompress.compression import _distillation

    seen = []

    def spy(teacher, X):
        seen.append(_distillation._teacher_net(teacher).module_.state_dict())
        return teacher_logits(teacher, X)

    monkeypatch.setattr(_distillation, "teacher_logits", spy)
    distiller = Distiller(tiny_student(max_epochs=1), teacher=stale_teacher,
                          random_state=0).fit(X, y)
    assert_same_state(net_state(distiller.teacher_), net_state(expected))
    assert_same_state(seen[0], net_state(expected))
    assert_same_state(net_state(stale_teacher), before)  # the user's teacher

    kept = Distiller(tiny_student(max_epochs=1), teacher=stale_teacher,
                     recalibrate_teacher=False, random_state=0).fit(X, y)
    assert_same_state(net_state(kept.teacher_), before)
    assert_same_state(seen[1], before)
