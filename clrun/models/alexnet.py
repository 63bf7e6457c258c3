"""InterContiNet's AlexNet for 32×32 CIFAR images (Wołczyk et al. 2022, Table 3).

conv(3→64, 3×3, stride 2) → ReLU → max-pool 2; conv(64→192) → ReLU → max-pool 2;
conv(192→384) → ReLU; conv(384→256) → ReLU; conv(256→256) → ReLU → max-pool 2 (all 3×3,
padding 1) → 1024 features; dropout 0.5 → 1024→4096 → ReLU → dropout 0.5 → 4096→4096 → ReLU →
heads. No batch norm, PyTorch's default initialisation: 23,272,266 parameters with 10 outputs.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from torch import nn

from clrun.errors import ConfigError
from clrun.instantiate import config_target
from clrun.models.net import ContinualNet


def check_image_input(name: str, input_shape: tuple[int, ...]) -> None:
    if len(input_shape) != 3 or min(input_shape[1:]) < 16:
        raise ConfigError("model", name, "needs images of at least 16×16 pixels (the paper's "
                          f"are 32×32); this scenario's inputs are {tuple(input_shape)}")


def alexnet_backbone(in_channels: int, height: int, width: int, dropout: float = 0.5,
                     conv: Callable[..., nn.Module] = nn.Conv2d,
                     linear: Callable[[int, int], nn.Module] = nn.Linear,
                     drop: Callable[[float], nn.Module] = nn.Dropout
                     ) -> tuple[nn.Sequential, int]:
    """The layout with the given layer kinds (the interval AlexNet swaps in interval layers);
    `conv(a, b, kernel, stride, padding)`."""
    def block(a: int, b: int, stride: int = 1) -> list[nn.Module]:
        return [conv(a, b, 3, stride, 1), nn.ReLU()]

    size = 256 * math.prod(max(1, math.ceil(side / 2) // 8) for side in (height, width))
    return nn.Sequential(
        *block(in_channels, 64, stride=2), nn.MaxPool2d(2), *block(64, 192), nn.MaxPool2d(2),
        *block(192, 384), *block(384, 256), *block(256, 256), nn.MaxPool2d(2), nn.Flatten(),
        drop(dropout), linear(size, 4096), nn.ReLU(),
        drop(dropout), linear(4096, 4096), nn.ReLU()), 4096


@config_target
def alexnet(input_shape: tuple[int, ...], head_sizes: list[int],
            dropout: float = 0.5) -> ContinualNet:
    """InterContiNet's CIFAR AlexNet with one head per entry of `head_sizes`."""
    check_image_input("alexnet", input_shape)
    backbone, features = alexnet_backbone(*input_shape, dropout=dropout)
    return ContinualNet(backbone, features, list(head_sizes))
