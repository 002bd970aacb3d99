"""ResNet-18 (CIFAR variant) and NODE-18 of the ACA paper (docs/paper.md, experiment 3).

ResNet-18: 3x3 stem, four stages of two basic blocks (64/128/256/512
channels, stride 1/2/2/2), no max-pool, global average pool, linear head.
NODE-18 replaces the second block of every stage by an ODE block whose
dynamics f = conv3x3-BN-ReLU-conv3x3-BN-ReLU (no shortcut) is integrated over
t in [0, 1]; f has exactly the parameters of the block it replaces, so both
networks have 11,173,962 parameters for 10 classes. ``width`` (channels of the
first stage) and ``num_stages`` shrink them for CPU runs.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

import aca
from aca.errors import ConfigError

MODEL_NAMES = ("resnet18", "node18")


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """relu(bn(conv(relu(bn(conv(x))))) + shortcut(x)), the ResNet-18 block."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_channels, out_channels, stride)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = conv3x3(out_channels, out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


def ode_dynamics(channels: int) -> nn.Sequential:
    """f(y) = relu(bn(conv(relu(bn(conv(y)))))): NODE-18's ODE right-hand side.
    Plain BatchNorm2d (never SyncBatchNorm): each solve calls f many times."""
    return nn.Sequential(
        conv3x3(channels, channels),
        nn.BatchNorm2d(channels),
        nn.ReLU(),
        conv3x3(channels, channels),
        nn.BatchNorm2d(channels),
        nn.ReLU(),
    )


class ResNet(nn.Module):
    """CIFAR ResNet with two blocks per stage; with ``ode_options`` (the keyword
    arguments of ``aca.ODEBlock``: solver, gradient, tolerances) the second block
    of each stage is an ODE block, which makes it NODE-18."""

    def __init__(
        self,
        num_classes: int = 10,
        width: int = 64,
        num_stages: int = 4,
        in_channels: int = 3,
        ode_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if width < 1 or not 1 <= num_stages <= 4:
            raise ConfigError(
                f"width must be >= 1 and num_stages in 1..4, got width={width}, "
                f"num_stages={num_stages}"
            )
        self.stem = nn.Sequential(
            conv3x3(in_channels, width), nn.BatchNorm2d(width), nn.ReLU(inplace=True)
        )
        stages = []
        channels = width
        for stage in range(num_stages):
            out_channels = width * 2**stage
            first = BasicBlock(channels, out_channels, stride=1 if stage == 0 else 2)
            if ode_options is None:
                second: nn.Module = BasicBlock(out_channels, out_channels)
            else:
                second = aca.ODEBlock(
                    ode_dynamics(out_channels), t1=1.0, time_dependent=False, **ode_options
                )
            stages.append(nn.Sequential(first, second))
            channels = out_channels
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        features = self.pool(self.stages(self.stem(x)))
        return self.head(features.flatten(1))


def build_model(
    name: str,
    num_classes: int = 10,
    width: int = 64,
    num_stages: int = 4,
    in_channels: int = 3,
    ode_options: dict[str, Any] | None = None,
) -> ResNet:
    """``resnet18`` or ``node18`` (the latter needs ``ode_options``) at any width/depth."""
    if name not in MODEL_NAMES:
        raise ConfigError(f"unknown model {name!r}; choose one of {list(MODEL_NAMES)}")
    if name == "node18" and ode_options is None:
        raise ValueError("node18 needs ode_options (solver, gradient, tolerances)")
    return ResNet(
        num_classes,
        width,
        num_stages,
        in_channels,
        ode_options=ode_options if name == "node18" else None,
    )


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
