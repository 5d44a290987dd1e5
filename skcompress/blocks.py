"""Compact convolutional building blocks.

Every block takes and returns standard ``(n, channels, height, width)``
tensors and records its constructor arguments (plain numbers and booleans) in
``self._init_kwargs``, which the file format (:mod:`skcompress.io`) uses to
rebuild it. Parameter counts have closed forms, given in each docstring.

- :class:`FireModule` (SqueezeNet): 1x1 squeeze, then 1x1 and 3x3 expands
  concatenated;
- :class:`DepthwiseSeparableConv2d` (MobileNet): a per-channel k x k
  convolution followed by a 1x1 convolution mixing the channels;
- :class:`Bottleneck` (ResNet): 1x1 reduce, 3x3, 1x1 expand, with a residual
  connection when the shapes allow;
- :class:`FactorizedConv2d` (VGG / Inception): a k x k convolution as a stack
  of ``(k - 1) / 2`` 3x3 convolutions with the same receptive field.
"""

import torch
from torch import nn

__all__ = ["Bottleneck", "DepthwiseSeparableConv2d", "FactorizedConv2d", "FireModule"]


class FireModule(nn.Module):
    """SqueezeNet's Fire module: squeeze to few channels, expand with 1x1 + 3x3.

    ``relu(squeeze_1x1(x))`` is expanded by a 1x1 and a padded 3x3 convolution
    whose ReLU outputs are concatenated: the output has
    ``expand1x1 + expand3x3`` channels and the input's height and width.

    Parameters: ``in_channels*squeeze + squeeze + squeeze*expand1x1 + expand1x1
    + 9*squeeze*expand3x3 + expand3x3``.

    Parameters
    ----------
    in_channels : int
    squeeze : int
        Channels of the 1x1 squeeze layer.
    expand1x1, expand3x3 : int
        Output channels of the 1x1 and 3x3 expand layers.

    References
    ----------
    Iandola et al., "SqueezeNet: AlexNet-level accuracy with 50x fewer
    parameters and <0.5MB model size", 2016.

    Examples
    --------
    >>> import torch
    >>> from skcompress.blocks import FireModule
    >>> FireModule(16, 8, 16, 16)(torch.zeros(2, 16, 8, 8)).shape
    torch.Size([2, 32, 8, 8])
    """

    def __init__(self, in_channels, squeeze, expand1x1, expand3x3):
        super().__init__()
        self._init_kwargs = dict(in_channels=in_channels, squeeze=squeeze,
                                 expand1x1=expand1x1, expand3x3=expand3x3)
        self.out_channels = expand1x1 + expand3x3
        self.squeeze = nn.Conv2d(in_channels, squeeze, 1)
        self.squeeze_relu = nn.ReLU()
        self.expand1x1 = nn.Conv2d(squeeze, expand1x1, 1)
        self.expand3x3 = nn.Conv2d(squeeze, expand3x3, 3, padding=1)
        self.expand_relu = nn.ReLU()

    def forward(self, X):
        X = self.squeeze_relu(self.squeeze(X))
        return self.expand_relu(torch.cat([self.expand1x1(X), self.expand3x3(X)], 1))


