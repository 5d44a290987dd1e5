"""Fine-tuning defaults (learning-rate rule, warm-up and cosine schedule,
BatchNorm recalibration) and bounded memory (``keep_base``).

Tiny nets on 8x8 digits, one or two epochs.
"""

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from skcompress.compression import Distiller, LowRankCompressor, Pruner, Quantizer
from skcompress.compression._base import (
    FINETUNE_LR_FACTOR,
    WarmupCosineLR,
    recalibrate_batchnorm,
    scheduled_lr,
)
from skcompress.io import dumps, loads
from skcompress.models import make_digits_net, make_resnet_net
from skcompress.search import speedup_score

from .helpers import LrSpy, assert_same_state, net_state

N = 96


@pytest.fixture(scope="module")
def small(data):
    X, y = data
    return X[:N], y[:N]



def _resnet(**kw):
    params = dict(module__width=4, module__in_channels=1, max_epochs=1,
                  batch_size=32)
    params.update(kw)
    return make_resnet_net(8, **params)


@pytest.fixture(scope="module")
def resnet(small):
    torch.manual_seed(0)
    return _resnet().fit(*small)


# ------------------------------------------------------------ the schedule
def test_scheduled_lr_warms_up_then_decays_by_a_half_cosine():
    lr, total = 0.1, 100  # warm-up: 5 steps
    values = [scheduled_lr(lr, step, total) for step in range(total)]
    np.testing.assert_allclose(values[:5], [lr * k / 5 for k in range(1, 6)])
    for step in (5, 30, 77, 99):
        expected = lr * 0.5 * (1 + math.cos(math.pi * (step - 5) / 95))
        assert values[step] == pytest.approx(expected)
    assert all(a >= b for a, b in zip(values[4:], values[5:]))
    assert 0 < values[-1] < 1e-3 * lr
    assert scheduled_lr(lr, 500, total) == values[-1]  # past the end
    assert scheduled_lr(lr, 0, 1) == lr  # one step: the peak


def test_finetuning_uses_the_lr_rule_and_the_schedule(small):
    X, y = small
    spy = LrSpy()
    net = _resnet(lr=0.004, callbacks=[("spy", spy)]).fit(X, y)
    spy.lrs_.clear()
    pruner = Pruner(net, sparsity=0.5, finetune_epochs=2, prefit=True,
                    random_state=0).fit(X, y)
    steps = 2 * math.ceil(N / 32)
    peak = FINETUNE_LR_FACTOR * 0.004
    assert pruner._finetune_lr(net) == pytest.approx(peak)
    # the spy on the user's net was copied with it: it saw the fine-tuning
    fitted_spy = dict(pruner.estimator_.callbacks_)["spy"]
    np.testing.assert_allclose(
        fitted_spy.lrs_, [scheduled_lr(peak, s, steps) for s in range(steps)])
    assert max(fitted_spy.lrs_) == pytest.approx(peak)


def test_an_explicit_finetune_lr_is_the_peak(small, resnet):
    X, y = small
    net = copy.deepcopy(resnet)
    net.callbacks_.append(("spy", LrSpy()))
    fitted = Pruner(net, finetune_lr=0.01, finetune_epochs=1, prefit=True,
                    random_state=0).fit(X, y)
    assert dict(net.callbacks_)["spy"].lrs_ == []  # the user's net is not trained
    steps = math.ceil(N / 32)
    lrs = dict(fitted.estimator_.callbacks_)["spy"].lrs_
    np.testing.assert_allclose(lrs, [scheduled_lr(0.01, s, steps)
                                     for s in range(steps)])


def test_no_schedule_is_left_on_the_fitted_net_and_its_lr_is_kept(small):
    X, y = small
    net = _resnet(optimizer=torch.optim.SGD, lr=0.05,
                  optimizer__momentum=0.9).fit(X, y)
    names_before = [name for name, _ in net.callbacks_]
    fitted = Quantizer(Pruner(net, prefit=True, finetune_epochs=1),
                       finetune_epochs=1, random_state=0).fit(X, y)
    for model in (fitted.estimator_, fitted.base_estimator_.estimator_):
        assert [name for name, _ in model.callbacks_] == names_before
        assert not any(isinstance(cb, WarmupCosineLR) for _, cb in model.callbacks_)
        assert model.lr == 0.05  # not compounded by the chain
        # the net's own optimizer class and settings, no state kept
        assert type(model.optimizer_) is torch.optim.SGD
        assert model.optimizer_.defaults["momentum"] == 0.9
        assert model.optimizer_.state == {}


