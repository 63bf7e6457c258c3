"""Parameter importances measured on a finished task's data (EWC's Fisher, MAS, L2's ones).

Papers differ in details that move published numbers: which labels the Fisher uses, whether
minibatch gradients are squared (empirical) or per-sample ones, and whether the sum over
minibatches is averaged. Each is a parameter here, not a fork of the method.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from clrun.errors import ConfigError
from clrun.generators.base import Generator
from clrun.module import ContinualModule
from clrun.scenarios.base import InputPipeline, Split

Importances = dict[str, Tensor]
FISHER_LABELS = ("predicted", "true", "expected")
REDUCTIONS = ("sum", "mean")


def check_choice(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(key, value, "use one of: " + ", ".join(allowed))


def tracked_parameters(module: ContinualModule) -> dict[str, nn.Parameter]:
    return {name: p for name, p in module.net.named_parameters() if p.requires_grad}


def _batches(split: Split, pipeline: InputPipeline, batch_size: int):
    for start in range(0, len(split), batch_size):
        end = start + batch_size
        yield pipeline(split.x[start:end], train=False), split.y[start:end], split.task[start:end]


def minibatch_gradients(module: ContinualModule | Generator, split: Split,
                        pipeline: InputPipeline, batch_size: int,
                        objective: Callable[[Tensor, Tensor, Tensor], Tensor],
                        transform: Callable[[Tensor], Tensor], reduction: str) -> Importances:
    """Sum (or mean) over minibatches of `transform(grad objective(x, y, task))`."""
    params = tracked_parameters(module)
    totals = {name: torch.zeros_like(p) for name, p in params.items()}
    was_training = module.training
    module.eval()
    n_batches = 0
    with torch.enable_grad():
        for x, y, task in _batches(split, pipeline, batch_size):
            module.net.zero_grad(set_to_none=True)
            objective(x, y, task).backward()
            for name, p in params.items():
                if p.grad is not None:
                    totals[name] += transform(p.grad)
            n_batches += 1
    module.net.zero_grad(set_to_none=True)
    module.train(was_training)
    if reduction == "mean" and n_batches:
        totals = {name: t / n_batches for name, t in totals.items()}
    return totals


def expected_fisher(module: ContinualModule, split: Split, pipeline: InputPipeline,
                    batch_size: int, reduction: str) -> Importances:
    """Exact Fisher: per sample, E_{c ~ p(c|x)} (grad log p(c|x))^2, from per-sample gradients,
    over the units training uses. A label is differentiated only for the samples that give it
    a positive probability (none for a masked unit), and the weighted squares are summed over
    the batch by one matrix product instead of per-sample temporaries: most of the cost
    before."""
    params = {name: p.detach() for name, p in tracked_parameters(module).items()}
    totals = {name: torch.zeros_like(p) for name, p in params.items()}

    def log_prob(weights: dict[str, Tensor], x: Tensor, task: Tensor, label: Tensor) -> Tensor:
        logits = functional_call(module.net, weights, (x.unsqueeze(0),))
        logits = module.training_logits(logits, task.unsqueeze(0))
        return F.log_softmax(logits, dim=1)[0].gather(0, label.view(1)).squeeze(0)

    per_sample_grad = vmap(grad(log_prob), in_dims=(None, 0, 0, 0))
    was_training = module.training
    module.eval()
    n_samples = 0
    for x, _, task in _batches(split, pipeline, batch_size):
        with torch.no_grad():
            probs = F.softmax(module.training_logits(module.net(x), task), dim=1)
        for label in range(probs.shape[1]):
            given = probs[:, label] > 0
            if not given.any():
                continue
            labels = torch.full((int(given.sum()),), label, device=x.device, dtype=torch.long)
            grads = per_sample_grad(params, x[given], task[given], labels)
            weight = probs[given, label]
            for name, g in grads.items():
                totals[name] += (weight @ g.pow(2).flatten(1)).view_as(totals[name]).nan_to_num()
        n_samples += x.shape[0]
    module.train(was_training)
    if reduction == "mean" and n_samples:
        totals = {name: t / n_samples for name, t in totals.items()}
    return totals


def fisher(module: ContinualModule, split: Split, pipeline: InputPipeline, batch_size: int,
           labels: str, reduction: str) -> Importances:
    """EWC's diagonal Fisher with the chosen labels and reduction."""
    if labels == "expected":
        return expected_fisher(module, split, pipeline, batch_size, reduction)

    def objective(x: Tensor, y: Tensor, task: Tensor) -> Tensor:
        logits = module.training_logits(module.net(x), task)
        target = logits.argmax(dim=1) if labels == "predicted" else y
        return F.cross_entropy(logits, target)

    return minibatch_gradients(module, split, pipeline, batch_size, objective,
                               lambda g: g.pow(2), reduction)


def output_sensitivity(module: ContinualModule, split: Split, pipeline: InputPipeline,
                       batch_size: int, reduction: str) -> Importances:
    """MAS: |grad of mean(output^2)| per minibatch (the task's head in task-IL)."""
    def squared_output(x: Tensor, y: Tensor, task: Tensor) -> Tensor:
        logits = module.task_logits(module.net(x), task)
        return logits.masked_fill(logits.isinf(), 0).pow(2).mean()

    return minibatch_gradients(module, split, pipeline, batch_size, squared_output, torch.abs,
                               reduction)


def loss_fisher(generator: Generator, split: Split, pipeline: InputPipeline, batch_size: int,
                reduction: str) -> Importances:
    """EWC's Fisher of a generator that is the learner (`objective=generative`): squared
    minibatch gradients of its own loss (a VAE's negative ELBO), labels = natural classes for
    a conditional one. `batch_size=1` gives the per-sample empirical Fisher."""
    def own_loss(x: Tensor, y: Tensor, task: Tensor) -> Tensor:
        return generator.loss(x, y if generator.conditional else None)

    return minibatch_gradients(generator, split, pipeline, batch_size, own_loss,
                               lambda g: g.pow(2), reduction)
