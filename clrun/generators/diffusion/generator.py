"""`generator=diffusion`: a (class-conditional) denoising diffusion model as a clrun generator.

Images live in model space [−1, 1] (unit space × 2 − 1), padded with black (or resized) to the
UNet's square size, and are cropped (or resized) back when sampled. Vectors (features replayed
by `strategy=feature_replay`) are modelled by an MLP denoiser, in the same [−1, 1] space.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from clrun.errors import ConfigError, check_positive_int
from clrun.generators.base import Generator
from clrun.generators.diffusion.denoisers import MLPDenoiser, UNetDenoiser
from clrun.generators.diffusion.ema import WeightAverage
from clrun.generators.diffusion.sampling import Guidance, ddim_sample
from clrun.models.net import check_widths

FITS = ("pad", "resize")


def unet_size(input_shape: tuple[int, ...], levels: int, image_size: int | None,
              fit: str) -> int:
    """The UNet's square side for `input_shape` (C, H, W): `image_size`, or the smallest
    multiple of 2^(levels − 1) that holds the image; refused if it cannot hold it."""
    side = max(input_shape[1:])
    factor = 2 ** (levels - 1)
    size = image_size or math.ceil(side / factor) * factor
    if size % factor:
        raise ConfigError("generator.image_size", size,
                          f"must divide by {factor} (2 per level below the first of "
                          f"generator.block_channels); try {math.ceil(size / factor) * factor}")
    if fit == "pad" and size < side:
        raise ConfigError("generator.image_size", size,
                          f"is smaller than the {input_shape[1]}×{input_shape[2]} input, "
                          "which generator.fit=pad cannot shrink: give at least "
                          f"{math.ceil(side / factor) * factor} or generator.fit=resize")
    return size


class DiffusionGenerator(Generator):
    """DDPM training (ε-prediction, MSE, steps drawn uniformly) and DDIM sampling with the
    weight average; `distillation_loss` matches a frozen teacher's noise predictions."""

    fits = ("images (C, H, W), padded or resized to generator.image_size, or feature "
            "vectors (D,)")

    def __init__(self, input_shape: tuple[int, ...], n_classes: int,
                 block_channels: list[int] | tuple[int, ...] = (16, 32, 32),
                 layers_per_block: int = 1, attention_resolutions: list[int] | None = None,
                 norm_groups: int = 8, dropout: float = 0.0, image_size: int | None = None,
                 fit: str = "pad", vector_hidden_sizes: list[int] | tuple[int, ...] = (256, 256),
                 train_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02,
                 sample_steps: int = 50, sample_batch_size: int = 256,
                 ema_decay: float = 0.9999, distillation_weight: float = 1.0,
                 **kwargs: Any) -> None:
        super().__init__(input_shape=input_shape, n_classes=n_classes, **kwargs)
        from diffusers import DDIMScheduler, DDPMScheduler

        if fit not in FITS:
            raise ConfigError("generator.fit", fit, f"must be one of {', '.join(FITS)}")
        for key, value in (("sample_steps", sample_steps), ("train_steps", train_steps),
                           ("sample_batch_size", sample_batch_size)):
            check_positive_int(f"generator.{key}", value)
        if sample_steps > train_steps:
            raise ConfigError("generator.sample_steps", sample_steps,
                              f"cannot exceed generator.train_steps={train_steps}")
        if not 0 <= ema_decay < 1:
            raise ConfigError("generator.ema_decay", ema_decay, "must be in [0, 1)")
        if distillation_weight <= 0:
            raise ConfigError("generator.distillation_weight", distillation_weight, "must be > 0")
        self.distillation_weight = distillation_weight
        classes = self.n_classes if self.conditional else None
        self.is_image = len(self.input_shape) == 3
        if self.is_image:
            check_widths("generator.block_channels", list(block_channels))
            self.fit = fit
            self.image_size = unet_size(self.input_shape, len(block_channels), image_size, fit)
            self.denoiser = UNetDenoiser(self.image_size, self.input_shape[0],
                                         list(block_channels), layers_per_block,
                                         list(attention_resolutions or []), classes,
                                         norm_groups, dropout)
        elif len(self.input_shape) == 1:
            check_widths("generator.vector_hidden_sizes", list(vector_hidden_sizes))
            self.denoiser = MLPDenoiser(self.input_shape[0], list(vector_hidden_sizes), classes)
        else:
            raise ConfigError("generator", "diffusion", f"models {self.fits}; the input has "
                              f"shape {self.input_shape}")
        self.ema = WeightAverage(self.denoiser, ema_decay)
        schedule = {"num_train_timesteps": train_steps, "beta_start": beta_start,
                    "beta_end": beta_end, "beta_schedule": "linear"}
        self.noise_schedule = DDPMScheduler(**schedule)
        self.sampling_schedule = DDIMScheduler(**schedule, clip_sample=self.is_image)
        self.register_buffer("alphas_cumprod", self.noise_schedule.alphas_cumprod.clone(),
                             persistent=False)
        self.train_steps = train_steps
        self.sample_steps = sample_steps
        self.sample_batch_size = sample_batch_size

    def left_behind(self) -> list[Any]:
        """A frozen diffusion model samples and teaches with its weight average only: its raw
        weights stay behind too."""
        return [*super().left_behind(), self.denoiser]

    def frozen_copy(self) -> Generator:
        """The frozen copy's `denoiser` is its weight average, so its state dict holds the
        average twice: it is for replay, not for loading into a generator that trains."""
        twin = super().frozen_copy()
        twin.denoiser = twin.ema.average
        return twin

    # -- unit space <-> model space ----------------------------------------------------------
    def to_model(self, x: Tensor) -> Tensor:
        """Unit-space data to the denoiser's [−1, 1] space (padded or resized images)."""
        x = x * 2 - 1
        if not self.is_image or x.shape[-1] == self.image_size == x.shape[-2]:
            return x
        if self.fit == "resize":
            return F.interpolate(x, size=(self.image_size,) * 2, mode="bilinear",
                                 align_corners=False, antialias=True)
        h, w = x.shape[-2:]
        top, left = (self.image_size - h) // 2, (self.image_size - w) // 2
        return F.pad(x, (left, self.image_size - w - left, top, self.image_size - h - top),
                     value=-1.0)

    def to_unit(self, x: Tensor) -> Tensor:
        """The inverse of `to_model` (crop or resize back), without clamping (keeps grads)."""
        if self.is_image and x.shape[-2:] != self.input_shape[1:]:
            h, w = self.input_shape[1:]
            if self.fit == "resize":
                x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False,
                                  antialias=True)
            else:
                top, left = (self.image_size - h) // 2, (self.image_size - w) // 2
                x = x[..., top:top + h, left:left + w]
        return (x + 1) / 2

    # -- training ----------------------------------------------------------------------------
    def noised(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x_t, t and ε for a batch of unit-space data, t uniform over the diffusion steps."""
        x0 = self.to_model(x)
        noise = torch.randn_like(x0)
        t = torch.randint(self.train_steps, (len(x0),), device=x0.device)
        return self.noise_schedule.add_noise(x0, noise, t), t, noise

    def loss(self, x: Tensor, conditions: Tensor | None) -> Tensor:
        xt, t, noise = self.noised(x)
        predicted = self.denoiser(xt, t, conditions if self.conditional else None)
        return F.mse_loss(predicted.float(), noise.float())

    def distillation_loss(self, teacher: DiffusionGenerator, x: Tensor,
                          conditions: Tensor | None) -> Tensor:
        """Generative distillation (Masip et al. 2024): on the noised replayed samples `x`,
        the student's noise prediction matches the frozen teacher's (MSE), instead of the
        noise that was added, × `distillation_weight` (their λ: 3 on Fashion-MNIST, 0.75 on
        CIFAR-10). Weighted against the current task's loss as their code does
        (`weight_replay_loss`): 1/t current, (1 - 1/t) λ replay. Zero when student and teacher
        are the same network."""
        xt, t, _ = self.noised(x)
        classes = conditions if self.conditional else None
        with torch.no_grad():
            target = teacher.ema.average(xt, t, classes)
        predicted = self.denoiser(xt, t, classes).float()
        return self.distillation_weight * F.mse_loss(predicted, target.float())

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.ema.update(self.denoiser)

    # -- sampling ----------------------------------------------------------------------------
    def sample(self, n: int, conditions: Tensor | None = None, seed: int | None = None,
               guidance: Guidance | None = None, scale: Tensor | float = 0.0,
               steps: int | None = None) -> Tensor:
        """n unit-space samples by DDIM (η = 0) with the weight average; `seed` fixes the
        initial noise (and the drawn classes), `guidance`/`scale` steer it (sampling.py)."""
        device = self.alphas_cumprod.device
        rng = torch.Generator(device=device).manual_seed(seed) if seed is not None else None
        if self.conditional and conditions is None:
            conditions = torch.randint(self.n_classes, (n,), device=device, generator=rng)
        model_shape = (self.input_shape[0], self.image_size, self.image_size) \
            if self.is_image else self.input_shape
        dtype = next(self.ema.average.parameters()).dtype
        noise = torch.randn((n, *model_shape), device=device, dtype=dtype, generator=rng)
        chunks = []
        for start in range(0, n, self.sample_batch_size):
            part = slice(start, start + self.sample_batch_size)
            chunks.append(ddim_sample(
                self.ema.average, self.sampling_schedule, noise[part],
                None if conditions is None or not self.conditional else conditions[part],
                steps or self.sample_steps, self.to_unit, guidance,
                scale[part] if isinstance(scale, Tensor) else scale))
        x = self.to_unit(torch.cat(chunks))
        return x.clamp(0, 1) if self.is_image else x
