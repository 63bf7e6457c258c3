"""GEM's reduced ResNet-18 (Lopez-Paz & Ranzato 2017), the backbone of split-CIFAR papers.

nf = 20: a 3×3 stem (no bias) with batch norm and no max-pool; four stages of two BasicBlocks
with widths nf, 2nf, 4nf, 8nf and strides 1, 2, 2, 2 on each stage's first block; a 1×1
convolution with batch norm on the shortcut where the shape changes; 4×4 average pooling to
8nf = 160 features; PyTorch's default initialisation. 1,094,750 parameters with 10 outputs.
"""

from __future__ import annotations

from torch import Tensor, nn

from clrun.errors import ConfigError
from clrun.instantiate import config_target
from clrun.models.net import ContinualNet, check_widths


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    def __init__(self, in_channels: int, channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_channels, channels, stride)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = conv3x3(channels, channels)
        self.bn2 = nn.BatchNorm2d(channels)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(channels))

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn1(self.conv1(x)).relu()
        return (self.bn2(self.conv2(out)) + self.shortcut(x)).relu()


def reduced_resnet18_backbone(in_channels: int, nf: int = 20) -> tuple[nn.Sequential, int]:
    """The backbone (images to 8·nf features) and its feature size."""
    layers: list[nn.Module] = [conv3x3(in_channels, nf), nn.BatchNorm2d(nf), nn.ReLU()]
    width = nf
    for multiple, stride in ((1, 1), (2, 2), (4, 2), (8, 2)):
        layers += [BasicBlock(width, nf * multiple, stride), BasicBlock(nf * multiple,
                                                                        nf * multiple, 1)]
        width = nf * multiple
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return nn.Sequential(*layers), width


@config_target
def resnet18_reduced(input_shape: tuple[int, ...], head_sizes: list[int],
                     nf: int = 20) -> ContinualNet:
    """Reduced ResNet-18 with one head per entry of `head_sizes` (32×32 inputs give the 4×4
    average pool of the original; other sizes pool globally)."""
    check_widths("model.nf", [nf])
    if len(input_shape) != 3:
        raise ConfigError("model", "resnet18_reduced", f"needs images (channels, H, W); this "
                          f"scenario's inputs are {tuple(input_shape)} (use model=mlp)")
    backbone, features = reduced_resnet18_backbone(input_shape[0], nf)
    return ContinualNet(backbone, features, list(head_sizes))
