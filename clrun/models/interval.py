"""Interval networks (InterContiNet, Wołczyk et al., ICML 2022).

Every weight of an interval layer is an interval, and a bounded pass carries [lower, upper]
bounds of each activation beside the point ("middle") activation, so one pass certifies a
prediction for every network inside the intervals.

A layer's weights lie in [m − h, m + h] with m = W + s·r and h = c·r: W the centre, r ≥ 0 the
radius (a buffer, never trained), s = tanh(shift) ∈ (−1, 1) and c = sigmoid(scale)·(1 − |s|).
Because |s| + c < 1, the trained interval always lies inside [W − r, W + r]: moving the middle
(`shift`) or shrinking the width (`scale`) can never leave the interval an earlier task was
certified on. `freeze_task` folds s and c into W and r at a task boundary, so the nesting
carries on from task to task.

Which parameters train is a *phase*: `vanilla` (W and b, the first task), `shift` (the shifts,
later tasks) and `scale` (the scales, the contraction at the end of every task). Point heads
(task-IL, one head per task) are ordinary linear layers that take interval inputs; they train
in the vanilla and shift phases.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clrun.errors import ConfigError
from clrun.instantiate import config_target
from clrun.models.alexnet import alexnet_backbone, check_image_input
from clrun.models.net import ContinualNet, HeadFactory, check_widths

Bounds = tuple[Tensor, Tensor, Tensor]  # lower, middle, upper


Product = Callable[[Tensor, Tensor], Tensor]  # x, weight -> x "times" weight (linear, conv)


def nonnegative_bounds(lower: Tensor, upper: Tensor, w_lower: Tensor, w_upper: Tensor,
                       product: Product = F.linear) -> tuple[Tensor, Tensor]:
    """Exact bounds of x @ w.T over x in [lower, upper] (lower >= 0) and w in [w_lower, w_upper].

    With x >= 0, the least product takes the lower weight and, for a negative weight, the
    largest input; the greatest mirrors it. A convolution is a product of the same kind.
    """
    low = product(lower, w_lower.clamp(min=0)) + product(upper, w_lower.clamp(max=0))
    high = product(upper, w_upper.clamp(min=0)) + product(lower, w_upper.clamp(max=0))
    return low, high


def point_input_bounds(x: Tensor, w_lower: Tensor, w_upper: Tensor,
                       product: Product = F.linear) -> tuple[Tensor, Tensor]:
    """Exact bounds of x @ w.T for a point input of any sign (the network's first layer)."""
    positive, negative = x.clamp(min=0), (-x).clamp(min=0)
    low = product(positive, w_lower) - product(negative, w_upper)
    high = product(positive, w_upper) - product(negative, w_lower)
    return low, high


class IntervalLayer(nn.Module):
    """A layer whose weights and biases are intervals (see the module docstring); subclasses
    say what the weights do to an input (`product`: a linear map or a convolution)."""

    def __init__(self, weight_shape: tuple[int, ...], max_radius: float = 1.0,
                 scale_init: float = 5.0, normalize_shift: bool = False) -> None:
        super().__init__()
        if max_radius <= 0:
            raise ConfigError("model.max_radius", max_radius, "must be > 0")
        out_features = weight_shape[0]
        max_radius, scale_init = float(max_radius), float(scale_init)  # configs may give ints
        self.scale_init = scale_init
        # normalize_shift: the shift parameter moves in units of the radius, so a layer whose
        # radii shrank keeps a useful learning rate.
        self.normalize_shift = normalize_shift
        self.weight = nn.Parameter(torch.empty(weight_shape))
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.weight_shift = nn.Parameter(torch.zeros(weight_shape))
        self.bias_shift = nn.Parameter(torch.zeros(out_features))
        self.weight_scale = nn.Parameter(torch.full(weight_shape, scale_init))
        self.bias_scale = nn.Parameter(torch.full((out_features,), scale_init))
        self.register_buffer("weight_radius", torch.full(weight_shape, max_radius))
        self.register_buffer("bias_radius", torch.full((out_features,), max_radius))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # torch's; biases start at 0

    def product(self, x: Tensor, weight: Tensor) -> Tensor:
        raise NotImplementedError

    def _with_bias(self, y: Tensor, bias: Tensor) -> Tensor:
        return y + bias.view(1, -1, *([1] * (y.dim() - 2)))

    def _shift(self, radius: Tensor, shift: Tensor) -> Tensor:
        """s in (-1, 1): where the middle sits inside [W - r, W + r], in units of r."""
        return torch.tanh(shift / radius.clamp(min=1e-8) if self.normalize_shift else shift)

    def _interval(self, centre: Tensor, radius: Tensor, shift: Tensor, scale: Tensor
                  ) -> tuple[Tensor, Tensor]:
        """(middle, half-width) of one parameter tensor's current interval."""
        s = self._shift(radius, shift)
        return centre + s * radius, torch.sigmoid(scale) * (1 - s.abs()) * radius

    def weight_interval(self) -> tuple[Tensor, Tensor]:
        return self._interval(self.weight, self.weight_radius, self.weight_shift,
                              self.weight_scale)

    def bias_interval(self) -> tuple[Tensor, Tensor]:
        return self._interval(self.bias, self.bias_radius, self.bias_shift, self.bias_scale)

    def _middle(self, centre: Tensor, radius: Tensor, shift: Tensor) -> Tensor:
        return centre + self._shift(radius, shift) * radius

    def forward(self, x: Tensor) -> Tensor:
        """The middle network's output (what the model predicts with); no widths needed."""
        weight = self._middle(self.weight, self.weight_radius, self.weight_shift)
        return self._with_bias(self.product(x, weight),
                               self._middle(self.bias, self.bias_radius, self.bias_shift))

    def forward_bounds(self, bounds: Bounds, point_input: bool = False) -> Bounds:
        """Propagate (lower, middle, upper); inputs must be >= 0 unless `point_input`."""
        lower, middle, upper = bounds
        w_mid, w_half = self.weight_interval()
        b_mid, b_half = self.bias_interval()
        if point_input:
            low, high = point_input_bounds(middle, w_mid - w_half, w_mid + w_half,
                                           self.product)
        else:
            low, high = nonnegative_bounds(lower, upper, w_mid - w_half, w_mid + w_half,
                                           self.product)
        return (self._with_bias(low, b_mid - b_half),
                self._with_bias(self.product(middle, w_mid), b_mid),
                self._with_bias(high, b_mid + b_half))

    def trainable(self, phase: str) -> list[nn.Parameter]:
        return {"vanilla": [self.weight, self.bias],
                "shift": [self.weight_shift, self.bias_shift],
                "scale": [self.weight_scale, self.bias_scale]}[phase]

    @torch.no_grad()
    def freeze_task(self) -> None:
        """Make the trained interval the new [W − r, W + r] and restart shift and scale."""
        for centre, radius, shift, scale in (
                (self.weight, self.weight_radius, self.weight_shift, self.weight_scale),
                (self.bias, self.bias_radius, self.bias_shift, self.bias_scale)):
            middle, half = self._interval(centre, radius, shift, scale)
            centre.copy_(middle)
            radius.copy_(half)
            shift.zero_()
            scale.fill_(self.scale_init)


class IntervalLinear(IntervalLayer):
    def __init__(self, in_features: int, out_features: int, max_radius: float = 1.0,
                 scale_init: float = 5.0, normalize_shift: bool = False) -> None:
        super().__init__((out_features, in_features), max_radius, scale_init, normalize_shift)
        self.in_features, self.out_features = in_features, out_features

    def product(self, x: Tensor, weight: Tensor) -> Tensor:
        return F.linear(x, weight)


class IntervalConv2d(IntervalLayer):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, max_radius: float = 1.0, scale_init: float = 5.0,
                 normalize_shift: bool = False) -> None:
        super().__init__((out_channels, in_channels, kernel_size, kernel_size), max_radius,
                         scale_init, normalize_shift)
        self.stride, self.padding = stride, padding

    def product(self, x: Tensor, weight: Tensor) -> Tensor:
        return F.conv2d(x, weight, stride=self.stride, padding=self.padding)


