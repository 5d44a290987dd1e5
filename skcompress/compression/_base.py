"""The fit flow shared by every network compressor.

``BaseCompressor.fit`` runs these steps (docs/design.md, "Compressors: the
fit flow"). Each step returns what it made; ``_fit`` alone sets the fitted
attributes, from those results, once every step succeeded:

1. ``_fit_base(X, y, seed)`` -> ``(base, base_net)``: a deep copy of a prefit
   estimator, or ``clone(estimator).fit(X, y)`` (through ``memory`` when
   given); when ``estimator`` is itself a compressor its fitted net,
   constraints included, is the base (chaining). Gives ``base_estimator_``.
2. ``_compress_and_finetune(net, X, y, rng)`` -> :class:`CompressionResult`,
   on a deep copy of the base net, under the fit's seed: ``_compress`` (the
   technique) then ``_finetune`` with the constraints kept exact. Gives
   ``estimator_``, the technique's fitted attributes and ``fit_time_``.
3. ``_account(X)``: ``size_bytes_`` (file bytes), ``compression_ratio_``,
   ``report_``, from ``original_size_bytes_`` (the dense size of the base).
4. ``_summarize(result, X)`` -> attributes that need the accounting (none by
   default; the Distiller's ``size_comparison_``, the Compactor's
   ``conversion_report_``).

Inside a parallel worker (a joblib worker of ``GridSearchCV(n_jobs=...)``,
any backend, or a dask worker) the fit limits torch's intra-op threads to the
worker's share of the machine, so ``n_jobs`` fits do not oversubscribe the
cores (:func:`skcompress._threads.worker_threads`).

Techniques subclass it and implement ``_compress(net, X, y, rng)``, which
changes ``net.module_`` in place and returns the technique's fitted
attributes; iterative ones override ``_compress_and_finetune``. Nothing the
user passed in is ever touched.
"""

import copy
import math
import numbers
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.base import BaseEstimator, MetaEstimatorMixin, _fit_context, clone
from sklearn.exceptions import NotFittedError
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import HasMethods, Interval
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted, check_memory
from skorch import NeuralNet, NeuralNetClassifier
from skorch.callbacks import Callback

from .._nets import find_net
from .._threads import worker_threads

__all__ = [
    "BaseCompressor",
    "CompressionResult",
    "ConstraintCallback",
    "FiniteLossCheck",
    "SeedFinetuning",
    "WarmupCosineLR",
    "is_compressor",
    "recalibrate_batchnorm",
    "scheduled_lr",
]


def is_compressor(obj):
    return isinstance(obj, BaseCompressor)


def _fit_clone(estimator, X, y):
    """Fit a clone; module level so that ``joblib.Memory`` can cache it."""
    return _clone_for_fit(estimator).fit(X, y)


def _clone_for_fit(estimator):
    """``clone(estimator)`` for a chain's inner fit: prefit estimators shared.

    ``clone`` of a compressor deep-copies its prefit parameters
    (:meth:`BaseCompressor.__sklearn_clone__`), so that ``set_params`` on the
    user's clone cannot reach the user's net. The clone made here is only
    fitted and kept (as ``base_estimator_``), and a fit never modifies its
    parameters (a prefit estimator is deep-copied into its own fitted
    attributes), so the prefit ones are shared by reference, as
    scikit-learn's meta-estimators keep the user's ``estimator`` object:
    otherwise a fitted chain held a whole copy of the prefit net as its
    inner compressor's ``estimator``. Nested compressors are cloned the same
    way; other parameters as ``clone`` does.
    """
    if not is_compressor(estimator):
        return clone(estimator)
    keep = set(estimator._prefit_params())
    params = {
        name: value if name in keep
        else _clone_for_fit(value) if is_compressor(value)
        else clone(value, safe=False)
        for name, value in estimator.get_params(deep=False).items()
    }
    return type(estimator)(**params)


def _copy_fitted(estimator):
    """A deep copy of a prefit net or fitted compressor (``prefit=True``).

    The fitted attributes are copied; the parameters of the compressors in
    the chain (what the user built it from: nets, compressors, teachers) are
    shared by reference, for the reasons of :func:`_clone_for_fit`.
    """
    memo = {}
    todo = [estimator] if is_compressor(estimator) else []
    while todo:
        compressor = todo.pop()
        for value in compressor.get_params(deep=False).values():
            if hasattr(value, "fit") and id(value) not in memo:
                memo[id(value)] = value
        inner = vars(compressor).get("base_estimator_")
        if is_compressor(inner):
            todo.append(inner)
    return copy.deepcopy(estimator, memo)


