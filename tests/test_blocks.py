import pytest
import torch
from torch import nn

from skcompress.blocks import (
    Bottleneck,
    DepthwiseSeparableConv2d,
    FactorizedConv2d,
    FireModule,
)
from skcompress.models import MODELS, DigitsCNN, make_digits_net


def n_params(module):
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("cin, s, e1, e3", [(16, 8, 16, 16), (3, 2, 5, 7)])
def test_fire_module_shape_and_parameters(cin, s, e1, e3):
    block = FireModule(cin, s, e1, e3)
    out = block(torch.randn(2, cin, 8, 6))
    assert out.shape == (2, e1 + e3, 8, 6)
    assert (out >= 0).all()  # ReLU after the concatenation
    assert n_params(block) == cin * s + s + s * e1 + e1 + 9 * s * e3 + e3
    assert block._init_kwargs == dict(in_channels=cin, squeeze=s, expand1x1=e1,
                                      expand3x3=e3)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("batch_norm", [False, True])
@pytest.mark.parametrize("cin, cout, k, stride", [(8, 16, 3, 1), (4, 6, 5, 2)])
def test_depthwise_separable_shape_and_parameters(cin, cout, k, stride, bias,
                                                  batch_norm):
    block = DepthwiseSeparableConv2d(cin, cout, k, stride=stride, bias=bias,
                                     batch_norm=batch_norm)
    reference = nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2)
    x = torch.randn(2, cin, 9, 9)
    assert block(x).shape == reference(x).shape
    expected = cin * k * k + cin * cout + (cout if bias else 0)
    expected += 2 * (cin + cout) if batch_norm else 0
    assert n_params(block) == expected
    assert block.depthwise.groups == cin and block.depthwise.bias is None


def test_depthwise_separable_is_the_rank_one_per_channel_convolution():
    """Without batch norm, the block is the conv with kernel P[o, c] * D[c]."""
    block = DepthwiseSeparableConv2d(3, 5, 3)
    kernel = block.pointwise.weight * block.depthwise.weight.transpose(0, 1)
    x = torch.randn(2, 3, 8, 8)
    expected = nn.functional.conv2d(x, kernel, block.pointwise.bias, padding=1)
    torch.testing.assert_close(block(x), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cin, b, cout, stride, residual", [
    (32, 8, 32, 1, True),    # identity added
    (16, 4, 32, 1, True),    # channels differ: no residual
    (16, 4, 16, 2, True),    # strided: no residual
    (16, 4, 16, 1, False),
])
def test_bottleneck_shape_parameters_and_residual(cin, b, cout, stride, residual):
    block = Bottleneck(cin, b, cout, residual=residual, stride=stride)
    x = torch.randn(2, cin, 8, 8)
    out = block(x)
    size = 8 if stride == 1 else 4
    assert out.shape == (2, cout, size, size)
    assert n_params(block) == cin * b + 9 * b * b + b * cout + 2 * (2 * b + cout)
    assert block.has_residual == (residual and cin == cout and stride == 1)
    if block.has_residual:
        # With the last batch norm at zero scale and shift, the block is relu(x).
        with torch.no_grad():
            block.expand_bn.weight.zero_()
            block.expand_bn.bias.zero_()
        block.eval()
        torch.testing.assert_close(block(x), torch.relu(x))


@pytest.mark.parametrize("k", [3, 5, 7])
@pytest.mark.parametrize("padding", ["same", "valid"])
@pytest.mark.parametrize("stride", [1, 2])
def test_factorized_conv_shape_and_parameters(k, padding, stride):
    cin, cout, hidden = 3, 8, 6
    block = FactorizedConv2d(cin, cout, k, stride=stride, padding=padding,
                             hidden_channels=hidden)
    reference = nn.Conv2d(cin, cout, k, stride=stride,
                          padding=k // 2 if padding == "same" else 0)
    x = torch.randn(2, cin, 11, 11)
    assert block(x).shape == reference(x).shape
    n = (k - 1) // 2
    convs = [m for m in block.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == n and all(c.kernel_size == (3, 3) for c in convs)
    if n == 1:
        expected = 9 * cin * cout + cout
    else:
        expected = (9 * cin * hidden + hidden + (n - 2) * (9 * hidden * hidden + hidden)
                    + 9 * hidden * cout + cout)
    assert n_params(block) == expected


def test_factorized_conv_linear_has_the_receptive_field_of_k():
    """A linear stack of two 3x3 is exactly some 5x5 conv: impulse response."""
    block = FactorizedConv2d(1, 1, 5, activation=False, bias=False)
    x = torch.zeros(1, 1, 11, 11)
    x[0, 0, 5, 5] = 1.0
    response = block(x)[0, 0]
    support = response.abs() > 0
    rows, cols = torch.nonzero(support, as_tuple=True)
    assert rows.min() >= 3 and rows.max() <= 7 and cols.min() >= 3 and cols.max() <= 7


def test_factorized_conv_rejects_even_kernel():
    with pytest.raises(ValueError, match="kernel_size"):
        FactorizedConv2d(2, 2, 4)


@pytest.mark.parametrize("arch", ["squeeze", "mobile"])
def test_compact_zoo_is_ten_times_smaller_and_takes_other_sizes(arch):
    assert n_params(MODELS[arch]()) * 10 <= n_params(DigitsCNN())
    module = MODELS[arch](in_channels=3, n_classes=5, image_size=16)
    assert module(torch.zeros(2, 3, 16, 16)).shape == (2, 5)
    net = make_digits_net(arch=arch)
    assert net.module is MODELS[arch]
