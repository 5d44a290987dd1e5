"""Every compressor over tiny versions of the zoo's real architectures.

A CIFAR ResNet (residual sums, strided shortcuts, BatchNorm) and a MobileNetV2
(depthwise convolutions, inverted residuals) at tiny widths on the 8x8
digits: each compressor must fit, empty no layer, and give a file that loads
back to the same predictions and whose length is ``size_bytes_``.
"""

import numpy as np
import pytest
import torch
from torch import nn

from skcompress.compression import (
    Binarizer,
    Compactor,
    Distiller,
    LowRankCompressor,
    Pruner,
    Quantizer,
)
from skcompress.io import dumps, loads
from skcompress.models import make_digits_net, make_mobilenet_net, make_resnet_net

N_TRAIN = 64
COMMON = dict(prefit=True, finetune_epochs=1, random_state=0)


def _student():
    return make_digits_net(max_epochs=1, module__channels=(4, 8), module__hidden=16)


COMPRESSORS = {
    "pruner-weight": lambda net: Pruner(net, sparsity=0.9, **COMMON),
    "pruner-filter": lambda net: Pruner(net, sparsity=0.5, granularity="filter",
                                        **COMMON),
    "lowrank": lambda net: LowRankCompressor(net, rank=0.5, **COMMON),
    "quantizer-kmeans": lambda net: Quantizer(net, bits=4, **COMMON),
    "quantizer-uniform": lambda net: Quantizer(net, bits=4, method="uniform",
                                               **COMMON),
    "binarizer": lambda net: Binarizer(net, **COMMON),
    "distiller": lambda net: Distiller(_student(), teacher=net, finetune_epochs=1,
                                       random_state=0),
    "compactor": lambda net: Compactor(net, **COMMON),
}

ARCHS = {
    "resnet8": lambda: make_resnet_net(8, module__width=4, module__in_channels=1,
                                       max_epochs=1),
    "mobilenetv2": lambda: make_mobilenet_net(module__width_mult=0.1,
                                              module__in_channels=1, max_epochs=1),
}


@pytest.fixture(scope="module")
def digits(data):
    X, y = data
    return X[:N_TRAIN], y[:N_TRAIN]


@pytest.fixture(scope="module", params=sorted(ARCHS))
def base(request, digits):
    torch.manual_seed(0)
    return request.param, ARCHS[request.param]().fit(*digits)


def _layers(module):
    return [(name, sub) for name, sub in module.named_modules()
            if isinstance(sub, (nn.Conv2d, nn.Linear))]


KNOWN_FAILURES = {
    ("mobilenetv2", "compactor"): (
        "Compactor makes dense 3x3 convolutions depthwise-separable; "
        "MobileNetV2 has none (its 3x3 convs are depthwise already and the "
        "stem has one input channel), so the fit raises ValueError"
    ),
}


@pytest.mark.parametrize("technique", sorted(COMPRESSORS))
def test_every_compressor_on_the_zoo(base, digits, technique, request):
    arch, net = base
    X, y = digits
    reason = KNOWN_FAILURES.get((arch, technique))
    if reason:
        request.applymarker(pytest.mark.xfail(strict=True, raises=ValueError,
                                              reason=reason))
    fitted = COMPRESSORS[technique](net).fit(X, y)

    emptied = [name for name, layer in _layers(fitted.estimator_.module_)
               if not layer.weight.detach().any()]
    assert emptied == [], f"{technique} emptied {emptied} of {arch}"

    data = dumps(fitted)
    assert fitted.size_bytes_ == len(data)
    loaded = loads(data)
    np.testing.assert_array_equal(loaded.predict(X), fitted.predict(X))
    np.testing.assert_allclose(loaded.predict_proba(X), fitted.predict_proba(X),
                               rtol=1e-5, atol=1e-6)
