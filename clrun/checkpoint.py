"""Checkpoints after every task, and resuming a killed run after its last finished task.

A checkpoint holds what the run is (strategy, generator, scenario, model), the network, the
optimizer state when it is kept across tasks, every plugin's state (buffers, importances,
exemplars), the global RNG states (the CPU's, each GPU's) and the accuracy rows so far: tensors
and plain containers only, so it loads with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from clrun.errors import ClrunError
from clrun.loggers import wandb_run_id

if TYPE_CHECKING:
    from clrun.loop import TaskLoop

FILENAME = "checkpoint.pt"


def save_checkpoint(loop: TaskLoop, path: Path) -> None:
    """Write atomically, so a kill during the write leaves the previous checkpoint intact."""
    module = loop.module
    state = {
        "identity": loop.settings.identity,
        "stages_done": loop.stages_done,
        "matrix": loop.matrix,
        "initial": loop.initial,
        "model": module.net.state_dict(),
        "optimizer": module.optimizer_state(),
        "plugins": [plugin.state_dict() for plugin in loop.plugins],
        "rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "wandb_id": wandb_run_id(loop.loggers),
        "generative": loop.generative.state_dict() if loop.generative is not None else None,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as handle:
        torch.save(state, handle)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, weights_only=True)  # tensors return to the device they left
    except Exception as error:  # a damaged file: say which, never resume from garbage
        raise ClrunError(f"cannot resume from {path}: {type(error).__name__}: {error}; delete "
                         "it to start over") from None


def restore_cuda_rng(states: list[torch.Tensor] | None) -> None:
    """The GPUs' random streams (diffusion sampling draws there), when the run resumes on as
    many GPUs as it was saved from; a CPU checkpoint has none to restore."""
    if states and torch.cuda.is_available() and torch.cuda.device_count() == len(states):
        torch.cuda.set_rng_state_all(states)


def restore(loop: TaskLoop, state: dict[str, Any]) -> int:
    """Put the loop back where the checkpoint was taken; returns the first stage to train."""
    module = loop.module
    try:
        module.net.load_state_dict(state["model"])
    except RuntimeError as error:
        raise ClrunError(f"the checkpoint does not fit this model ({str(error).splitlines()[0]});"
                         " resume with the same config, or start a new run directory") from None
    module.load_optimizer_state(state["optimizer"])
    if len(state["plugins"]) != len(loop.plugins):
        raise ClrunError("the checkpoint was written with a different list of strategy plugins; "
                         "resume with the same config")
    for plugin, plugin_state in zip(loop.plugins, state["plugins"], strict=True):
        plugin.load_state_dict(plugin_state)
    if loop.generative is not None and state.get("generative") is not None:
        loop.generative.load_state_dict(state["generative"])
    loop.matrix = [list(row) for row in state["matrix"]]
    loop.initial = list(state["initial"])
    torch.set_rng_state(state["rng"])
    restore_cuda_rng(state.get("cuda_rng"))
    loop.stages_done = int(state["stages_done"])
    return loop.stages_done