def _in_cache(fit, *args):
    """Whether ``joblib.Memory`` holds the result of ``fit(*args)``."""
    check = getattr(fit, "check_call_in_cache", None)
    return bool(check is not None and check(*args))


def _estimator_has(attr):
    """Delegated methods exist only where the wrapped estimator has them."""

    def check(self):
        if hasattr(self, "estimator_"):
            return hasattr(self.estimator_, attr)
        return hasattr(self.estimator, attr)

    return check


def _first_samples(X, n=2):
    try:
        return X[:n]
    except Exception:  # dicts, datasets: let the net handle the whole input
        return X


def _input_shape(X):
    shape = getattr(X, "shape", None)
    return tuple(shape[1:]) if shape is not None and len(shape) > 1 else None


@contextmanager
def _forked_rng():
    """Torch's random state (CPU and CUDA) is put back after the block."""
    cuda = torch.cuda.is_available()
    devices = list(range(torch.cuda.device_count())) if cuda else []
    with torch.random.fork_rng(devices=devices):
        yield


@contextmanager
def _seeded(seed):
    """Seed torch inside the block without leaking into the caller's RNG."""
    with _forked_rng():
        torch.manual_seed(seed)
        yield


def _check_finite(values, name, owner):
    """``ValueError`` naming ``name`` if a numpy array or torch tensor holds
    NaN or infinity; other inputs (dicts, datasets) are the net's business."""
    if isinstance(values, torch.Tensor):
        finite = not values.is_floating_point() or bool(torch.isfinite(values).all())
    elif isinstance(values, np.ndarray) and values.dtype.kind in "fc":
        finite = bool(np.isfinite(values).all())
    else:
        return
    if not finite:
        raise ValueError(
            f"{owner}: {name} contains NaN or infinity; a net trained on it "
            "gets NaN weights. Remove or impute those values first."
        )


def _class_indices(y, owner):
    """``y`` as the integer class indices skorch's ``NeuralNetClassifier``
    trains on and predicts.

    Integer labels pass unchanged and integral floats (``2.0``) become int64;
    anything else (strings, objects, fractions, negative numbers) is a
    ``ValueError`` naming ``y``: the classifier predicts ``argmax`` indices,
    so other labels would come back as indices, not as the user's labels.
    """
    if isinstance(y, torch.Tensor):
        values = y.detach().cpu().numpy()
    elif isinstance(y, np.ndarray) or hasattr(y, "__array__") or isinstance(
        y, (list, tuple)
    ):
        values = np.asarray(y)
    else:
        return y
    if values.ndim != 1:  # e.g. class probabilities for CrossEntropyLoss
        return y
    hint = (
        "skorch's NeuralNetClassifier trains on and predicts integer class "
        "indices 0 .. n_classes - 1. Encode the labels first, e.g. "
        "encoder = sklearn.preprocessing.LabelEncoder().fit(y), fit on "
        "encoder.transform(y) and map predictions back with "
        "encoder.inverse_transform."
    )
    kind = values.dtype.kind
    if kind == "f":
        if not np.isfinite(values).all() or (values != np.round(values)).any():
            raise ValueError(
                f"{owner}: y holds non-integral class labels; {hint}"
            )
        values = values.astype(np.int64)
        y = torch.from_numpy(values) if isinstance(y, torch.Tensor) else values
    elif kind not in "iub":
        examples = ", ".join(repr(v) for v in np.unique(values.astype(object))[:3])
        raise ValueError(
            f"{owner}: y holds class labels of dtype {values.dtype} "
            f"({examples}, ...); {hint}"
        )
    if kind != "b" and values.size and values.min() < 0:
        raise ValueError(f"{owner}: y holds negative class labels; {hint}")
    return y


def _non_finite_tensors(module):
    """Names of the module's parameters and floating buffers that hold NaN or
    infinity."""
    tensors = [*module.named_parameters(), *module.named_buffers()]
    return [
        name for name, tensor in tensors
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())
    ]