class IntervalDropout(nn.Dropout):
    """Dropout that drops the same units from all three bounds (independent masks would break
    lower ≤ middle ≤ upper)."""

    def forward_bounds(self, bounds: Bounds, point_input: bool = False) -> Bounds:
        if not self.training or self.p == 0:
            return bounds
        keep = (torch.rand_like(bounds[1]) >= self.p).to(bounds[1].dtype) / (1 - self.p)
        return tuple(b * keep for b in bounds)


class PointHead(nn.Linear):
    """An ordinary linear head that also propagates interval inputs (task-IL heads: each task
    has its own, so there is nothing to protect with intervals)."""

    def forward_bounds(self, bounds: Bounds, point_input: bool = False) -> Bounds:
        lower, middle, upper = bounds
        low, high = nonnegative_bounds(lower, upper, self.weight, self.weight)
        return low + self.bias, super().forward(middle), high + self.bias

    def trainable(self, phase: str) -> list[nn.Parameter]:
        return [] if phase == "scale" else [self.weight, self.bias]


class IntervalNet(ContinualNet):
    """An interval MLP; `forward` returns the middle logits and, while `track_bounds` is on,
    keeps the logits' bounds of that same pass in `logit_bounds` (no second pass)."""

    def __init__(self, backbone: nn.Sequential, feature_size: int, head_sizes: list[int],
                 head_factory: HeadFactory) -> None:
        super().__init__(backbone, feature_size, head_sizes, head_factory)
        self.track_bounds = False
        self.logit_bounds: tuple[Tensor, Tensor] | None = None

    def interval_layers(self) -> list[IntervalLayer]:
        return [m for m in self.modules() if isinstance(m, IntervalLayer)]

    def bounds(self, x: Tensor) -> Bounds:
        """(lower, middle, upper) logits: every network inside the intervals lies between."""
        state: Bounds = (x, x, x)
        point = True
        for layer in self.backbone:
            if isinstance(layer, IntervalLayer):
                state = layer.forward_bounds(state, point_input=point)
                point = False
            elif isinstance(layer, IntervalDropout):
                state = layer.forward_bounds(state)
            else:  # Flatten, ReLU and max-pooling are monotone: apply them to each bound
                state = (layer(state[0]), layer(state[1]), layer(state[2]))
        outputs = [head.forward_bounds(state, point_input=point) for head in self.heads]
        return tuple(torch.cat(parts, dim=1) for parts in zip(*outputs, strict=True))

    def forward(self, x: Tensor) -> Tensor:
        if not self.track_bounds:
            return super().forward(x)
        lower, middle, upper = self.bounds(x)
        self.logit_bounds = (lower, upper)
        return middle

    def set_phase(self, phase: str) -> None:
        """Only the phase's parameters require gradients; the others keep no stale gradient."""
        for parameter in self.parameters():
            parameter.requires_grad_(False)
            parameter.grad = None
        for module in self.modules():
            if isinstance(module, (IntervalLayer, PointHead)):
                for parameter in module.trainable(phase):
                    parameter.requires_grad_(True)

    def freeze_task(self) -> None:
        for layer in self.interval_layers():
            layer.freeze_task()


