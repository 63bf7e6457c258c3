"""DDIM sampling (η = 0), optionally steered by a classifier as GUIDE steers it.

Guidance (GUIDE's `cond_fn` and `condition_score`): at every DDIM step the clean image
x̂₀ = (x_t − √(1−ᾱ_t)·ε̂(x_t))/√ᾱ_t, clipped to [−1, 1], is handed to `guidance`, which returns
a log-probability per sample to raise; its gradient is taken with respect to x_t, through the
denoiser, and the noise prediction becomes ε̃ = ε̂ − √(1−ᾱ_t)·s·∇_{x_t} log p(target | x̂₀);
the DDIM step uses ε̃. A guided step costs a backward pass through the denoiser and the
classifier besides the forward. With s = 0 the samples are exactly the unguided ones, and no
gradient is computed (GUIDE's unguided baseline costs what plain sampling costs).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

#: unit-space clean images (requiring grad) and their classes -> log p(target) per sample
Guidance = Callable[[Tensor, Tensor | None], Tensor]


def per_sample(values: Tensor | float, like: Tensor) -> Tensor | float:
    """A per-sample scale broadcast over the other dimensions of `like`."""
    if isinstance(values, Tensor):
        return values.view(-1, *[1] * (like.dim() - 1)).to(like.dtype)
    return values


@torch.no_grad()
def ddim_sample(denoiser: nn.Module, scheduler: object, noise: Tensor, classes: Tensor | None,
                steps: int, to_unit: Callable[[Tensor], Tensor],
                guidance: Guidance | None = None, scale: Tensor | float = 0.0) -> Tensor:
    """Denoise `noise` (model space) in `steps` DDIM steps; returns model-space samples.
    `to_unit` maps model-space images to the unit space the guidance classifier reads."""
    scheduler.set_timesteps(steps)
    alphas = scheduler.alphas_cumprod.to(noise.device)
    x = noise
    s = per_sample(scale, x)
    if not isinstance(s, Tensor) and s == 0:
        guidance = None  # s = 0 shifts nothing: skip the classifier's gradient
    for t in scheduler.timesteps.tolist():  # host ints: the schedule's arithmetic never syncs
        steps_t = torch.full((len(x),), t, device=x.device, dtype=torch.long)
        if guidance is None:
            eps = denoiser(x, steps_t, classes)
        else:
            a = alphas[t].to(x.dtype)
            with torch.enable_grad():
                xt = x.detach().requires_grad_(True)
                eps = denoiser(xt, steps_t, classes)
                x0 = ((xt - (1 - a).sqrt() * eps) / a.sqrt()).clamp(-1, 1)
                log_p = guidance(to_unit(x0), classes)
                grad, = torch.autograd.grad(log_p.sum(), xt)
            eps = eps.detach() - (1 - a).sqrt() * s * grad.to(eps.dtype)
        x = scheduler.step(eps, t, x, eta=0.0).prev_sample
    return x
