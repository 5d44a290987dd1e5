"""The registry of network-compression techniques.

One :class:`Technique` entry per technique as users see it: its name in the
demo's table (``skcompress demo --techniques``), the compressor class (imported
on first use), its name on the command line (``skcompress compress
--technique``) and the settings the demo tries. The lazy imports of
:mod:`skcompress` and :mod:`skcompress.compression`, the command line and the
demo all read this registry: adding a technique is one module in this package
plus one :func:`register` call here (docs/design.md, "Adding a technique").

This module imports nothing heavy, so that ``import skcompress`` (which reads
it) stays free of torch.

Examples
--------
>>> from skcompress.compression._registry import get, techniques
>>> [t.name for t in techniques()][:3]
['low-rank', 'prune weight', 'prune filter']
>>> get("prune weight").class_name, get("prune weight").cli_name
('Pruner', 'pruner')
"""

import importlib
from dataclasses import dataclass

__all__ = [
    "Setting",
    "Technique",
    "classes",
    "cli_names",
    "get",
    "register",
    "techniques",
    "unregister",
]


@dataclass(frozen=True)
class Setting:
    """One row of the demo's table: its label and the compressor's parameters.

    Parameters
    ----------
    label : str
        The ``setting`` column (``"sparsity=0.9"``).
    params : dict
        Keyword arguments of the compressor (the demo adds ``prefit`` and
        ``random_state``).
    inner : str, optional
        Chains only: the label of the row of the inner technique this
        compressor is fitted on.
    """

    label: str
    params: dict
    inner: "str | None" = None


@dataclass(frozen=True)
class Technique:
    """A compression technique, as the command line and the demo offer it.

    Parameters
    ----------
    name : str
        Unique; the ``technique`` column of the demo's table.
    class_name : str
        The compressor class, exported by :mod:`skcompress` and
        :mod:`skcompress.compression` under this name.
    module : str
        The module defining the class (imported on first use).
    cli_name : str, optional
        Its name for ``skcompress compress --technique``; ``None`` when it is
        not offered there (one name per class; the Distiller needs a
        teacher).
    grid, quick_grid : tuple of Setting
        The demo's settings, in table order, for a full and a ``--quick``
        run; empty: not in the demo.
    inner : str, optional
        The name of a technique each setting is chained after:
        ``Setting.inner`` names its row (``prune+quantize`` quantizes the
        fitted ``prune weight`` row of the same sparsity).
    base_as_teacher : bool, default=False
        The demo's base net is the teacher, and ``params["student"]`` holds
        the :func:`skcompress.models.make_digits_net` arguments of a fresh
        student (the Distiller).
    """

    name: str
    class_name: str
    module: str
    cli_name: "str | None" = None
    grid: tuple = ()
    quick_grid: tuple = ()
    inner: "str | None" = None
    base_as_teacher: bool = False

    def load(self):
        """The compressor class (imports its module)."""
        return getattr(importlib.import_module(self.module), self.class_name)

    def settings(self, quick=False):
        """The demo's settings: ``quick_grid`` or ``grid``."""
        return self.quick_grid if quick else self.grid


_TECHNIQUES = {}


def register(technique):
    """Add ``technique`` at the end of the registry and return it.

    Raises
    ------
    ValueError
        Its name is taken, its ``cli_name`` is taken by another class, its
        class name by another module, or its ``inner`` technique is not
        registered.
    """
    if technique.name in _TECHNIQUES:
        raise ValueError(f"a technique named {technique.name!r} is registered.")
    for other in _TECHNIQUES.values():
        if technique.cli_name is not None and other.cli_name == technique.cli_name:
            raise ValueError(
                f"cli_name {technique.cli_name!r} is taken by {other.name!r}."
            )
        if (other.class_name == technique.class_name
                and other.module != technique.module):
            raise ValueError(
                f"class name {technique.class_name!r} is taken by {other.module}."
            )
    if technique.inner is not None and technique.inner not in _TECHNIQUES:
        raise ValueError(f"inner technique {technique.inner!r} is not registered.")
    _TECHNIQUES[technique.name] = technique
    return technique


def unregister(name):
    """Remove the technique called ``name`` (tests register toy ones)."""
    del _TECHNIQUES[name]


def techniques():
    """Every registered technique, in registration (= demo table) order."""
    return tuple(_TECHNIQUES.values())


def get(name):
    """The technique called ``name``; ``KeyError`` naming the known ones."""
    try:
        return _TECHNIQUES[name]
    except KeyError:
        raise KeyError(
            f"no technique {name!r}; registered: {list(_TECHNIQUES)}."
        ) from None


def classes():
    """``{class_name: module}`` of every registered compressor class."""
    return {t.class_name: t.module for t in _TECHNIQUES.values()}


