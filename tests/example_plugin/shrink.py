"""An example strategy living outside clrun: weight decay toward zero on the heads only."""

from __future__ import annotations

from torch import Tensor

from clrun.plugin import StrategyPlugin


class ShrinkHeads(StrategyPlugin):
    """Adds strength * ||head weights||^2 to the loss."""

    def __init__(self, strength: float = 0.01) -> None:
        super().__init__()
        self.strength = strength
        self.calls = 0

    def penalty(self, module, batch, logits) -> Tensor:  # noqa: ANN001
        self.calls += 1
        return self.strength * sum(h.weight.pow(2).sum() for h in module.net.heads)
