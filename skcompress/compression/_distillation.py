"""Knowledge distillation: train a small student net on a teacher's soft targets.

How the teacher's outputs reach the student's training (one design, shared
with :class:`~skcompress.compression.Compactor`):

- the teacher's logits are computed **once per fit** (:func:`teacher_logits`);
- they travel with the data: :class:`DistillationDataset` is a skorch
  ``Dataset`` yielding ``(X_i, (y_i, teacher_logits_i))``;
- for the duration of the training only, the net's ``criterion_`` is swapped
  for :class:`DistillationLoss`, which receives the targets
  ``(y, teacher_logits)``; skorch's own ``partial_fit`` does the training
  (through :meth:`BaseCompressor._finetune`: fresh optimizer,
  ``finetune_lr``, callbacks).

The trained ``estimator_`` is therefore a plain skorch net of the user's
class, with the user's criterion back in place: it predicts from ``X`` alone
and saves and loads with :func:`skcompress.save` / :func:`skcompress.load`.
"""

import copy
import numbers
import time
from contextlib import contextmanager

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils._param_validation import HasMethods, Interval
from sklearn.utils.validation import check_is_fitted, check_memory
from skorch import NeuralNet
from skorch.dataset import Dataset
from torch import nn

from .._nets import find_net
from ._base import (
    BaseCompressor,
    CompressionResult,
    ConstantLR,
    _dense_size_bytes,
    _first_samples,
    _fit_clone,
    _forked_rng,
    _input_shape,
    _seeded,
    is_compressor,
    recalibrate_batchnorm,
)

__all__ = [
    "DistillationDataset",
    "DistillationLoss",
    "DistillationMixin",
    "Distiller",
    "teacher_logits",
]

# Probabilities are clipped to [eps, 1] before their log is used as logits.
_PROBA_EPS = float(np.finfo(np.float32).eps)


class DistillationLoss(nn.Module):
    """Hinton et al.'s distillation loss, as a criterion taking ``(y, t)``.

    ``alpha * T**2 * KL(softmax(t / T) || softmax(s / T)) + (1 - alpha) *
    CE(s, y)``, with ``s`` the student's logits, ``t`` the teacher's, ``T``
    the temperature; the KL divergence is averaged over the batch. The
    ``T**2`` factor keeps the soft term's gradients on the scale of the hard
    term's when ``T`` changes.

    Parameters
    ----------
    temperature : float, default=4.0
    alpha : float, default=0.9
        Weight of the soft (teacher) term; ``1 - alpha`` weighs the
        cross-entropy with the labels.
    student_outputs : {"logits", "probabilities"}, default="logits"
        What the student's module returns: logits (``CrossEntropyLoss``
        convention) or probabilities (``NLLLoss`` convention; their log,
        clipped away from 0 like skorch does, is used as logits).

    References
    ----------
    Hinton, Vinyals and Dean, "Distilling the Knowledge in a Neural Network",
    2015.

    Examples
    --------
    >>> import torch
    >>> from skcompress.compression._distillation import DistillationLoss
    >>> loss = DistillationLoss(temperature=2.0, alpha=0.5)
    >>> logits = torch.tensor([[2.0, 0.0, -1.0]])
    >>> round(float(loss(logits, (torch.tensor([0]), logits))), 4)  # KL = 0: CE / 2
    0.0849
    """

    def __init__(self, temperature=4.0, alpha=0.9, student_outputs="logits"):
        super().__init__()
        if student_outputs not in ("logits", "probabilities"):
            raise ValueError(
                "student_outputs must be 'logits' or 'probabilities', got "
                f"{student_outputs!r}."
            )
        self.temperature = temperature
        self.alpha = alpha
        self.student_outputs = student_outputs

    def forward(self, input, target):
        y, teacher = target
        student = input
        if self.student_outputs == "probabilities":
            student = torch.log(student + torch.finfo(student.dtype).eps)
        T = self.temperature
        teacher = teacher.to(student.dtype)
        soft = F.kl_div(
            F.log_softmax(student / T, dim=1),
            F.log_softmax(teacher / T, dim=1),
            reduction="batchmean",
            log_target=True,
        )
        hard = F.cross_entropy(student, y.long())
        return self.alpha * T**2 * soft + (1 - self.alpha) * hard


