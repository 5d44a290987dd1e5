"""The registry of techniques, proved with a toy technique added the way
docs/design.md ("Adding a technique") says: one class, one registry entry."""

import numbers

import pytest
import torch
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV
from sklearn.utils._param_validation import Interval
from torch import nn

import skcompress
from skcompress.compression import BaseCompressor, _registry
from skcompress.compression._constraints import (
    add_constraint,
    latent_weight,
    select_layers,
)
from skcompress.io import dumps


# ----------------------------------------------- the whole toy technique
class Scale(nn.Module):
    """Constraint: the effective weight is ``factor * w``."""

    def __init__(self, factor):
        super().__init__()
        self.factor = factor

    def forward(self, weight):
        return self.factor * weight


class Halver(BaseCompressor):
    """Scale the weights of the chosen layers by ``factor``, then fine-tune."""

    _parameter_constraints = {
        **BaseCompressor._parameter_constraints,
        "factor": [Interval(numbers.Real, 0, None, closed="neither")],
    }

    def __init__(self, estimator, *, factor=0.5, finetune_epochs=1,
                 finetune_lr=None, prefit=False, memory=None, random_state=None):
        super().__init__(estimator, finetune_epochs=finetune_epochs,
                         finetune_lr=finetune_lr, prefit=prefit, memory=memory,
                         random_state=random_state)
        self.factor = factor

    def _compress(self, net, X, y, rng):
        chosen = select_layers(net.module_)
        for _, layer in chosen:
            add_constraint(layer, Scale(self.factor))
        return {"layers_": [name for name, _ in chosen]}


HALF = _registry.Setting("factor=0.5", {"factor": 0.5})
HALVE = _registry.Technique("halve", "Halver", __name__, cli_name="halver",
                            grid=(HALF,), quick_grid=(HALF,))
# -------------------------------------------------------------------------


@pytest.fixture
def registered():
    _registry.register(HALVE)
    yield HALVE
    _registry.unregister(HALVE.name)
    for module in (skcompress, skcompress.compression):
        vars(module).pop("Halver", None)  # the lazy imports' cache


def test_the_toy_fits_clones_and_grid_searches(fitted_net, data):
    halver = Halver(fitted_net, prefit=True, random_state=0).fit(*data)
    assert halver.layers_ == ["conv1", "conv2", "fc1"]
    fc1 = halver.estimator_.module_.fc1
    assert torch.equal(fc1.weight, 0.5 * latent_weight(fc1))
    assert halver.size_bytes_ == len(dumps(halver))
    assert set(halver.fit_time_) >= {"base", "compress", "finetune"}
    twin = clone(halver)
    assert twin.get_params()["factor"] == 0.5 and not hasattr(twin, "layers_")
    assert twin.estimator.initialized_  # a prefit estimator stays fitted
    search = GridSearchCV(halver, {"factor": [0.5, 1.0]}, cv=2).fit(*data)
    assert search.best_params_["factor"] in (0.5, 1.0)
    assert not any(p.startswith("parametrizations") for p, _ in
                   fitted_net.module_.named_parameters())


def test_registering_puts_it_in_imports_cli_and_demo(registered, fitted_net, data):
    from skcompress.cli import _compressor_class, _demo_techniques, build_parser
    from skcompress.demo import _fit_candidate, candidates

    assert skcompress.Halver is Halver and skcompress.compression.Halver is Halver
    args = build_parser().parse_args(["compress", "--model", "net.skc", "--technique",
                                      "halver", "--output", "half.skc"])
    assert _compressor_class(args.technique) is Halver
    assert _demo_techniques()[-1] == "halve"
    [candidate] = [c for c in candidates(quick=True) if c.technique == "halve"]
    fitted = _fit_candidate(candidate, fitted_net, *data, 0, {})
    assert isinstance(fitted, Halver) and fitted.factor == 0.5


def test_registry_refuses_clashes(registered):
    with pytest.raises(ValueError, match="'halve' is registered"):
        _registry.register(HALVE)
    with pytest.raises(ValueError, match="cli_name 'pruner'"):
        _registry.register(_registry.Technique("x", "X", "m", cli_name="pruner"))
    with pytest.raises(ValueError, match="inner technique 'nope'"):
        _registry.register(_registry.Technique("x", "X", "m", inner="nope"))
    with pytest.raises(KeyError, match="no technique 'nope'"):
        _registry.get("nope")


def test_built_in_techniques():
    names = [t.name for t in _registry.techniques()]
    assert names == ["low-rank", "prune weight", "prune filter", "quantize",
                     "binarize", "prune+quantize", "distill", "compact",
                     "variational"]
    assert sorted(_registry.cli_names()) == ["binarizer", "lowrank", "pruner",
                                             "quantizer", "variational"]
    for technique in _registry.techniques():
        cls = technique.load()
        assert issubclass(cls, BaseCompressor)
        assert getattr(skcompress, technique.class_name) is cls