def test_a_student_trained_from_scratch_learns_at_its_own_lr(small, resnet):
    X, y = small
    student = make_digits_net(max_epochs=2, lr=0.003, batch_size=32,
                              module__channels=(4, 8), module__hidden=16,
                              callbacks=[("spy", LrSpy())])
    distiller = Distiller(student, teacher=resnet, random_state=0).fit(X, y)
    lrs = dict(distiller.estimator_.callbacks_)["spy"].lrs_
    assert lrs == [0.003] * (2 * math.ceil(N / 32))  # constant, no schedule
    # a prefit student is fine-tuned by the shared rule and schedule
    prefit = Distiller(distiller.estimator_, teacher=resnet, prefit=True,
                       finetune_epochs=1, random_state=0)
    schedule = prefit._lr_schedule(distiller.estimator_, 1)
    assert isinstance(schedule, WarmupCosineLR)
    assert schedule.lr == pytest.approx(FINETUNE_LR_FACTOR * 0.003)


def test_pruning_rounds_split_finetune_epochs_over_the_data(small, resnet):
    X, y = small
    before = len(resnet.history)
    fitted = Pruner(resnet, sparsity=0.6, n_steps=2, finetune_epochs=3,
                    prefit=True, random_state=0).fit(X, y)
    assert len(fitted.estimator_.history) - before == 3
    epochs = fitted.estimator_.history[before:]
    assert all(row["train_batch_count"] == math.ceil(N / 32) for row in epochs)


# ---------------------------------------------- BatchNorm recalibration
class ConvBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3)
        self.bn = nn.BatchNorm2d(3, momentum=0.3)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(3, 10)

    def forward(self, x):
        x = self.drop(self.bn(self.conv(x)))
        return self.fc(x.mean(dim=(2, 3)))


def _convbn_net(batch_size):
    from skorch import NeuralNetClassifier

    return NeuralNetClassifier(ConvBN, batch_size=batch_size, max_epochs=1,
                               train_split=None, verbose=0).initialize()


def _by_hand(conv, X):
    with torch.no_grad():
        out = conv(torch.as_tensor(X))
    return out.mean(dim=(0, 2, 3)), out.var(dim=(0, 2, 3), unbiased=True)


def test_recalibration_gives_the_batch_statistics(small):
    X, _ = small
    net = _convbn_net(batch_size=N)  # one batch
    net.module_.eval()
    assert recalibrate_batchnorm(net, X) == 1
    bn = net.module_.bn
    mean, var = _by_hand(net.module_.conv, X)
    torch.testing.assert_close(bn.running_mean, mean)
    torch.testing.assert_close(bn.running_var, var)
    # momentum and every module's mode are put back, weights unchanged
    assert bn.momentum == 0.3
    assert not any(m.training for m in net.module_.modules())


def test_recalibration_averages_batches_and_caps_the_samples(small):
    X, _ = small
    net = _convbn_net(batch_size=16)
    recalibrate_batchnorm(net, X, n_samples=32, seed=3)
    idx = torch.randperm(N, generator=torch.Generator().manual_seed(3))[:32]
    idx = idx.sort().values.numpy()
    stats = [_by_hand(net.module_.conv, X[idx[i:i + 16]]) for i in (0, 16)]
    bn = net.module_.bn
    torch.testing.assert_close(bn.running_mean, (stats[0][0] + stats[1][0]) / 2)
    torch.testing.assert_close(bn.running_var, (stats[0][1] + stats[1][1]) / 2)
    assert int(bn.num_batches_tracked) == 2
    assert net.module_.training  # was in training mode, still is