class DistillationDataset(Dataset):
    """skorch ``Dataset`` yielding ``(X_i, (y_i, teacher_logits_i))``.

    ``X`` and ``y`` are stored as in skorch's ``Dataset`` (so scorers and
    ``train_split`` still find the labels); the teacher's logits ride along
    with the target.
    """

    def __init__(self, X, y, teacher_logits):
        super().__init__(X, y)
        if len(teacher_logits) != len(self):
            raise ValueError("X and teacher_logits have inconsistent lengths.")
        self.teacher_logits = torch.as_tensor(teacher_logits, dtype=torch.float32)

    def __getitem__(self, i):
        Xi, yi = super().__getitem__(i)
        return Xi, (yi, self.teacher_logits[i])


def _unfrozen(model):
    """The estimator inside ``FrozenEstimator`` wrappers, else ``model``."""
    while type(model).__name__ == "FrozenEstimator":
        model = model.estimator
    return model


def _is_net(model):
    """Whether ``model`` is a skorch net or a compressor (frozen or not)."""
    model = _unfrozen(model)
    return isinstance(model, NeuralNet) or is_compressor(model)


def _teacher_net(model):
    """The fitted skorch net behind a teacher, or None for any other classifier."""
    return find_net(_unfrozen(model)) if _is_net(model) else None


def _teacher_input(model, X):
    """scikit-learn estimators take tables: images are flattened for them."""
    if not _is_net(model) and getattr(X, "ndim", 2) > 2:
        return np.asarray(X).reshape(len(X), -1)
    return X


def teacher_logits(teacher, X):
    """The teacher's logits for ``X`` as a float32 ``(n, n_classes)`` tensor.

    A skorch net (also inside a compressor or ``FrozenEstimator``) gives its
    module's raw outputs, or their log when its criterion is ``NLLLoss`` (its
    module outputs probabilities). Any other classifier gives the log of
    ``predict_proba`` clipped to ``[eps, 1]`` (``eps`` = float32 epsilon);
    images are flattened to 2-D for it.
    """
    net = _teacher_net(teacher)
    if net is not None:
        with torch.no_grad():
            out = net.forward(X, training=False, device="cpu").float()
        if isinstance(net.criterion_, nn.NLLLoss):
            out = torch.log(out.clamp_min(_PROBA_EPS))
        return out
    proba = np.asarray(teacher.predict_proba(_teacher_input(teacher, X)))
    return torch.log(torch.as_tensor(np.clip(proba, _PROBA_EPS, 1.0),
                                     dtype=torch.float32))


def _student_outputs(net):
    if isinstance(net.criterion_, nn.CrossEntropyLoss):
        return "logits"
    if isinstance(net.criterion_, nn.NLLLoss):
        return "probabilities"
    raise ValueError(
        "the student net's criterion must be CrossEntropyLoss (module returns "
        "logits) or NLLLoss (module returns probabilities) to be distilled, got "
        f"{type(net.criterion_).__name__}."
    )


class _LabelsOnly:
    """A scorer's ``target_extractor`` seeing only the labels of ``(y, t)``."""

    def __init__(self, extractor):
        self.extractor = extractor

    def __call__(self, y):
        if isinstance(y, (list, tuple)) and len(y) == 2:
            y = y[0]
        return self.extractor(y)


@contextmanager
def _distillation_criterion(net, criterion):
    """Swap ``net.criterion_`` for the duration of the block.

    Scoring callbacks (e.g. ``valid_acc``) cache the batches' targets, which
    are ``(y, teacher_logits)`` meanwhile: they are shown the labels only.
    """
    original = net.criterion_
    extractors = [(cb, cb.target_extractor) for _, cb in net.callbacks_
                  if callable(getattr(cb, "target_extractor", None))]
    net.criterion_ = criterion
    for cb, extractor in extractors:
        cb.target_extractor = _LabelsOnly(extractor)
    try:
        yield
    finally:
        net.criterion_ = original
        for cb, extractor in extractors:
            cb.target_extractor = extractor


class DistillationMixin:
    """``_finetune`` with the distillation loss, for compressors.

    Mixed in before :class:`BaseCompressor` by compressors having
    ``temperature`` and ``alpha`` parameters; their ``_compress_and_finetune``
    passes a :class:`DistillationDataset` (teacher logits computed once) as
    ``X``.
    """

    def _finetune(self, net, X, y, epochs):
        if not isinstance(X, DistillationDataset):
            raise TypeError(  # pragma: no cover - internal misuse
                "distillation fine-tuning needs a DistillationDataset as X."
            )
        loss = DistillationLoss(self.temperature, self.alpha,
                                student_outputs=_student_outputs(net))
        with _distillation_criterion(net, loss):
            super()._finetune(net, X, y, epochs)

    def _distill(self, net, X, y, logits, epochs):
        """Train ``net`` in place on ``X, y`` and the teacher's ``logits``."""
        self._finetune(net, DistillationDataset(X, y, logits), y, epochs)


