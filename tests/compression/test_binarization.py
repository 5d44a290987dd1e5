import numpy as np
import pytest
import torch
from skorch import NeuralNetClassifier
from torch import nn

from skcompress.compression import Binarizer
from skcompress.compression._binarization import Binarize, BinaryActivation
from skcompress.compression._constraints import constraints_of
from skcompress.compression._quantization import UniformQuantize
from skcompress.compression._ste import straight_through
from skcompress.io import dumps, load, save, tensor_storage_report
from skcompress.models import InvertedResidual


@pytest.fixture(scope="module")
def binarized(fitted_net, data):
    X, y = data
    # a large learning rate pushes latent weights past +-1: the clipping shows
    return Binarizer(
        fitted_net, finetune_epochs=2, finetune_lr=0.5, prefit=True, random_state=0
    ).fit(X, y)


@pytest.fixture(scope="module")
def with_activations(fitted_net, data):
    X, y = data
    return Binarizer(
        fitted_net, mode="stochastic", activations=True, finetune_epochs=1, prefit=True,
        random_state=0,
    ).fit(X, y)


def latent_of(layer):
    return layer.parametrizations.weight.original.detach()


def test_weights_are_exactly_plus_minus_scale(binarized):
    module = binarized.estimator_.module_
    assert binarized.layers_ == ["conv2", "fc1"]
    for name in binarized.layers_:
        layer = getattr(module, name)
        weight = layer.weight.detach()
        latent = latent_of(layer)
        dims = tuple(range(1, weight.dim()))
        scale = latent.abs().mean(dim=dims, keepdim=True)
        expected = torch.where(latent >= 0, scale, -scale)
        assert torch.equal(weight, expected)
    assert binarized.kept_layers_ == ["conv1", "fc2"]
    for name in ("conv1", "fc2"):  # not binarized: 8-bit integers by default
        (grid,) = constraints_of(getattr(module, name))
        assert isinstance(grid, UniformQuantize) and grid.bits == 8


def test_keep_bits_none_keeps_first_and_last_fp32_and_8_bits_is_smaller(
        binarized, fitted_net, data):
    X, y = data
    fp32 = Binarizer(fitted_net, keep_bits=None, finetune_epochs=1, prefit=True,
                     random_state=0).fit(X, y)
    for name in fp32.kept_layers_:
        assert not constraints_of(getattr(fp32.estimator_.module_, name))
    report = binarized.report_
    for name in binarized.kept_layers_:  # 8 bits + a scale per channel
        layer = getattr(binarized.estimator_.module_, name)
        n_out = layer.weight.shape[0]
        assert report.loc[name, "stored_bytes"] <= (
            layer.weight.numel() + 4 * n_out + 8 * n_out + 64)
    assert binarized.size_bytes_ < fp32.size_bytes_
    with pytest.raises(ValueError, match="keep_bits"):
        Binarizer(fitted_net, keep_bits=1, prefit=True).fit(X, y)


def test_latent_weights_stay_in_unit_interval(binarized):
    module = binarized.estimator_.module_
    for name in binarized.layers_:
        latent = latent_of(getattr(module, name))
        assert latent.abs().max() <= 1
    # the learning rate did push them to the bound: the clip was needed
    assert any(
        (latent_of(getattr(module, name)).abs() == 1).any()
        for name in binarized.layers_
    )


def test_straight_through_gradient_only_inside_unit_interval():
    latent = torch.tensor([[-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5]], requires_grad=True)
    out = Binarize(scale=False)(latent)
    assert torch.equal(out.detach(), torch.tensor([[-1.0, -1, -1, 1, 1, 1, 1]]))
    out.backward(torch.full_like(out, 3.0))
    assert torch.equal(latent.grad, torch.tensor([[0.0, 3, 3, 3, 3, 3, 0]]))

    latent = torch.tensor([-1.5, 0.3, 1.0, 4.0], requires_grad=True)
    straight_through(latent, torch.zeros(4), limit=1.0).sum().backward()
    assert torch.equal(latent.grad, torch.tensor([0.0, 1.0, 1.0, 0.0]))


