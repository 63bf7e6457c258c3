"""Supermasks in superposition (SupSup, Wortsman et al. 2020): fixed random weights, one learned
binary mask per task, and one-shot task inference when the task id is not given.

Every linear and convolution layer of the configured model (the heads too) becomes bias-free,
with signed-constant weights sign(w)·√2/√fan_in drawn from `seed`, never trained. Each task has
scores per layer (PyTorch's default uniform init); the mask keeps the top `sparsity` share of
|scores| (`mask=topk`, the paper's GG setting) or the scores ≥ 0 (`mask=threshold`, GNu), with
a straight-through gradient.

Task-IL gives the task. Otherwise (domain-/class-IL) the task is inferred: the network runs
with the superposed masks Σ αᵢ Mᵢ, αᵢ = 1/k over the k learned masks; the entropy of the output
for the first `inference_images` images of a batch of `inference_batch_size` (128 in the
paper; 1 image by default, the authors' one-shot setting as we read their `data_to_repeat`;
their code averages the entropy over those images) is differentiated with respect to α, the
task whose αᵢ lowers it fastest (argmin ∂H/∂αᵢ) is chosen, and the whole
batch is classified with that task's mask, over that task's classes; a wrong guess makes the
whole batch wrong. In class-IL the tasks share one head as wide as a task (labels within the
task, the paper's layout), so every mask has trained every unit the entropy reads; each task's
logits map back to its own classes. `per_sample=true` infers every sample on
its own (slow). Each stage's task-inference accuracy per task goes into metrics.json.

`superfluous_units` > 0 (domain-/class-IL) widens the shared head by that many units that no
label uses: training is cross-entropy over the task's units and them, so a task's mask learns to
keep them low on its own data. `objective=superfluous` then infers with the paper's G instead
of the entropy: the logsumexp of all outputs with the real units' gradient stopped (the authors'
`se_oneshot_g_minimization`), so only the superfluous units steer the choice.

`inference=every_mask` replaces the one-shot gradient by running each learned mask on the
inference images and taking the one whose output has the lowest mean entropy (k forwards instead
of one; the rule of the authors' entropy-adaptive BatchE baseline, `se_be_adapt`, and of
HNET+ENT). The one-shot gradient is its first-order shortcut.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from clrun.architectural.conditioned import TaskConditionedNet
from clrun.architectural.inference import TaskInferring, entropy, task_units
from clrun.architectural.masks import (
    MaskedLayer,
    masked_layers,
    replace_layers,
    straight_through,
    use_superposition,
    use_task,
)
from clrun.errors import ConfigError
from clrun.models.net import ContinualNet
from clrun.strategies.importance import check_choice

if TYPE_CHECKING:
    from clrun.loop import TaskLoop
    from clrun.module import ContinualModule
    from clrun.scenarios.base import Scenario, Task
    from clrun.scenarios.batches import Batch

MASK_RULES = ("topk", "threshold")
OBJECTIVES = ("entropy", "superfluous")
SEARCHES = ("one_shot", "every_mask")


class SupermaskLayer(MaskedLayer):
    def __init__(self, layer: nn.Linear | nn.Conv2d, n_tasks: int, rule: str, sparsity: float,
                 generator: torch.Generator) -> None:
        self.rule, self.sparsity = rule, sparsity
        self._generator = generator
        super().__init__(layer, n_tasks, bias=False)
        fan_in = self.weight[0].numel()
        signs = torch.randn(self.weight.shape, generator=generator).sign()
        self.weight.data = (signs * math.sqrt(2) / math.sqrt(fan_in)).to(self.weight.dtype)

    def init_scores(self) -> Tensor:
        scores = torch.empty_like(self.weight)
        bound = 1 / math.sqrt(self.weight[0].numel())  # kaiming_uniform(a=√5), as nn.Linear
        return scores.uniform_(-bound, bound, generator=self._generator)

    def mask(self, t: int) -> Tensor:
        scores = self.scores[t]
        if self.rule == "threshold":
            return straight_through((scores >= 0).to(scores.dtype), scores)
        magnitude = scores.abs()  # edge-popup ranks |scores|, and its gradient passes the abs
        keep = max(1, round(self.sparsity * scores.numel()))
        top = magnitude.flatten().topk(keep).indices
        hard = torch.zeros(scores.numel(), device=scores.device, dtype=scores.dtype)
        return straight_through(hard.index_fill(0, top, 1.0).view_as(scores), magnitude)


class SupSupNet(TaskConditionedNet):
    """`shared_units` (class-IL): every task's classes share one head as wide as the largest
    task, as in the paper (labels within the task), so each mask trains every output unit the
    superposed entropy reads; task t's logits fill its own classes' units of the usual layout.
    `superfluous_units` more units follow the real ones in the shared head (see the module
    docstring); while training, their cross-entropy term is collected for `SupSup.penalty`."""

    def __init__(self, template: ContinualNet, n_tasks: int, rule: str, sparsity: float,
                 seed: int, shared_units: list[Tensor] | None = None,
                 superfluous_units: int = 0) -> None:
        super().__init__(template.head_sizes)
        generator = torch.Generator().manual_seed(seed)

        def make(layer: nn.Module) -> SupermaskLayer:
            return SupermaskLayer(layer, n_tasks, rule, sparsity, generator)

        self.backbone = replace_layers(template.backbone, make)
        self.shared_units = shared_units
        self.superfluous_units = superfluous_units
        self.superfluous_term: Tensor | None = None  # summed over this step's samples
        heads = template.heads
        if shared_units is not None:
            self.real_width = max(len(units) for units in shared_units)
            heads = [nn.Linear(template.heads[0].in_features,
                               self.real_width + superfluous_units, bias=False)]
        self.heads = nn.ModuleList(make(head) for head in heads)
        self.heads_per_task = len(self.heads) > 1

    def outputs(self, x: Tensor, t: int) -> Tensor:
        """All output units of the head task t uses, with whatever masks are set."""
        return self.heads[t if self.heads_per_task else 0](self.backbone(x))

    def forward_task(self, x: Tensor, t: int) -> Tensor:
        use_task(self, t)
        logits = self.outputs(x, t)
        if self.shared_units is None:
            return logits
        real = logits[:, :len(self.shared_units[t])]
        if self.superfluous_units and self.training and torch.is_grad_enabled():
            self._collect_superfluous_term(real, logits[:, self.real_width:])
        return real

    def _collect_superfluous_term(self, real: Tensor, superfluous: Tensor) -> None:
        """What cross-entropy over the real and superfluous units adds to cross-entropy over
        the real ones alone: logsumexp(real ∪ superfluous) − logsumexp(real), per sample."""
        real, superfluous = real.float(), superfluous.float()
        term = (torch.cat([real, superfluous], 1).logsumexp(1) - real.logsumexp(1)).sum()
        self.superfluous_term = term if self.superfluous_term is None else (
            self.superfluous_term + term)

    def take_superfluous_term(self) -> Tensor | None:
        term, self.superfluous_term = self.superfluous_term, None
        return term

    def task_columns(self, t: int) -> Tensor:
        if self.shared_units is None:
            return super().task_columns(t)
        return self.shared_units[t]

    def train_only(self, t: int) -> None:
        for layer in masked_layers(self):
            for k, scores in enumerate(layer.scores):
                scores.requires_grad_(k == t)

    def infer_task(self, x: Tensor, n_learned: int, objective: str = "entropy",
                   search: str = "one_shot") -> int:
        """The task of the images `x`: `one_shot`, argmin over tasks of ∂ objective / ∂ α at
        α = 1/k (the objective over every output unit, superfluous ones included);
        `every_mask`, the mask whose own output has the lowest mean entropy."""
        if search == "every_mask":
            with torch.no_grad():
                return int(self.mask_entropies(x, n_learned).mean(1).argmin())
        alphas = torch.full((n_learned,), 1.0 / n_learned, device=x.device, requires_grad=True)
        use_superposition(self, alphas)
        with torch.enable_grad():
            logits = self.outputs(x, 0).float()
            if objective == "superfluous":
                real = torch.arange(logits.shape[1], device=x.device) < self.real_width
                value = torch.where(real, logits.detach(), logits).logsumexp(1).mean()
            else:
                value = entropy(logits).mean()
            gradient, = torch.autograd.grad(value, alphas)
        use_task(self, None)
        return int(gradient.argmin())

    def mask_entropies(self, x: Tensor, n_masks: int) -> Tensor:
        """(mask, image): the entropy over every output unit (real and superfluous) of each of
        the first `n_masks` masks' networks."""
        rows = []
        for t in range(n_masks):
            use_task(self, t)
            rows.append(entropy(self.outputs(x, t)))
        use_task(self, None)
        return torch.stack(rows)