@pytest.mark.parametrize("epochs", [0, 1])
def test_a_compressed_net_carries_the_batch_statistics(small, epochs):
    """After the fit, the running statistics of every BatchNorm are the batch
    statistics of the final weights over X (one batch: all 96 samples, under
    2,048), each layer normalising with batch statistics, as in training."""
    X, y = small
    torch.manual_seed(0)
    net = _resnet(batch_size=128).fit(X, y)
    fitted = LowRankCompressor(net, rank=0.5, finetune_epochs=epochs,
                               prefit=True, random_state=0).fit(X, y)
    module = fitted.estimator_.module_
    replay = copy.deepcopy(module).eval()  # by hand: BatchNorm in train mode
    for layer in replay.modules():
        if isinstance(layer, nn.BatchNorm2d):
            layer.train()
    inputs = {}

    def grab(name):
        def hook(mod, args):
            inputs[name] = args[0].detach()
        return hook

    norms = {name: m for name, m in module.named_modules()
             if isinstance(m, nn.BatchNorm2d)}
    handles = [m.register_forward_pre_hook(grab(n))
               for n, m in replay.named_modules() if n in norms]
    with torch.no_grad():
        replay(torch.as_tensor(X))
    for handle in handles:
        handle.remove()
    assert len(inputs) == len(norms) > 5
    for name, bn in norms.items():
        x = inputs[name]
        torch.testing.assert_close(bn.running_mean, x.mean(dim=(0, 2, 3)),
                                   rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(bn.running_var, x.var(dim=(0, 2, 3)),
                                   rtol=1e-4, atol=1e-5)
        assert bn.momentum == 0.1


def test_recalibration_runs_even_without_finetuning(small, resnet):
    X, y = small
    fitted = Pruner(resnet, sparsity=0.8, finetune_epochs=0, prefit=True,
                    random_state=0).fit(X, y)
    base_bn = resnet.module_.bn1
    bn = fitted.estimator_.module_.bn1
    assert not torch.equal(bn.running_mean, base_bn.running_mean)
    assert bn.momentum == base_bn.momentum


# -------------------------------------------------------------- memory
def _tensors(obj):
    from skcompress._nets import find_net

    module = find_net(obj).module_
    return [*module.parameters(), *module.buffers()]


def test_fitted_nets_share_nothing_with_the_users_net(small, resnet):
    X, y = small
    before = net_state(resnet)
    fitted = Pruner(resnet, finetune_epochs=1, prefit=True, random_state=0).fit(X, y)
    assert_same_state(before, net_state(resnet))
    user = {t.data_ptr() for t in _tensors(resnet)}
    for model in (fitted.base_estimator_, fitted.estimator_):
        assert user.isdisjoint(t.data_ptr() for t in _tensors(model))
        assert model.optimizer_.state == {}


def test_a_chain_keeps_no_inner_base_by_default(small, resnet):
    X, y = small
    before = net_state(resnet)
    chain = Quantizer(Pruner(resnet, prefit=True, finetune_epochs=0),
                      finetune_epochs=0, random_state=0).fit(X, y)
    inner = chain.base_estimator_
    assert "base_estimator_" not in vars(inner)
    assert hasattr(inner, "estimator_")  # where the outer fit started
    skeleton = inner.base_skeleton_
    assert all(t.is_meta for t in [*skeleton.parameters(), *skeleton.buffers()])
    assert type(skeleton) is type(resnet.module_)
    assert chain.original_size_bytes_ == pytest.approx(4 * sum(
        t.numel() for t in [*resnet.module_.parameters(), *resnet.module_.buffers()]
        if t.is_floating_point()), rel=0.01)
    assert speedup_score(chain, X) > 0  # times the base from its skeleton
    assert "encoded_" not in vars(inner)  # save encodes it again
    assert len(dumps(inner)) == inner.size_bytes_
    assert loads(dumps(chain)).predict(X).tolist() == chain.predict(X).tolist()
    assert_same_state(before, net_state(resnet))
    np.testing.assert_array_equal(chain.predict(X), chain.estimator_.predict(X))


def test_keep_base_true_keeps_the_inner_base(small, resnet):
    X, y = small
    chain = Quantizer(Pruner(resnet, prefit=True, finetune_epochs=0),
                      finetune_epochs=0, keep_base=True, random_state=0).fit(X, y)
    inner_base = chain.base_estimator_.base_estimator_
    assert_same_state(net_state(resnet), net_state(inner_base))
    assert not hasattr(chain.base_estimator_, "base_skeleton_")


def test_a_prefit_inner_compressor_is_not_stripped(small, resnet):
    X, y = small
    pruner = Pruner(resnet, prefit=True, finetune_epochs=0, random_state=0).fit(X, y)
    Quantizer(pruner, prefit=True, finetune_epochs=0, random_state=0).fit(X, y)
    assert "base_estimator_" in vars(pruner)  # the user's object


def test_three_level_chain_keeps_one_skeleton(small, resnet):
    X, y = small
    inner = Pruner(resnet, prefit=True, finetune_epochs=0)
    chain = Quantizer(Quantizer(inner, bits=8, finetune_epochs=0),
                      bits=4, finetune_epochs=0, random_state=0).fit(X, y)
    middle = chain.base_estimator_
    assert "base_estimator_" not in vars(middle)
    assert type(middle.base_skeleton_) is type(resnet.module_)
    assert speedup_score(chain, X) > 0


def test_codebook_indices_are_small_integers(small, resnet):
    X, y = small
    for bits in (4, 8):
        q = Quantizer(resnet, bits=bits, finetune_epochs=0, prefit=True,
                      random_state=0).fit(X, y)
        codebooks = [m for m in q.estimator_.module_.modules()
                     if type(m).__name__ == "Codebook"]
        assert codebooks
        for c in codebooks:  # int8 holds -1 .. 127, int16 the rest
            assert c.indices.dtype == (torch.int8 if c.bits <= 7 else torch.int16)
            assert int(c.indices.max()) < c.centroids.numel()


def _fitted_storages(obj, exclude=()):
    """``{data_ptr: bytes}`` of every tensor storage, numpy array and bytes
    object reachable from ``obj``'s attributes, not through the objects in
    ``exclude`` (the user's), each storage once."""
    import types

    skip = (str, int, float, bool, complex, type(None), type, types.ModuleType,
            types.FunctionType, types.BuiltinFunctionType, types.MethodType)
    found, seen = {}, {id(o) for o in exclude}
    todo = [obj]
    while todo:
        item = todo.pop()
        if id(item) in seen or isinstance(item, skip):
            continue
        seen.add(id(item))
        if isinstance(item, torch.Tensor):
            if not item.is_meta:
                storage = item.untyped_storage()
                found[storage.data_ptr()] = storage.nbytes()
            if item.grad is not None:
                todo.append(item.grad)
        elif isinstance(item, (bytes, bytearray)):
            found[id(item)] = len(item)
        elif isinstance(item, np.ndarray):
            found[id(item)] = item.nbytes
        elif isinstance(item, dict):
            todo.extend(item.values())
        elif isinstance(item, (list, tuple, set, frozenset)):
            todo.extend(item)
        elif hasattr(item, "__dict__"):
            todo.extend(vars(item).values())
    return found


def _retained_bytes(fitted, user):
    """Bytes of the tensors, arrays and bytes a fitted compressor keeps alive
    beyond its ``estimator`` parameter and the ``user`` net."""
    users = _fitted_storages(user)
    storages = _fitted_storages(fitted, exclude=(fitted.estimator, user))
    return sum(n for ptr, n in storages.items() if ptr not in users)


def _net_bytes(net):
    """The module's tensors plus skorch's own arrays (``classes_inferred_``):
    what a fitted copy of ``net`` holds at least."""
    arrays = sum(v.nbytes for v in vars(net).values() if isinstance(v, np.ndarray))
    return arrays + sum(t.untyped_storage().nbytes()
                        for t in net.module_.state_dict(keep_vars=True).values())


def _mask_shapes(net):
    from skcompress.compression._constraints import Mask, constraints_of

    return [m.shape for layer in net.module_.modules()
            for m in constraints_of(layer) if isinstance(m, Mask)]


def _packed_bytes(shapes):
    return sum(math.ceil(math.prod(shape) / 8) for shape in shapes)


def test_a_fitted_pruner_keeps_two_nets_and_packed_masks(small, resnet):
    X, y = small
    fitted = Pruner(resnet, prefit=True, finetune_epochs=1, random_state=0).fit(X, y)
    masks = _mask_shapes(fitted.estimator_)
    assert masks
    # what it must keep: the base, the pruned net's latent weights and one
    # bit per masked weight; no optimizer state, no gradients, no file
    # bytes, no copy of the user's net
    assert _retained_bytes(fitted, resnet) == (2 * _net_bytes(resnet)
                                               + _packed_bytes(masks))
    for layer in fitted.estimator_.module_.modules():
        for c in getattr(getattr(layer, "parametrizations", None), "weight", []):
            assert c.bits.dtype == torch.uint8
            assert c.mask.shape == layer.weight.shape
            assert torch.equal(layer.weight == 0, ~c.mask)


def test_a_chain_shares_the_prefit_net_and_copies_it_once(small, resnet):
    X, y = small
    before = net_state(resnet)
    inner = Pruner(resnet, prefit=True, finetune_epochs=0)
    chain = Quantizer(inner, finetune_epochs=1, random_state=0).fit(X, y)
    # the fit's copy of the inner compressor keeps the user's net itself as
    # its (prefit) estimator parameter, not one more copy of it ...
    assert chain.base_estimator_.estimator is inner.estimator is resnet
    assert_same_state(before, net_state(resnet))
    # ... and no fitted net shares a tensor with it
    user = set(_fitted_storages(resnet))
    for net in (chain.estimator_, chain.base_estimator_.estimator_):
        assert user.isdisjoint(_fitted_storages(net.module_))
    # two nets (the inner pruned one, the outer quantized one), each with
    # its packed masks, plus the codebooks: int8 indices, fp32 centroids
    masks = _mask_shapes(chain.estimator_)
    assert masks and masks == _mask_shapes(chain.base_estimator_.estimator_)
    codebooks = [m for m in chain.estimator_.module_.modules()
                 if type(m).__name__ == "Codebook"]
    assert codebooks
    codebook_bytes = sum(c.indices.numel() * c.indices.element_size()
                         + c.centroids.numel() * 4 for c in codebooks)
    assert _retained_bytes(chain, resnet) == (
        2 * _net_bytes(resnet) + 2 * _packed_bytes(masks) + codebook_bytes)
    # the contracts: exact masks, the file, pickling
    for layer in chain.estimator_.module_.modules():
        for c in getattr(getattr(layer, "parametrizations", None), "weight", []):
            if type(c).__name__ == "Mask":
                assert bool((layer.weight[~c.mask] == 0).all())
    assert len(dumps(chain)) == chain.size_bytes_
    assert loads(dumps(chain)).predict(X).tolist() == chain.predict(X).tolist()


def test_copying_a_fitted_inner_compressor_shares_only_its_parameters(
        small, resnet):
    X, y = small
    pruner = Pruner(resnet, prefit=True, finetune_epochs=0, random_state=0).fit(X, y)
    chain = Quantizer(pruner, prefit=True, finetune_epochs=0,
                      random_state=0).fit(X, y)
    copied = chain.base_estimator_
    assert copied is not pruner and copied.estimator is resnet
    theirs = set(_fitted_storages(pruner.estimator_.module_))
    assert theirs.isdisjoint(_fitted_storages(copied.estimator_.module_))
    assert theirs.isdisjoint(_fitted_storages(chain.estimator_.module_))
    assert "base_estimator_" in vars(pruner)  # the user's object is intact


def test_the_variational_pruner_keeps_no_training_state(small, resnet):
    from skcompress.compression import VariationalPruner

    X, y = small
    fitted = VariationalPruner(resnet, prefit=True, finetune_epochs=1,
                               random_state=0).fit(X, y)
    net = fitted.estimator_
    assert not any("log_sigma2" in n for n, _ in net.module_.named_parameters())
    assert not any("log_sigma2" in n for n, _ in net.module_.named_buffers())
    assert net.optimizer_.state == {}
    assert type(net.criterion_).__name__ != "_ELBOLoss"
    assert _retained_bytes(fitted, resnet) == (2 * _net_bytes(resnet)
                                               + _packed_bytes(_mask_shapes(net)))


def test_masks_are_packed_bits():
    from skcompress.compression._constraints import Mask, pack_mask, unpack_mask

    generator = torch.Generator().manual_seed(0)
    for shape in [(1,), (7,), (8,), (3, 5), (4, 3, 3, 3)]:
        keep = torch.rand(shape, generator=generator) > 0.4
        bits = pack_mask(keep)
        assert bits.dtype == torch.uint8
        assert bits.numel() == math.ceil(keep.numel() / 8)
        np.testing.assert_array_equal(  # numpy's little-endian bit order
            bits.numpy(), np.packbits(keep.numpy().ravel(), bitorder="little"))
        assert torch.equal(unpack_mask(bits, shape), keep)
    mask = Mask(torch.tensor([True, True, False, True]))
    bits = mask.bits
    mask.mask &= torch.tensor([True, False, True, True])
    assert mask.bits is bits  # packed in place
    assert mask.mask.tolist() == [True, False, False, True]
    weight = torch.tensor([1.0, 2.0, 3.0, 4.0], requires_grad=True)
    mask(weight).sum().backward()
    assert weight.grad.tolist() == [1.0, 0.0, 0.0, 1.0]
    with pytest.raises(ValueError, match="shape"):
        mask.set_mask(torch.ones(5, dtype=torch.bool))


def test_keep_base_is_validated_and_cloned():
    from sklearn.base import clone

    pruner = Quantizer(_resnet(), keep_base=True)
    assert clone(pruner).keep_base is True
    assert pruner.get_params()["keep_base"] is True
    with pytest.raises(ValueError, match="keep_base"):
        Quantizer(_resnet(), keep_base="yes").fit(np.zeros((4, 1, 8, 8),
                                                           np.float32),
                                                  np.arange(4))
