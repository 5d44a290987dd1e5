"""Base files for the crafted-file tests: a tiny fitted digits net, and that
net pruned + k-means quantized (sparse tensors with codebook values) and
uniformly quantized; each as the bytes ``dumps`` writes."""

import copy
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from skcompress.datasets import load_digits_images
from skcompress.io import container, dumps, find_net
from skcompress.models import make_digits_net


@dataclass(frozen=True)
class Base:
    name: str
    data: bytes
    proba: np.ndarray  # predict_proba of the saved net on X_small

    @property
    def header(self):
        return copy.deepcopy(container.unpack(self.data)[0])

    @property
    def blob(self):
        return bytes(container.unpack(self.data)[1])


def _compress(net, kind, X, y):
    from skcompress.compression import Pruner, Quantizer

    if kind == "big_sparse":
        compressor = Pruner(net, sparsity=0.9, prefit=True, finetune_epochs=0)
    elif kind == "pruned_kmeans":
        compressor = Quantizer(Pruner(net, sparsity=0.8, prefit=True,
                                      finetune_epochs=0), bits=3, finetune_epochs=0)
    else:
        compressor = Quantizer(net, bits=4, method="uniform", prefit=True,
                               finetune_epochs=0)
    return compressor.fit(X, y)


@pytest.fixture(scope="session")
def digits():
    X, y = load_digits_images()
    return X[:64], y[:64]


@pytest.fixture(scope="session")
def X_small(digits):
    return digits[0][:8]


@pytest.fixture(scope="session")
def bases(digits, X_small):
    """``{name: Base}``: ``dense``; ``pruned_kmeans`` (Pruner 0.8 then 3-bit
    k-means: sparse tensors, codebook values); ``uniform`` (4-bit uniform);
    ``big_sparse`` (hidden=512, Pruner 0.9: an fc1 of 512 x 1024 whose
    positions take the byte models for large tensors, ``bitmap`` or
    ``gaps``)."""
    torch.set_num_threads(1)  # the cases run in forked children
    X, y = digits
    net = make_digits_net(max_epochs=1, module__hidden=8).fit(X, y)
    out = {"dense": Base("dense", dumps(net), net.predict_proba(X_small))}
    for kind in ("pruned_kmeans", "uniform"):
        fitted = _compress(net, kind, X, y)
        data = dumps(fitted)
        out[kind] = Base(kind, data, find_net(fitted).predict_proba(X_small))
    big = make_digits_net(max_epochs=1, module__hidden=512).fit(X, y)
    fitted = _compress(big, "big_sparse", X, y)
    out["big_sparse"] = Base("big_sparse", dumps(fitted),
                             find_net(fitted).predict_proba(X_small))
    encodings = {name: {e["name"]: e.get("enc") for e in base.header["tensors"]}
                 for name, base in out.items()}
    assert encodings["pruned_kmeans"]["fc1.weight"] == "sparse"
    fc1 = next(e for e in out["pruned_kmeans"].header["tensors"]
               if e["name"] == "fc1.weight")
    assert fc1["meta"]["values"]["enc"] == "codebook"
    assert encodings["uniform"]["fc1.weight"] == "uniform"
    assert encodings["big_sparse"]["fc1.weight"] == "sparse"
    return out


@pytest.fixture(scope="session")
def dense(bases):
    return bases["dense"]


@pytest.fixture(scope="session")
def sparse(bases):
    return bases["pruned_kmeans"]


@pytest.fixture(scope="session")
def uniform(bases):
    return bases["uniform"]
