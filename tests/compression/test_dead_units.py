import io

import pytest
import torch
from torch import nn

import skcompress
from skcompress.compression import (
    Pruner,
    Quantizer,
    VariationalPruner,
    prune_dead_units,
)
from skcompress.compression._constraints import Mask, add_constraint, constraints_of
from skcompress.io import encode_tensors


class ConvChain(nn.Module):
    """conv - relu - pool - conv - relu - flatten - fc - relu - fc, 8x8 input."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.act1 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1)
        self.act2 = nn.ReLU()
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(6 * 16, 10)
        self.act3 = nn.ReLU()
        self.fc2 = nn.Linear(10, 3)

    def forward(self, X):
        X = self.pool(self.act1(self.conv1(X)))
        X = self.flatten(self.act2(self.conv2(X)))
        return self.fc2(self.act3(self.fc1(X)))


class Residual(nn.Module):
    """A residual sum: conv2's channels also reach the head through ``+ x``."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.conv3 = nn.Conv2d(4, 4, 3, padding=1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(4 * 64, 3)

    def forward(self, X):
        x = torch.relu(self.conv1(X))
        x = torch.relu(self.conv2(x)) + x
        return self.fc(self.flatten(torch.relu(self.conv3(x))))


def masked_chain():
    """``ConvChain`` with: fc1 units 2 and 7 unread by fc2; conv2 channel 1
    unread by fc1 (its 16 columns); conv2 channel 4 read only by fc1 unit 7
    (dead once unit 7 is); conv1 channel 3 read only by conv2 channels 1
    and 4 (dead once they are)."""
    torch.manual_seed(0)
    net = ConvChain()
    fc2 = torch.ones_like(net.fc2.weight, dtype=torch.bool)
    fc2[:, [2, 7]] = False
    fc1 = torch.ones_like(net.fc1.weight, dtype=torch.bool)
    fc1[:, 16:32] = False
    fc1[:, 64:80] = False
    fc1[7, 64:80] = True
    conv2 = torch.ones_like(net.conv2.weight, dtype=torch.bool)
    conv2[:, 3] = False
    conv2[[1, 4], 3] = True
    add_constraint(net.fc2, Mask(fc2))
    add_constraint(net.fc1, Mask(fc1))
    add_constraint(net.conv2, Mask(conv2))
    return net


def stored_bytes(module):
    return int(encode_tensors(module)["stored_bytes"].sum())


def test_outputs_exactly_equal_and_file_smaller():
    net = masked_chain()
    X = torch.randn(64, 1, 8, 8)
    with torch.no_grad():
        before = net(X)
    size_before = stored_bytes(net)
    removed = prune_dead_units(net, X[:2])
    assert removed == {"fc1": 2, "conv2": 2, "conv1": 1}
    with torch.no_grad():
        assert torch.equal(net(X), before)
    # rows and biases of the dead units are zero, the others untouched
    for name, dead in (("fc1", [2, 7]), ("conv2", [1, 4]), ("conv1", [3])):
        layer = net.get_submodule(name)
        alive = [i for i in range(layer.weight.shape[0]) if i not in dead]
        assert layer.weight[dead].count_nonzero() == 0
        assert layer.bias[dead].count_nonzero() == 0
        assert layer.bias[alive].count_nonzero() == len(alive)
    # the fc1 mask was tightened in place; conv1 had none and gets one
    assert len(constraints_of(net.fc1)) == 1
    assert [type(c) for c in constraints_of(net.conv1)] == [Mask]
    assert stored_bytes(net) < size_before
    # nothing is left to remove
    assert prune_dead_units(net, X[:2]) == {}


def test_residual_sum_and_output_layer_are_left_alone():
    torch.manual_seed(0)
    net = Residual()
    keep = torch.ones_like(net.conv3.weight, dtype=torch.bool)
    keep[:, 0] = False  # conv2's channel 0 still reaches fc through "+ x"
    add_constraint(net.conv3, Mask(keep))
    fc = torch.ones_like(net.fc.weight, dtype=torch.bool)
    fc[0] = False  # an output unit without weights is still an output
    add_constraint(net.fc, Mask(fc))
    X = torch.randn(16, 1, 8, 8)
    with torch.no_grad():
        before = net(X)
    assert prune_dead_units(net, X[:2]) == {}
    assert net.conv2.bias.count_nonzero() == 4
    with torch.no_grad():
        assert torch.equal(net(X), before)


