"""Replay strategies: random memory, experience replay, GDumb, iCaRL, GEM, A-GEM and MIR.

All keep stored-form samples (uint8 images) in a `Buffer` and convert them with the scenario's
pipeline when they are replayed, so replayed images are augmented afresh like current ones.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import functional_call

from clrun.device_check import host_read_allowed
from clrun.errors import ConfigError
from clrun.plugin import StrategyPlugin
from clrun.scenarios.base import InputPipeline, Split
from clrun.scenarios.batches import Batch
from clrun.strategies.buffer import Buffer, herding_order
from clrun.strategies.importance import check_choice

if TYPE_CHECKING:
    import pytorch_lightning as pl

    from clrun.loop import TaskLoop
    from clrun.models.net import ContinualNet
    from clrun.module import ContinualModule
    from clrun.scenarios.base import Task


class _BufferPlugin(StrategyPlugin):
    """A plugin with one memory and the scenario's input pipeline."""

    def __init__(self, memory_size: int, seed: int = 0) -> None:
        super().__init__()
        self.seed = seed
        self.buffer = Buffer(memory_size, seed)
        self.pipeline = InputPipeline()
        self.task_number = 0

    def on_task_start(self, loop: TaskLoop, task: Task) -> None:
        self.pipeline = loop.scenario.pipeline
        self.task_number = task.index + 1

    def replayed(self, n: int) -> Batch:
        s = self.buffer.sample(n)
        return Batch(self.pipeline(s["x"], train=True), s["y"], s["task"], s["x"])

    def state_dict(self) -> dict[str, Any]:
        return {"buffer": self.buffer.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.buffer.load_state_dict(state_dict["buffer"])


def concat(a: Batch, b: Batch) -> Batch:
    raw = torch.cat([a.raw, b.raw]) if a.raw is not None and b.raw is not None else None
    return Batch(torch.cat([a.x, b.x]), torch.cat([a.y, b.y]), torch.cat([a.task, b.task]), raw)


class RandomMemory(_BufferPlugin):
    """Pellegrini et al. 2019: the memory is concatenated with each new task's training data;
    after the i-th task, M/i of its samples replace random ones in memory."""

    def train_data(self, loop: TaskLoop, task: Task, split: Split) -> Split:
        return Split.cat([split, self.buffer.as_split()]) if len(self.buffer) else split

    def on_task_end(self, loop: TaskLoop, task: Task) -> None:
        self.buffer.add_random_memory(task.train, self.task_number)


class LatentReplay(_BufferPlugin):
    """Latent replay (Pellegrini et al. 2019): the memory holds activations of the backbone's
    layer `latent_layer` instead of inputs; after the first task the layers below it are
    frozen, so stored activations stay valid. Each step adds `replay_batch_size` replayed
    activations, passed through the layers above, to the current batch's loss. The memory is
    updated by the random-memory rule (M/i samples of the i-th task)."""

    def __init__(self, memory_size: int, latent_layer: int, replay_batch_size: int | None = None,
                 seed: int = 0) -> None:
        super().__init__(memory_size, seed)
        self.latent_layer = latent_layer
        self.replay_batch_size = replay_batch_size

    def _split(self, module: ContinualModule) -> tuple[torch.nn.Module, torch.nn.Module]:
        backbone = module.net.backbone
        if not isinstance(backbone, torch.nn.Sequential) or not \
                0 < self.latent_layer < len(backbone):
            from clrun.errors import ConfigError

            raise ConfigError("strategy.plugins.latent_replay.latent_layer", self.latent_layer,
                              "must index a layer inside the model's sequential backbone "
                              f"(1..{len(backbone) - 1})")
        return backbone[: self.latent_layer], backbone[self.latent_layer:]

    def on_task_start(self, loop: TaskLoop, task: Task) -> None:
        super().on_task_start(loop, task)
        lower, _ = self._split(loop.module)
        if task.index > 0:
            lower.requires_grad_(False)

    def loss(self, module: ContinualModule, batch: Batch, logits: Tensor) -> Tensor | None:
        if not len(self.buffer):
            return None
        replay = self.buffer.sample(self.replay_batch_size or len(batch.y))
        _, upper = self._split(module)
        features = upper(replay["x"])
        heads = torch.cat([head(features) for head in module.net.heads], dim=1)
        n_current, n_replayed = len(batch.y), len(replay["y"])
        current = module.classification_loss(batch, logits)
        replayed = module.classification_loss(Batch(None, replay["y"], replay["task"]), heads)
        return (n_current * current + n_replayed * replayed) / (n_current + n_replayed)

    @torch.no_grad()
    def on_task_end(self, loop: TaskLoop, task: Task) -> None:
        lower, _ = self._split(loop.module)
        was_training = loop.module.training
        loop.module.eval()
        data = task.train
        latents = torch.cat([lower(self.pipeline(data.x[i:i + 1024], train=False))
                             for i in range(0, len(data), 1024)])
        loop.module.train(was_training)
        self.buffer.add_random_memory(Split(latents, data.y, data.task), self.task_number)


class ExperienceReplay(_BufferPlugin):
    """ER: each step adds a minibatch from a memory to the current one.

    The memory is reservoir-sampled from the stream (a budget of `memory_size` samples), or,
    with `per_class=k`, holds k random samples of every class seen so far, added at the end of
    each task (van de Ven's "100 per class": the budget grows as classes arrive).
    `weighting="concat"` averages the loss over the joint batch; `"task_ratio"` is van de Ven's
    (1/t) L_current + (1 - 1/t) L_replay.
    """

    def __init__(self, memory_size: int, replay_batch_size: int | None = None,
                 weighting: str = "concat", per_class: int | None = None,
                 seed: int = 0) -> None:
        super().__init__(memory_size, seed)
        check_choice("strategy.plugins.er.weighting", weighting, ("concat", "task_ratio"))
        if per_class is not None and (not isinstance(per_class, int) or per_class < 1):
            raise ConfigError("strategy.plugins.er.per_class", per_class,
                              "must be a positive integer or null (a reservoir of memory_size)")
        self.replay_batch_size = replay_batch_size
        self.weighting = weighting
        self.per_class = per_class
        self._n_current = 0

    def on_task_start(self, loop: TaskLoop, task: Task) -> None:
        super().on_task_start(loop, task)
        if self.per_class and self.buffer.capacity != self.per_class * loop.scenario.n_natural:
            self.buffer = Buffer(self.per_class * loop.scenario.n_natural, self.seed)

    def on_task_end(self, loop: TaskLoop, task: Task) -> None:
        if self.per_class:
            self.buffer.add_per_class(task.train, self.per_class)

    def extend_batch(self, module: ContinualModule, batch: Batch) -> Batch:
        self._n_current = len(batch.y)
        if not len(self.buffer):
            return batch
        return concat(batch, self.replayed(self.replay_batch_size or len(batch.y)))

    def loss(self, module: ContinualModule, batch: Batch, logits: Tensor) -> Tensor | None:
        if self.weighting == "concat" or len(batch.y) == self._n_current:
            return None
        n = self._n_current
        current = module.classification_loss(Batch(None, batch.y[:n], batch.task[:n]), logits[:n])
        replay = module.classification_loss(Batch(None, batch.y[n:], batch.task[n:]), logits[n:])
        return current / self.task_number + (1 - 1 / self.task_number) * replay

    def after_step(self, module: pl.LightningModule, batch: Batch) -> None:
        if self.per_class:
            return
        trainer = module.trainer
        samples = {"x": batch.raw, "y": batch.y, "task": batch.task}
        if trainer.world_size > 1:  # every rank inserts every rank's batch: identical memories
            samples = {k: trainer.strategy.all_gather(v).flatten(0, 1) for k, v in
                       samples.items()}
        self.buffer.add_reservoir(**samples)


class MIR(ExperienceReplay):
    """Maximally interfered retrieval (Aljundi et al. 2019): from `n_candidates` memory samples,
    replay those whose loss would rise most under a virtual SGD step on the current batch."""

    def __init__(self, memory_size: int, replay_batch_size: int = 10, n_candidates: int = 50,
                 seed: int = 0) -> None:
        super().__init__(memory_size, replay_batch_size, "concat", seed=seed)
        self.n_candidates = n_candidates

    def extend_batch(self, module: ContinualModule, batch: Batch) -> Batch:
        self._n_current = len(batch.y)
        if not len(self.buffer):
            return batch
        candidates = self.replayed(self.n_candidates)
        params = {n: p for n, p in module.net.named_parameters() if p.requires_grad}
        loss = module.classification_loss(batch, module.net(batch.x))
        grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
        lr = module.trainer.optimizers[0].param_groups[0]["lr"]
        with torch.no_grad():
            virtual = {n: p - lr * g if g is not None else p
                       for (n, p), g in zip(params.items(), grads, strict=True)}
            def losses(logits: Tensor) -> Tensor:
                return F.cross_entropy(module.task_logits(logits, candidates.task),
                                       candidates.y, reduction="none")
            before = losses(module.net(candidates.x))
            after = losses(functional_call(module.net, virtual, (candidates.x,)))
            top = (after - before).topk(min(self.replay_batch_size, len(before))).indices
        return concat(batch, Batch(*(None if t is None else t[top] for t in candidates)))


class GDumb(_BufferPlugin):
    """Prabhu et al. 2020: a greedy class-balanced memory; before each evaluation the learner is
    re-initialised and trained from scratch on the memory alone."""

    def on_task_start(self, loop: TaskLoop, task: Task) -> None:
        super().on_task_start(loop, task)
        order = torch.randperm(len(task.train), generator=self.buffer.generator)
        data = task.train.subset(order.to(task.train.y.device))
        self.buffer.add_class_balanced(x=data.x, y=data.y, task=data.task)
        for layer in loop.module.net.modules():
            if layer is not loop.module.net and hasattr(layer, "reset_parameters"):
                layer.reset_parameters()

    def train_data(self, loop: TaskLoop, task: Task, split: Split) -> Split:
        return self.buffer.as_split()


class ICaRL(_BufferPlugin):
    """Rebuffi et al. 2017: herding exemplars, nearest-mean-of-exemplars classification, and a
    sigmoid (BCE) loss whose old-class targets are the previous network's outputs."""

    supported_settings = ("class",)

    def __init__(self, memory_size: int, seed: int = 0) -> None:
        super().__init__(memory_size, seed)
        self.teacher: ContinualNet | None = None
        self.seen_classes: list[int] = []
        self.class_means: Tensor | None = None

    def on_task_start(self, loop: TaskLoop, task: Task) -> None:
        super().on_task_start(loop, task)
        self.teacher = (copy.deepcopy(loop.module.net).eval().requires_grad_(False)
                        if self.seen_classes else None)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "seen_classes": self.seen_classes,
                "class_means": self.class_means}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.seen_classes = list(state_dict["seen_classes"])
        self.class_means = state_dict["class_means"]

    def train_data(self, loop: TaskLoop, task: Task, split: Split) -> Split:
        return Split.cat([split, self.buffer.as_split()]) if len(self.buffer) else split

    def loss(self, module: ContinualModule, batch: Batch, logits: Tensor) -> Tensor:
        targets = F.one_hot(batch.y, logits.shape[1]).float()
        if self.teacher is not None:
            old = torch.tensor(self.seen_classes, device=logits.device)
            with torch.no_grad():
                targets[:, old] = torch.sigmoid(self.teacher(batch.x)[:, old]).to(targets.dtype)
        return F.binary_cross_entropy_with_logits(logits, targets)

    @torch.no_grad()
    def _features(self, module: ContinualModule, x: Tensor) -> Tensor:
        was_training = module.training
        module.eval()
        out = torch.cat([module.net.features(self.pipeline(x[i:i + 1024], train=False))
                         for i in range(0, len(x), 1024)])
        module.train(was_training)
        return out

    def on_task_end(self, loop: TaskLoop, task: Task) -> None:
        module = loop.module
        new = [int(c) for c in task.train.y.unique()]
        self.seen_classes = sorted(set(self.seen_classes) | set(new))
        per_class = self.buffer.capacity // len(self.seen_classes)
        kept = {"x": [], "y": [], "task": []}
        old_y = self.buffer.get("y") if len(self.buffer) else None
        for c in self.seen_classes:
            if c in new:
                mask = task.train.y == c
                x, t = task.train.x[mask], task.train.task[mask]
                pick = herding_order(self._features(module, x), per_class).to(x.device)
                x, t = x[pick], t[pick]
            else:  # already in herding order: keep the first `per_class`
                mask = (old_y == c).nonzero().flatten()[:per_class]
                x, t = self.buffer.get("x")[mask], self.buffer.get("task")[mask]
            kept["x"].append(x)
            kept["task"].append(t)
            kept["y"].append(torch.full((len(x),), c, dtype=torch.long, device=x.device))
        self.buffer.replace_all(**{k: torch.cat(v) for k, v in kept.items()})
        features = F.normalize(self._features(module, self.buffer.get("x")), dim=1)
        labels = self.buffer.get("y")
        width = sum(module.net.head_sizes)
        means = torch.full((width, features.shape[1]), float("nan"), device=features.device)
        for c in self.seen_classes:
            means[c] = F.normalize(features[labels == c].mean(dim=0), dim=0)
        self.class_means = means

    def predict(self, module: ContinualModule, x: Tensor, task: Tensor) -> Tensor | None:
        if self.class_means is None:
            return None
        features = F.normalize(module.net.features(x), dim=1)
        distance = torch.cdist(features, self.class_means.nan_to_num(float("inf")))
        return (-distance).nan_to_num(float("-inf"))