@config_target
def interval_mlp(input_shape: tuple[int, ...], head_sizes: list[int],
                 hidden_sizes: tuple[int, ...] = (400, 400), max_radius: float = 1.0,
                 scale_init: float = 5.0, normalize_shift: bool = False) -> IntervalNet:
    """Flatten, then IntervalLinear+ReLU per hidden size. One head: an interval layer (it is
    shared by every task, so it is protected); several heads (task-IL): point heads."""
    check_widths("model.hidden_sizes", hidden_sizes)
    interval_layer = partial(IntervalLinear, max_radius=max_radius, scale_init=scale_init,
                             normalize_shift=normalize_shift)
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(input_shape)
    for hidden in hidden_sizes:
        layers += [interval_layer(width, hidden), nn.ReLU()]
        width = hidden
    head_factory = interval_layer if len(head_sizes) == 1 else PointHead
    return IntervalNet(nn.Sequential(*layers), width, list(head_sizes), head_factory)


@config_target
def interval_alexnet(input_shape: tuple[int, ...], head_sizes: list[int],
                     max_radius: float = 1.0, scale_init: float = 5.0,
                     normalize_shift: bool = False, dropout: float = 0.5) -> IntervalNet:
    """InterContiNet's CIFAR AlexNet (clrun.models.alexnet) with interval convolutions and
    linear layers; dropout drops the same units from every bound."""
    check_image_input("interval_alexnet", input_shape)
    settings = {"max_radius": max_radius, "scale_init": scale_init,
                "normalize_shift": normalize_shift}
    backbone, features = alexnet_backbone(
        *input_shape, dropout=dropout, conv=partial(IntervalConv2d, **settings),
        linear=partial(IntervalLinear, **settings), drop=IntervalDropout)
    head_factory = (partial(IntervalLinear, **settings) if len(head_sizes) == 1 else PointHead)
    return IntervalNet(backbone, features, list(head_sizes), head_factory)
