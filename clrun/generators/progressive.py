"""A progressive VAE: progressive neural networks (Rusu et al. 2016) applied to a generator, the
learner of `strategy=pnn_abc` (autonomous branch construction, clrun/strategies/pnn_abc.py).

Column k is a fully connected VAE: an encoder input → hidden sizes → (μ, log σ²) and a decoder
z → reversed hidden sizes → pixel logits (Bernoulli, van de Ven's loss as `generator=vae`).
Every layer after the first of column k's encoder and decoder also receives PNN's adapter
U·σ(V·α·[h⁽⁰⁾; …; h⁽ᵏ⁻¹⁾]) (clrun/architectural/pnn.py) of the previous layer's activations of
every earlier column on the same input: the image for the encoders, the latent for the
decoders. Only the column being trained has gradients; the others are frozen and never change.
Samples: z ~ N(0, I) decoded by a column chosen uniformly, or by the column of a given task.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clrun.architectural.pnn import Lateral
from clrun.errors import ClrunError
from clrun.generators.base import Generator
from clrun.generators.vae import gaussian_elbo_loss
from clrun.models.net import check_widths

Activations = list[list[Tensor]]  # per column, every layer's output
EVAL_BATCH = 1024


class ProgressiveStack(nn.Module):
    """One column's linear layers (ReLU between), with laterals from `n_earlier` columns into
    every layer after the first."""

    def __init__(self, sizes: list[int], n_earlier: int) -> None:
        super().__init__()
        self.mains = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:],
                                                                   strict=True))
        self.laterals = (nn.ModuleList(Lateral(main, n_earlier) for main in self.mains[1:])
                         if n_earlier else None)

    def forward(self, x: Tensor, earlier: Activations) -> list[Tensor]:
        outputs, h = [], x
        for i, main in enumerate(self.mains):
            z = main(h)
            if i and self.laterals is not None:
                z = z + self.laterals[i - 1]([column[i - 1] for column in earlier])
            h = torch.relu(z) if i < len(self.mains) - 1 else z
            outputs.append(h)
        return outputs


class VAEColumn(nn.Module):
    def __init__(self, pixels: int, hidden_sizes: list[int], z_dim: int, n_earlier: int) -> None:
        super().__init__()
        self.encoder = ProgressiveStack([pixels, *hidden_sizes, 2 * z_dim], n_earlier)
        self.decoder = ProgressiveStack([z_dim, *reversed(hidden_sizes), pixels], n_earlier)


def chain(stacks: list[ProgressiveStack], x: Tensor) -> Tensor:
    """The last stack's output on `x`, each stack taking the earlier ones' activations."""
    earlier: Activations = []
    for stack in stacks:
        earlier.append(stack(x, earlier))
    return earlier[-1][-1]


class ProgressiveVAE(Generator):
    """Columns of VAEs; `strategy=pnn_abc` opens them and says which one trains (`active`)."""

    trained_by_strategy = "pnn_abc"

    def __init__(self, input_shape: tuple[int, ...], n_classes: int,
                 hidden_sizes: tuple[int, ...] = (400, 400), z_dim: int = 100,
                 **kwargs: Any) -> None:
        check_widths("generator.hidden_sizes", list(hidden_sizes))
        check_widths("generator.z_dim", [z_dim])
        super().__init__(input_shape=input_shape, n_classes=n_classes, **kwargs)
        self.hidden_sizes, self.z_dim = list(hidden_sizes), z_dim
        self.columns = nn.ModuleList()
        # the column this task trains; None: nothing trains (the loop then skips the fit)
        self.active: int | None = None
        self.task_columns: list[int] = []  # the column of every task learned or learning
        self.own_errors: list[float] = []  # each column's error on its own data, once trained

    # -- columns ------------------------------------------------------------------------------
    def open_column(self) -> int:
        """A new column with laterals from all existing ones; returns its index."""
        column = VAEColumn(math.prod(self.input_shape), self.hidden_sizes, self.z_dim,
                           len(self.columns))
        self.columns.append(column.to(self.device))
        return len(self.columns) - 1

    def route(self, task_index: int, column: int, trains: bool) -> None:
        """Task `task_index` belongs to `column`; only when `trains` does that column learn it
        (a column that has learned its task is never trained again)."""
        self.task_columns = [*self.task_columns[:task_index], column]
        self.active = column if trains else None
        for k, each in enumerate(self.columns):
            each.requires_grad_(k == self.active)

    def encode(self, x: Tensor, column: int) -> tuple[Tensor, Tensor]:
        stats = chain([c.encoder for c in self.columns[: column + 1]], x.flatten(1))
        return stats.chunk(2, dim=1)

    def decode_logits(self, z: Tensor, column: int) -> Tensor:
        return chain([c.decoder for c in self.columns[: column + 1]], z)

    @torch.no_grad()
    def column_error(self, images: Tensor, column: int, with_kl: bool = False) -> float:
        """Mean per-pixel binary cross-entropy of `images` through `column`, decoding z = μ;
        `with_kl`: plus the posterior's KL to the prior per pixel (the negative ELBO)."""
        total = 0.0
        for x in images.split(EVAL_BATCH):
            x = x.to(self.device)
            mu, logvar = self.encode(x, column)
            logits = self.decode_logits(mu, column).float()
            total += float(F.binary_cross_entropy_with_logits(
                logits, x.flatten(1).float(), reduction="sum"))
            if with_kl:
                total += float(-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).float().sum())
        return total / images[0].numel() / len(images)

    def end_task(self, images: Tensor, with_kl: bool = False) -> None:
        """After training the active column: its error on its own data (the routing scale)."""
        if self.active is not None:
            self.own_errors = [*self.own_errors[: self.active],
                               self.column_error(images, self.active, with_kl)]
            self.columns[self.active].requires_grad_(False)
            self.active = None

    # -- training -----------------------------------------------------------------------------
    def loss(self, x: Tensor, conditions: Tensor | None) -> Tensor:
        mu, logvar = self.encode(x, self.active)
        return gaussian_elbo_loss(mu, logvar, lambda z: self.decode_logits(z, self.active), x)

    # -- sampling -----------------------------------------------------------------------------
    @torch.no_grad()
    def decode(self, z: Tensor, column: Tensor) -> Tensor:
        """Images of latents `z`, each decoded by its own column."""
        images = torch.empty(len(z), *self.input_shape, device=self.device)
        for k in column.unique().tolist():
            chosen = column == k
            logits = self.decode_logits(z[chosen], k).float()
            images[chosen] = torch.sigmoid(logits).view(-1, *self.input_shape)
        return images

    def sample(self, n: int, conditions: Tensor | None = None) -> Tensor:
        """Samples of columns chosen uniformly."""
        if not self.columns:
            raise ClrunError("the progressive VAE has no column yet")
        column = torch.randint(len(self.columns), (n,), device=self.device)
        return self.decode(torch.randn(n, self.z_dim, device=self.device), column)

    def sample_task(self, n: int, task_index: int) -> Tensor:
        """Samples of the column task `task_index` was routed to."""
        column = torch.full((n,), self.task_columns[task_index], device=self.device)
        return self.decode(torch.randn(n, self.z_dim, device=self.device), column)

    # -- checkpoints: the columns opened so far, and the routing --------------------------------
    def get_extra_state(self) -> dict[str, Any]:
        return {"task_columns": list(self.task_columns), "own_errors": list(self.own_errors)}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.task_columns = list(state["task_columns"])
        self.own_errors = list(state["own_errors"])

    def load_state_dict(self, state_dict: dict[str, Any], strict: bool = True,
                        assign: bool = False) -> Any:
        opened = {int(key.split(".")[1]) for key in state_dict if key.startswith("columns.")}
        while len(self.columns) < len(opened):
            self.open_column()
        return super().load_state_dict(state_dict, strict, assign)