def test_scale_off_gives_plus_minus_one(fitted_net, data):
    X, y = data
    fitted = Binarizer(
        fitted_net, scale=False, finetune_epochs=1, prefit=True, random_state=0
    ).fit(X, y)
    for name in fitted.layers_:
        weight = getattr(fitted.estimator_.module_, name).weight.detach()
        assert set(weight.unique().tolist()) <= {-1.0, 1.0}


def test_stochastic_samples_in_training_then_freezes(with_activations, X_test):
    constraint = Binarize(scale=False, stochastic=True)
    latent = torch.full((4, 1000), 0.2)
    constraint.train()
    sampled = constraint(latent)
    assert set(sampled.unique().tolist()) == {-1.0, 1.0}
    assert 0.5 < (sampled > 0).float().mean() < 0.7  # P(+1) = (0.2 + 1) / 2
    constraint.eval()
    assert (constraint(latent) > 0).all()

    module = with_activations.estimator_.module_
    module.train()
    try:
        weight = module.fc1[1].weight.detach()
        latent = latent_of(module.fc1[1])
        assert torch.equal(weight > 0, latent >= 0)  # frozen: deterministic
    finally:
        module.eval()
    first = with_activations.predict_proba(X_test)
    np.testing.assert_array_equal(first, with_activations.predict_proba(X_test))


def test_binary_activations_wrap_layers_after_the_first(with_activations):
    module = with_activations.estimator_.module_
    assert with_activations.layers_ == ["conv2", "fc1"]
    assert isinstance(module.fc1, nn.Sequential)
    assert isinstance(module.fc1[0], BinaryActivation)
    assert not isinstance(module.conv2, nn.Sequential)
    # the input of fc1 is non-negative (ReLU): the threshold is its mean, > 0
    assert module.fc1[0].threshold > 0
    x = torch.tensor([-0.5, 0.0, 2.0], requires_grad=True)
    out = BinaryActivation()(x)
    out.sum().backward()
    assert torch.equal(out.detach(), torch.tensor([-1.0, 1.0, 1.0]))
    assert torch.equal(x.grad, torch.tensor([1.0, 1.0, 0.0]))


def test_activations_need_two_binarized_layers(
    fitted_net, data, state, assert_same_state
):
    X, y = data
    before = state(fitted_net)
    binarizer = Binarizer(fitted_net, layers=["fc1"], activations=True, prefit=True)
    with pytest.raises(ValueError, match="activations=True"):
        binarizer.fit(X, y)
    assert not hasattr(binarizer, "estimator_")
    assert_same_state(before, fitted_net)


@pytest.mark.parametrize("name", ["binarized", "with_activations"])
def test_save_load_is_exact_and_size_is_file_size(name, request, X_test, tmp_path):
    fitted = request.getfixturevalue(name)
    path = tmp_path / "model.skcz"
    save(fitted, path)
    assert fitted.size_bytes_ == path.stat().st_size
    np.testing.assert_array_equal(
        load(path).predict_proba(X_test), fitted.predict_proba(X_test)
    )
    report = tensor_storage_report(fitted.estimator_.module_)
    binarized = {k: v for k, v in report.items() if k.endswith("weight")}
    assert [v["encoding"] for k, v in binarized.items() if "fc1" in k] == ["binary"]


def test_same_random_state_same_bytes(fitted_net, data):
    X, y = data

    def fitted():
        return Binarizer(fitted_net, mode="stochastic", finetune_epochs=1,
                         prefit=True, random_state=5).fit(X, y)

    assert dumps(fitted()) == dumps(fitted())


@pytest.mark.parametrize(
    "params, match",
    [({"mode": "random"}, "mode"), ({"scale": "yes"}, "scale"),
     ({"layers": ["nope"]}, "layers")],
)
def test_bad_params_fail_at_fit_and_leave_net_alone(
    fitted_net, data, params, match, state, assert_same_state
):
    X, y = data
    before = state(fitted_net)
    binarizer = Binarizer(fitted_net, prefit=True, finetune_epochs=1, **params)
    with pytest.raises(ValueError, match=match):
        binarizer.fit(X, y)
    assert_same_state(before, fitted_net)