class FiniteLossCheck(Callback):
    """Stops fine-tuning with a ``FloatingPointError`` as soon as a training
    batch's loss is NaN or infinite, naming the compressor, the epoch and the
    batch, instead of finishing with NaN weights."""

    def __init__(self, owner="fine-tuning"):
        self.owner = owner

    def on_train_begin(self, net, X=None, y=None, **kwargs):
        self.first_epoch_ = len(net.history)

    def on_batch_end(self, net, batch=None, training=False, loss=None, **kwargs):
        if not training or loss is None or bool(torch.isfinite(loss).all()):
            return
        epoch = len(net.history) - self.first_epoch_
        batches = len(net.history[-1]["batches"]) if len(net.history) else 0
        raise FloatingPointError(
            f"{self.owner}: the training loss became {float(loss.detach())} during "
            f"fine-tuning (epoch {epoch}, batch {batches}); the net's outputs "
            "are not finite. Try a smaller finetune_lr."
        )


class SeedFinetuning(Callback):
    """Seeds torch when fine-tuning starts, after the net's own callbacks
    (e.g. :class:`skcompress.models.SeedTorch`, which would fix the batch
    order whatever the compressor's ``random_state``)."""

    def __init__(self, seed):
        self.seed = seed

    def on_train_begin(self, net, X=None, y=None, **kwargs):
        torch.manual_seed(self.seed)


FINETUNE_LR_FACTOR = 0.25
"""Fine-tuning's peak learning rate is this fraction of the net's own ``lr``
when ``finetune_lr=None`` (:meth:`BaseCompressor._finetune_lr`)."""

WARMUP_FRACTION = 0.05
"""Fraction of the fine-tuning steps (at least one) spent warming up."""

BN_RECALIBRATION_SAMPLES = 2048
"""Samples of ``X`` (at most) over which BatchNorm statistics are recomputed."""


def scheduled_lr(lr, step, total_steps, warmup_fraction=WARMUP_FRACTION):
    """Learning rate of fine-tuning step ``step`` (0-based) of ``total_steps``.

    A linear warm-up over the first ``w = max(1, round(warmup_fraction *
    total_steps))`` steps, ``lr * (step + 1) / w``, then a half cosine from
    ``lr`` towards 0 over the remaining steps, ``lr * (1 + cos(pi * (step -
    w) / (total_steps - w))) / 2``. Steps past the end keep the last value.
    """
    total_steps = max(int(total_steps), 1)
    step = min(max(int(step), 0), total_steps - 1)
    warmup = max(1, int(round(warmup_fraction * total_steps)))
    if step < warmup:
        return lr * (step + 1) / warmup
    return lr * 0.5 * (1.0 + math.cos(math.pi * (step - warmup)
                                      / (total_steps - warmup)))


class WarmupCosineLR(Callback):
    """Sets the learning rate of every parameter group of the net's
    optimizers before each training batch, following :func:`scheduled_lr`
    over ``epochs`` epochs of the net's training iterator.

    Attached by :meth:`BaseCompressor._finetune` for the fine-tuning only and
    removed afterwards; the net's own ``lr`` is not changed.
    """

    def __init__(self, lr, epochs, warmup_fraction=WARMUP_FRACTION):
        self.lr = lr
        self.epochs = epochs
        self.warmup_fraction = warmup_fraction

    def on_train_begin(self, net, X=None, y=None, **kwargs):
        self.step_ = 0
        self.total_steps_ = None

    def on_epoch_begin(self, net, dataset_train=None, **kwargs):
        if self.total_steps_ is None:
            try:
                batches = len(net.get_iterator(dataset_train, training=True))
            except TypeError:  # an iterable dataset: one cosine per batch count
                batches = 1
            self.total_steps_ = max(1, self.epochs * batches)

    def on_batch_begin(self, net, training=False, **kwargs):
        if not training:
            return
        lr = scheduled_lr(self.lr, self.step_, self.total_steps_ or 1,
                          self.warmup_fraction)
        for optimizer in _optimizers(net):
            for group in optimizer.param_groups:
                group["lr"] = lr
        self.step_ += 1


class ConstantLR(Callback):
    """Sets the learning rate of every parameter group of the net's
    optimizers to ``lr`` before each training batch (a student trained from
    scratch, :class:`~skcompress.compression.Distiller`)."""

    def __init__(self, lr):
        self.lr = lr

    def on_batch_begin(self, net, training=False, **kwargs):
        if training:
            for optimizer in _optimizers(net):
                for group in optimizer.param_groups:
                    group["lr"] = self.lr