def _flat_grad(params: list[torch.nn.Parameter]) -> Tensor:
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten()
                      for p in params])


def _set_flat_grad(params: list[torch.nn.Parameter], flat: Tensor) -> None:
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset:offset + n].view_as(p).clone()
        offset += n


def _memory_grad(module: ContinualModule, params: list[torch.nn.Parameter], batch: Batch
                 ) -> Tensor:
    with torch.enable_grad():
        loss = module.classification_loss(batch, module.net(batch.x))
        grads = torch.autograd.grad(loss, params, allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).flatten()
                      for g, p in zip(grads, params, strict=True)])


def solve_gem_dual(gram: Tensor, linear: Tensor, margin: float, sweeps: int = 500) -> Tensor:
    """min_v 1/2 v'Pv + c'v subject to v >= margin, by projected coordinate descent
    (the dual of GEM's projection; P = G G', c = G g, t is small)."""
    v = torch.full_like(linear, margin)
    diag = gram.diagonal().clamp_min(1e-12)
    for _ in range(sweeps):
        for i in range(len(v)):
            v[i] = torch.clamp(v[i] - (gram[i] @ v + linear[i]) / diag[i], min=margin)
    return v


class GEM(StrategyPlugin):
    """Lopez-Paz & Ranzato 2017: per-task episodic memories; the gradient is projected so that
    it does not increase the loss on any previous task (a small QP in the dual)."""

    def __init__(self, memory_per_task: int = 256, margin: float = 0.5, seed: int = 0) -> None:
        super().__init__()
        self.memory_per_task = memory_per_task
        self.margin = margin
        self.generator = torch.Generator().manual_seed(seed)
        self.memories: list[Batch] = []
        self.pipeline = InputPipeline()

    def on_task_start(self, loop: TaskLoop, task: Task) -> None:
        self.pipeline = loop.scenario.pipeline

    def on_task_end(self, loop: TaskLoop, task: Task) -> None:
        pick = torch.randperm(len(task.train), generator=self.generator)[:self.memory_per_task]
        data = task.train.subset(pick.to(task.train.y.device))
        self.memories.append(Batch(self.pipeline(data.x, train=False), data.y, data.task, data.x))

    def state_dict(self) -> dict[str, Any]:
        return {"memories": [list(m) for m in self.memories],
                "generator": self.generator.get_state()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.memories = [Batch(*m) for m in state_dict["memories"]]
        self.generator.set_state(state_dict["generator"])

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:  # noqa: ANN001
        if not self.memories:
            return
        params = [p for p in pl_module.net.parameters() if p.requires_grad]
        g = _flat_grad(params)
        memory_grads = torch.stack([_memory_grad(pl_module, params, m) for m in self.memories])
        with host_read_allowed("GEM decides on the host whether to solve its QP"):
            if (memory_grads @ g >= 0).all():
                return
        gram = memory_grads @ memory_grads.T
        v = solve_gem_dual(gram + 1e-3 * torch.eye(len(gram), device=gram.device),
                           memory_grads @ g, self.margin)
        _set_flat_grad(params, memory_grads.T @ v + g)


class AGEM(_BufferPlugin):
    """Chaudhry et al. 2019: project the gradient only when it conflicts with the gradient on
    a random minibatch of the memory: g <- g - (g.g_ref / g_ref.g_ref) g_ref."""

    def __init__(self, memory_size: int, sample_size: int = 256, seed: int = 0) -> None:
        super().__init__(memory_size, seed)
        self.sample_size = sample_size

    def on_task_end(self, loop: TaskLoop, task: Task) -> None:
        self.buffer.add_random_memory(task.train, self.task_number)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:  # noqa: ANN001
        if not len(self.buffer):
            return
        params = [p for p in pl_module.net.parameters() if p.requires_grad]
        g = _flat_grad(params)
        reference = _memory_grad(pl_module, params, self.replayed(self.sample_size))
        _set_flat_grad(params, agem_projection(g, reference))


def agem_projection(g: Tensor, reference: Tensor) -> Tensor:
    """g, minus its component along the reference gradient when the two conflict (dot < 0);
    decided on the device (a zero coefficient otherwise), so no step waits for the host."""
    dot = g @ reference
    return g - dot.clamp(max=0) / (reference @ reference).clamp_min(1e-12) * reference
