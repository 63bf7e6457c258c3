"""What EWC, ER and LwF add to a bare PyTorch loop, written as plainly as a lab script would
(the references of `scripts/bench_overhead.py --tiny`): the same per-step work clrun's
`strategy=ewc|er|lwf` do with their default settings, none of clrun's machinery.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Naive:
    """Fine-tuning: nothing added. `inputs` is the current batch (set by the loop)."""

    inputs: Tensor | None = None

    def task_start(self, model: nn.Module) -> None:
        pass

    def extend(self, raw: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        return raw, y

    def penalty(self, model: nn.Module, logits: Tensor) -> Tensor | float:
        return 0.0

    def after_step(self, raw: Tensor, y: Tensor) -> None:
        pass

    def task_end(self, model: nn.Module, data: tuple[Tensor, Tensor], pipeline) -> None:  # noqa: ANN001
        pass


class EWC(Naive):
    """lambda * sum F (theta - theta*)^2, one Fisher per task (predicted labels, summed over
    minibatches of 128), folded into one weight and centre."""

    def __init__(self, lambda_: float = 2048.0) -> None:
        self.lambda_ = lambda_
        self.weight: list[Tensor] = []
        self.centre: list[Tensor] = []

    def penalty(self, model: nn.Module, logits: Tensor) -> Tensor | float:
        if not self.weight:
            return 0.0
        return self.lambda_ * sum((w * (p - c).pow(2)).sum() for p, w, c in
                                  zip(model.parameters(), self.weight, self.centre, strict=True))

    def task_end(self, model: nn.Module, data: tuple[Tensor, Tensor], pipeline) -> None:  # noqa: ANN001
        fisher = [torch.zeros_like(p) for p in model.parameters()]
        for s in range(0, len(data[0]), 128):
            logits = model(pipeline(data[0][s:s + 128], train=False))
            model.zero_grad()
            F.cross_entropy(logits, logits.argmax(1), reduction="sum").backward()
            for f, p in zip(fisher, model.parameters(), strict=True):
                f += p.grad.pow(2)
        params = [p.detach().clone() for p in model.parameters()]
        if not self.weight:
            self.weight, self.centre = fisher, params
            return
        total = [w + f for w, f in zip(self.weight, fisher, strict=True)]
        self.centre = [(w * c + f * p) / (t + 1e-30) for w, c, f, p, t in
                       zip(self.weight, self.centre, fisher, params, total, strict=True)]
        self.weight = total


class ER(Naive):
    """A reservoir memory of `size` samples; every batch is concatenated with as many
    memory samples, and the batch then enters the reservoir (vectorised, one draw per sample)."""

    def __init__(self, size: int = 500) -> None:
        self.size, self.filled, self.seen = size, 0, 0
        self.x: Tensor | None = None
        self.y: Tensor | None = None

    def extend(self, raw: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        if not self.filled:
            return raw, y
        pick = torch.randint(self.filled, (len(y),))
        return torch.cat([raw, self.x[pick]]), torch.cat([y, self.y[pick]])

    def after_step(self, raw: Tensor, y: Tensor) -> None:
        if self.x is None:
            self.x = raw.new_zeros((self.size, *raw.shape[1:]))
            self.y = y.new_zeros(self.size)
        free = min(self.size - self.filled, len(y))
        self.x[self.filled:self.filled + free] = raw[:free]
        self.y[self.filled:self.filled + free] = y[:free]
        self.filled += free
        positions = self.seen + free + torch.arange(len(y) - free) + 1
        slots = (torch.rand(len(positions)) * positions).long()
        keep = slots < self.size
        self.x[slots[keep]] = raw[free:][keep]
        self.y[slots[keep]] = y[free:][keep]
        self.seen += len(y)


class LwF(Naive):
    """Distillation from the previous task's network: alpha * KL over the old classes of
    the softmax at temperature T taken over every unit."""

    def __init__(self, alpha: float = 0.5, temperature: float = 0.5) -> None:
        self.alpha, self.temperature = alpha, temperature
        self.teacher: nn.Module | None = None
        self.old: Tensor | None = None
        self.seen: list[int] = []
        self.inputs: Tensor | None = None  # the current batch's inputs, set by the loop

    def task_start(self, model: nn.Module) -> None:
        if self.seen:
            self.teacher = copy.deepcopy(model).eval().requires_grad_(False)
            self.old = torch.tensor(sorted(self.seen))

    def penalty(self, model: nn.Module, logits: Tensor) -> Tensor | float:
        if self.teacher is None:
            return 0.0
        with torch.no_grad():
            target = F.softmax(self.teacher(self.inputs) / self.temperature, 1)[:, self.old]
        student = F.log_softmax(logits / self.temperature, 1)[:, self.old]
        return self.alpha * (target * (target.clamp_min(1e-12).log() - student)).sum(1).mean()

    def task_end(self, model: nn.Module, data: tuple[Tensor, Tensor], pipeline) -> None:  # noqa: ANN001
        self.seen += data[1].unique().tolist()


STRATEGIES = {"naive": Naive, "ewc": EWC, "er": ER, "lwf": LwF}
