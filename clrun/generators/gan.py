"""WGAN-GP (Gulrajani et al. 2017), the GAN of Shin et al.'s deep generative replay.

The critic takes `critic_steps` steps per generator step (5 in the paper) and its loss carries
the gradient penalty `gp_weight`·(‖∇D(x̂)‖ − 1)² on random interpolates of real and generated
images (λ = 10). `architecture=fc` is a fully connected pair, `dcgan` a DCGAN-style
convolutional pair (no batch norm in the critic, as the penalty requires). Images are generated
in unit space through a sigmoid. With replay, the critic's real data is the mixture
w·(current) + (1 − w)·(previous generator's samples), so the new generator learns both.

A training step is one critic step; `max_steps` counts critic steps (Lightning counts every
optimizer's steps, so the Trainer gets the matching total).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from clrun.errors import ConfigError
from clrun.generators.base import Generator
from clrun.optim import KeptOptimizer
from clrun.scenarios.batches import Batch
from clrun.strategies.importance import check_choice

ARCHITECTURES = ("fc", "dcgan")


class WGANGP(Generator):
    fits = "images of shape (channels, H, W) with H and W divisible by 4 (architecture=dcgan)"

    def __init__(self, input_shape: tuple[int, ...], n_classes: int, architecture: str = "fc",
                 z_dim: int = 100, width: int = 64, critic_steps: int = 5,
                 gp_weight: float = 10.0, **kwargs: Any) -> None:
        check_choice("generator.architecture", architecture, ARCHITECTURES)
        if architecture == "dcgan" and (len(input_shape) != 3 or input_shape[1] % 4
                                        or input_shape[2] % 4):
            raise ConfigError("generator.architecture", architecture,
                              f"needs {self.fits}; this scenario's inputs are "
                              f"{tuple(input_shape)} (use generator.architecture=fc)")
        if critic_steps < 1:
            raise ConfigError("generator.critic_steps", critic_steps, "must be >= 1")
        super().__init__(input_shape=input_shape, n_classes=n_classes, **kwargs)
        self.automatic_optimization = False
        self.z_dim = z_dim
        self.critic_steps = critic_steps
        self.gp_weight = gp_weight
        self.critic_optimizer = KeptOptimizer(self.kept_optimizer.factory,
                                              self.kept_optimizer.reset)
        extra = n_classes if self.conditional else 0
        n_pixels = math.prod(self.input_shape)
        if architecture == "fc":
            self.generator = nn.Sequential(
                nn.Linear(z_dim + extra, 4 * width), nn.ReLU(), nn.Linear(4 * width, 8 * width),
                nn.ReLU(), nn.Linear(8 * width, n_pixels), nn.Unflatten(1, self.input_shape))
            self.critic = nn.Sequential(
                nn.Flatten(), nn.Linear(n_pixels + extra, 8 * width), nn.LeakyReLU(0.2),
                nn.Linear(8 * width, 4 * width), nn.LeakyReLU(0.2), nn.Linear(4 * width, 1))
            self.critic_takes_channels = False
        else:
            c, h, w = self.input_shape
            bottom = (2 * width, h // 4, w // 4)
            self.generator = nn.Sequential(
                nn.Linear(z_dim + extra, math.prod(bottom)), nn.ReLU(),
                nn.Unflatten(1, bottom), nn.ConvTranspose2d(2 * width, width, 4, 2, 1),
                nn.BatchNorm2d(width), nn.ReLU(), nn.ConvTranspose2d(width, c, 4, 2, 1))
            self.critic = nn.Sequential(
                nn.Conv2d(c + extra, width, 4, 2, 1), nn.LeakyReLU(0.2),
                nn.Conv2d(width, 2 * width, 4, 2, 1), nn.LeakyReLU(0.2), nn.Flatten(),
                nn.Linear(math.prod(bottom), 1))
            self.critic_takes_channels = True

    def generate(self, n: int, conditions: Tensor | None) -> Tensor:
        z = torch.randn(n, self.z_dim, device=self.device)
        one_hot = self.one_hot(conditions, n)
        if one_hot is not None:
            z = torch.cat([z, one_hot.to(z.dtype)], dim=1)
        return torch.sigmoid(self.generator(z))

    def score(self, x: Tensor, conditions: Tensor | None) -> Tensor:
        """The critic's value of each image (conditioned on its natural class)."""
        one_hot = self.one_hot(conditions, len(x))
        if one_hot is None:
            return self.critic(x).squeeze(1)
        if self.critic_takes_channels:
            planes = one_hot.to(x.dtype)[:, :, None, None].expand(-1, -1, *x.shape[2:])
            return self.critic(torch.cat([x, planes], dim=1)).squeeze(1)
        return self.critic(torch.cat([x.flatten(1), one_hot.to(x.dtype)], dim=1)).squeeze(1)

    @torch.no_grad()
    def sample(self, n: int, conditions: Tensor | None = None) -> Tensor:
        if self.conditional and conditions is None:
            conditions = torch.randint(self.n_classes, (n,), device=self.device)
        return self.generate(n, conditions).float()

    def gradient_penalty(self, real: Tensor, fake: Tensor, conditions: Tensor | None) -> Tensor:
        mix = torch.rand(len(real), *([1] * (real.dim() - 1)), device=real.device)
        between = (mix * real + (1 - mix) * fake).requires_grad_(True)
        grads, = torch.autograd.grad(self.score(between, conditions).sum(), between,
                                     create_graph=True)
        return (grads.flatten(1).float().norm(dim=1) - 1).pow(2).mean()

    def training_step(self, batch: Batch, batch_idx: int) -> None:
        generator_opt, critic_opt = self.optimizers()
        real, conditions = batch.x, batch.y if self.conditional else None
        real_score = self.score(real, conditions).mean()
        if self.replay is not None:
            replayed, replay_conditions = self.replay.draw(len(real))
            w = self.replay.weight_current
            real_score = w * real_score + (1 - w) * self.score(replayed,
                                                               replay_conditions).mean()
        fake = self.generate(len(real), conditions).detach()
        critic_loss = (self.score(fake, conditions).mean() - real_score
                       + self.gp_weight * self.gradient_penalty(real, fake, conditions))
        critic_opt.zero_grad()
        self.manual_backward(critic_loss)
        critic_opt.step()
        self.log_loss("critic_loss", critic_loss)
        if (batch_idx + 1) % self.critic_steps:
            return
        generator_loss = -self.score(self.generate(len(real), conditions), conditions).mean()
        generator_opt.zero_grad()
        self.manual_backward(generator_loss)
        generator_opt.step()

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        return [self.kept_optimizer.get(self.generator),
                self.critic_optimizer.get(self.critic)]

    def training_budget(self, batches_per_epoch: int) -> dict[str, int]:
        steps = self.max_steps
        if steps > 0:  # Lightning counts the generator's steps too
            steps += steps // self.critic_steps
        return {"max_epochs": self.max_epochs, "max_steps": steps}

    def optimizer_state(self) -> dict[str, Any]:
        return {"generator": super().optimizer_state(),
                "critic": self.critic_optimizer.state_dict()}

    def load_optimizer_state(self, state: dict[str, Any]) -> None:
        super().load_optimizer_state(state["generator"])
        self.critic_optimizer.load_state_dict(state["critic"])
