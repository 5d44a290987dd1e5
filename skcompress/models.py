"""A model zoo: small nets for 8x8 images, real CIFAR-size architectures.

Every model takes ``(n, in_channels, height, width)`` float input and returns
logits; their ``__init__`` arguments are plain numbers so that the compact
file format can rebuild them from a JSON header.

- ``MODELS`` (:class:`DigitsCNN`, :class:`LeNet5`, :class:`ResidualCNN`,
  :class:`SqueezeNetDigits`, :class:`MobileNetDigits`) and
  :func:`make_digits_net`: small nets for the 8x8 digits;
- :class:`ResNetCIFAR` (ResNet-20/32/44/56/110), :class:`ResNet18` and
  :class:`MobileNetV2`, written in plain ``torch.nn`` (no torchvision) with
  torchvision's module names, and their skorch factories
  :func:`make_resnet_net`, :func:`make_resnet18_net` and
  :func:`make_mobilenet_net`;
- :class:`LeNet5Caffe`, the 431k-parameter LeNet-5 of the compression papers,
  for 28x28 MNIST, and :func:`make_lenet5_net`.

The real architectures' constructors record their arguments in
``self._init_kwargs``.
"""

import math
import numbers

import numpy as np
import torch
from skorch.callbacks import Callback
from torch import nn

from .blocks import DepthwiseSeparableConv2d, FireModule

__all__ = [
    "MODELS", "BasicBlock", "ConvBNReLU6", "DigitsCNN", "InvertedResidual", "LeNet5",
    "LeNet5Caffe", "MobileNetDigits", "MobileNetV2", "ResNet18", "ResNetCIFAR",
    "ResidualCNN", "SeedTorch", "SqueezeNetDigits", "make_digits_net",
    "make_lenet5_net", "make_mobilenet_net", "make_resnet18_net", "make_resnet_net",
]