def _optimizers(net):
    names = getattr(net, "_optimizers", None) or ["optimizer"]
    optimizers = [getattr(net, f"{name}_", None) for name in names]
    return [o for o in optimizers if isinstance(o, torch.optim.Optimizer)]


def recalibrate_batchnorm(net, X, y=None, *, n_samples=BN_RECALIBRATION_SAMPLES,
                          seed=0):
    """Recompute the running statistics of every BatchNorm layer of ``net``.

    The running mean and variance are reset, then set to the cumulative
    average (``momentum=None``) of the batch statistics of one forward pass,
    in batches of the net's validation iterator, over at most ``n_samples``
    samples of ``X`` drawn without replacement (torch generator seeded with
    ``seed``). Only the BatchNorm layers are in training mode meanwhile
    (dropout and constraints stay in evaluation mode); their momentum and
    every module's mode are put back. Weights are unchanged. Nets without
    BatchNorm, and ``X`` without a length, are left alone.

    Returns
    -------
    int
        The number of recalibrated BatchNorm layers.
    """
    module = net.module_
    norms = [m for m in module.modules()
             if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
             and m.track_running_stats]
    if not norms:
        return 0
    dataset = net.get_dataset(X, y)
    try:
        n = len(dataset)
    except TypeError:
        return 0
    if n == 0:
        return 0
    generator = torch.Generator().manual_seed(int(seed))
    indices = torch.randperm(n, generator=generator)[:n_samples].sort().values
    subset = torch.utils.data.Subset(dataset, indices.tolist())
    modes = {m: m.training for m in module.modules()}
    momenta = {m: m.momentum for m in norms}
    try:
        module.eval()
        for norm in norms:
            norm.reset_running_stats()
            norm.momentum = None
            norm.train()
        with torch.no_grad():
            for batch in net.get_iterator(subset, training=False):
                Xi = batch[0] if isinstance(batch, (tuple, list)) else batch
                net.infer(Xi)
    finally:
        for norm, momentum in momenta.items():
            norm.momentum = momentum
        for m, training in modes.items():
            m.train(training)
    return len(norms)


@dataclass
class CompressionResult:
    """What a compression made; ``BaseCompressor._fit`` sets the fitted
    attributes from it.

    Attributes
    ----------
    net : skorch NeuralNet
        The compressed, fine-tuned net (``estimator_``).
    attributes : dict
        The technique's fitted attributes, ``{"sparsity_": 0.9, ...}``; names
        end in ``_``. ``original_size_bytes_`` here replaces the default, the
        dense size of the base net (the Distiller measures its teacher).
    timings : dict
        Seconds per step (``"compress"``, ``"finetune"``...), for
        ``fit_time_``.
    details : dict
        What the technique's ``_summarize`` needs besides ``attributes``;
        never set on the estimator.
    """

    net: object
    attributes: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    details: dict = field(default_factory=dict)

    def __post_init__(self):
        wrong = [n for n in self.attributes
                 if n.startswith("_") or not n.endswith("_")]
        if wrong:
            raise ValueError(
                f"fitted attributes are public and end in '_', got {wrong}."
            )


class ConstraintCallback(Callback):
    """Calls ``fn(module)`` after every optimizer step during fine-tuning.

    For constraints that live on the latent weights (e.g. clipping the latent
    weights of a binarized layer to [-1, 1]).
    """

    def __init__(self, fn):
        self.fn = fn

    def on_batch_end(self, net, training=False, **kwargs):
        if training:
            with torch.no_grad():
                self.fn(net.module_)