class SupSup(TaskInferring):
    """`strategy=supsup`; see the module docstring."""

    def __init__(self, mask: str = "topk", sparsity: float = 0.5, seed: int = 0,
                 inference_batch_size: int = 128, per_sample: bool = False,
                 inference_images: int = 1, objective: str = "entropy",
                 superfluous_units: int = 0, inference: str = "one_shot") -> None:
        super().__init__()
        check_choice("strategy.plugins.supsup.mask", mask, MASK_RULES)
        check_choice("strategy.plugins.supsup.objective", objective, OBJECTIVES)
        check_choice("strategy.plugins.supsup.inference", inference, SEARCHES)
        if inference == "every_mask" and objective != "entropy":
            raise ConfigError("strategy.plugins.supsup.objective", objective,
                              "one_shot inference only; inference=every_mask compares the "
                              "masks' own entropies (objective=entropy)")
        if isinstance(superfluous_units, bool) or not isinstance(superfluous_units, int) \
                or superfluous_units < 0:
            raise ConfigError("strategy.plugins.supsup.superfluous_units", superfluous_units,
                              "must be a whole number >= 0 (extra output units no label uses)")
        if objective == "superfluous" and superfluous_units == 0:
            raise ConfigError("strategy.plugins.supsup.objective", objective,
                              "reads the superfluous output units: also set "
                              "strategy.plugins.supsup.superfluous_units (e.g. 8)")
        self.objective, self.superfluous_units = objective, superfluous_units
        self.inference = inference
        if not 0 < sparsity <= 1:
            raise ConfigError("strategy.plugins.supsup.sparsity", sparsity, "must be in (0, 1]")
        if inference_images < 1:
            raise ConfigError("strategy.plugins.supsup.inference_images", inference_images,
                              "must be >= 1 (images of each batch whose mean entropy is used)")
        self.inference_images = inference_images
        self.rule, self.sparsity, self.seed = mask, sparsity, seed
        self.inference_batch_size = inference_batch_size
        self.per_sample = per_sample

    def extend_model(self, module: ContinualModule, scenario: Scenario) -> None:
        if self.superfluous_units and scenario.setting == "task":
            raise ConfigError("strategy.plugins.supsup.superfluous_units",
                              self.superfluous_units, "only serve task inference, and task-IL "
                              "gives the task: use scenario.setting=class or domain, or 0")
        self.units = task_units(scenario)
        shared = (self.units if scenario.setting == "class" or self.superfluous_units
                  else None)
        module.net = SupSupNet(module.net, scenario.n_tasks, self.rule, self.sparsity,
                               self.seed, shared, self.superfluous_units).to(module.device)
        module.refresh_heads()

    def on_task_start(self, loop: TaskLoop, task: Task) -> None:
        loop.module.net.train_only(task.index)

    def penalty(self, module: ContinualModule, batch: Batch, logits: Tensor) -> Tensor | None:
        """With superfluous units: the rest of the cross-entropy over them (the step's forward
        collected it), so the loss is cross-entropy over the task's and the superfluous units."""
        term = module.net.take_superfluous_term()
        return None if term is None else term / len(batch.x)

    def predict(self, module: ContinualModule, x: Tensor, task: Tensor) -> Tensor | None:
        if module.setting == "task" or self.n_learned == 0:
            return None
        net: SupSupNet = module.net
        scores = torch.full((len(x), sum(net.head_sizes)), float("-inf"), device=x.device)
        size = 1 if self.per_sample else self.inference_batch_size
        for start in range(0, len(x), size):
            chunk = slice(start, start + size)
            images = x[chunk][: self.inference_images]
            guess = torch.full_like(task[chunk], net.infer_task(images, self.n_learned,
                                                               self.objective, self.inference))
            scores[chunk] = net(x[chunk], guess).to(scores.dtype)  # the guess's classes only
            self.record.count(task[chunk], guess)
        return scores