def cli_names():
    """``{cli_name: technique}`` for ``skcompress compress --technique``."""
    return {t.cli_name: t for t in _TECHNIQUES.values() if t.cli_name is not None}


# ------------------------------------------------------------- built-ins
# The demo's settings, tuned in benchmarks/bench_compress.py and
# benchmarks/bench_quantize.py.
WEIGHT_PRUNING = dict(granularity="weight", n_steps=3, finetune_epochs=3,
                      finetune_lr=5e-4)
FILTER_PRUNING = dict(granularity="filter", scope="layer", criterion="l2", n_steps=2,
                      finetune_epochs=4, finetune_lr=1e-3)
LOW_RANK = dict(method="tucker", finetune_epochs=4, finetune_lr=1e-3)
QUANTIZE = dict(finetune_epochs=1, finetune_lr=5e-4)
CHAIN_QUANTIZE = dict(finetune_epochs=2, finetune_lr=5e-4)
BINARIZE = dict(finetune_epochs=3, finetune_lr=1e-3)
DISTILL = dict(temperature=4.0, alpha=0.9)
STUDENT_EPOCHS = 30
QUICK_STUDENT_EPOCHS = 8

_PACKAGE = "skcompress.compression"


def _rank(rank):
    return Setting(f"tucker rank={rank}", dict(rank=rank, **LOW_RANK))


def _sparsity(sparsity, preset):
    return Setting(f"sparsity={sparsity}", dict(sparsity=sparsity, **preset))


def _bits(bits, method="kmeans"):
    return Setting(f"{method} bits={bits}", dict(bits=bits, method=method, **QUANTIZE))


def _chain(sparsity, bits):
    return Setting(f"sparsity={sparsity} bits={bits}",
                   dict(bits=bits, **CHAIN_QUANTIZE), inner=f"sparsity={sparsity}")


def _student(arch, epochs):
    return Setting(f"student={arch}",
                   dict(student=dict(arch=arch, max_epochs=epochs), **DISTILL))


register(Technique(
    "low-rank", "LowRankCompressor", f"{_PACKAGE}._lowrank", cli_name="lowrank",
    grid=tuple(_rank(r) for r in (0.1, 0.25, 0.5)),
    quick_grid=(_rank(0.25),),
))
register(Technique(
    "prune weight", "Pruner", f"{_PACKAGE}._pruning", cli_name="pruner",
    grid=tuple(_sparsity(s, WEIGHT_PRUNING) for s in (0.8, 0.9, 0.95)),
    quick_grid=(_sparsity(0.9, WEIGHT_PRUNING),),
))
register(Technique(
    "prune filter", "Pruner", f"{_PACKAGE}._pruning",
    grid=tuple(_sparsity(s, FILTER_PRUNING) for s in (0.3, 0.5, 0.7)),
    quick_grid=(_sparsity(0.5, FILTER_PRUNING),),
))
register(Technique(
    "quantize", "Quantizer", f"{_PACKAGE}._quantization", cli_name="quantizer",
    grid=(*(_bits(b) for b in (2, 4, 8)), *(_bits(b, "uniform") for b in (4, 8))),
    quick_grid=(_bits(4),),
))
register(Technique(
    "binarize", "Binarizer", f"{_PACKAGE}._binarization", cli_name="binarizer",
    grid=(Setting("scale", dict(BINARIZE)),),
    quick_grid=(Setting("scale", dict(BINARIZE)),),
))
register(Technique(
    "prune+quantize", "Quantizer", f"{_PACKAGE}._quantization",
    inner="prune weight",
    grid=tuple(_chain(s, b) for s in (0.9, 0.95) for b in (3, 4)),
    quick_grid=(_chain(0.9, 4),),
))
register(Technique(
    "distill", "Distiller", f"{_PACKAGE}._distillation", base_as_teacher=True,
    grid=(_student("squeeze", STUDENT_EPOCHS), _student("mobile", STUDENT_EPOCHS)),
    quick_grid=(_student("squeeze", QUICK_STUDENT_EPOCHS),),
))
register(Technique("compact", "Compactor", f"{_PACKAGE}._compaction"))

# Learned sparsity (sparse variational dropout): strength scales the KL term;
# on LeNet-5 / MNIST-5k (benchmarks/bench_mnist.py) 0.1-0.3 keep the accuracy.
VARIATIONAL = dict(finetune_epochs=6, finetune_lr=1e-3)
QUICK_VARIATIONAL = dict(finetune_epochs=2, finetune_lr=1e-3)


def _strength(strength, preset):
    return Setting(f"strength={strength}", dict(strength=strength, **preset))


register(Technique(
    "variational", "VariationalPruner", f"{_PACKAGE}._variational",
    cli_name="variational",
    grid=tuple(_strength(s, VARIATIONAL) for s in (0.1, 0.3, 1)),
    quick_grid=(_strength(0.3, QUICK_VARIATIONAL),),
))
