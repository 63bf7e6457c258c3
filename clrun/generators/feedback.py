"""The generative half of a classifier that is its own generator (replay-through-feedback and
brain-inspired replay): a Gaussian latent computed from the classifier's last hidden layer and
a decoder back to the input. It is a submodule of the classifier's network, so it trains with
the classifier's optimizer and lives in the classifier's checkpoint.

`FeedbackVAE` (RtF, van de Ven & Tolias 2018): standard normal prior, plain decoder.
`GatedFeedbackVAE` (BI-R, van de Ven, Siegelmann & Tolias 2020): a Gaussian-mixture prior with
one learned mode per class, and fixed random gates per class on every hidden layer of the
decoder, so that replay can be asked for by class ("conditional replay") and each class uses
its own sub-network of the decoder ("gating based on internal context").
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clrun.generators.vae import gaussian_elbo_loss, mlp_layers, reconstruction_loss

LOG_2PI = math.log(2 * math.pi)


class FeedbackVAE(nn.Module):
    """(μ, log σ²) from the classifier's features and a decoder back to the input (hidden
    sizes mirrored, as `generator=vae` gives them); N(0, I) prior."""

    conditional = False  # the sampler interface

    def __init__(self, feature_size: int, input_shape: tuple[int, ...],
                 hidden_sizes: list[int], z_dim: int) -> None:
        super().__init__()
        self.input_shape = tuple(input_shape)
        self.z_dim = z_dim
        self.mu = nn.Linear(feature_size, z_dim)
        self.logvar = nn.Linear(feature_size, z_dim)
        self.decoder = nn.Sequential(mlp_layers([z_dim, *reversed(hidden_sizes)]),
                                     nn.Linear(hidden_sizes[0], math.prod(input_shape)))

    def loss(self, features: Tensor, x_unit: Tensor, contexts: Tensor | None = None) -> Tensor:
        """Van de Ven's VAE loss of unit-space images encoded as `features` (`contexts` is
        for the conditional subclass)."""
        return gaussian_elbo_loss(self.mu(features), self.logvar(features), self.decoder, x_unit)

    @torch.no_grad()
    def sample(self, n: int, conditions: Tensor | None = None) -> Tensor:
        z = torch.randn(n, self.z_dim, device=self.mu.weight.device)
        return torch.sigmoid(self.decoder(z).float()).view(n, *self.input_shape)


class GatedDecoder(nn.Module):
    """Linear+ReLU layers whose outputs are multiplied by a context's fixed binary mask (a
    fraction `gate_proportion` of each layer's units off per context, drawn once at
    construction and kept as buffers, so checkpoints and frozen copies carry them), then an
    ungated output layer. A context given as probabilities gates with the mixed masks."""

    def __init__(self, sizes: list[int], n_outputs: int, n_contexts: int,
                 gate_proportion: float) -> None:
        super().__init__()
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:],
                                                                    strict=True))
        for k, width in enumerate(sizes[1:]):
            mask = (torch.rand(n_contexts, width) >= gate_proportion).float()
            self.register_buffer(f"mask_{k}", mask)
        self.output = nn.Linear(sizes[-1], n_outputs)

    def masks(self) -> list[Tensor]:
        return [getattr(self, f"mask_{k}") for k in range(len(self.hidden))]

    def forward(self, z: Tensor, contexts: Tensor) -> Tensor:
        h = z
        for layer, mask in zip(self.hidden, self.masks(), strict=True):
            h = F.relu(layer(h)) * (contexts.to(mask.dtype) @ mask).to(h.dtype)
        return self.output(h)


def gaussian_log_density(z: Tensor, mean: Tensor, logvar: Tensor) -> Tensor:
    """log N(z; mean, diag(exp(logvar))) summed over the last dimension (broadcasting)."""
    return -0.5 * (LOG_2PI + logvar + (z - mean).pow(2) / logvar.exp()).sum(dim=-1)


class GatedFeedbackVAE(FeedbackVAE):
    """BI-R's generative half: contexts are the data set's classes (one-hot, or probabilities
    that mix the modes and the masks). The KL term has no closed form under a mixture prior; as
    the authors do, it is the one-sample estimate log q(z|x) − log p(z|c) at the
    reparametrised z, divided by the number of pixels like van de Ven's KL."""

    conditional = True

    def __init__(self, feature_size: int, input_shape: tuple[int, ...],
                 hidden_sizes: list[int], z_dim: int, n_classes: int,
                 gate_proportion: float) -> None:
        super().__init__(feature_size, input_shape, hidden_sizes, z_dim)
        self.n_classes = n_classes
        self.decoder = GatedDecoder([z_dim, *reversed(hidden_sizes)], math.prod(input_shape),
                                    n_classes, gate_proportion)
        self.prior_means = nn.Parameter(torch.randn(n_classes, z_dim))
        self.prior_logvars = nn.Parameter(torch.randn(n_classes, z_dim))

    def one_hot(self, classes: Tensor) -> Tensor:
        return F.one_hot(classes, self.n_classes).float()

    def log_prior(self, z: Tensor, contexts: Tensor) -> Tensor:
        """log Σ_k c_k N(z; m_k, σ_k²) per sample, in float32."""
        per_mode = gaussian_log_density(z.float().unsqueeze(1), self.prior_means.float(),
                                        self.prior_logvars.float())  # (n, n_classes)
        return torch.logsumexp(per_mode + contexts.float().clamp_min(1e-30).log(), dim=1)

    def loss(self, features: Tensor, x_unit: Tensor, contexts: Tensor | None = None) -> Tensor:
        mu, logvar = self.mu(features).float(), self.logvar(features).float()
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        logits = self.decoder(z, contexts).flatten(1)
        recon = reconstruction_loss("bce", logits, x_unit.flatten(1)).mean(dim=1)
        kl = (gaussian_log_density(z, mu, logvar) - self.log_prior(z, contexts)) / x_unit[0].numel()
        return (recon + kl).mean()

    @torch.no_grad()
    def sample(self, n: int, conditions: Tensor | None = None) -> Tensor:
        """Samples of the asked classes (uniform over all classes when None): z from the
        class's mode, decoded through the class's gates."""
        device = self.prior_means.device
        if conditions is None:
            conditions = torch.randint(self.n_classes, (n,), device=device)
        conditions = conditions.to(device)
        mean, logvar = self.prior_means[conditions], self.prior_logvars[conditions]
        z = mean + torch.randn_like(mean) * (0.5 * logvar).exp()
        logits = self.decoder(z, self.one_hot(conditions))
        return torch.sigmoid(logits.float()).view(n, *self.input_shape)
