"""A Pruner over a user-defined module: the file names the class, ``load``
refuses it until the caller passes it in ``trusted=[...]`` (issue 10, "Done
when")."""

import numpy as np
import pytest
import torch
from skorch import NeuralNetClassifier
from torch import nn

from skcompress.compression import Pruner
from skcompress.io import FormatError, dumps, find_net, load, loads, save

from .helpers import pack, unpack


class MyNet(nn.Module):
    """A user's own module: plain constructor arguments."""

    def __init__(self, hidden=16, n_classes=4):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc1 = nn.Linear(4 * 8 * 8, hidden)
        self.fc2 = nn.Linear(hidden, n_classes)

    def forward(self, X):
        X = torch.relu(self.conv(X)).flatten(1)
        return self.fc2(torch.relu(self.fc1(X)))


class MyNetRecorded(nn.Module):
    """A user's module that records its kwargs in ``_init_kwargs``."""

    def __init__(self, sizes=(16, 4)):
        super().__init__()
        self._init_kwargs = {"sizes": list(sizes)}
        self.fc1 = nn.Linear(64, sizes[0])
        self.fc2 = nn.Linear(sizes[0], sizes[1])

    def forward(self, X):
        return self.fc2(torch.relu(self.fc1(X.flatten(1))))


class Impostor(nn.Module):
    """Another trusted class of the same name elsewhere does not stand in."""

    def __init__(self, hidden=16, n_classes=4):
        super().__init__()


Impostor.__qualname__ = "MyNet"  # same name, another module path
Impostor.__module__ = "somewhere.else"


@pytest.fixture(scope="module")
def random_data():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 4, 64)
    return X, y


@pytest.fixture(scope="module", params=[MyNet, MyNetRecorded])
def pruned(request, random_data):
    torch.manual_seed(0)
    net = NeuralNetClassifier(request.param, max_epochs=1, lr=0.01, batch_size=32,
                              train_split=None, verbose=0)
    net.fit(*random_data)
    return request.param, Pruner(net, sparsity=0.8, prefit=True,
                                 finetune_epochs=0).fit(*random_data)


def test_user_module_needs_trusted(pruned, random_data, tmp_path):
    cls, pruner = pruned
    X = random_data[0]
    path = tmp_path / "mine.skc"
    n_bytes = save(pruner, path)
    assert n_bytes == path.stat().st_size == len(dumps(pruner))
    header, _ = unpack(path.read_bytes())
    assert header["module"]["class"] == f"{cls.__module__}:{cls.__qualname__}"
    assert any(e.get("enc") == "sparse" for e in header["tensors"])

    with pytest.raises(FormatError) as info:
        load(path)
    message = str(info.value)
    assert cls.__name__ in message
    assert f"trusted=[{cls.__name__}]" in message

    for wrong in ([], [Impostor], [nn.Linear], [MyNet if cls is not MyNet else
                                                 MyNetRecorded]):
        with pytest.raises(FormatError, match=cls.__name__):
            load(path, trusted=wrong)

    loaded = load(path, trusted=[cls])
    expected = find_net(pruner).predict_proba(X)
    np.testing.assert_array_equal(loaded.predict_proba(X), expected)
    np.testing.assert_array_equal(loaded.predict(X), find_net(pruner).predict(X))
    assert type(loaded.module_) is cls
    assert loaded.module is cls
    # pruned weights are exact zeros after the round trip
    before = find_net(pruner).module_.fc1.weight.detach()
    after = loaded.module_.fc1.weight.detach()
    assert torch.equal(before == 0, after == 0)
    # and the loaded net saves again (its own file also needs trusted)
    again = dumps(loaded)
    with pytest.raises(FormatError, match=cls.__name__):
        loads(again)
    np.testing.assert_array_equal(loads(again, trusted=[cls]).predict_proba(X),
                                  expected)


def test_trusted_must_hold_classes(pruned, random_data):
    cls, pruner = pruned
    data = dumps(pruner)
    with pytest.raises(TypeError, match="trusted"):
        loads(data, trusted=["tests.io.test_trusted:MyNet"])
    with pytest.raises(TypeError, match="trusted"):
        loads(data, trusted=[cls()])


def test_trusted_class_is_not_a_license_for_other_classes(pruned, random_data):
    """Trusting MyNet does not let a file name any other class."""
    cls, pruner = pruned
    header, blob = unpack(dumps(pruner))
    header["module"]["children"] = [["fc1", {"class": "os:system"}]]
    with pytest.raises(FormatError, match="os:system"):
        loads(pack(header, blob), trusted=[cls])
