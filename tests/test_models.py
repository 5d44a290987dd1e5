import numpy as np
import pytest
import torch

from skcompress.datasets import load_digits_images
from skcompress.models import MODELS, make_digits_net


def test_load_digits_images_shapes_and_range():
    X, y = load_digits_images()
    assert X.shape == (1797, 1, 8, 8)
    assert X.dtype == np.float32 and y.dtype == np.int64
    assert X.min() == 0.0 and X.max() == 1.0
    assert set(np.unique(y)) == set(range(10))


@pytest.mark.parametrize("arch", sorted(MODELS))
def test_models_output_logits(arch):
    module = MODELS[arch]()
    out = module(torch.zeros(5, 1, 8, 8))
    assert out.shape == (5, 10)


def test_default_cnn_has_about_150k_parameters():
    module = MODELS["cnn"]()
    n_params = sum(p.numel() for p in module.parameters())
    assert 120_000 <= n_params <= 180_000


def test_make_digits_net_is_reproducible():
    X, y = load_digits_images()
    X, y = X[:200], y[:200]
    a = make_digits_net(random_state=3, max_epochs=1).fit(X, y)
    b = make_digits_net(random_state=3, max_epochs=1).fit(X, y)
    for pa, pb in zip(a.module_.parameters(), b.module_.parameters()):
        assert torch.equal(pa, pb)


def test_make_digits_net_rejects_unknown_arch():
    with pytest.raises(ValueError, match="arch"):
        make_digits_net(arch="nope")


# --------------------------------------------------------------------------
# Real architectures: ResNetCIFAR, ResNet18, MobileNetV2
# --------------------------------------------------------------------------

from skcompress.models import (  # noqa: E402
    BasicBlock,
    InvertedResidual,
    MobileNetV2,
    ResNet18,
    ResNetCIFAR,
    make_mobilenet_net,
    make_resnet18_net,
    make_resnet_net,
)

TINY = {
    "resnet20": lambda c: ResNetCIFAR(depth=20, in_channels=c, width=4),
    "resnet18": lambda c: ResNet18(in_channels=c, width=4),
    "mobilenetv2": lambda c: MobileNetV2(in_channels=c, width_mult=0.1),
    "mobilenetv2_stem2": lambda c: MobileNetV2(in_channels=c, width_mult=0.1,
                                               stem_stride=2),
}


def _n_params(module):
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def tiny_models():
    torch.manual_seed(0)
    return {(name, c): build(c).eval() for name, build in TINY.items() for c in (1, 3)}


@pytest.mark.parametrize("name", sorted(TINY))
@pytest.mark.parametrize("channels, size", [(1, 8), (1, 28), (3, 32)])
def test_real_models_output_logits(tiny_models, name, channels, size):
    module = tiny_models[name, channels]
    with torch.no_grad():
        out = module(torch.randn(3, channels, size, size))
    assert out.shape == (3, 10)
    assert torch.isfinite(out).all()


def test_real_models_train_mode_on_8x8():
    torch.manual_seed(0)
    for build in TINY.values():
        out = build(1).train()(torch.randn(4, 1, 8, 8))
        assert out.shape == (4, 10)
        out.sum().backward()


def test_resnet18_default_parameter_count():
    assert _n_params(ResNet18()) == 11_173_962


@pytest.mark.parametrize("depth, expected, published", [
    (20, 272_474, 0.27e6), (56, 855_770, 0.85e6), (110, 1_730_714, 1.7e6),
])
def test_resnet_cifar_parameter_counts(depth, expected, published):
    n = (depth - 2) // 6
    w = (16, 32, 64)
    # closed form: stem conv+BN, 3n basic blocks, 2 option-B projections, fc
    closed = (27 * 16 + 32
              + sum(n * (2 * 9 * c * c + 4 * c) for c in w)
              - 9 * 32 * 32 + 9 * 16 * 32 - 9 * 64 * 64 + 9 * 32 * 64
              + (16 * 32 + 64) + (32 * 64 + 128)
              + 64 * 10 + 10)
    module = ResNetCIFAR(depth=depth)
    assert _n_params(module) == closed == expected
    # option-A nets of the paper have no projection parameters (2,752 here)
    assert abs(expected - 2_752 - published) / published < 0.02
    assert len([m for m in module.modules() if isinstance(m, BasicBlock)]) == 3 * n


def test_resnet_cifar_structure_and_widths():
    module = ResNetCIFAR(depth=32, width=8)
    names = dict(module.named_modules())
    assert "layer2.0.downsample.0" in names and "layer1.0.downsample" not in names
    assert names["layer3.4.conv2"].out_channels == 32
    assert module.fc.in_features == 32
    assert module._init_kwargs == dict(depth=32, num_classes=10, in_channels=3,
                                       width=8)