@pytest.fixture(scope="module")
def pair(fitted_net, data):
    params = dict(strength=1.0, threshold=-5.5, finetune_epochs=2, prefit=True,
                  random_state=0)
    on = VariationalPruner(fitted_net, **params).fit(*data)
    off = VariationalPruner(fitted_net, prune_dead_units=False, **params).fit(*data)
    return on, off


def test_variational_pruner_masks_dead_units(pair, data):
    on, off = pair
    assert on.dead_units_ and off.dead_units_ == {}
    X = data[0][:100]
    # the same training, the same outputs, bit for bit; a smaller file
    assert torch.equal(on.estimator_.forward(X), off.estimator_.forward(X))
    assert on.size_bytes_ < off.size_bytes_
    assert on.sparsity_ > off.sparsity_
    assert (on.layer_report_["dead_units"].sum()
            == sum(v for k, v in on.dead_units_.items() if k in on.layer_report_.index))
    buffer = io.BytesIO()
    assert skcompress.save(on, buffer) == on.size_bytes_
    loaded = skcompress.load(io.BytesIO(buffer.getvalue()))
    assert torch.equal(loaded.forward(X), on.estimator_.forward(X))


def test_prune_dead_units_is_validated(fitted_net, data):
    vp = VariationalPruner(fitted_net, prefit=True, prune_dead_units="yes")
    with pytest.raises((ValueError, TypeError), match="prune_dead_units"):
        vp.fit(*data)
    assert not hasattr(vp, "estimator_")


def test_chained_quantizer_keeps_dead_units_at_zero(pair, data):
    on, _ = pair
    chain = Quantizer(on, bits=3, bias_bits=16, finetune_epochs=1, prefit=True,
                      random_state=0).fit(*data)
    for name, count in on.dead_units_.items():
        before = on.estimator_.module_.get_submodule(name)
        after = chain.estimator_.module_.get_submodule(name)
        dead = before.bias == 0
        assert int(dead.sum()) >= count
        assert after.bias[dead].count_nonzero() == 0
        assert after.weight[dead].count_nonzero() == 0
    data_bytes = skcompress.io.dumps(chain)
    assert len(data_bytes) == chain.size_bytes_
    X = data[0][:100]
    assert torch.equal(skcompress.io.loads(data_bytes).forward(X),
                       chain.estimator_.forward(X))


def test_pruner_prune_dead_units(fitted_net, data):
    params = dict(sparsity=0.97, finetune_epochs=1, prefit=True, random_state=0)
    off = Pruner(fitted_net, **params).fit(*data)
    on = Pruner(fitted_net, prune_dead_units=True, **params).fit(*data)
    assert off.dead_units_ == {} and on.dead_units_
    X = data[0][:100]
    assert torch.equal(on.estimator_.forward(X), off.estimator_.forward(X))
    assert on.size_bytes_ < off.size_bytes_
    assert on.sparsity_ > off.sparsity_ == pytest.approx(0.97, abs=1e-3)


def test_untraceable_module_warns_and_masks_nothing(monkeypatch):
    from skcompress.compression import _dead_units

    def fail(module, example_input):
        raise RuntimeError("cannot trace")

    monkeypatch.setattr(_dead_units, "_groups", fail)
    net = masked_chain()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.warns(UserWarning, match="could not be built.*no unit"):
        assert prune_dead_units(net, torch.randn(2, 1, 8, 8)) == {}
    for key, value in net.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_a_misread_graph_is_caught_by_the_forward_check(monkeypatch):
    """Units wrongly found dead (here: every fc1 unit) change the output when
    they carry large values: nothing is masked."""
    from skcompress.compression import _dead_units

    monkeypatch.setattr(_dead_units, "_dead_units", lambda modules, groups: {
        "fc1": torch.ones(10, dtype=torch.bool)})
    net = masked_chain()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.warns(UserWarning, match="change the output.*nothing was masked"):
        assert prune_dead_units(net, torch.randn(4, 1, 8, 8)) == {}
    for key, value in net.state_dict().items():
        assert torch.equal(value, before[key]), key