class DigitsCNN(nn.Module):
    """Two 3x3 convolutions and two linear layers (~150k parameters at 8x8).

    Parameters
    ----------
    in_channels, n_classes, image_size : int
    channels : tuple of two ints
        Filters of the two convolutions.
    hidden : int
        Width of the hidden linear layer.
    dropout : float
    """

    def __init__(self, in_channels=1, n_classes=10, image_size=8, channels=(32, 64),
                 hidden=128, dropout=0.25):
        super().__init__()
        c1, c2 = channels
        self.conv1 = nn.Conv2d(in_channels, c1, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(c1, c2, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.dropout = nn.Dropout(dropout)
        self.fc1 = nn.Linear(c2 * (image_size // 2) ** 2, hidden)
        self.relu3 = nn.ReLU()
        self.fc2 = nn.Linear(hidden, n_classes)

    def forward(self, X):
        X = self.relu1(self.conv1(X))
        X = self.pool(self.relu2(self.conv2(X)))
        X = self.dropout(self.flatten(X))
        return self.fc2(self.relu3(self.fc1(X)))


class LeNet5(nn.Module):
    """A LeNet-5-style net (5x5 padded convolutions, three linear layers)."""

    def __init__(self, in_channels=1, n_classes=10, image_size=8):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 6, 5, padding=2)
        self.act1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(6, 16, 5, padding=2)
        self.act2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(16 * (image_size // 4) ** 2, 120)
        self.act3 = nn.ReLU()
        self.fc2 = nn.Linear(120, 84)
        self.act4 = nn.ReLU()
        self.fc3 = nn.Linear(84, n_classes)

    def forward(self, X):
        X = self.pool1(self.act1(self.conv1(X)))
        X = self.pool2(self.act2(self.conv2(X)))
        X = self.act3(self.fc1(self.flatten(X)))
        return self.fc3(self.act4(self.fc2(X)))


class LeNet5Caffe(nn.Module):
    """LeNet-5 as in Caffe's MNIST example: the compression papers' LeNet-5.

    ``conv1`` (20 filters 5x5) - max pool 2 - ``conv2`` (50 filters 5x5) - max
    pool 2 - ``fc1`` (500) - ``fc2`` (``n_classes``), unpadded convolutions,
    ReLU after every layer but the last (Caffe's prototxt has one only after
    ``fc1``; the PyTorch versions of Han et al., Molchanov et al. and Louizos
    et al. use one after each convolution too). 431,080 parameters on 28x28
    input, 400,500 of them in ``fc1``: the network of Deep Compression's
    LeNet-5 row (39x) and of the sparse variational dropout and Bayesian
    compression papers.

    Parameters
    ----------
    in_channels : int, default=1
    n_classes : int, default=10
    image_size : int, default=28
        Height and width of the input, at least 16 (two unpadded 5x5
        convolutions and two poolings leave ``((image_size - 4) // 2 - 4) // 2``
        pixels a side).
    channels : tuple of two ints, default=(20, 50)
    hidden : int, default=500

    References
    ----------
    Y. LeCun, L. Bottou, Y. Bengio and P. Haffner, "Gradient-based learning
    applied to document recognition", Proc. IEEE 86(11), 1998; Caffe's
    ``examples/mnist/lenet.prototxt``.

    Examples
    --------
    >>> import torch
    >>> from skcompress.models import LeNet5Caffe
    >>> sum(p.numel() for p in LeNet5Caffe().parameters())
    431080
    >>> LeNet5Caffe().eval()(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 10])
    """

    def __init__(self, in_channels=1, n_classes=10, image_size=28, channels=(20, 50),
                 hidden=500):
        super().__init__()
        in_channels = _check_positive_int(in_channels, "in_channels")
        n_classes = _check_positive_int(n_classes, "n_classes")
        image_size = _check_positive_int(image_size, "image_size")
        hidden = _check_positive_int(hidden, "hidden")
        c1, c2 = (_check_positive_int(c, "channels") for c in channels)
        side = ((image_size - 4) // 2 - 4) // 2
        if side < 1:
            raise ValueError(
                f"image_size={image_size} is too small for LeNet5Caffe: two "
                "unpadded 5x5 convolutions and two 2x2 poolings need at least 16."
            )
        self._init_kwargs = dict(in_channels=in_channels, n_classes=n_classes,
                                 image_size=image_size, channels=[c1, c2],
                                 hidden=hidden)
        self.conv1 = nn.Conv2d(in_channels, c1, 5)
        self.act1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(c1, c2, 5)
        self.act2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(c2 * side * side, hidden)
        self.act3 = nn.ReLU()
        self.fc2 = nn.Linear(hidden, n_classes)

    def forward(self, X):
        X = self.pool1(self.act1(self.conv1(X)))
        X = self.pool2(self.act2(self.conv2(X)))
        return self.fc2(self.act3(self.fc1(self.flatten(X))))


class ResidualCNN(nn.Module):
    """Conv-BN stem, one residual block with BatchNorm, global pooling, linear."""

    def __init__(self, in_channels=1, n_classes=10, image_size=8, channels=32):
        super().__init__()
        self.image_size = image_size
        self.conv1 = nn.Conv2d(in_channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu2 = nn.ReLU()
        self.conv3 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(channels)
        self.relu3 = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(channels, n_classes)

    def forward(self, X):
        X = self.relu1(self.bn1(self.conv1(X)))
        residual = X
        X = self.relu2(self.bn2(self.conv2(X)))
        X = self.relu3(self.bn3(self.conv3(X)) + residual)
        return self.fc(self.flatten(self.pool(X)))


class SqueezeNetDigits(nn.Module):
    """A SqueezeNet-style net for small images (~9.8k parameters at width 16).

    3x3 stem, two :class:`~skcompress.blocks.FireModule`, 2x2 max pooling, a
    wider Fire module, then SqueezeNet's classifier: a 1x1 convolution to
    ``n_classes`` maps averaged over the image (no linear layer, so the
    parameter count does not depend on ``image_size``). A batch norm follows
    the stem and every Fire module: without it this small SqueezeNet trains
    slowly (about 87% test accuracy on digits after 30 epochs, 98% with it).

    Parameters
    ----------
    in_channels, n_classes : int
    image_size : int
        Height and width of the input (any size >= 2 works; recorded so that
        every zoo model shares the same signature).
    width : int
        Channels of the stem; the Fire modules scale with it.
    dropout : float
        Dropout before the classifier.
    """

    def __init__(self, in_channels=1, n_classes=10, image_size=8, width=16,
                 dropout=0.0):
        super().__init__()
        w = width
        self.conv1 = nn.Conv2d(in_channels, w, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.relu1 = nn.ReLU()
        self.fire2 = FireModule(w, w // 2, w, w)
        self.bn2 = nn.BatchNorm2d(2 * w)
        self.fire3 = FireModule(2 * w, w // 2, w, w)
        self.bn3 = nn.BatchNorm2d(2 * w)
        self.pool = nn.MaxPool2d(2)
        self.fire4 = FireModule(2 * w, w, 2 * w, 2 * w)
        self.bn4 = nn.BatchNorm2d(4 * w)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Conv2d(4 * w, n_classes, 1)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()

    def forward(self, X):
        X = self.relu1(self.bn1(self.conv1(X)))
        X = self.bn2(self.fire2(X))
        X = self.pool(self.bn3(self.fire3(X)))
        X = self.dropout(self.bn4(self.fire4(X)))
        return self.flatten(self.avgpool(self.classifier(X)))


class MobileNetDigits(nn.Module):
    """A MobileNet-style net for small images (~9k parameters at width 16).

    3x3 stem with batch norm, three depthwise-separable units
    (:class:`~skcompress.blocks.DepthwiseSeparableConv2d` with batch norm, the
    second with stride 2), global average pooling and a linear classifier.

    Parameters
    ----------
    in_channels, n_classes : int
    image_size : int
        Height and width of the input (any size >= 2 works).
    width : int
        Channels of the stem; the separable units use ``2*width`` and
        ``4*width``.
    dropout : float
        Dropout before the classifier.
    """

    def __init__(self, in_channels=1, n_classes=10, image_size=8, width=16,
                 dropout=0.1):
        super().__init__()
        w = width
        self.conv1 = nn.Conv2d(in_channels, w, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.relu1 = nn.ReLU()
        self.sep2 = DepthwiseSeparableConv2d(w, 2 * w, 3, bias=False, batch_norm=True)
        self.relu2 = nn.ReLU()
        self.sep3 = DepthwiseSeparableConv2d(2 * w, 4 * w, 3, stride=2, bias=False,
                                             batch_norm=True)
        self.relu3 = nn.ReLU()
        self.sep4 = DepthwiseSeparableConv2d(4 * w, 4 * w, 3, bias=False,
                                             batch_norm=True)
        self.relu4 = nn.ReLU()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(4 * w, n_classes)

    def forward(self, X):
        X = self.relu1(self.bn1(self.conv1(X)))
        X = self.relu2(self.sep2(X))
        X = self.relu3(self.sep3(X))
        X = self.relu4(self.sep4(X))
        return self.fc(self.dropout(self.flatten(self.avgpool(X))))


# --------------------------------------------------------------------------
# Real architectures (torchvision-free): CIFAR ResNets, ResNet-18, MobileNetV2
# --------------------------------------------------------------------------


def _check_positive_int(value, name):
    """Return ``value`` as an ``int`` or raise naming the parameter ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a positive int, got {value!r}.")
    if value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}.")
    return int(value)


def _check_depth(depth):
    """Validate a CIFAR ResNet depth (``6n + 2`` with ``n >= 1``)."""
    if isinstance(depth, bool) or not isinstance(depth, numbers.Integral):
        raise TypeError(f"depth must be an int of the form 6n+2, got {depth!r}.")
    if depth < 8 or (depth - 2) % 6 != 0:
        raise ValueError(
            f"depth must be 6n+2 with n >= 1 (8, 14, 20, 32, 44, 56, 110...), "
            f"got {depth!r}."
        )
    return int(depth)


def _init_resnet_weights(module):
    # torchvision's ResNet initialisation
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class BasicBlock(nn.Module):
    """ResNet's basic block: two 3x3 conv + BN, plus the (projected) input.

    ``relu2(bn2(conv2(relu1(bn1(conv1(x))))) + shortcut(x))`` where the
    shortcut is the identity, or (option B of He et al.) ``downsample``, a 1x1
    convolution with stride ``stride`` followed by batch norm, when the stride
    is not 1 or the channel count changes.

    Parameters: ``9*in*out + 9*out*out + 4*out`` plus ``in*out + 2*out`` for
    a projection shortcut.

    Parameters
    ----------
    in_channels, out_channels : int
    stride : int, default=1

    Examples
    --------
    >>> import torch
    >>> from skcompress.models import BasicBlock
    >>> BasicBlock(4, 8, stride=2)(torch.zeros(2, 4, 8, 8)).shape
    torch.Size([2, 8, 4, 4])
    """

    def __init__(self, in_channels, out_channels, stride=1):
        super().__init__()
        in_channels = _check_positive_int(in_channels, "in_channels")
        out_channels = _check_positive_int(out_channels, "out_channels")
        stride = _check_positive_int(stride, "stride")
        self._init_kwargs = dict(in_channels=in_channels, out_channels=out_channels,
                                 stride=stride)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride,
                               padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        else:
            self.downsample = None
        self.relu2 = nn.ReLU()

    def forward(self, X):
        identity = X if self.downsample is None else self.downsample(X)
        out = self.relu1(self.bn1(self.conv1(X)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + identity)


def _resnet_stage(in_channels, out_channels, n_blocks, stride):
    blocks = [BasicBlock(in_channels, out_channels, stride)]
    blocks += [BasicBlock(out_channels, out_channels) for _ in range(n_blocks - 1)]
    return nn.Sequential(*blocks)


class ResNetCIFAR(nn.Module):
    """The CIFAR ResNet of He et al. (2016): ResNet-20, 32, 44, 56, 110...

    A 3x3 stem convolution with batch norm, three stages of ``n =
    (depth - 2) / 6`` :class:`BasicBlock` with ``width``, ``2*width`` and
    ``4*width`` channels (16/32/64 by default) and strides 1, 2, 2, global
    average pooling and a linear classifier. Shortcuts that change shape are
    1x1 convolution + batch norm projections (option B), so the counts are a
    little above the paper's option-A figures: 272,474 parameters for
    ResNet-20 (paper: 0.27M), 855,770 for ResNet-56 (0.85M) and 1,730,714
    for ResNet-110 (1.7M), with 10 classes and 3 input channels.

    Any input of at least 1x1 pixels works (adaptive average pooling).
    Module names follow torchvision: ``conv1``, ``bn1``, ``layer1.0.conv1``,
    ``layer2.0.downsample.0``, ..., ``fc``.

    Parameters
    ----------
    depth : int, default=20
        Number of weighted layers, ``6n + 2`` with ``n >= 1``.
    num_classes : int, default=10
    in_channels : int, default=3
    width : int, default=16
        Channels of the stem and first stage.

    References
    ----------
    He, Zhang, Ren and Sun, "Deep Residual Learning for Image Recognition",
    CVPR 2016, section 4.2.

    Examples
    --------
    >>> import torch
    >>> from skcompress.models import ResNetCIFAR
    >>> net = ResNetCIFAR(depth=8, in_channels=1, width=4).eval()
    >>> net(torch.zeros(2, 1, 8, 8)).shape
    torch.Size([2, 10])
    >>> sum(p.numel() for p in ResNetCIFAR(depth=20).parameters())
    272474
    """

    def __init__(self, depth=20, num_classes=10, in_channels=3, width=16):
        super().__init__()
        depth = _check_depth(depth)
        num_classes = _check_positive_int(num_classes, "num_classes")
        in_channels = _check_positive_int(in_channels, "in_channels")
        width = _check_positive_int(width, "width")
        self._init_kwargs = dict(depth=depth, num_classes=num_classes,
                                 in_channels=in_channels, width=width)
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        self.layer1 = _resnet_stage(width, width, n, 1)
        self.layer2 = _resnet_stage(width, 2 * width, n, 2)
        self.layer3 = _resnet_stage(2 * width, 4 * width, n, 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(4 * width, num_classes)
        _init_resnet_weights(self)

    def forward(self, X):
        X = self.relu(self.bn1(self.conv1(X)))
        X = self.layer3(self.layer2(self.layer1(X)))
        return self.fc(self.flatten(self.avgpool(X)))


class ResNet18(nn.Module):
    """ResNet-18 for small images (the usual CIFAR variant).

    torchvision's ResNet-18 with the ImageNet stem (7x7 stride-2 convolution
    and max pooling) replaced by a 3x3 stride-1 convolution: four stages of
    two :class:`BasicBlock` with ``width``, ``2*width``, ``4*width`` and
    ``8*width`` channels and strides 1, 2, 2, 2 (1x1 convolution + batch norm
    shortcuts where the shape changes), adaptive average pooling and a linear
    classifier. 11,173,962 parameters with the defaults. Any input of at
    least 1x1 pixels works (a 32x32 image ends at 4x4 before pooling).

    Parameters
    ----------
    num_classes : int, default=10
    in_channels : int, default=3
    width : int, default=64
        Channels of the stem and first stage.

    References
    ----------
    He, Zhang, Ren and Sun, "Deep Residual Learning for Image Recognition",
    CVPR 2016.

    Examples
    --------
    >>> import torch
    >>> from skcompress.models import ResNet18
    >>> net = ResNet18(in_channels=1, width=4).eval()
    >>> net(torch.zeros(2, 1, 8, 8)).shape
    torch.Size([2, 10])
    """

    def __init__(self, num_classes=10, in_channels=3, width=64):
        super().__init__()
        num_classes = _check_positive_int(num_classes, "num_classes")
        in_channels = _check_positive_int(in_channels, "in_channels")
        width = _check_positive_int(width, "width")
        self._init_kwargs = dict(num_classes=num_classes, in_channels=in_channels,
                                 width=width)
        w = width
        self.conv1 = nn.Conv2d(in_channels, w, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.relu = nn.ReLU()
        self.layer1 = _resnet_stage(w, w, 2, 1)
        self.layer2 = _resnet_stage(w, 2 * w, 2, 2)
        self.layer3 = _resnet_stage(2 * w, 4 * w, 2, 2)
        self.layer4 = _resnet_stage(4 * w, 8 * w, 2, 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(8 * w, num_classes)
        _init_resnet_weights(self)

    def forward(self, X):
        X = self.relu(self.bn1(self.conv1(X)))
        X = self.layer4(self.layer3(self.layer2(self.layer1(X))))
        return self.fc(self.flatten(self.avgpool(X)))


def _make_divisible(v, divisor=8, min_value=None):
    """Round ``v`` to the nearest multiple of ``divisor`` (MobileNet's rule).

    Never below ``min_value`` (default ``divisor``) and never more than 10%
    below ``v``.

    Examples
    --------
    >>> from skcompress.models import _make_divisible
    >>> _make_divisible(32 * 0.75), _make_divisible(16 * 0.25), _make_divisible(100)
    (24, 8, 104)
    """
    if min_value is None:
        min_value = divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


class ConvBNReLU6(nn.Sequential):
    """Convolution, batch norm, ReLU6 (torchvision's ``Conv2dNormActivation``).

    Children ``0`` (the bias-free ``nn.Conv2d``, padded to keep the size at
    stride 1), ``1`` (``nn.BatchNorm2d``) and ``2`` (``nn.ReLU6``).

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size : int, default=3
    stride : int, default=1
    groups : int, default=1
        ``groups == in_channels == out_channels`` is a depthwise convolution.

    Examples
    --------
    >>> import torch
    >>> from skcompress.models import ConvBNReLU6
    >>> ConvBNReLU6(8, 8, stride=2, groups=8)(torch.zeros(2, 8, 8, 8)).shape
    torch.Size([2, 8, 4, 4])
    """

    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, groups=1):
        in_channels = _check_positive_int(in_channels, "in_channels")
        out_channels = _check_positive_int(out_channels, "out_channels")
        kernel_size = _check_positive_int(kernel_size, "kernel_size")
        stride = _check_positive_int(stride, "stride")
        groups = _check_positive_int(groups, "groups")
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride,
                      padding=(kernel_size - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU6(),
        )
        self._init_kwargs = dict(in_channels=in_channels, out_channels=out_channels,
                                 kernel_size=kernel_size, stride=stride,
                                 groups=groups)
        self.out_channels = out_channels


class InvertedResidual(nn.Module):
    """MobileNetV2's inverted residual block (torchvision's layout).

    ``conv`` is a 1x1 expansion to ``round(in_channels * expand_ratio)``
    channels (:class:`ConvBNReLU6`, left out when ``expand_ratio == 1``), a
    3x3 depthwise :class:`ConvBNReLU6` with stride ``stride``, then a linear
    1x1 projection (``nn.Conv2d`` + ``nn.BatchNorm2d``, no activation). The
    input is added to the output when ``stride == 1`` and
    ``in_channels == out_channels`` (``use_res_connect``).

    Parameters
    ----------
    in_channels, out_channels : int
    stride : int
        1 or 2.
    expand_ratio : int
        ``t`` in the paper.

    References
    ----------
    Sandler, Howard, Zhu, Zhmoginov and Chen, "MobileNetV2: Inverted
    Residuals and Linear Bottlenecks", CVPR 2018.

    Examples
    --------
    >>> import torch
    >>> from skcompress.models import InvertedResidual
    >>> block = InvertedResidual(8, 8, stride=1, expand_ratio=6)
    >>> block.use_res_connect, block(torch.zeros(2, 8, 4, 4)).shape
    (True, torch.Size([2, 8, 4, 4]))
    """

    def __init__(self, in_channels, out_channels, stride, expand_ratio):
        super().__init__()
        in_channels = _check_positive_int(in_channels, "in_channels")
        out_channels = _check_positive_int(out_channels, "out_channels")
        stride = _check_positive_int(stride, "stride")
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride!r}.")
        expand_ratio = _check_positive_int(expand_ratio, "expand_ratio")
        self._init_kwargs = dict(in_channels=in_channels, out_channels=out_channels,
                                 stride=stride, expand_ratio=expand_ratio)
        self.stride = stride
        self.out_channels = out_channels
        self.use_res_connect = stride == 1 and in_channels == out_channels
        hidden = int(round(in_channels * expand_ratio))
        layers = []
        if expand_ratio != 1:
            layers.append(ConvBNReLU6(in_channels, hidden, kernel_size=1))
        layers += [
            ConvBNReLU6(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, X):
        if self.use_res_connect:
            return X + self.conv(X)
        return self.conv(X)


# (expand ratio t, output channels c, repeats n, first stride s); the second
# row has s=1 instead of ImageNet's 2 (the CIFAR variant)
_MOBILENETV2_SETTINGS = (
    (1, 16, 1, 1),
    (6, 24, 2, 1),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


class MobileNetV2(nn.Module):
    """MobileNetV2 (Sandler et al. 2018) for small images.

    torchvision's layout and module names: ``features.0`` is a 3x3
    :class:`ConvBNReLU6` stem to ``_make_divisible(32 * width_mult)``
    channels, ``features.1`` to ``features.17`` are :class:`InvertedResidual`
    blocks following the paper's table of ``(t, c, n, s)`` settings,
    ``features.18`` a 1x1 :class:`ConvBNReLU6` to
    ``_make_divisible(1280 * max(1, width_mult))`` channels, then adaptive
    average pooling and ``classifier`` (``0``: dropout 0.2, ``1``: linear).
    Channel counts are ``_make_divisible(c * width_mult, 8)``.

    CIFAR variant: the stem has stride ``stem_stride`` (1 by default, 2 in
    the ImageNet net) and the second stage stride 1 (2 in the ImageNet net),
    so the net downsamples by 8 (a 32x32 image ends at 4x4) with
    ``stem_stride=1`` and by 16 with ``stem_stride=2``. Any input of at least
    1x1 pixels works. 2,236,682 parameters with the defaults (the same as
    torchvision's ``mobilenet_v2(num_classes=10)``: strides add none).

    Parameters
    ----------
    num_classes : int, default=10
    in_channels : int, default=3
    width_mult : float, default=1.0
        Width multiplier (> 0) of every layer (the last 1x1 convolution is
        never narrowed below 1280 channels).
    stem_stride : int, default=1
        1 or 2.

    References
    ----------
    Sandler, Howard, Zhu, Zhmoginov and Chen, "MobileNetV2: Inverted
    Residuals and Linear Bottlenecks", CVPR 2018.

    Examples
    --------
    >>> import torch
    >>> from skcompress.models import MobileNetV2
    >>> net = MobileNetV2(in_channels=1, width_mult=0.1).eval()
    >>> net(torch.zeros(2, 1, 8, 8)).shape
    torch.Size([2, 10])
    >>> depthwise = net.features[2].conv[1][0]
    >>> depthwise.in_channels, depthwise.out_channels, depthwise.groups
    (48, 48, 48)
    """

    def __init__(self, num_classes=10, in_channels=3, width_mult=1.0, stem_stride=1):
        super().__init__()
        num_classes = _check_positive_int(num_classes, "num_classes")
        in_channels = _check_positive_int(in_channels, "in_channels")
        if isinstance(width_mult, bool) or not isinstance(width_mult, numbers.Real):
            raise TypeError(
                f"width_mult must be a positive number, got {width_mult!r}."
            )
        if not (math.isfinite(width_mult) and width_mult > 0):
            raise ValueError(f"width_mult must be > 0, got {width_mult!r}.")
        stem_stride = _check_positive_int(stem_stride, "stem_stride")
        if stem_stride not in (1, 2):
            raise ValueError(f"stem_stride must be 1 or 2, got {stem_stride!r}.")
        width_mult = float(width_mult)
        self._init_kwargs = dict(num_classes=num_classes, in_channels=in_channels,
                                 width_mult=width_mult, stem_stride=stem_stride)
        channels = _make_divisible(32 * width_mult)
        self.last_channel = _make_divisible(1280 * max(1.0, width_mult))
        features = [ConvBNReLU6(in_channels, channels, stride=stem_stride)]
        for t, c, n, s in _MOBILENETV2_SETTINGS:
            out_channels = _make_divisible(c * width_mult)
            for i in range(n):
                features.append(InvertedResidual(channels, out_channels,
                                                 s if i == 0 else 1, t))
                channels = out_channels
        features.append(ConvBNReLU6(channels, self.last_channel, kernel_size=1))
        self.features = nn.Sequential(*features)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Sequential(nn.Dropout(0.2),
                                        nn.Linear(self.last_channel, num_classes))
        # torchvision's MobileNetV2 initialisation
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, X):
        X = self.features(X)
        return self.classifier(self.flatten(self.avgpool(X)))


MODELS = {
    "cnn": DigitsCNN,
    "lenet": LeNet5,
    "mobile": MobileNetDigits,
    "residual": ResidualCNN,
    "squeeze": SqueezeNetDigits,
}


def make_digits_net(random_state=0, *, arch="cnn", **overrides):
    """Return the default skorch classifier for :func:`load_digits_images`.

    Parameters
    ----------
    random_state : int or None
        Seeds the weight initialisation and the batch order, so that the same
        value trains the same net.
    arch : str
        One of ``MODELS``: ``"cnn"`` (:class:`DigitsCNN`), ``"lenet"``,
        ``"residual"``, and the compact ``"squeeze"`` (:class:`SqueezeNetDigits`)
        and ``"mobile"`` (:class:`MobileNetDigits`), each >= 10x smaller than
        the default CNN.
    **overrides
        Any ``NeuralNetClassifier`` parameter (``max_epochs=3``,
        ``module__hidden=32``, ``device="cuda"``...).

    Examples
    --------
    >>> from skcompress.models import make_digits_net
    >>> net = make_digits_net(max_epochs=1)
    >>> net.max_epochs
    1
    """
    if arch not in MODELS:
        raise ValueError(
            f"arch={arch!r} is not a known architecture; choose from {sorted(MODELS)}."
        )
    return _make_net(MODELS[arch], random_state, overrides)


def _make_net(module, random_state, overrides):
    """The zoo's default ``NeuralNetClassifier`` for ``module``, then ``overrides``."""
    from skorch import NeuralNetClassifier

    params = dict(
        module=module,
        criterion=nn.CrossEntropyLoss,
        optimizer=torch.optim.Adam,
        lr=2e-3,
        max_epochs=30,
        batch_size=64,
        train_split=None,
        iterator_train__shuffle=True,
        verbose=0,
    )
    if random_state is not None:
        params["callbacks"] = [("seed", SeedTorch(random_state))]
    params.update(overrides)
    return NeuralNetClassifier(**params)


def make_resnet_net(depth=20, random_state=0, **overrides):
    """Return a skorch classifier of a CIFAR ResNet (:class:`ResNetCIFAR`).

    The same defaults as :func:`make_digits_net` (Adam, ``lr=2e-3``,
    30 epochs, batches of 64, no validation split, seeded by
    ``random_state``).

    Parameters
    ----------
    depth : int, default=20
        ``6n + 2``: 20, 32, 44, 56, 110... (``module__depth`` in
        ``overrides`` takes precedence).
    random_state : int or None, default=0
        Seeds the weight initialisation and the batch order.
    **overrides
        Any ``NeuralNetClassifier`` parameter, e.g. ``module__width=8``,
        ``module__in_channels=1``, ``max_epochs=3``, ``device="cuda"``.

    Examples
    --------
    >>> from skcompress.models import make_resnet_net
    >>> net = make_resnet_net(56, max_epochs=1, module__in_channels=1)
    >>> net.module.__name__, net.module__depth, net.max_epochs
    ('ResNetCIFAR', 56, 1)
    """
    params = {"module__depth": _check_depth(depth)}
    params.update(overrides)
    return _make_net(ResNetCIFAR, random_state, params)


def make_lenet5_net(random_state=0, **overrides):
    """Return a skorch classifier of :class:`LeNet5Caffe` (28x28 MNIST input).

    The same defaults as :func:`make_digits_net` (Adam, ``lr=2e-3``,
    30 epochs, batches of 64, no validation split, seeded by
    ``random_state``).

    Parameters
    ----------
    random_state : int or None, default=0
        Seeds the weight initialisation and the batch order.
    **overrides
        Any ``NeuralNetClassifier`` parameter, e.g. ``max_epochs=10``,
        ``module__image_size=16``, ``module__channels=(4, 8)``.

    Examples
    --------
    >>> from skcompress.models import make_lenet5_net
    >>> net = make_lenet5_net(max_epochs=1)
    >>> net.module.__name__, net.max_epochs
    ('LeNet5Caffe', 1)
    """
    return _make_net(LeNet5Caffe, random_state, overrides)


def make_resnet18_net(random_state=0, **overrides):
    """Return a skorch classifier of :class:`ResNet18`.

    The same defaults as :func:`make_digits_net`.

    Parameters
    ----------
    random_state : int or None, default=0
        Seeds the weight initialisation and the batch order.
    **overrides
        Any ``NeuralNetClassifier`` parameter, e.g. ``module__width=16``,
        ``module__in_channels=1``, ``max_epochs=3``, ``device="cuda"``.

    Examples
    --------
    >>> from skcompress.models import make_resnet18_net
    >>> net = make_resnet18_net(max_epochs=1, module__width=8)
    >>> net.module.__name__, net.module__width
    ('ResNet18', 8)
    """
    return _make_net(ResNet18, random_state, overrides)


def make_mobilenet_net(random_state=0, **overrides):
    """Return a skorch classifier of :class:`MobileNetV2`.

    The same defaults as :func:`make_digits_net`.

    Parameters
    ----------
    random_state : int or None, default=0
        Seeds the weight initialisation and the batch order.
    **overrides
        Any ``NeuralNetClassifier`` parameter, e.g. ``module__width_mult=0.5``,
        ``module__in_channels=1``, ``module__stem_stride=2``, ``max_epochs=3``.

    Examples
    --------
    >>> from skcompress.models import make_mobilenet_net
    >>> net = make_mobilenet_net(max_epochs=1, module__width_mult=0.5)
    >>> net.module.__name__, net.module__width_mult
    ('MobileNetV2', 0.5)
    """
    return _make_net(MobileNetV2, random_state, overrides)


class SeedTorch(Callback):
    """skorch callback that seeds torch so training is reproducible.

    It seeds at ``initialize`` (before skorch builds the module, so the weights
    are reproducible) and at the start of each ``fit`` / ``partial_fit`` (so
    the batch order and dropout are reproducible).
    """

    def __init__(self, random_state=0):
        self.random_state = random_state

    def initialize(self):
        torch.manual_seed(int(np.uint32(self.random_state)))
        return self

    def on_train_begin(self, net, X=None, y=None, **kwargs):
        torch.manual_seed(int(np.uint32(self.random_state)) + 1)
