"""Small reusable MobileNet layers: conv-BN-act, depthwise-separable conv, inverted residual."""

from __future__ import annotations

import torch
from torch import nn


def make_divisible(value: float, divisor: int = 4, min_value: int | None = None) -> int:
    """Round a channel count to a multiple of `divisor`, never dropping more than 10%."""
    min_value = min_value or divisor
    new = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new


class ConvBNAct(nn.Sequential):
    """Conv2d -> BatchNorm2d -> activation (ReLU6 by default, None for linear)."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        act: type[nn.Module] | None = nn.ReLU6,
    ) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(in_ch, out_ch, kernel_size, stride, kernel_size // 2, groups=groups, bias=False),
            nn.BatchNorm2d(out_ch),
        ]
        if act is not None:
            layers.append(act())
        super().__init__(*layers)
        self.in_ch, self.out_ch = in_ch, out_ch


class DepthwiseSeparableConv(nn.Sequential):
    """Depthwise 3x3 conv-BN-act followed by a pointwise conv-BN (activation optional)."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        stride: int = 1,
        act: type[nn.Module] | None = nn.ReLU6,
        pw_act: type[nn.Module] | None = nn.ReLU6,
    ) -> None:
        super().__init__(
            ConvBNAct(in_ch, in_ch, 3, stride, groups=in_ch, act=act),
            ConvBNAct(in_ch, out_ch, 1, act=pw_act),
        )
        self.in_ch, self.out_ch = in_ch, out_ch


class _ResidualBlock(nn.Module):
    """`self.block`, plus the input when stride 1 keeps the shape (set up by the subclasses)."""

    block: nn.Sequential
    use_residual: bool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block, adding the input when the shapes match."""
        out = self.block(x)
        return x + out if self.use_residual else out


class InvertedResidual(_ResidualBlock):
    """MobileNetV2 block: 1x1 expand, 3x3 depthwise (stride), 1x1 linear project; residual when shapes match."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, expansion: float = 6.0) -> None:
        super().__init__()
        hidden = make_divisible(in_ch * expansion)
        layers: list[nn.Module] = []
        if hidden != in_ch:
            layers.append(ConvBNAct(in_ch, hidden, 1))
        layers += [ConvBNAct(hidden, hidden, 3, stride, groups=hidden), ConvBNAct(hidden, out_ch, 1, act=None)]
        self.block = nn.Sequential(*layers)
        self.use_residual = stride == 1 and in_ch == out_ch
        self.in_ch, self.out_ch, self.stride = in_ch, out_ch, stride


class FusedInvertedResidual(_ResidualBlock):
    """Fused-MBConv (EfficientNetV2): a dense 3x3 expand (stride) then a 1x1 linear project; residual when shapes match.

    It replaces the 1x1-expand + depthwise pair where the feature map is large: one compute-bound dense conv is
    faster on a CPU than two memory-bound passes over the wide hidden tensor.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, expansion: float = 4.0) -> None:
        super().__init__()
        hidden = make_divisible(in_ch * expansion)
        self.block = nn.Sequential(ConvBNAct(in_ch, hidden, 3, stride), ConvBNAct(hidden, out_ch, 1, act=None))
        self.use_residual = stride == 1 and in_ch == out_ch
        self.in_ch, self.out_ch, self.stride = in_ch, out_ch, stride


class UpBlock(nn.Module):
    """Nearest x2 upsample, then a depthwise-separable conv (exports to ONNX as Resize + convs)."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.conv = DepthwiseSeparableConv(in_ch, out_ch)
        self.in_ch, self.out_ch = in_ch, out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Double the spatial size and mix channels."""
        return self.conv(self.up(x))
