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
    """Exact Fisher: per sample, E_{c ~ p(c|x)} (grad log p(c|x))^2, over the units training
    uses. A label is differentiated only where a sample gives it a positive probability (never
    for a masked unit). Networks whose trained parameters all sit in linear layers (MLPs) take
    the closed form of `_linear_fisher`, one batched backward per label; others take
    per-sample gradients (`torch.func`), which are memory-bound on a CPU."""
    totals = {name: torch.zeros_like(p) for name, p in tracked_parameters(module).items()}
    layers = _linear_owners(module)
    was_training = module.training
    module.eval()
    n_samples = 0
    for x, _, task in _batches(split, pipeline, batch_size):
        if layers is not None and not _linear_fisher(module, layers, x, task, totals):
            layers = None  # the network's structure fails the closed form: for every batch
        if layers is None:
            _per_sample_fisher(module, x, task, totals)
        n_samples += x.shape[0]
    module.train(was_training)
    if reduction == "mean" and n_samples:
        totals = {name: t / n_samples for name, t in totals.items()}
    return totals


def _linear_owners(module: ContinualModule) -> dict[str, tuple[nn.Linear, str]] | None:
    """Each trained parameter's linear layer and role, or None when another kind owns one."""
    owners: dict[str, tuple[nn.Linear, str]] = {}
    params = tracked_parameters(module)
    for layer_name, layer in module.net.named_modules():
        if isinstance(layer, nn.Linear):
            for role, _ in layer.named_parameters(recurse=False):
                name = f"{layer_name}.{role}" if layer_name else role
                if name in params:
                    owners[name] = (layer, role)
    return owners if len(owners) == len(params) else None


def _linear_fisher(module: ContinualModule, owners: dict[str, tuple[nn.Linear, str]],
                   x: Tensor, task: Tensor, totals: Importances) -> bool:
    """Add one batch's exact Fisher by the linear layers' closed form: a sample's gradient of
    W is the outer product of the output's gradient d and the input a, so its weighted square
    summed over samples is (p·d²)ᵀ a² — no per-sample gradient is formed. Valid when every
    layer sees each sample once and samples do not interact (eval mode); returns False, having
    added nothing, when a layer runs twice or on more than one row per sample."""
    layers = {id(layer): layer for layer, _ in owners.values()}
    seen: dict[int, list[tuple[Tensor, Tensor]]] = {key: [] for key in layers}

    def keep(layer: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        seen[id(layer)].append((inputs[0].detach(), output))

    hooks = [layer.register_forward_hook(keep) for layer in layers.values()]
    try:
        with torch.enable_grad():
            log_probs = F.log_softmax(module.training_logits(module.net(x), task), dim=1)
    finally:
        for hook in hooks:
            hook.remove()
    if any(len(calls) != 1 or calls[0][0].shape[0] != x.shape[0] or calls[0][0].dim() != 2
           for calls in seen.values()):
        return False
    keys = list(layers)
    outputs = [seen[key][0][1] for key in keys]
    squared_inputs = {key: seen[key][0][0].pow(2) for key in keys}
    probs = log_probs.detach().exp()
    for label in range(probs.shape[1]):
        weight = probs[:, label]
        if not (weight > 0).any():
            continue
        deltas = torch.autograd.grad(log_probs[:, label].sum(), outputs, retain_graph=True)
        weighted = {key: weight.unsqueeze(1) * d.pow(2) for key, d in zip(keys, deltas,
                                                                         strict=True)}
        for name, (layer, role) in owners.items():
            w = weighted[id(layer)]
            term = w.T @ squared_inputs[id(layer)] if role == "weight" else w.sum(0)
            totals[name] += term.nan_to_num()
    return True


def _per_sample_fisher(module: ContinualModule, x: Tensor, task: Tensor,
                       totals: Importances) -> None:
    """Add one batch's exact Fisher from per-sample gradients (any network)."""
    params = {name: p.detach() for name, p in tracked_parameters(module).items()}

    def log_prob(weights: dict[str, Tensor], x: Tensor, task: Tensor, label: Tensor) -> Tensor:
        logits = functional_call(module.net, weights, (x.unsqueeze(0),))
        logits = module.training_logits(logits, task.unsqueeze(0))
        return F.log_softmax(logits, dim=1)[0].gather(0, label.view(1)).squeeze(0)

    per_sample_grad = vmap(grad(log_prob), in_dims=(None, 0, 0, 0))
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