def test_user_net_unchanged(fitted_net, binarized, with_activations):
    assert not any(constraints_of(m) for m in fitted_net.module_.modules())
    assert isinstance(fitted_net.module_.fc1, nn.Linear)
    assert fitted_net.module_.conv2.weight.abs().max() < 1  # never clipped in place


def test_depthwise_convs_are_kept_at_keep_bits_by_default(data):
    """A depthwise 3x3 filter has 9 weights: binarizing it destroys its
    channel's only spatial filter, so the default keeps it at ``keep_bits``
    like the first and last layers; ``layers="all"`` still binarizes it."""
    from skcompress.compression._pruning import is_depthwise
    from skcompress.models import make_mobilenet_net

    X, y = data[0][:64], data[1][:64]
    net = make_mobilenet_net(module__width_mult=0.1, module__in_channels=1,
                             max_epochs=1, random_state=0).fit(X, y)
    convs = {name: sub for name, sub in net.module_.named_modules()
             if isinstance(sub, (nn.Conv2d, nn.Linear))}
    depthwise = {name for name, sub in convs.items() if is_depthwise(sub)}
    assert depthwise

    default = Binarizer(net, prefit=True, finetune_epochs=0, random_state=0).fit(X, y)
    module = default.estimator_.module_
    assert not depthwise & set(default.layers_)
    assert depthwise <= set(default.kept_layers_)
    assert set(default.layers_) | set(default.kept_layers_) == set(convs)
    for name in depthwise:
        (constraint,) = constraints_of(module.get_submodule(name))
        assert isinstance(constraint, UniformQuantize) and constraint.bits == 8
    # the 1x1 expansions are binarized; the 1x1 projections (linear
    # bottlenecks, see test_linear_successors) are kept like the depthwise ones
    projections = {f"{name}.conv.{len(block.conv) - 2}"
                   for name, block in net.module_.named_modules()
                   if isinstance(block, InvertedResidual)}
    assert projections <= set(default.kept_layers_)
    assert set(default.layers_) == set(convs) - depthwise - projections - {
        "features.0.0", "classifier.1"}

    every = Binarizer(net, layers="all", prefit=True, finetune_epochs=0,
                      random_state=0).fit(X, y)
    assert depthwise <= set(every.layers_)
    assert every.kept_layers_ == []


def test_linear_successors():
    """Layers whose output meets no nonlinearity before the next layer:
    exactly MobileNetV2's projections (and every net's output layer); not a
    ResNet's convolutions (ReLU after each sum), not LeNet-5-Caffe's convs
    (max pooling after each)."""
    from skcompress.compression._binarization import linear_successors
    from skcompress.models import LeNet5Caffe, MobileNetV2, ResNetCIFAR

    mobile = MobileNetV2(width_mult=0.25)
    projections = [f"{name}.conv.{len(block.conv) - 2}"
                   for name, block in mobile.named_modules()
                   if isinstance(block, InvertedResidual)]
    assert linear_successors(mobile) == projections + ["classifier.1"]
    assert linear_successors(ResNetCIFAR(depth=8)) == ["fc"]
    assert linear_successors(LeNet5Caffe()) == ["fc2"]
    stacked = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 4),
                            nn.ReLU(), nn.Linear(4, 2))
    assert linear_successors(stacked) == ["0", "4"]


class _Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(64, 8), nn.Linear(8, 8), nn.Linear(8, 10)

    def forward(self, x):
        x = torch.relu(self.a(x.flatten(1)))
        if x.sum() > 0:  # data-dependent: torch.fx cannot trace it
            x = torch.relu(self.b(x))
        return self.c(x)


def test_untraceable_module_warns_that_bottlenecks_are_not_found(data):
    from skcompress.compression._binarization import linear_successors

    assert linear_successors(_Branchy()) is None
    X, y = data[0][:64], data[1][:64]
    net = NeuralNetClassifier(_Branchy, max_epochs=1, train_split=None,
                              criterion=nn.CrossEntropyLoss).fit(X, y)
    with pytest.warns(UserWarning, match="cannot be traced"):
        fitted = Binarizer(net, prefit=True, finetune_epochs=0,
                           random_state=0).fit(X, y)
    assert fitted.layers_ == ["b"]
