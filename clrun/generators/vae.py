"""Variational autoencoders: fully connected (van de Ven's split-MNIST generator) and
convolutional (28×28 and 32×32 images).

Loss (van de Ven): binary cross-entropy of the decoder's Bernoulli logits, averaged over pixels
and batch, plus the KL divergence to the standard normal prior summed over the latent units,
averaged over the batch and divided by the number of pixels. Samples are the decoder's means
(no Bernoulli noise). `conditional=true` gives a conditional VAE: the one-hot natural class
joins the encoder's input and the decoder's latent code.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clrun.errors import ConfigError
from clrun.generators.base import Generator
from clrun.models.net import check_widths


def gaussian_elbo_loss(mu: Tensor, logvar: Tensor, decode: Callable[[Tensor], Tensor],
                       x: Tensor) -> Tensor:
    """Van de Ven's VAE loss of unit-space images `x`: per-pixel BCE of the Bernoulli logits
    decoded from a reparametrised z, plus KL to N(0, I) over the number of pixels; batch mean."""
    z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
    recon = reconstruction_loss("bce", decode(z).flatten(1), x.flatten(1)).mean(dim=1)
    kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).float().sum(dim=1) / x[0].numel()
    return (recon + kl).mean()


RECONSTRUCTIONS = ("bce", "mse")


def reconstruction_loss(kind: str, logits: Tensor, target: Tensor) -> Tensor:
    """Per-pixel loss of Bernoulli logits against unit-space targets: binary cross-entropy
    (`bce`) or the squared error of the decoded means (`mse`); in float32."""
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(logits.float(), target.float(),
                                                  reduction="none")
    return (torch.sigmoid(logits.float()) - target.float()).pow(2)


def mlp_layers(sizes: list[int]) -> nn.Sequential:
    """Linear+ReLU between consecutive sizes."""
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers)


class VAEBase(Generator):
    """Gaussian encoder, Bernoulli decoder; subclasses give `encode_features`/`decode_logits`."""

    def __init__(self, z_dim: int = 100, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_widths("generator.z_dim", [z_dim])
        self.z_dim = z_dim
        self.n_pixels = math.prod(self.input_shape)

    def encode(self, x: Tensor, conditions: Tensor | None) -> tuple[Tensor, Tensor]:
        """Mean and log-variance of q(z | x)."""
        raise NotImplementedError

    def decode_logits(self, z: Tensor, conditions: Tensor | None) -> Tensor:
        """Bernoulli logits of every pixel, shape (n, *input_shape)."""
        raise NotImplementedError

    def with_condition(self, h: Tensor, conditions: Tensor | None) -> Tensor:
        one_hot = self.one_hot(conditions, len(h))
        return h if one_hot is None else torch.cat([h, one_hot.to(h.dtype)], dim=1)

    def loss(self, x: Tensor, conditions: Tensor | None) -> Tensor:
        mu, logvar = self.encode(x, conditions)
        return gaussian_elbo_loss(mu, logvar, lambda z: self.decode_logits(z, conditions), x)

    @torch.no_grad()
    def sample(self, n: int, conditions: Tensor | None = None) -> Tensor:
        if self.conditional and conditions is None:
            conditions = torch.randint(self.n_classes, (n,), device=self.device)
        z = torch.randn(n, self.z_dim, device=self.device)
        return torch.sigmoid(self.decode_logits(z, conditions).float())

    @torch.no_grad()
    def reconstruct(self, x: Tensor, conditions: Tensor | None = None) -> Tensor:
        """The decoder's mean at the encoder's mean (for pictures and tests)."""
        mu, _ = self.encode(x, conditions)
        return torch.sigmoid(self.decode_logits(mu, conditions).float())


class VAE(VAEBase):
    """Fully connected: encoder input→hidden sizes→(μ, log σ²), decoder mirrored, sigmoid."""

    def __init__(self, input_shape: tuple[int, ...], n_classes: int,
                 hidden_sizes: tuple[int, ...] = (400, 400), z_dim: int = 100,
                 **kwargs: Any) -> None:
        super().__init__(z_dim=z_dim, input_shape=input_shape, n_classes=n_classes, **kwargs)
        check_widths("generator.hidden_sizes", list(hidden_sizes))
        hidden = list(hidden_sizes)
        self.hidden_sizes = hidden
        extra = n_classes if self.conditional else 0
        self.encoder = mlp_layers([self.n_pixels + extra, *hidden])
        self.mu = nn.Linear(hidden[-1], z_dim)
        self.logvar = nn.Linear(hidden[-1], z_dim)
        self.decoder = nn.Sequential(mlp_layers([z_dim + extra, *reversed(hidden)]),
                                     nn.Linear(hidden[0], self.n_pixels))

    def encode(self, x: Tensor, conditions: Tensor | None) -> tuple[Tensor, Tensor]:
        h = self.encoder(self.with_condition(x.flatten(1), conditions))
        return self.mu(h), self.logvar(h)

    def decode_logits(self, z: Tensor, conditions: Tensor | None) -> Tensor:
        return self.decoder(self.with_condition(z, conditions)).view(-1, *self.input_shape)


class ConvVAE(VAEBase):
    """Two stride-2 convolutions (4×4) down, a hidden layer, and their transposes up; for
    images whose height and width divide by 4 (28×28×1, 32×32×3, 8×8 digits)."""

    fits = "images of shape (channels, H, W) with H and W divisible by 4"

    def __init__(self, input_shape: tuple[int, ...], n_classes: int,
                 channels: tuple[int, ...] = (32, 64), hidden_size: int = 256, z_dim: int = 100,
                 **kwargs: Any) -> None:
        if len(input_shape) != 3 or input_shape[1] % 4 or input_shape[2] % 4:
            raise ConfigError("generator", "conv_vae", f"needs {self.fits}; this scenario's "
                              f"inputs are {tuple(input_shape)} (use generator=vae)")
        super().__init__(z_dim=z_dim, input_shape=input_shape, n_classes=n_classes, **kwargs)
        check_widths("generator.channels", list(channels))
        if len(channels) != 2:
            raise ConfigError("generator.channels", list(channels), "give two channel counts")
        c, h, w = input_shape
        c1, c2 = channels
        self.bottom = (c2, h // 4, w // 4)
        extra = n_classes if self.conditional else 0
        self.encoder = nn.Sequential(
            nn.Conv2d(c, c1, 4, 2, 1), nn.ReLU(), nn.Conv2d(c1, c2, 4, 2, 1), nn.ReLU(),
            nn.Flatten())
        self.hidden = mlp_layers([math.prod(self.bottom) + extra, hidden_size])
        self.mu = nn.Linear(hidden_size, z_dim)
        self.logvar = nn.Linear(hidden_size, z_dim)
        self.decoder_fc = mlp_layers([z_dim + extra, hidden_size, math.prod(self.bottom)])
        self.decoder = nn.Sequential(nn.ConvTranspose2d(c2, c1, 4, 2, 1), nn.ReLU(),
                                     nn.ConvTranspose2d(c1, c, 4, 2, 1))

    def encode(self, x: Tensor, conditions: Tensor | None) -> tuple[Tensor, Tensor]:
        h = self.hidden(self.with_condition(self.encoder(x), conditions))
        return self.mu(h), self.logvar(h)

    def decode_logits(self, z: Tensor, conditions: Tensor | None) -> Tensor:
        h = self.decoder_fc(self.with_condition(z, conditions)).view(-1, *self.bottom)
        return self.decoder(h)