def _net_summary(model, input_shape, file_bytes=None):
    """Parameters, fp32 dense bytes, file bytes and MACs of a net (or NaN)."""
    from ..accounting import count_macs, count_parameters, dense_size_bytes
    from ..io import dumps

    net = _teacher_net(model)
    if net is None:
        return dict(params=np.nan, dense_bytes=np.nan, file_bytes=np.nan,
                    macs=np.nan)
    module = net.module_
    return dict(
        params=count_parameters(module),
        dense_bytes=dense_size_bytes(net),
        file_bytes=len(dumps(net)) if file_bytes is None else file_bytes,
        macs=count_macs(module, input_shape) if input_shape else np.nan,
    )


class Distiller(DistillationMixin, BaseCompressor):
    """Train a small student net to mimic a teacher (knowledge distillation).

    The student is trained with :class:`DistillationLoss`,
    ``alpha * T**2 * KL(teacher_T || student_T) + (1 - alpha) * CE(student, y)``,
    where ``teacher_T`` / ``student_T`` are the softmax of the logits divided
    by the temperature ``T``. The teacher's outputs are computed once per fit.

    In the shared fit flow the student is the base: an unfitted student is
    only initialised (not fitted) and then trained from its initialisation
    for its own ``max_epochs``; a prefit student (``prefit=True``) is
    fine-tuned for ``finetune_epochs``. The compression step fits (or copies)
    the teacher and trains the student, with the distillation loss and the
    student's optimizer class (learning rate: see ``finetune_lr``). ``estimator_`` is a
    plain skorch net of the student's class: it predicts from ``X`` alone and
    saves with :func:`skcompress.save`.

    Parameters
    ----------
    estimator : skorch NeuralNetClassifier
        The student, unfitted (trained from its init) or fitted (with
        ``prefit=True``; a fitted compressor works too, its constraints are
        kept). Its criterion is ``CrossEntropyLoss`` (module returns logits) or
        ``NLLLoss`` (module returns probabilities).
    teacher : classifier with ``predict_proba``
        A skorch net, a compressor, or any scikit-learn classifier (random
        forest, pipeline...). Nets give their raw outputs as logits (log of
        the outputs under ``NLLLoss``); others give the log of
        ``predict_proba`` clipped to float32 epsilon, and receive images
        flattened to 2-D.
    temperature : float, default=4.0
        Softmax temperature ``T > 0`` of both nets' soft targets.
    alpha : float, default=0.9
        Weight in [0, 1] of the soft term; 0 is plain training on the labels.
    teacher_prefit : bool, default=True
        Whether ``teacher`` is fitted (it is then deep-copied, never modified;
        an unfitted one raises ``NotFittedError``). ``False`` fits a clone on
        ``X, y`` first (through ``memory``). A prefit teacher survives
        ``clone`` (it is deep-copied fitted), so ``GridSearchCV`` over a
        ``Distiller`` with a prefit teacher works as it is;
        ``sklearn.frozen.FrozenEstimator`` teachers are accepted too.
    finetune_epochs : int, default=10
        Epochs of distillation for a prefit student.
    recalibrate_teacher : bool, default=True
        Whether the BatchNorm statistics of a net teacher are recomputed on
        ``X`` (:func:`~skcompress.compression._base.recalibrate_batchnorm`, on the
        copy kept as ``teacher_``; the user's teacher is unchanged) before
        its logits are computed, as every compressor does for the net it
        compresses. A net trained briefly with Adam can keep running
        statistics that lag its weights and would teach its stale
        predictions; ``False`` distils the teacher exactly as given (e.g.
        when ``X`` is not the data it was trained on).
    finetune_lr : float or None, default=None
        Learning rate of the distillation training. A student trained from
        its initialisation (``prefit=False``) trains at a constant rate,
        ``finetune_lr`` or, for ``None``, its own ``lr``. A prefit student is
        fine-tuned like every compressed net: peak ``finetune_lr`` or, for
        ``None``, a quarter of its ``lr``, warm-up then cosine decay (see
        :class:`~skcompress.compression.BaseCompressor`).
    prefit : bool, default=False
        Whether the student is already fitted.
    memory : str, path or joblib.Memory, default=None
        Caches the teacher's fit (``teacher_prefit=False``).
    random_state : int, RandomState or None, default=None
        Seeds the student's initialisation and training (a ``SeedTorch``
        callback on the student takes precedence).
    keep_base : bool, default=False
        See :class:`~skcompress.compression.BaseCompressor`.

    Attributes
    ----------
    estimator_ : skorch NeuralNetClassifier
        The distilled student.
    teacher_ : classifier
        The fitted teacher (a copy of ``teacher``, or the clone fitted here),
        its BatchNorm statistics recomputed on ``X`` when
        ``recalibrate_teacher``.
    base_estimator_ : skorch NeuralNetClassifier or compressor
        The student before distillation: its initialisation, or the copy of
        the prefit student.
    original_size_bytes_ : int
        fp32 dense bytes of the teacher when it is a skorch net (a compressor
        teacher: its own ``original_size_bytes_``), so that
        ``compression_ratio_`` compares the teacher with the student's file.
        For any other teacher (random forest...), the student's dense bytes.
    size_bytes_ : int
        Bytes of the student's file.
    compression_ratio_ : float
        ``original_size_bytes_ / size_bytes_``.
    size_comparison_ : pandas.DataFrame
        Rows ``teacher`` and ``student``; columns ``params``, ``dense_bytes``
        (fp32), ``file_bytes`` (:func:`skcompress.save`), ``macs``. NaN where
        the teacher is not a net.
    report_ : pandas.DataFrame
        Per-layer report of the student.
    fit_time_ : dict
        Seconds: ``base`` (student set-up), ``teacher`` (fitting or copying
        the teacher and computing its logits once), ``finetune`` (the
        distillation training).

    See Also
    --------
    Compactor : rewrites convolutions as depthwise-separable ones and distils
        the original net into the result.

    References
    ----------
    Hinton, Vinyals and Dean, "Distilling the Knowledge in a Neural Network",
    2015.

    Examples
    --------
    >>> from sklearn.ensemble import RandomForestClassifier
    >>> from skcompress.compression import Distiller
    >>> from skcompress.datasets import load_digits_images
    >>> from skcompress.models import make_digits_net
    >>> X, y = load_digits_images()
    >>> X, y = X[:300], y[:300]
    >>> teacher = RandomForestClassifier(50, random_state=0).fit(X.reshape(300, -1), y)
    >>> student = make_digits_net(max_epochs=2, module__channels=(4, 8),
    ...                           module__hidden=16)
    >>> distiller = Distiller(student, teacher=teacher, random_state=0).fit(X, y)
    >>> distiller.predict(X[:3]).shape
    (3,)
    """

    _parameter_constraints = {
        **BaseCompressor._parameter_constraints,
        "teacher": [HasMethods(["predict_proba"])],
        "temperature": [Interval(numbers.Real, 0, None, closed="neither")],
        "alpha": [Interval(numbers.Real, 0, 1, closed="both")],
        "teacher_prefit": ["boolean"],
        "recalibrate_teacher": ["boolean"],
    }

    def __init__(
        self,
        estimator,
        *,
        teacher,
        temperature=4.0,
        alpha=0.9,
        teacher_prefit=True,
        recalibrate_teacher=True,
        finetune_epochs=10,
        finetune_lr=None,
        prefit=False,
        memory=None,
        random_state=None,
        keep_base=False,
    ):
        super().__init__(
            estimator,
            finetune_epochs=finetune_epochs,
            finetune_lr=finetune_lr,
            prefit=prefit,
            memory=memory,
            random_state=random_state,
            keep_base=keep_base,
        )
        self.teacher = teacher
        self.temperature = temperature
        self.alpha = alpha
        self.teacher_prefit = teacher_prefit
        self.recalibrate_teacher = recalibrate_teacher

    def _prefit_params(self):
        prefit = super()._prefit_params()
        return (*prefit, "teacher") if self.teacher_prefit else prefit

    # ------------------------------------------------------------ hooks
    def _check_params(self, X, y):
        if y is None:
            raise ValueError("Distiller needs the labels y to train the student.")
        if not self.teacher_prefit and not hasattr(self.teacher, "fit"):
            raise TypeError(
                "teacher must have a fit method when teacher_prefit=False, got "
                f"{type(self.teacher).__name__}."
            )
        if is_compressor(self.estimator) and not self.prefit:
            raise TypeError(
                "Distiller: a compressor as the student must be fitted (pass "
                "prefit=True); give the student as a skorch net to train it "
                "from its initialisation."
            )

    def _fit_base(self, X, y, seed):
        if self.prefit:
            return super()._fit_base(X, y, seed)
        # Trained from its initialisation, drawn under the compressor's seed
        # (a SeedTorch callback on the student takes precedence).
        student = clone(self.estimator)
        with _seeded(seed):
            student.initialize()
        return student, student

    def _lr_schedule(self, net, epochs):
        """A student trained from scratch (``prefit=False``) trains as it
        would on its own, at a constant learning rate (its ``lr``, or
        ``finetune_lr`` when given); a prefit one is fine-tuned under the
        shared rule and schedule. (A warm-up and cosine decay over the
        student's ``max_epochs`` distils worse in short trainings: the zoo's
        MobileNetV2 student, 4 epochs on MNIST-5k, 0.886 against 0.906.)"""
        if self.prefit:
            return super()._lr_schedule(net, epochs)
        return ConstantLR(float(net.lr if self.finetune_lr is None
                                else self.finetune_lr))

    def _compress_and_finetune(self, net, X, y, rng):
        start = time.perf_counter()
        # Outside the fit's seeded random stream, which stays the student's.
        with _forked_rng():
            teacher = self._fit_teacher(X, y)
            if self.recalibrate_teacher and _teacher_net(teacher) is not None:
                # teacher is this fit's own copy or clone, never the user's
                recalibrate_batchnorm(_teacher_net(teacher), X, y)
            logits = teacher_logits(teacher, X)
            self._check_classes(teacher, logits, net, X, y)
        teacher_time = time.perf_counter() - start
        _student_outputs(net)  # fail early on an unsupported criterion
        epochs = self.finetune_epochs if self.prefit else net.max_epochs
        start = time.perf_counter()
        self._distill(net, X, y, logits, epochs)
        timings = {"teacher": teacher_time, "finetune": time.perf_counter() - start}
        attributes = {"teacher_": teacher}
        if is_compressor(teacher):
            attributes["original_size_bytes_"] = int(teacher.original_size_bytes_)
        elif _teacher_net(teacher) is not None:
            teacher_net = _teacher_net(teacher)
            attributes["original_size_bytes_"] = _dense_size_bytes(teacher_net)
        return CompressionResult(net, attributes, timings)

    def _summarize(self, result, X):
        input_shape = _input_shape(X)
        summaries = [
            _net_summary(result.attributes["teacher_"], input_shape),
            _net_summary(self.estimator_, input_shape, self.size_bytes_),
        ]
        comparison = pd.DataFrame(summaries, index=["teacher", "student"])
        return {"size_comparison_": comparison}

    def _fit_teacher(self, X, y):
        teacher = self.teacher
        if not self.teacher_prefit:
            fit = check_memory(self.memory).cache(_fit_clone)
            return fit(teacher, _teacher_input(teacher, X), y)
        try:
            if is_compressor(teacher):
                check_is_fitted(teacher, "estimator_")
            elif isinstance(teacher, NeuralNet):
                teacher.check_is_fitted()
            else:
                check_is_fitted(teacher)
        except NotFittedError as exc:
            raise NotFittedError(
                f"teacher {type(teacher).__name__} is not fitted; fit it first or "
                f"pass teacher_prefit=False. ({exc})"
            ) from exc
        return copy.deepcopy(teacher)

    def _check_classes(self, teacher, logits, student, X, y):
        y_classes = np.unique(np.asarray(y))
        with torch.no_grad():
            n_student = student.forward(_first_samples(X), training=False,
                                        device="cpu").shape[1]
        n_teacher = logits.shape[1]
        teacher_classes = getattr(teacher, "classes_", None)
        shown = (f"classes {np.asarray(teacher_classes).tolist()}"
                 if teacher_classes is not None else f"{n_teacher} classes")
        if n_teacher != n_student:
            raise ValueError(
                f"teacher and student disagree on the classes: the teacher "
                f"predicts {shown} but the student outputs {n_student} scores "
                f"(y's classes: {y_classes.tolist()})."
            )
        if teacher_classes is not None and not np.array_equal(
            np.asarray(teacher_classes), np.arange(n_teacher)
        ):
            raise ValueError(
                f"teacher and student disagree on the classes: the teacher's "
                f"{shown} are not the student's output indices "
                f"0..{n_student - 1} (y's classes: {y_classes.tolist()})."
            )
        if y_classes.min() < 0 or y_classes.max() >= n_student:
            raise ValueError(
                f"y's classes {y_classes.tolist()} are not indices of the "
                f"student's {n_student} outputs (and the teacher's {shown})."
            )