class DepthwiseSeparableConv2d(nn.Module):
    """A k x k convolution factorised as depthwise k x k + pointwise 1x1.

    Without batch norm the block is linear, a drop-in replacement of
    ``nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding,
    bias=bias)``: its effective kernel is ``W[o, c] = pointwise[o, c] *
    depthwise[c]`` (rank one per input channel). With ``batch_norm=True`` it is
    MobileNet's unit ``depthwise -> BN -> ReLU -> pointwise -> BN`` (the caller
    applies the final activation, as after a convolution).

    Parameters: ``in_channels*k*k + in_channels*out_channels`` plus
    ``out_channels`` for the bias and ``2*(in_channels + out_channels)`` for
    the batch norms' affine parameters. The depthwise layer never has a bias
    (the pointwise bias, or the batch norm, absorbs it).

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size : int
    stride : int, default=1
    padding : int or None, default=None
        ``None`` pads by ``kernel_size // 2`` (same size at stride 1).
    bias : bool, default=True
        Bias of the pointwise layer.
    batch_norm : bool, default=False

    References
    ----------
    Howard et al., "MobileNets: Efficient Convolutional Neural Networks for
    Mobile Vision Applications", 2017.

    Examples
    --------
    >>> import torch
    >>> from skcompress.blocks import DepthwiseSeparableConv2d
    >>> block = DepthwiseSeparableConv2d(32, 64, 3)
    >>> block(torch.zeros(2, 32, 8, 8)).shape
    torch.Size([2, 64, 8, 8])
    >>> sum(p.numel() for p in block.parameters())  # 32*9 + 32*64 + 64
    2400
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1,
                 padding=None, bias=True, batch_norm=False):
        super().__init__()
        if padding is None:
            padding = kernel_size // 2
        self._init_kwargs = dict(
            in_channels=in_channels, out_channels=out_channels,
            kernel_size=kernel_size, stride=stride, padding=padding, bias=bias,
            batch_norm=batch_norm,
        )
        self.depthwise = nn.Conv2d(in_channels, in_channels, kernel_size,
                                   stride=stride, padding=padding,
                                   groups=in_channels, bias=False)
        if batch_norm:
            self.depthwise_bn = nn.BatchNorm2d(in_channels)
            self.depthwise_relu = nn.ReLU()
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=bias)
        if batch_norm:
            self.pointwise_bn = nn.BatchNorm2d(out_channels)

    def forward(self, X):
        X = self.depthwise(X)
        if self._init_kwargs["batch_norm"]:
            X = self.depthwise_relu(self.depthwise_bn(X))
        X = self.pointwise(X)
        if self._init_kwargs["batch_norm"]:
            X = self.pointwise_bn(X)
        return X


class Bottleneck(nn.Module):
    """ResNet's bottleneck: 1x1 reduce -> 3x3 -> 1x1 expand, plus identity.

    ``conv1x1 -> BN -> ReLU -> conv3x3 -> BN -> ReLU -> conv1x1 -> BN``, then
    the input is added when ``residual`` and the shapes allow it
    (``in_channels == out_channels`` and ``stride == 1``; see ``has_residual``),
    then ReLU. The convolutions have no bias (the batch norms hold it).

    Parameters: ``in_channels*b + 9*b*b + b*out_channels + 2*(2*b +
    out_channels)`` with ``b = bottleneck_channels``.

    Parameters
    ----------
    in_channels, bottleneck_channels, out_channels : int
    residual : bool, default=True
    stride : int, default=1
        Stride of the 3x3 convolution.

    References
    ----------
    He et al., "Deep Residual Learning for Image Recognition", 2016.

    Examples
    --------
    >>> import torch
    >>> from skcompress.blocks import Bottleneck
    >>> block = Bottleneck(32, 8, 32)
    >>> block.has_residual, block(torch.zeros(2, 32, 8, 8)).shape
    (True, torch.Size([2, 32, 8, 8]))
    """

    def __init__(self, in_channels, bottleneck_channels, out_channels, residual=True,
                 stride=1):
        super().__init__()
        self._init_kwargs = dict(
            in_channels=in_channels, bottleneck_channels=bottleneck_channels,
            out_channels=out_channels, residual=residual, stride=stride,
        )
        self.has_residual = bool(
            residual and in_channels == out_channels and stride == 1
        )
        b = bottleneck_channels
        self.reduce = nn.Conv2d(in_channels, b, 1, bias=False)
        self.reduce_bn = nn.BatchNorm2d(b)
        self.reduce_relu = nn.ReLU()
        self.conv = nn.Conv2d(b, b, 3, stride=stride, padding=1, bias=False)
        self.conv_bn = nn.BatchNorm2d(b)
        self.conv_relu = nn.ReLU()
        self.expand = nn.Conv2d(b, out_channels, 1, bias=False)
        self.expand_bn = nn.BatchNorm2d(out_channels)
        self.out_relu = nn.ReLU()

    def forward(self, X):
        out = self.reduce_relu(self.reduce_bn(self.reduce(X)))
        out = self.conv_relu(self.conv_bn(self.conv(out)))
        out = self.expand_bn(self.expand(out))
        if self.has_residual:
            out = out + X
        return self.out_relu(out)


class FactorizedConv2d(nn.Module):
    """A k x k convolution as ``(k - 1) / 2`` stacked 3x3 convolutions.

    Same receptive field and output size as ``nn.Conv2d(in_channels,
    out_channels, kernel_size, stride, padding)`` with ``padding="same"``
    (``kernel_size // 2``) or ``"valid"`` (0): each 3x3 pads by 1, or by 0;
    the stride is applied by the last one. A 5x5 costs ``2*9 = 18`` weights per
    channel pair instead of 25, a 7x7 ``27`` instead of 49.

    Parameters (``n = (k - 1) / 2`` layers, ``h = hidden_channels``, one bias
    per output channel of each layer when ``bias``): ``9*in_channels*h +
    (n - 2)*9*h*h + 9*h*out_channels`` (for ``n >= 2``; ``9*in*out`` for
    ``k = 3``).

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size : int, default=5
        Odd, at least 3.
    stride : int, default=1
    padding : {"same", "valid"}, default="same"
    bias : bool, default=True
    hidden_channels : int or None, default=None
        Channels between the 3x3 layers; ``None`` uses ``out_channels``.
    activation : bool, default=True
        ReLU between the stacked layers (VGG); ``False`` keeps the block
        linear. There is never one after the last layer.

    References
    ----------
    Simonyan and Zisserman, "Very Deep Convolutional Networks for Large-Scale
    Image Recognition", 2015.

    Examples
    --------
    >>> import torch
    >>> from skcompress.blocks import FactorizedConv2d
    >>> block = FactorizedConv2d(8, 16, kernel_size=5)
    >>> len(block.layers), block(torch.zeros(2, 8, 8, 8)).shape
    (3, torch.Size([2, 16, 8, 8]))
    """

    def __init__(self, in_channels, out_channels, kernel_size=5, stride=1,
                 padding="same", bias=True, hidden_channels=None, activation=True):
        super().__init__()
        if not isinstance(kernel_size, int) or kernel_size < 3 or kernel_size % 2 == 0:
            raise ValueError(
                f"kernel_size must be an odd int >= 3, got {kernel_size!r}."
            )
        if padding not in ("same", "valid"):
            raise ValueError(f"padding must be 'same' or 'valid', got {padding!r}.")
        self._init_kwargs = dict(
            in_channels=in_channels, out_channels=out_channels,
            kernel_size=kernel_size, stride=stride, padding=padding, bias=bias,
            hidden_channels=hidden_channels, activation=activation,
        )
        hidden = out_channels if hidden_channels is None else hidden_channels
        n_layers = (kernel_size - 1) // 2
        pad = 1 if padding == "same" else 0
        widths = [in_channels] + [hidden] * (n_layers - 1) + [out_channels]
        layers = []
        for i in range(n_layers):
            last = i == n_layers - 1
            layers.append(nn.Conv2d(widths[i], widths[i + 1], 3, padding=pad,
                                    stride=stride if last else 1, bias=bias))
            if activation and not last:
                layers.append(nn.ReLU())
        # Sequential: the stacked layers, numbered, as in torchvision's VGG.
        self.layers = nn.Sequential(*layers)

    def forward(self, X):
        return self.layers(X)
