"""The one place that turns config nodes into objects, with an allow-list of targets.

A config file is data, not code. A `_target_` may name only what clrun's configs build:
network modules, optimizers, learning-rate schedulers, Lightning loggers and strategies (all
checked by type, from clrun, torch, torchvision or Lightning), clrun's strategy plugins, and the
clrun factories marked with `@config_target`. Anything else — `torch.hub.load`, `os.system`, a
clrun helper that writes files — is refused in one line before it is imported or called, so a
downloaded experiment file cannot run code the user did not choose. Your own packages are
allowed by the environment (not by a config file): CLRUN_ALLOWED_TARGETS=mylab,other.pkg
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from typing import Any, TypeVar

import hydra.utils
from hydra._internal.utils import _locate  # get_object without its error log
from hydra.errors import InstantiationException
from omegaconf import DictConfig, ListConfig, OmegaConf

from clrun.errors import ClrunError, ConfigError

SAFE_PACKAGES = ("clrun", "torch", "torchvision", "pytorch_lightning", "lightning")
WHAT_IS_ALLOWED = ("config files may build only network modules, optimizers, LR schedulers, "
                   "Lightning loggers and strategies, and clrun's own components (allow your "
                   "own package with CLRUN_ALLOWED_TARGETS=yourpackage)")

F = TypeVar("F", bound=Callable[..., Any])


def config_target(function: F) -> F:
    """Mark a clrun factory function (scenario, model, logger) as buildable from a config."""
    function.__clrun_config_target__ = True  # type: ignore[attr-defined]
    return function


def user_packages() -> tuple[str, ...]:
    """The packages named in CLRUN_ALLOWED_TARGETS (comma-separated)."""
    extra = os.environ.get("CLRUN_ALLOWED_TARGETS", "")
    return tuple(p.strip().rstrip(".") for p in extra.split(",") if p.strip())


def _in_package(target: str, packages: tuple[str, ...]) -> bool:
    return any(target == p or target.startswith(f"{p}.") for p in packages)


def _allowed_bases() -> tuple[type, ...]:
    import pytorch_lightning as pl
    import torch

    from clrun.plugin import StrategyPlugin

    return (torch.nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler,
            pl.loggers.Logger, pl.strategies.Strategy, StrategyPlugin)


def refusal(target: str) -> str | None:
    """Why a config may not build `target`, or None when it may (see the module docstring)."""
    if _in_package(target, user_packages()):
        return None
    if not _in_package(target, SAFE_PACKAGES):
        return WHAT_IS_ALLOWED  # never import a module a config file names
    try:
        obj = _locate(target)
    except Exception as error:  # noqa: BLE001 - any import failure is the same user error
        detail = " ".join(line.strip() for line in str(error).splitlines()[1:2]) or str(error)
        return f"cannot be imported ({detail})"
    if inspect.isclass(obj):
        return None if issubclass(obj, _allowed_bases()) else WHAT_IS_ALLOWED
    marked = (getattr(obj, "__clrun_config_target__", False)
              and getattr(obj, "__module__", "").startswith("clrun."))
    return None if marked else WHAT_IS_ALLOWED


def check_targets(node: Any, path: str) -> None:
    """Raise `ConfigError` for the first `_target_` under `node` a config may not build."""
    if isinstance(node, DictConfig):
        target = node.get("_target_")
        reason = None if target is None else refusal(str(target))
        if reason is not None:
            raise ConfigError(f"{path}._target_" if path else "_target_", target, reason)
        for key in node.keys():
            check_targets(node._get_node(key), f"{path}.{key}" if path else str(key))
    elif isinstance(node, ListConfig):
        for i, item in enumerate(node):
            check_targets(item, f"{path}[{i}]")


def build(node: DictConfig, path: str, **kwargs: Any) -> Any:
    """Instantiate `node` (found at config key `path`) after checking every `_target_`."""
    if not isinstance(node, DictConfig) or "_target_" not in node:
        raise ConfigError(path, OmegaConf.to_container(node) if node is not None else None,
                          "expected a config node with a _target_")
    check_targets(node, path)
    try:
        return hydra.utils.instantiate(node, **kwargs)
    except InstantiationException as error:
        cause = error.__cause__
        if isinstance(cause, ClrunError):
            raise cause from None
        if isinstance(cause, ImportError) or str(error).startswith("Error locating target"):
            raise ConfigError(f"{path}._target_", node._target_,
                              f"cannot be imported ({cause or error})") from None
        if isinstance(cause, (TypeError, ValueError)):
            # e.g. a misspelled parameter: "got an unexpected keyword argument 'lamda'"
            raise ClrunError(f"{path} ({node._target_}): {cause}") from None
        raise