@pytest.fixture(scope="module")
def default_mobilenet():
    torch.manual_seed(0)
    return MobileNetV2().eval()


def test_mobilenetv2_default_parameter_count_and_names(default_mobilenet):
    module = default_mobilenet
    # torchvision's mobilenet_v2(num_classes=10): 3,504,872 - 1281 * 990
    assert _n_params(module) == 2_236_682
    assert _n_params(MobileNetV2(num_classes=1000)) == 3_504_872
    names = dict(module.named_modules())
    assert {"features.0.0", "features.1.conv.0.0", "features.1.conv.1",
            "features.2.conv.1.0", "features.18.0", "classifier.1"} <= set(names)
    assert len(module.features) == 19
    assert isinstance(names["classifier.0"], torch.nn.Dropout)
    assert names["classifier.0"].p == 0.2
    assert names["features.18.0"].out_channels == 1280
    assert MobileNetV2(width_mult=1.4).last_channel == 1792
    assert MobileNetV2(width_mult=0.5).last_channel == 1280


def test_mobilenetv2_has_depthwise_convolutions(tiny_models):
    module = tiny_models["mobilenetv2", 3]
    depthwise = [m for m in module.modules() if isinstance(m, torch.nn.Conv2d)
                 and m.groups > 1]
    assert len(depthwise) == 17  # one per inverted residual block
    for conv in depthwise:
        assert conv.groups == conv.in_channels == conv.out_channels
        assert conv.kernel_size == (3, 3)


def test_mobilenetv2_cifar_strides():
    module = MobileNetV2(width_mult=0.1)
    strides = [b.stride for b in module.features[1:18]]
    assert strides == [1, 1, 1, 2, 1, 1, 2, 1, 1, 1, 1, 1, 1, 2, 1, 1, 1]
    assert module.features[0][0].stride == (1, 1)
    assert MobileNetV2(width_mult=0.1, stem_stride=2).features[0][0].stride == (2, 2)


def test_mobilenetv2_residual_connections(default_mobilenet, tiny_models):
    blocks = [b for b in default_mobilenet.features
              if isinstance(b, InvertedResidual)]
    residual = [b.use_res_connect for b in blocks]
    # the first block of each of the 7 stages changes the channels
    assert residual == [False, False, True, False, True, True, False, True, True,
                        True, False, True, True, False, True, True, False]
    # at width 0.1 the first stages all round to 8 channels: more shortcuts
    tiny = [b for b in tiny_models["mobilenetv2", 3].features
            if isinstance(b, InvertedResidual)]
    assert [b.use_res_connect for b in tiny] == [
        b.stride == 1 and b._init_kwargs["in_channels"] == b.out_channels
        for b in tiny]
    assert sum(b.use_res_connect for b in tiny) == 12
    block = InvertedResidual(8, 8, stride=1, expand_ratio=6).eval()
    X = torch.randn(2, 8, 5, 5)
    with torch.no_grad():
        assert not torch.allclose(block(X), X)
        block.conv[-1].weight.zero_()
        block.conv[-1].bias.zero_()
        assert torch.equal(block(X), X)
    # a stride-2 block has no shortcut: zeroing its last BN zeroes its output
    block = InvertedResidual(8, 8, stride=2, expand_ratio=6).eval()
    with torch.no_grad():
        block.conv[-1].weight.zero_()
        block.conv[-1].bias.zero_()
        assert torch.equal(block(X), torch.zeros(2, 8, 3, 3))


def test_basic_block_identity_shortcut():
    block = BasicBlock(4, 4).eval()
    assert block.downsample is None
    X = torch.randn(2, 4, 6, 6)
    with torch.no_grad():
        block.bn2.weight.zero_()
        block.bn2.bias.zero_()
        assert torch.equal(block(X), torch.relu(X))
    projected = BasicBlock(4, 8, stride=2)
    assert projected.downsample[0].kernel_size == (1, 1)
    assert projected.downsample[0].stride == (2, 2)


