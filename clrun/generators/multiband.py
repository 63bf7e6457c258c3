"""Multiband VAE (Deja et al. 2022), fully connected or convolutional, in the authors' protocol
(protocol sheet).

Per task a *local* VAE learns the task: an encoder to a continuous latent z (Gaussian) and a
binary latent b (Gumbel-softmax relaxation of ±1 bits, temperature max(1 − 5·epoch/E, 0.01), hard
below 0.1), and a decoder = *translator* (z, b, task code → the global latent space) → MLP →
image. After the first task the *global* decoder is a copy of the local one. From task 2 on the
task trains in two phases within one fit:

1. local: the local VAE learns the task (only its encoder for the first `encoder_epochs`,
   by default the authors' min(20, max(E/10, 5)), at a tenth of the learning rate; then all of
   it);
2. consolidation: the global decoder learns the new task's images from their local latents
   (with the new task's code) plus replay of the frozen previous global decoder's samples of
   every earlier task (its own latents and task codes, as many per step as
   `replay_fraction`·batch·min(t, 3), split equally over the earlier tasks; one step on the
   batch and its replay together, where the authors step through them in minibatches of the
   batch size: one backward per step keeps DDP's gradient sync plain). For the first
   `warmup_epochs` only its translator trains. After the warm-up, a replayed sample whose
   translated latent is more cosine-similar than `cosine_threshold` to a new-task image's takes
   that image as its target: the earlier task's band moves to the new data (1: never, for class
   splits; < 1 for Dirichlet splits, where tasks share classes).

Samples of task j: z ~ N(0, I), b ~ Bernoulli(frequency of ones in task j's binary codes), the
global decoder with task j's code. Optimizers are fresh for every phase (the config's optimizer,
Adam in the protocol, with the phase's learning rate), decayed by `lr_decay` per epoch; the
local phase clips gradients at 4 by value. The budget is in epochs (`local_epochs`,
`global_epochs`); reconstruction is Bernoulli (`bce`) or squared error (`mse`, the authors'
choice outside MNIST), summed over pixels and scaled by `reconstruction_scale`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clrun.errors import ClrunError, ConfigError
from clrun.generators.base import Generator
from clrun.generators.vae import RECONSTRUCTIONS, reconstruction_loss
from clrun.scenarios.batches import Batch
from clrun.strategies.importance import check_choice

LOCAL, CONSOLIDATE = "local", "consolidate"


def binary_code(index: Tensor, bits: int, prime: int) -> Tensor:
    """±1 bits of (index · prime) mod 2^bits: distinct, fixed codes for task indices."""
    code = (index.long() * prime) % (2 ** bits)
    powers = 2 ** torch.arange(bits - 1, -1, -1, device=index.device)
    return ((code.view(-1, 1) & powers) > 0).float() * 2 - 1


def leaky_mlp(sizes: list[int], last_activation: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if last_activation or i < len(sizes) - 2:
            layers.append(nn.LeakyReLU())
    return nn.Sequential(*layers)


class Translator(nn.Module):
    """(z, binary latent, task code) → a point of the global latent space."""

    def __init__(self, z_dim: int, binary_dim: int, code_bits: int, code_prime: int,
                 out_dim: int) -> None:
        super().__init__()
        self.code_bits, self.code_prime = code_bits, code_prime
        self.task_net = leaky_mlp([code_bits, 3 * code_bits, 2 * code_bits])
        self.binary_net = leaky_mlp([binary_dim, 2 * binary_dim, 3 * binary_dim])
        self.out = leaky_mlp([z_dim + 3 * binary_dim + 2 * code_bits, out_dim // 2, out_dim],
                             last_activation=False)

    def forward(self, z: Tensor, binary: Tensor, task: Tensor) -> Tensor:
        code = binary_code(task, self.code_bits, self.code_prime).to(z.dtype)
        return self.out(torch.cat([z, self.binary_net(binary), self.task_net(code)], dim=1))


class BandDecoder(nn.Module):
    """Translator, then `body` to the image's pixels (Bernoulli logits; `images` for means)."""

    def __init__(self, translator: Translator, body: nn.Module,
                 input_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.translator = translator
        self.input_shape = input_shape
        self.body = body

    def forward(self, z: Tensor, binary: Tensor, task: Tensor) -> Tensor:
        return self.body(self.translator(z, binary, task)).view(-1, *self.input_shape)

    def images(self, z: Tensor, binary: Tensor, task: Tensor) -> Tensor:
        return torch.sigmoid(self(z, binary, task).float())


ARCHITECTURES = ("fc", "conv")
CONV_INPUT = (1, 28, 28)


Networks = tuple[nn.Module, int, Callable[[], nn.Module]]


def fc_networks(d: int, input_shape: tuple[int, ...], latent: int) -> Networks:
    """Encoder (input → 16d → 4d → 2d), its feature size, and the maker of the decoder body
    (latent → 16d → 32d → pixels; made after the translator, as the authors' code does)."""
    n_pixels = math.prod(input_shape)
    return (leaky_mlp([n_pixels, 16 * d, 4 * d, 2 * d]), 2 * d,
            lambda: leaky_mlp([latent, 16 * d, 32 * d, n_pixels], last_activation=False))


def conv_networks(d: int, input_shape: tuple[int, ...], latent: int) -> Networks:
    """The authors' 28×28 variant: three 4×4 stride-2 convolutions (d channels, batch norm)
    and a 4d layer; decoder latent → 4d×4×4 and four transposed convolutions to 28×28."""
    def down(c_in: int) -> list[nn.Module]:
        return [nn.Conv2d(c_in, d, 4, 2, 1, bias=False), nn.BatchNorm2d(d), nn.LeakyReLU()]

    def up(c_in: int, c_out: int, stride: int) -> list[nn.Module]:
        return [nn.ConvTranspose2d(c_in, c_out, 4, stride, 0, bias=False),
                nn.BatchNorm2d(c_out), nn.LeakyReLU()]

    encoder = nn.Sequential(*down(1), *down(d), *down(d), nn.Flatten(),
                            nn.Linear(9 * d, 4 * d), nn.LeakyReLU())
    return encoder, 4 * d, lambda: nn.Sequential(
        nn.Linear(latent, 64 * d), nn.Unflatten(1, (4 * d, 4, 4)), *up(4 * d, 4 * d, 2),
        *up(4 * d, 2 * d, 2), *up(2 * d, d, 1), nn.ConvTranspose2d(d, 1, 4, 1, 0, bias=False))


class MultibandVAE(Generator):
    """The local VAE, the global decoder and the binary-code frequencies of every learned task.

    `width` is the authors' d, the global latent has z_dim·d units; `architecture=fc`:
    encoder input → 16d → 4d → 2d, decoder 16d → 32d → output (d = 32: 784-512-128-64 and
    512-1024-784), any input shape; `conv`: the authors' convolutional networks for 28×28
    one-channel images. Trained by `strategy=multiband`, which tells it each task's index and
    images.
    """

    trained_by_strategy = "multiband"

    def __init__(self, input_shape: tuple[int, ...], n_classes: int,
                 architecture: str = "fc", width: int = 32,
                 z_dim: int = 8, binary_dim: int = 4, code_bits: int = 4, code_prime: int = 9,
                 local_epochs: int = 70, global_epochs: int = 140, warmup_epochs: int = 5,
                 local_lr: float = 0.001, global_lr: float = 0.001, lr_decay: float = 0.98,
                 reconstruction: str = "bce", reconstruction_scale: float = 1.0,
                 replay_fraction: float = 0.5, cosine_threshold: float = 1.0,
                 compared_images: int = 1000, max_tasks: int = 64,
                 encoder_epochs: int | None = None, **kwargs: Any) -> None:
        check_choice("generator.architecture", architecture, ARCHITECTURES)
        if architecture == "conv" and tuple(input_shape) != CONV_INPUT:
            raise ConfigError("generator.architecture", architecture,
                              "needs 28×28 one-channel images; this scenario's are "
                              f"{tuple(input_shape)} (use generator.architecture=fc)")
        if reconstruction not in RECONSTRUCTIONS:
            raise ConfigError("generator.reconstruction", reconstruction,
                              "use one of: " + ", ".join(RECONSTRUCTIONS))
        for key, value in (("local_epochs", local_epochs), ("global_epochs", global_epochs)):
            if value < 1:
                raise ConfigError(f"generator.{key}", value, "must be a positive integer")
        super().__init__(input_shape=input_shape, n_classes=n_classes, **kwargs)
        self.automatic_optimization = False
        self.architecture = architecture
        self.z_dim, self.binary_dim = z_dim, binary_dim
        self.local_epochs, self.global_epochs = local_epochs, global_epochs
        self.warmup_epochs = warmup_epochs
        self.local_lr, self.global_lr, self.lr_decay = local_lr, global_lr, lr_decay
        self.reconstruction, self.reconstruction_scale = reconstruction, reconstruction_scale
        self.replay_fraction, self.cosine_threshold = replay_fraction, cosine_threshold
        self.compared_images = compared_images
        if encoder_epochs is not None and not 0 <= encoder_epochs < local_epochs:
            raise ConfigError("generator.encoder_epochs", encoder_epochs,
                              "must be in [0, generator.local_epochs), or null for the "
                              "authors' min(20, max(local_epochs / 10, 5))")
        self.encoder_epochs = encoder_epochs
        latent = z_dim * width
        networks = fc_networks if architecture == "fc" else conv_networks
        self.encoder, features, make_body = networks(width, self.input_shape, latent)
        self.mu = nn.Linear(features, z_dim)
        self.logvar = nn.Linear(features, z_dim)
        self.binary_logits = nn.Linear(features, binary_dim)
        translator = Translator(z_dim, binary_dim, code_bits, code_prime, latent)
        self.local_decoder = BandDecoder(translator, make_body(), self.input_shape)
        self.global_decoder = copy.deepcopy(self.local_decoder)
        # per learned task, how often each binary latent is 1 (sampling draws bits from it)
        self.register_buffer("ones_frequency", torch.full((max_tasks, binary_dim), 0.5))
        self.register_buffer("tasks_learned", torch.zeros((), dtype=torch.long))
        self.task_index: int | None = None
        self.task_images: Tensor | None = None
        self.previous_decoder: BandDecoder | None = None
        self.band_moves = 0  # replayed samples whose target moved to the new task (this task)

    # -- what strategy=multiband tells it ---------------------------------------------------
    def begin_task(self, index: int, images: Tensor) -> None:
        """Task `index` starts, with its training images in unit space."""
        if index >= len(self.ones_frequency):
            raise ClrunError(f"generator.max_tasks={len(self.ones_frequency)} is too small for "
                             f"task {index}; raise it")
        self.task_index, self.task_images = index, images
        self.band_moves = 0
        self.previous_decoder = (copy.deepcopy(self.global_decoder).eval().requires_grad_(False)
                                 if index > 0 else None)

    # -- phases -------------------------------------------------------------------------------
    @property
    def local_budget(self) -> int:
        """Epochs of local training: the first task also gets the consolidation's."""
        return self.local_epochs + (self.global_epochs if self.task_index == 0 else 0)

    @property
    def encoder_budget(self) -> int:
        """Local epochs (from task 2 on) that train only the encoder: `encoder_epochs`, or the
        authors' min(20, max(E/10, 5)), which leaves no epoch for the decoder when E <= 5."""
        if self.encoder_epochs is not None:
            return self.encoder_epochs
        return min(20, max(self.local_budget // 10, 5))

    def phase(self, epoch: int) -> tuple[str, int]:
        """The phase of `epoch` of this task's fit and the epoch within it."""
        if epoch < self.local_budget:
            return LOCAL, epoch
        return CONSOLIDATE, epoch - self.local_budget

    def training_budget(self, batches_per_epoch: int) -> dict[str, int]:
        if self.task_index is None:
            raise ClrunError("generator=multiband_vae is trained by strategy=multiband; add it")
        total = self.local_budget + (self.global_epochs if self.task_index else 0)
        return {"max_epochs": total, "max_steps": -1}

    def configure_optimizers(self) -> None:
        return None  # fresh optimizers per phase (on_train_epoch_start)

    def schedule(self, phase: str, epoch: int) -> tuple[int, list[nn.Parameter], float]:
        """The current sub-phase's first epoch, the parameters it trains and its learning
        rate: local (encoder only at a tenth of the rate at first, from task 2 on; then all),
        consolidation (the translator during the warm-up; then the whole global decoder)."""
        if phase == LOCAL:
            pretrain = self.encoder_budget if self.task_index else 0
            if epoch < pretrain:
                return 0, self.encoder_parameters(), self.local_lr / 10
            return pretrain, self.local_parameters(), self.local_lr
        if epoch < self.warmup_epochs:
            return 0, list(self.global_decoder.translator.parameters()), self.global_lr
        return self.warmup_epochs, list(self.global_decoder.parameters()), self.global_lr

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        phase, epoch = self.phase(self.current_epoch)
        start, params, lr = self.schedule(phase, epoch)
        if epoch == start:  # a fresh Adam (the config's optimizer) for every sub-phase
            self._optimizer = self.kept_optimizer.factory(params, lr=lr)
        for group in self._optimizer.param_groups:
            group["lr"] = lr * self.lr_decay ** (epoch - start)
        self._temperature = (max(1 - 5 * epoch / self.local_budget, 0.01)
                             if phase == LOCAL else None)
        if self._temperature is not None and self._temperature < 0.1:
            self._temperature = None  # hard bits
        self._ones = torch.zeros(self.binary_dim, device=self.device)
        self._count = torch.zeros((), device=self.device)
        if phase == CONSOLIDATE and epoch >= self.warmup_epochs and self.cosine_threshold < 1:
            self._compare = self.compared_latents()

    def on_train_epoch_end(self) -> None:
        """After the last local epoch: the task's frequency of 1-bits (summed over DDP ranks);
        after the first task the global decoder starts as the local one. After the last epoch
        the task counts as learned (before the task loop scores and checkpoints it)."""
        super().on_train_epoch_end()
        phase, epoch = self.phase(self.current_epoch)
        if self.current_epoch == self.trainer.max_epochs - 1:  # the task is learned
            self.tasks_learned.fill_(self.task_index + 1)
            self.previous_decoder = None
        if phase != LOCAL or epoch != self.local_budget - 1:
            return
        ones, count = self._ones, self._count
        if self.trainer.world_size > 1:
            ones = self.trainer.strategy.reduce(ones, reduce_op="sum")
            count = self.trainer.strategy.reduce(count, reduce_op="sum")
        self.ones_frequency[self.task_index] = ones / count.clamp(min=1)
        if self.task_index == 0:
            self.global_decoder.load_state_dict(self.local_decoder.state_dict())

    def encoder_parameters(self) -> list[nn.Parameter]:
        return [*self.encoder.parameters(), *self.mu.parameters(), *self.logvar.parameters(),
                *self.binary_logits.parameters()]

    def local_parameters(self) -> list[nn.Parameter]:
        return [*self.encoder_parameters(), *self.local_decoder.parameters()]

    # -- the two losses -----------------------------------------------------------------------
    def encode(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        h = self.encoder(x if self.architecture == "conv" else x.flatten(1))
        return self.mu(h), self.logvar(h), self.binary_logits(h)

    def relaxed_bits(self, logits: Tensor, temperature: float | None) -> Tensor:
        """±1 bits by Gumbel-softmax over (logit, −logit); hard (straight-through) when the
        temperature has fallen below 0.1 (None)."""
        pair = torch.stack([logits, -logits], dim=-1)
        soft = F.gumbel_softmax(pair.float(), tau=temperature or 1.0, hard=temperature is None,
                                dim=-1)
        return soft[..., 0] * 2 - 1

    def reconstruction_error(self, logits: Tensor, target: Tensor) -> Tensor:
        """Summed over pixels, averaged over the batch, times `reconstruction_scale`."""
        return self.reconstruction_scale * reconstruction_loss(
            self.reconstruction, logits, target).sum() / len(target)

    def local_loss(self, x: Tensor) -> Tensor:
        mu, logvar, logits = self.encode(x)
        bits = self.relaxed_bits(logits, self._temperature)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        task = torch.full((len(x),), self.task_index, device=x.device)
        recon = self.local_decoder(z, bits, task)
        kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).float().sum() / len(x)
        self._ones += (bits.detach() > 0).float().sum(0)
        self._count += len(x)
        return self.reconstruction_error(recon, x) + kl

    @torch.no_grad()
    def local_latents(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mu, logvar, logits = self.encode(x)
        return (mu + torch.randn_like(mu) * (0.5 * logvar).exp(),
                (torch.bernoulli(torch.sigmoid(logits.float())) * 2 - 1).to(mu.dtype))

    @torch.no_grad()
    def compared_latents(self) -> tuple[Tensor, Tensor]:
        """New-task images and their translated latents, to move earlier bands onto."""
        pick = torch.randperm(len(self.task_images), device=self.task_images.device)
        images = self.task_images[pick[: self.compared_images]].to(self.device)
        z, bits = self.local_latents(images)
        task = torch.full((len(images),), self.task_index, device=self.device)
        return images, self.global_decoder.translator(z, bits, task)

    @torch.no_grad()
    def replayed(self, n: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """n samples of the earlier tasks (equal shares) from the previous global decoder:
        latents, bits, task indices and the images as targets."""
        task = torch.arange(n, device=self.device) % self.task_index
        z, bits = self.prior_latents(task)
        return z, bits, task, self.previous_decoder.images(z, bits, task)

    def prior_latents(self, task: Tensor) -> tuple[Tensor, Tensor]:
        """z ~ N(0, I) and ±1 bits drawn with each sample's task's frequencies of ones."""
        z = torch.randn(len(task), self.z_dim, device=self.device)
        return z, torch.bernoulli(self.ones_frequency[task]) * 2 - 1

    def consolidation_step(self, x: Tensor, epoch: int) -> Tensor:
        z_new, bits_new = self.local_latents(x)
        n = round(len(x) * min(self.task_index, 3) * self.replay_fraction)
        z_old, bits_old, task_old, target_old = self.replayed(n)
        if epoch >= self.warmup_epochs and self.cosine_threshold < 1:
            images, translated = self._compare
            with torch.no_grad():
                mine = self.global_decoder.translator(z_old, bits_old, task_old)
                similarity = F.normalize(mine.float(), dim=1) @ F.normalize(
                    translated.float(), dim=1).T
                best, which = similarity.max(dim=1)
                moved = best > self.cosine_threshold
                target_old[moved] = images[which[moved]]
                self.band_moves += int(moved.sum())
        task_new = torch.full((len(x),), self.task_index, device=x.device)
        z, bits = torch.cat([z_old, z_new]), torch.cat([bits_old, bits_new])
        task, target = torch.cat([task_old, task_new]), torch.cat([target_old, x])
        loss = self.reconstruction_error(self.global_decoder(z, bits, task), target)
        self._optimizer.zero_grad()
        self.manual_backward(loss)
        self._optimizer.step()
        return loss.detach()

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        phase, epoch = self.phase(self.current_epoch)
        if phase == LOCAL:
            loss = self.local_loss(batch.x)
            self._optimizer.zero_grad()
            self.manual_backward(loss)
            torch.nn.utils.clip_grad_value_(self.local_parameters(), 4.0)
            self._optimizer.step()
        else:
            loss = self.consolidation_step(batch.x, epoch)
        self.log_loss(f"{phase}_loss", loss)
        return loss

    # -- sampling ----------------------------------------------------------------------------
    @torch.no_grad()
    def sample_task(self, n: int, task_index: int) -> Tensor:
        """n samples of task `task_index` from the global decoder."""
        task = torch.full((n,), task_index, device=self.device)
        return self.global_decoder.images(*self.prior_latents(task), task)

    @torch.no_grad()
    def sample(self, n: int, conditions: Tensor | None = None) -> Tensor:
        """Samples of the learned tasks, in equal shares."""
        learned = max(int(self.tasks_learned), 1)
        task = torch.arange(n, device=self.device) % learned
        return self.global_decoder.images(*self.prior_latents(task), task)

    # -- checkpoints: nothing of the optimizers outlives a phase ------------------------------
    def optimizer_state(self) -> dict[str, Any]:
        return {}

    def load_optimizer_state(self, state: dict[str, Any]) -> None:
        pass
