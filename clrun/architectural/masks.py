"""Layers whose weights are multiplied by a learned binary mask per task (Piggyback, SupSup).

`MaskedLayer` wraps a linear or convolution layer: its weights (and bias) never train; each
task has a tensor of real-valued scores shaped like the weight, binarised in the forward pass
with a straight-through gradient. Which mask applies is set on the layers before a forward
(`use_task`), or a superposition Σ αᵢ Mᵢ of several (`use_superposition`, SupSup's inference).
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor, nn


def straight_through(hard: Tensor, scores: Tensor) -> Tensor:
    """`hard` in the forward pass, the gradient of `scores` in the backward pass."""
    return hard + scores - scores.detach()


class MaskedLayer(nn.Module):
    """Base: subclasses give the scores' initial value (`init_scores`) and the mask rule."""

    def __init__(self, layer: nn.Linear | nn.Conv2d, n_tasks: int, bias: bool = True) -> None:
        super().__init__()
        self.conv = isinstance(layer, nn.Conv2d)
        if self.conv:
            self.stride, self.padding = layer.stride, layer.padding
            self.dilation, self.groups = layer.dilation, layer.groups
        self.weight = nn.Parameter(layer.weight.detach().clone(), requires_grad=False)
        self.bias = (nn.Parameter(layer.bias.detach().clone(), requires_grad=False)
                     if bias and layer.bias is not None else None)
        self.scores = nn.ParameterList(nn.Parameter(self.init_scores()) for _ in range(n_tasks))
        self.task: int | None = None  # None: the plain weights
        self.alphas: Tensor | None = None  # set: the superposition of the masks

    def init_scores(self) -> Tensor:
        raise NotImplementedError

    def mask(self, t: int) -> Tensor:
        raise NotImplementedError

    def effective_weight(self) -> Tensor:
        if self.alphas is not None:
            return self.weight * sum(a * self.mask(i) for i, a in enumerate(self.alphas))
        if self.task is None:
            return self.weight
        return self.weight * self.mask(self.task)

    def forward(self, x: Tensor) -> Tensor:
        weight = self.effective_weight()
        if self.conv:
            return F.conv2d(x, weight, self.bias, self.stride, self.padding, self.dilation,
                            self.groups)
        return F.linear(x, weight, self.bias)


def replace_layers(module: nn.Module, make: Callable[[nn.Module], nn.Module]) -> nn.Module:
    """Replace every nn.Linear and nn.Conv2d inside `module` (in place) by `make(layer)`."""
    for name, child in module.named_children():
        if isinstance(child, (nn.Linear, nn.Conv2d)):
            setattr(module, name, make(child))
        else:
            replace_layers(child, make)
    return module


def masked_layers(module: nn.Module) -> list[MaskedLayer]:
    return [m for m in module.modules() if isinstance(m, MaskedLayer)]


def use_task(module: nn.Module, t: int | None) -> None:
    for layer in masked_layers(module):
        layer.task, layer.alphas = t, None


def use_superposition(module: nn.Module, alphas: Tensor | None) -> None:
    for layer in masked_layers(module):
        layer.task, layer.alphas = None, alphas
