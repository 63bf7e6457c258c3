"""Task-conditioned hypernetworks (HNET, von Oswald et al. 2020).

A hypernetwork h(e, θ) generates every weight of the configured network (any clrun backbone and
its heads, run with `torch.func.functional_call`) from a learned task embedding e_t. Chunked
(`chunk_size` > 0): one small MLP maps [e_t; c_i] to chunk i of the flattened weights, the chunk
embeddings c_i shared and trained with θ; the chunks cover every weight exactly once (the last
one is cut). Unchunked (`chunk_size: 0`): the MLP outputs all weights at once. Init: Xavier-
uniform matrices, zero vectors, embeddings N(0, 1). The network's own parameters never train.

While task t trains, θ, the chunk embeddings and e_t train (one optimizer; with Adam that is the
paper's two optimizers, Adam's steps being per parameter) on the task loss plus the output
regulariser β/(t−1)·Σ_{j<t} ‖h(e_j, θ) − h(e_j, θ*)‖², θ* the hypernetwork before task t, the
targets stored at the task's start. (The paper's optional look-ahead is not built.)
Task-IL gives the task. Otherwise the task is inferred per sample by the lowest predictive
entropy over each learned task's own classes (HNET+ENT), and each task learns its own classes
(its head's units in domain-IL, its labels in class-IL); the inference accuracy per task and
stage goes into metrics.json.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from clrun.architectural.conditioned import TaskConditionedNet
from clrun.architectural.inference import TaskInferring, task_units
from clrun.errors import ConfigError
from clrun.models.net import ContinualNet, check_widths

if TYPE_CHECKING:
    from clrun.loop import TaskLoop
    from clrun.module import ContinualModule
    from clrun.scenarios.base import Scenario, Task
    from clrun.scenarios.batches import Batch


def mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    for layer in layers:
        if isinstance(layer, nn.Linear):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
    return nn.Sequential(*layers)


class HyperNet(TaskConditionedNet):
    def __init__(self, target: ContinualNet, n_tasks: int, embedding_size: int,
                 hidden_sizes: list[int], chunk_size: int, chunk_embedding_size: int) -> None:
        super().__init__(target.head_sizes)
        check_widths("strategy.plugins.hnet.hidden_sizes", hidden_sizes)
        self.target = target.requires_grad_(False)
        self.names = [name for name, _ in target.named_parameters()]
        self.shapes = [p.shape for p in target.parameters()]
        self.total = sum(math.prod(s) for s in self.shapes)
        self.task_embeddings = nn.ParameterList(nn.Parameter(torch.randn(embedding_size))
                                                for _ in range(n_tasks))
        self.chunk_size = chunk_size
        if chunk_size:
            n_chunks = math.ceil(self.total / chunk_size)
            self.chunk_embeddings = nn.Parameter(torch.randn(n_chunks, chunk_embedding_size))
            self.hnet = mlp([embedding_size + chunk_embedding_size, *hidden_sizes, chunk_size])
        else:
            self.chunk_embeddings = None
            self.hnet = mlp([embedding_size, *hidden_sizes, self.total])

    def flat_weights(self, t: int) -> Tensor:
        """All generated weights of task t, flattened (exactly `total` of them)."""
        e = self.task_embeddings[t]
        if self.chunk_embeddings is None:
            return self.hnet(e[None])[0]
        inputs = torch.cat([e.expand(len(self.chunk_embeddings), -1), self.chunk_embeddings], 1)
        return self.hnet(inputs).flatten()[: self.total]

    def weights(self, t: int) -> dict[str, Tensor]:
        flat, out, start = self.flat_weights(t), {}, 0
        for name, shape in zip(self.names, self.shapes, strict=True):
            n = math.prod(shape)
            out[name] = flat[start:start + n].view(shape)
            start += n
        return out

    def forward_task(self, x: Tensor, t: int) -> Tensor:
        logits = functional_call(self.target, self.weights(t), (x,))
        return logits[:, self.head_slice(t)] if len(self.head_sizes) > 1 else logits


class HNET(TaskInferring):
    """`strategy=hnet`; see the module docstring."""

    def __init__(self, beta: float = 0.01, embedding_size: int = 96,
                 hidden_sizes: tuple[int, ...] = (10, 10), chunk_size: int = 42000,
                 chunk_embedding_size: int = 96) -> None:
        super().__init__()
        if beta < 0:
            raise ConfigError("strategy.plugins.hnet.beta", beta, "must be >= 0")
        self.beta = beta
        self.sizes = (embedding_size, list(hidden_sizes), chunk_size, chunk_embedding_size)
        self.targets: list[Tensor] = []

    def extend_model(self, module: ContinualModule, scenario: Scenario) -> None:
        module.net = HyperNet(module.net, scenario.n_tasks, *self.sizes).to(module.device)
        module.refresh_heads()
        self.units = task_units(scenario)

    def on_task_start(self, loop: TaskLoop, task: Task) -> None:
        net: HyperNet = loop.module.net
        with torch.no_grad():  # h(e_j, θ*) of the tasks learned so far
            self.targets = [net.flat_weights(j).detach().clone() for j in range(task.index)]
        for j, embedding in enumerate(net.task_embeddings):
            embedding.requires_grad_(j == task.index)  # only e_t moves

    def loss(self, module: ContinualModule, batch: Batch, logits: Tensor) -> Tensor | None:
        """Each task learns its own classes when the task is inferred later (see above)."""
        if module.setting == "task":
            return None
        units = self.units[module.current_task].to(logits.device)
        return F.cross_entropy(logits[:, units], torch.searchsorted(units, batch.y))

    def penalty(self, module: ContinualModule, batch: Batch, logits: Tensor) -> Tensor | None:
        if not self.targets or not self.beta:
            return None
        net: HyperNet = module.net
        drift = sum((net.flat_weights(j) - target).pow(2).sum()
                    for j, target in enumerate(self.targets))
        return self.beta * drift / len(self.targets)

    def predict(self, module: ContinualModule, x: Tensor, task: Tensor) -> Tensor | None:
        """HNET+ENT: per sample, the learned task whose network is least uncertain."""
        if module.setting == "task" or self.n_learned == 0:
            return None
        net: HyperNet = module.net
        candidates, entropies = [], []
        for j in range(self.n_learned):
            logits = net.forward_task(x, j)[:, self.units[j].to(x.device)].float()
            candidates.append(logits)
            entropies.append(-(F.softmax(logits, 1) * F.log_softmax(logits, 1)).sum(1))
        guess = torch.stack(entropies, 1).argmin(1)
        scores = torch.full((len(x), sum(net.head_sizes)), float("-inf"), device=x.device)
        for j in range(self.n_learned):
            rows = (guess == j).nonzero().flatten()
            units = self.units[j].to(x.device)
            scores[rows[:, None], units[None, :]] = candidates[j][rows]
        self.record.count(task, guess)
        return scores
