"""Plugins with the device mistakes the device check must catch (tests/test_device_check.py)."""

from __future__ import annotations

import torch
from torch import Tensor

from clrun.plugin import StrategyPlugin


class HostBuffer(StrategyPlugin):
    """Keeps a per-class weight made with `torch.ones(n)` (no `device=`) and multiplies the
    logits by it: fine on a CPU, refused by CUDA."""

    def penalty(self, module, batch, logits) -> Tensor:  # noqa: ANN001
        weight = torch.ones(logits.shape[1])
        return 0.0 * (logits * weight).sum()


class StepSync(StrategyPlugin):
    """Reads the loss on the host at every step (a GPU synchronises there)."""

    def penalty(self, module, batch, logits) -> Tensor:  # noqa: ANN001
        if logits.sum().item() > float("inf"):
            return logits.sum()
        return None
