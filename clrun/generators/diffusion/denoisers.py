"""The networks that predict noise: diffusers' UNet for images, an MLP for feature vectors.

Both take (x_t, t, classes) and return ε̂ of x_t's shape; `classes` is None for an
unconditional model.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clrun.errors import ConfigError


class UNetDenoiser(nn.Module):
    """diffusers' `UNet2DModel` (ResNet blocks, attention at the chosen resolutions, class
    embedding when conditional), constructed from config values only."""

    def __init__(self, image_size: int, channels: int, block_channels: list[int],
                 layers_per_block: int, attention_resolutions: list[int],
                 n_classes: int | None, norm_groups: int, dropout: float) -> None:
        super().__init__()
        from diffusers import UNet2DModel  # heavy import, only for runs that use it

        for width in block_channels:
            if width % norm_groups:
                raise ConfigError("generator.block_channels", list(block_channels),
                                  f"every width must divide by generator.norm_groups="
                                  f"{norm_groups}")
        resolutions = [image_size // 2 ** level for level in range(len(block_channels))]
        attention = [r in attention_resolutions for r in resolutions]
        self.unet = UNet2DModel(
            sample_size=image_size, in_channels=channels, out_channels=channels,
            block_out_channels=tuple(block_channels), layers_per_block=layers_per_block,
            down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attention),
            up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D"
                                 for a in reversed(attention)),
            num_class_embeds=n_classes, norm_num_groups=norm_groups, dropout=dropout)

    def forward(self, x: Tensor, t: Tensor, classes: Tensor | None) -> Tensor:
        return self.unet(x, t, class_labels=classes).sample


def timestep_embedding(t: Tensor, size: int) -> Tensor:
    """Sinusoidal embedding of diffusion steps (Transformer/DDPM style); an odd `size` gets a
    last column of zeros."""
    half = size // 2
    frequencies = torch.exp(-math.log(10_000) * torch.arange(half, device=t.device) / half)
    angles = t.float()[:, None] * frequencies[None]
    return F.pad(torch.cat([angles.sin(), angles.cos()], dim=1), (0, size % 2))


class MLPDenoiser(nn.Module):
    """Noise prediction for vectors (replayed features): the input, a step embedding and a
    class embedding are added in the first hidden layer; SiLU between layers."""

    def __init__(self, size: int, hidden_sizes: list[int], n_classes: int | None) -> None:
        super().__init__()
        width = hidden_sizes[0]
        self.embedding_size = width
        self.time = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.classes = nn.Embedding(n_classes, width) if n_classes else None
        self.input = nn.Linear(size, width)
        layers: list[nn.Module] = []
        for a, b in zip(hidden_sizes[:-1], hidden_sizes[1:], strict=True):
            layers += [nn.SiLU(), nn.Linear(a, b)]
        self.hidden = nn.Sequential(*layers, nn.SiLU(), nn.Linear(hidden_sizes[-1], size))

    def forward(self, x: Tensor, t: Tensor, classes: Tensor | None) -> Tensor:
        h = self.input(x) + self.time(timestep_embedding(t, self.embedding_size).to(x.dtype))
        if self.classes is not None and classes is not None:
            h = h + self.classes(classes)
        return self.hidden(h)
