"""An exponential moving average of a network's weights, the copy a diffusion model samples
with (GUIDE: decay 0.9999)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class WeightAverage(nn.Module):
    """Keeps `average` ← d·average + (1 − d)·weights after every optimizer step, with
    d = min(decay, (1 + n)/(10 + n)) at update n (diffusers' warm-up), so that a short budget
    does not sample with weights that are mostly the initialisation. Buffers are copied."""

    def __init__(self, net: nn.Module, decay: float) -> None:
        super().__init__()
        self.decay = decay
        self.average = copy.deepcopy(net).requires_grad_(False).eval()
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def update(self, net: nn.Module) -> None:
        n = self.updates.float()  # a tensor: no host read per step on a GPU
        d = torch.clamp((1 + n) / (10 + n), max=self.decay)
        averaged = list(self.average.parameters())
        current = [p.detach().to(a.dtype) for p, a in zip(net.parameters(), averaged, strict=True)]
        torch._foreach_mul_(averaged, d)
        torch._foreach_add_(averaged, torch._foreach_mul(current, 1 - d))
        for a, b in zip(self.average.buffers(), net.buffers(), strict=True):
            a.copy_(b)
        self.updates += 1