class BaseCompressor(MetaEstimatorMixin, BaseEstimator):
    """Base class of the network compressors (not used directly).

    Parameters
    ----------
    estimator : skorch NeuralNet or compressor
        The net to compress, or another compressor to chain after.
    finetune_epochs : int, default=3
        Epochs of fine-tuning after compression, with the constraint kept
        exact: passes over the training part of ``X`` (the net's
        ``train_split`` applies). 0 disables fine-tuning; BatchNorm statistics
        are still recalibrated.
    finetune_lr : float or None, default=None
        Peak learning rate of fine-tuning. ``None``: a quarter of the net's
        own ``lr`` (``FINETUNE_LR_FACTOR``; 5e-4 for the zoo's nets, Adam at
        2e-3). Fine-tuning uses the net's own optimizer class, fresh, under a
        linear warm-up over the first 5 % of the steps then a cosine decay
        to 0 over the rest (:func:`scheduled_lr`); the fitted net keeps its
        own ``lr``. BatchNorm statistics are recomputed on up to 2,048
        samples of ``X`` after the compression and again after fine-tuning
        (:func:`recalibrate_batchnorm`).
    prefit : bool, default=False
        Whether ``estimator`` is already fitted (then it is deep-copied, never
        refitted or modified). When this compressor is the inner one of a
        chain, ``Quantizer(Pruner(net, prefit=True))``, the outer fit's copy
        of it keeps ``net`` itself as its ``estimator`` parameter (as
        scikit-learn meta-estimators keep the user's estimator; nothing
        modifies it) instead of one more copy of the net; its fitted
        attributes are copies, as always.
    memory : str, path or joblib.Memory, default=None
        Caches the fitted base estimator, so a grid search over compression
        settings trains the base once per fold.
    random_state : int, RandomState or None, default=None
        Seeds everything the compression does (k-means, random pruning, the
        fine-tuning batches); same value, same compressed weights.
    keep_base : bool, default=False
        Chains only (``estimator`` is a compressor): whether the fitted inner
        compressor, ``base_estimator_``, keeps its own ``base_estimator_``
        (the nets below it, down to the uncompressed one). By default it is
        dropped after the fit, so a chain holds two nets (the inner
        compressor's ``estimator_``, where this fit started, and this one's)
        instead of three or more. The inner
        compressor keeps its other fitted attributes and ``base_skeleton_``,
        the architecture of the uncompressed net without weights (PyTorch's
        meta device), from which the ``speedup`` scorer times the base.
        Plain nets are not affected.

    Attributes
    ----------
    estimator_ : skorch NeuralNet
        The compressed, fine-tuned net.
    base_estimator_ : skorch NeuralNet or compressor
        The fitted base (the inner compressor when chaining); its tensors
        are not the user's (``estimator``'s) and it holds no optimizer
        state or gradients. Deleted, and replaced by ``base_skeleton_``,
        when this compressor is the inner one of a chain fitted with
        ``keep_base=False``.
    original_size_bytes_ : int
        fp32 dense bytes of the uncompressed base net's parameters and buffers.
    size_bytes_ : int
        Bytes of the file :func:`skcompress.save` writes for this compressor
        (measured by encoding the net once in ``fit``; the bytes themselves
        are not kept, ``save`` encodes the unchanged net into the same bytes).
    compression_ratio_ : float
        ``original_size_bytes_ / size_bytes_``.
    report_ : pandas.DataFrame
        Per-layer parameters, nonzeros, bits per weight, stored bytes, MACs.
    fit_time_ : dict
        Seconds spent on ``base``, ``compress`` and ``finetune``.
    """

    _parameter_constraints = {
        "estimator": [HasMethods(["fit", "predict"])],
        "finetune_epochs": [Interval(numbers.Integral, 0, None, closed="left")],
        "finetune_lr": [None, Interval(numbers.Real, 0, None, closed="neither")],
        "prefit": ["boolean"],
        "memory": [None, str, HasMethods(["cache"])],
        "random_state": ["random_state"],
        "keep_base": ["boolean"],
    }

    def __init__(
        self,
        estimator,
        *,
        finetune_epochs=3,
        finetune_lr=None,
        prefit=False,
        memory=None,
        random_state=None,
        keep_base=False,
    ):
        self.estimator = estimator
        self.finetune_epochs = finetune_epochs
        self.finetune_lr = finetune_lr
        self.prefit = prefit
        self.memory = memory
        self.random_state = random_state
        self.keep_base = keep_base

    # ------------------------------------------------------------------ fit
    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y=None):
        """Compress the estimator's net and fine-tune it on ``X, y``.

        Parameters
        ----------
        X : array-like
            Training input the net accepts (e.g. images ``(n, 1, 8, 8)``).
        y : array-like, default=None
            Targets; for a ``NeuralNetClassifier``, integer class indices
            ``0 .. n_classes - 1`` (integral floats are converted).

        Returns
        -------
        self

        Raises
        ------
        ValueError
            ``X`` or ``y`` holds NaN or infinity, or ``y`` holds class labels
            the classifier cannot predict (strings, fractions, negative
            numbers, labels without an output); checked before any training.
        FloatingPointError
            The training loss or the weights became NaN or infinite (the
            message names the step); no fitted attribute is set.
        """
        with worker_threads():
            return self._fit(X, y)

    def _fit(self, X, y):
        """The fit flow of the module docstring, on validated parameters."""
        self._check_estimator_type()
        X, y = self._check_data(X, y)
        self._check_params(X, y)
        seed = check_random_state(self.random_state).randint(np.iinfo(np.int32).max)
        rng = np.random.RandomState(seed)

        start = time.perf_counter()
        base, base_net = self._fit_base(X, y, seed)
        timings = {"base": time.perf_counter() - start}
        self._check_finite_net(base_net, "the base net")
        # Fitted nets hold no optimizer state (Adam's moments are two more
        # copies of the weights; fine-tuning starts a fresh optimizer anyway)
        # and no gradients (one more copy, left by the last training step).
        # base_net is a copy (prefit) or a net fitted here: never the user's.
        _drop_training_state(base_net)
        # A chain keeps the inner compressor's estimator_ (base_net), not
        # the nets below it; base is a copy or a fit of this call's own.
        if is_compressor(base) and not getattr(self, "keep_base", False):
            _drop_base(base)

        net = copy.deepcopy(base_net)
        with _seeded(seed):
            self._check_net_accepts(net, X, y)
            start = time.perf_counter()
            result = self._compress_and_finetune(net, X, y, rng)
            timings.update(result.timings)
            timings["compress_and_finetune"] = time.perf_counter() - start
        result.net.module_.eval()
        self._check_finite_net(result.net, "compression and fine-tuning")
        _drop_training_state(result.net)  # a later partial_fit starts afresh

        fitted = {"base_estimator_": base, "estimator_": result.net}
        if "original_size_bytes_" not in result.attributes:
            fitted["original_size_bytes_"] = int(
                base.original_size_bytes_ if is_compressor(base)
                else _dense_size_bytes(base_net)
            )
        fitted.update(result.attributes)
        # The one place where fitted attributes are set. Should the accounting
        # fail, the estimator is left as it was before fit.
        before = dict(vars(self))
        try:
            vars(self).update(fitted)
            self._account(X)
            vars(self).update(self._summarize(result, X))
            self.fit_time_ = timings
        except BaseException:
            vars(self).clear()
            vars(self).update(before)
            raise
        return self

    def _compress_and_finetune(self, net, X, y, rng):
        """Compress then fine-tune once; iterative techniques override this.

        Returns
        -------
        CompressionResult
        """
        start = time.perf_counter()
        attributes = self._compress(net, X, y, rng)
        compress_time = time.perf_counter() - start
        start = time.perf_counter()
        self._finetune(net, X, y, self.finetune_epochs)
        timings = {"compress": compress_time, "finetune": time.perf_counter() - start}
        return CompressionResult(net, attributes or {}, timings)

    def _compress(self, net, X, y, rng):  # pragma: no cover - abstract
        """Modify ``net.module_`` in place (constraints or new layers).

        Returns
        -------
        dict or None
            The technique's fitted attributes (see :class:`CompressionResult`).
        """
        raise NotImplementedError

    def _summarize(self, result, X):
        """Fitted attributes computed from the accounting (``size_bytes_``,
        ``report_``) and ``result``; none by default."""
        return {}

    def _check_params(self, X, y):
        """Technique-specific checks that need more than the constraints."""

    def _check_data(self, X, y):
        """Fail before any training on input no net can learn from.

        NaN or infinity in a numpy / torch ``X`` or ``y`` is a ``ValueError``;
        for a ``NeuralNetClassifier``, ``y`` must hold integer class indices
        (integral floats are converted, see :func:`_class_indices`).
        """
        owner = type(self).__name__
        _check_finite(X, "X", owner)
        if isinstance(_innermost_estimator(self.estimator), NeuralNetClassifier):
            y = _class_indices(y, owner)
        _check_finite(y, "y", owner)
        return X, y

    def _check_finite_net(self, net, step):
        bad = _non_finite_tensors(net.module_)
        if bad:
            raise FloatingPointError(
                f"{type(self).__name__}: {step} gave NaN or infinite weights in "
                f"{bad[:5]}{' ...' if len(bad) > 5 else ''}; no compressed net "
                "is returned."
            )

    def _finetune_callbacks(self):
        """Extra skorch callbacks for fine-tuning, as ``(name, callback)``."""
        return []

    def _finetune_lr(self, net):
        """The peak fine-tuning learning rate: ``finetune_lr`` when given,
        else ``FINETUNE_LR_FACTOR`` (0.25) times the net's own ``lr``."""
        if self.finetune_lr is not None:
            return float(self.finetune_lr)
        return FINETUNE_LR_FACTOR * float(net.lr)

    def _lr_schedule(self, net, epochs):
        """The callback setting the learning rate during fine-tuning: a
        warm-up and cosine schedule peaking at :meth:`_finetune_lr`."""
        return WarmupCosineLR(self._finetune_lr(net), epochs)

    def _finetune(self, net, X, y, epochs):
        """Recalibrate BatchNorm, fine-tune ``net`` in place for ``epochs``
        with skorch's ``partial_fit``, recalibrate again.

        The net's own optimizer class, fresh (compression replaced or
        re-registered parameters), at the learning rate of
        :meth:`_finetune_lr` under a warm-up and cosine schedule
        (:class:`WarmupCosineLR`); the schedule and the flow's callbacks are
        attached for the fine-tuning only, and the net's ``lr`` is unchanged.
        BatchNorm statistics are recomputed (:func:`recalibrate_batchnorm`)
        after the compression, before fine-tuning (also when ``epochs`` is
        0), and after fine-tuning, for the final weights.
        """
        # A seed drawn from the fit's seeded stream, set after the net's own
        # callbacks have run: the fine-tuning batches follow random_state.
        seed = int(torch.randint(np.iinfo(np.int32).max, ()).item())
        recalibrate_batchnorm(net, X, y, seed=seed)
        if epochs == 0:
            return
        # Compression replaced or re-registered parameters: a fresh optimizer
        # of the net's own class; the schedule sets its learning rate.
        net.initialize_optimizer()
        callbacks = [
            *self._finetune_callbacks(),
            ("lr_schedule", self._lr_schedule(net, epochs)),
            ("finite_loss", FiniteLossCheck(type(self).__name__)),
            ("seed", SeedFinetuning(seed)),
        ]
        extra = []
        for name, callback in callbacks:
            callback.initialize()
            extra.append((f"skcompress_{name}", callback))
        net.callbacks_.extend(extra)
        try:
            net.partial_fit(X, y, epochs=epochs)
        finally:
            for entry in extra:
                net.callbacks_.remove(entry)
        recalibrate_batchnorm(net, X, y, seed=seed + 1)

    def _fit_base(self, X, y, seed):
        """Return ``(base, base_net)``; ``base_net`` must not be modified.

        ``seed`` is the fit's seed, for bases that are drawn rather than
        trained (the Distiller's student).
        """
        estimator = self.estimator
        if self.prefit:
            if is_compressor(estimator):
                check_is_fitted(estimator, "estimator_")
            else:
                estimator.check_is_fitted()
            base = _copy_fitted(estimator)
        else:
            fit = check_memory(self.memory).cache(_fit_clone)
            # fail before training, not after; a cached base was checked already
            if not is_compressor(estimator) and not _in_cache(fit, estimator, X, y):
                self._check_net_accepts(clone(estimator).initialize(), X, y)
            base = fit(estimator, X, y)
        return base, find_net(base)

    def _check_estimator_type(self):
        if not (is_compressor(self.estimator) or isinstance(self.estimator, NeuralNet)):
            raise TypeError(
                f"{type(self).__name__}: estimator must be a skorch NeuralNet "
                "(e.g. NeuralNetClassifier) or an skcompress compressor, got "
                f"{type(self.estimator).__name__}."
            )

    def _check_net_accepts(self, net, X, y=None):
        """Run two samples through the net; wrap its error with our name.

        For a classifier, also check that every label of ``y`` has an output.
        """
        sample = _first_samples(X)
        try:
            out = net.forward(sample, training=False)
        except NotFittedError:
            raise
        except Exception as exc:
            shape = getattr(X, "shape", None)
            raise ValueError(
                f"{type(self).__name__}: the net's module "
                f"{type(net.module_).__name__} cannot process X"
                f"{'' if shape is None else f' of shape {tuple(shape)}'}: {exc}"
            ) from exc
        if (isinstance(net, NeuralNetClassifier) and isinstance(out, torch.Tensor)
                and out.ndim == 2 and isinstance(y, (np.ndarray, torch.Tensor))
                and len(y) and int(y.max()) >= out.shape[1]):
            raise ValueError(
                f"{type(self).__name__}: y holds class label {int(y.max())}, but "
                f"the net has {out.shape[1]} outputs; class labels must be "
                f"0 .. {out.shape[1] - 1}."
            )

    def _account(self, X):
        # One encoding per fit (docs/format.md): the file's size and the
        # per-layer stored bytes of report_ both come from it. The file's
        # bytes are not kept (up to one more fp32 copy of the net when it
        # compresses little): save() encodes the same net into the same
        # bytes again, size_bytes_ of them.
        from ..accounting import model_report
        from ..io import encode_net

        self.encoded_ = encode_net(self)  # what model_report reads
        try:
            self.size_bytes_ = self.encoded_.size_bytes
            self.compression_ratio_ = self.original_size_bytes_ / self.size_bytes_
            self.report_ = model_report(self, input_shape=_input_shape(X))
        finally:
            del self.encoded_

    # ---------------------------------------------------------- delegation
    @available_if(_estimator_has("predict"))
    def predict(self, X):
        """Predict with the compressed net."""
        check_is_fitted(self, "estimator_")
        return self.estimator_.predict(X)

    @available_if(_estimator_has("predict_proba"))
    def predict_proba(self, X):
        """Class probabilities of the compressed net."""
        check_is_fitted(self, "estimator_")
        return self.estimator_.predict_proba(X)

    @available_if(_estimator_has("score"))
    def score(self, X, y, sample_weight=None):
        """The compressed net's score (accuracy for classifiers, R^2 else)."""
        check_is_fitted(self, "estimator_")
        return self.estimator_.score(X, y, sample_weight=sample_weight)

    def transform(self, X):
        """Raw outputs of the compressed net's module, as a numpy array."""
        check_is_fitted(self, "estimator_")
        with torch.no_grad():
            out = self.estimator_.forward(X, training=False, device="cpu")
        return out.numpy()

    @property
    def classes_(self):
        check_is_fitted(self, "estimator_")
        return self.estimator_.classes_

    def _prefit_params(self):
        """Parameters holding fitted estimators that ``clone`` must keep.

        A prefit estimator only makes sense fitted, so cloning deep-copies it
        (fitted, and independent of the user's object, which
        ``set_params(estimator__...)`` on the clone must not reach) instead of
        returning an unfitted copy. This is what lets
        ``GridSearchCV(Pruner(fitted_net, prefit=True), ...)`` and
        ``Quantizer(Pruner(fitted_net, prefit=True))`` work.
        """
        return ("estimator",) if self.prefit else ()

    def __sklearn_clone__(self):
        keep = set(self._prefit_params())
        params = {
            name: copy.deepcopy(value) if name in keep else clone(value, safe=False)
            for name, value in self.get_params(deep=False).items()
        }
        return type(self)(**params)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        try:
            from sklearn.utils import get_tags

            inner = get_tags(self.estimator)
            tags.estimator_type = inner.estimator_type
            tags.classifier_tags = inner.classifier_tags
            tags.regressor_tags = inner.regressor_tags
        except Exception:  # pragma: no cover - tags are advisory
            pass
        tags.input_tags.three_d_array = True
        return tags


