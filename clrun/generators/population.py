"""Logarithmic continual learning's population of generators (Masarczyk et al. 2022).

The population mirrors a binary counter of the tasks learned: after n tasks, level k holds 2^k
tasks exactly when bit k of n is set. Task n + 1 is an increment: with j the number of trailing
1-bits of n, the levels 0..j−1 (holding 2^j − 1 tasks) are merged with the new task into level
j, whose generator trains on the new data plus replay of those levels (weights 1/2^j and
1 − 1/2^j, the new task's share of what it will hold); the merged levels are then empty. So a
generator is retrained only when its bit changes, levels above j are untouched, and each task's
data is relearned (through replay) at most log2(T) times. Level k's generator has the template's
hidden widths times `width_growth`^k (√2 by default: about twice the parameters per level, the
"capacities double" of the paper's abstract), and starts from a fresh initialisation when it
takes its tasks. Samples come from the levels that hold tasks, in proportion to how many.

Where the paper (only its abstract could be read) is silent, these are clrun's choices, each a
config value: the capacity growth, fresh initialisation, the replay weighting and the training
budget (the same for every level, the generator's).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from clrun.generators.base import Generator
from clrun.scenarios.batches import Batch


def trailing_ones(n: int) -> int:
    """The level an increment of the counter n fills (the number of trailing 1-bits of n)."""
    j = 0
    while n >> j & 1:
        j += 1
    return j


def holding_levels(n: int) -> list[int]:
    """Levels holding tasks after n tasks: the set bits of n."""
    return [k for k in range(n.bit_length()) if n >> k & 1]


class GeneratorPopulation(Generator):
    """The learner of `strategy=logcl`: `levels[k]` is level k's (unconditional) generator."""

    trained_by_strategy = "logcl"

    def __init__(self, levels: list[Generator], fresh_init: bool = True) -> None:
        template = levels[0]
        super().__init__(input_shape=template.input_shape, n_classes=template.n_classes,
                         conditional=template.conditional,
                         optimizer=template.kept_optimizer.factory, reset_optimizer=True,
                         max_epochs=template.max_epochs, max_steps=template.max_steps,
                         batch_size=template.batch_size)
        self.levels = nn.ModuleList(levels)
        self.fresh_init = fresh_init
        self.register_buffer("tasks_learned", torch.zeros((), dtype=torch.long))
        self.active: int | None = None
        self.merged: list[int] = []

    @property
    def capacity(self) -> int:
        """How many tasks the population can hold (2^levels − 1)."""
        return 2 ** len(self.levels) - 1

    def begin_task(self) -> int:
        """Choose (and reset) the level this task trains; returns it."""
        n = int(self.tasks_learned)
        self.active = trailing_ones(n)
        self.merged = list(range(self.active))
        if self.fresh_init:
            for module in self.levels[self.active].modules():
                if module is not self.levels[self.active] and hasattr(module, "reset_parameters"):
                    module.reset_parameters()
        for k, level in enumerate(self.levels):
            level.requires_grad_(k == self.active)
        return self.active

    def end_task(self) -> None:
        self.tasks_learned += 1
        self.active, self.merged = None, []

    def draw(self, levels: list[int], n: int) -> Tensor:
        """n samples of `levels`, each level's share in proportion to its 2^k tasks."""
        weights = torch.tensor([2.0 ** k for k in levels])
        pick = torch.multinomial(weights, n, replacement=True)
        out = None
        for i, k in enumerate(levels):
            rows = (pick == i).nonzero().flatten().to(self.device)
            if not len(rows):
                continue
            samples = self.levels[k].sample(len(rows))
            out = samples.new_empty((n, *samples.shape[1:])) if out is None else out
            out[rows] = samples
        return out

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        active = self.levels[self.active]
        loss = active.loss(batch.x, None)
        if self.merged:  # replay of the levels this task's level absorbs
            w = 1.0 / 2 ** self.active
            with torch.no_grad():
                replayed = self.draw(self.merged, len(batch.y))
            loss = w * loss + (1 - w) * active.loss(replayed, None)
        self.log_loss("generator_loss", loss)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.kept_optimizer.get(self.levels[self.active])

    @torch.no_grad()
    def sample(self, n: int, conditions: Tensor | None = None) -> Tensor:
        return self.draw(holding_levels(int(self.tasks_learned)) or [0], n)