@pytest.mark.parametrize("build, match, error", [
    (lambda: ResNetCIFAR(depth=21), "depth", ValueError),
    (lambda: ResNetCIFAR(depth=2), "depth", ValueError),
    (lambda: ResNetCIFAR(depth=20.0), "depth", TypeError),
    (lambda: ResNetCIFAR(width=0), "width", ValueError),
    (lambda: ResNetCIFAR(num_classes=0), "num_classes", ValueError),
    (lambda: ResNet18(in_channels=0), "in_channels", ValueError),
    (lambda: ResNet18(in_channels=1.5), "in_channels", TypeError),
    (lambda: ResNet18(width=-1), "width", ValueError),
    (lambda: MobileNetV2(width_mult=0), "width_mult", ValueError),
    (lambda: MobileNetV2(width_mult=float("nan")), "width_mult", ValueError),
    (lambda: MobileNetV2(width_mult="1"), "width_mult", TypeError),
    (lambda: MobileNetV2(stem_stride=3), "stem_stride", ValueError),
    (lambda: MobileNetV2(num_classes=True), "num_classes", TypeError),
    (lambda: make_resnet_net(depth=22), "depth", ValueError),
])
def test_real_models_reject_bad_arguments(build, match, error):
    with pytest.raises(error, match=match):
        build()


def test_real_models_record_init_kwargs():
    assert MobileNetV2(width_mult=np.float64(0.5))._init_kwargs == dict(
        num_classes=10, in_channels=3, width_mult=0.5, stem_stride=1)
    assert ResNet18(width=np.int64(8))._init_kwargs == dict(
        num_classes=10, in_channels=3, width=8)
    assert type(ResNet18(width=np.int64(8))._init_kwargs["width"]) is int


FACTORIES = {
    "resnet": lambda: make_resnet_net(8, max_epochs=1, module__in_channels=1,
                                      module__width=4),
    "resnet18": lambda: make_resnet18_net(max_epochs=1, module__in_channels=1,
                                          module__width=4),
    "mobilenet": lambda: make_mobilenet_net(max_epochs=1, module__in_channels=1,
                                            module__width_mult=0.1),
}


@pytest.fixture(scope="module")
def random_8x8():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 10, 64).astype(np.int64)
    return X, y


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_make_real_nets_fit_and_predict(random_8x8, name):
    X, y = random_8x8
    net = FACTORIES[name]().fit(X, y)
    pred = net.predict(X)
    assert pred.shape == (64,)
    assert set(np.unique(pred)) <= set(range(10))
    assert net.predict_proba(X).shape == (64, 10)


def test_make_resnet_net_is_reproducible(random_8x8):
    X, y = random_8x8
    a = FACTORIES["resnet"]().fit(X, y)
    b = FACTORIES["resnet"]().fit(X, y)
    for pa, pb in zip(a.module_.parameters(), b.module_.parameters()):
        assert torch.equal(pa, pb)


def test_make_resnet_net_module_depth_override():
    assert make_resnet_net(module__depth=32).module__depth == 32
    assert make_resnet_net(44).module__depth == 44


@pytest.mark.parametrize("build", [
    lambda: ResNetCIFAR(depth=8, in_channels=1, width=2),
    lambda: MobileNetV2(in_channels=1, width_mult=0.05, stem_stride=2),
])
def test_real_models_round_trip_through_the_file_format(random_8x8, build):
    # the net holds a module instance: the file rebuilds it from _init_kwargs
    from skorch import NeuralNetClassifier

    from skcompress.io import dumps, loads

    X, y = random_8x8
    net = NeuralNetClassifier(build(), max_epochs=1, train_split=None,
                              verbose=0).fit(X, y)
    loaded = loads(dumps(net))
    assert type(loaded.module_) is type(net.module_)
    np.testing.assert_allclose(loaded.predict_proba(X), net.predict_proba(X),
                               atol=1e-5)


def test_lenet5_caffe_layers_and_parameter_count():
    from skcompress.models import LeNet5Caffe, make_lenet5_net

    module = LeNet5Caffe()
    # conv 20 x 5x5, conv 50 x 5x5, fc 500, fc 10 on 28x28: 431,080 parameters
    assert _n_params(module) == 431_080
    assert (module.conv1.out_channels, module.conv2.out_channels) == (20, 50)
    assert module.conv1.kernel_size == module.conv2.kernel_size == (5, 5)
    assert (module.fc1.in_features, module.fc1.out_features) == (800, 500)
    assert module.fc2.out_features == 10
    assert module.eval()(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    # the small LeNet5 of make_digits_net(arch="lenet") is unchanged
    assert MODELS["lenet"] is not LeNet5Caffe
    with pytest.raises(ValueError, match="image_size"):
        LeNet5Caffe(image_size=12)
    net = make_lenet5_net(max_epochs=1, module__image_size=16,
                          module__channels=(4, 8), module__hidden=16)
    X = np.random.RandomState(0).rand(32, 1, 16, 16).astype(np.float32)
    y = np.arange(32) % 10
    net.fit(X, y)
    assert net.module_.fc1.in_features == 8
    # the file format rebuilds it from its constructor arguments
    from skcompress.io import dumps, loads

    np.testing.assert_array_equal(loads(dumps(net)).predict(X), net.predict(X))