def _drop_training_state(net):
    """Empty the state (e.g. Adam's moments) of every optimizer of ``net``
    and drop the gradients its module's parameters were left with."""
    for optimizer in _optimizers(net):
        optimizer.state.clear()
    net.module_.zero_grad(set_to_none=True)


def _drop_base(compressor):
    """``keep_base=False``: the fitted inner compressor of a chain loses its
    ``base_estimator_`` (and what hangs below it); ``base_skeleton_``, the
    uncompressed module on PyTorch's meta device, records the base's
    architecture.
    """
    if "base_estimator_" not in vars(compressor):
        return
    compressor.base_skeleton_ = _base_skeleton(compressor)
    del compressor.base_estimator_


def _base_skeleton(compressor):
    """The uncompressed module at the bottom of ``compressor``'s chain,
    moved to the meta device (no storage; the chain's own objects only)."""
    base = compressor.base_estimator_
    while is_compressor(base) and "base_estimator_" in vars(base):
        base = base.base_estimator_
    if is_compressor(base):
        return base.base_skeleton_
    module = find_net(base).module_
    return module.to("meta")  # dropped with its net right after


def _innermost_estimator(estimator):
    """The estimator at the end of a chain's ``estimator`` parameters."""
    for _ in range(64):  # deeper is a cycle, not a chain
        if not is_compressor(estimator):
            break
        estimator = estimator.estimator
    return estimator


def _dense_size_bytes(net):
    from ..accounting import dense_size_bytes

    return dense_size_bytes(net)
