"""The one place that turns config nodes into objects, with an allow-list of targets.

A config file is data, not code: only classes from clrun, torch, torchvision and Lightning can
be built, so a downloaded experiment file cannot run arbitrary Python. Your own packages are
allowed by the environment (not by a config file): CLRUN_ALLOWED_TARGETS=mylab,other.pkg
"""

import os
from typing import Any

import hydra.utils
from hydra.errors import InstantiationException
from omegaconf import DictConfig, ListConfig, OmegaConf

from clrun.errors import ClrunError, ConfigError

ALLOWED_PREFIXES = ("clrun.", "torch.", "torchvision.", "pytorch_lightning.", "lightning.")


def allowed_prefixes() -> tuple[str, ...]:
    """clrun's allow-list plus the packages named in CLRUN_ALLOWED_TARGETS."""
    extra = os.environ.get("CLRUN_ALLOWED_TARGETS", "")
    return ALLOWED_PREFIXES + tuple(f"{p.strip().rstrip('.')}." for p in extra.split(",")
                                    if p.strip())


def _check_targets(node: Any, path: str, allowed: tuple[str, ...]) -> None:
    if isinstance(node, DictConfig):
        target = node.get("_target_")
        if target is not None and not str(target).startswith(allowed):
            raise ConfigError(
                f"{path}._target_" if path else "_target_",
                target,
                "only classes under " + ", ".join(p.rstrip(".") for p in allowed)
                + " may be instantiated (allow your own package with "
                "CLRUN_ALLOWED_TARGETS=yourpackage)",
            )
        for key in node.keys():
            _check_targets(node._get_node(key), f"{path}.{key}" if path else str(key), allowed)
    elif isinstance(node, ListConfig):
        for i, item in enumerate(node):
            _check_targets(item, f"{path}[{i}]", allowed)


def build(node: DictConfig, path: str, **kwargs: Any) -> Any:
    """Instantiate `node` (found at config key `path`) after checking every `_target_`."""
    if not isinstance(node, DictConfig) or "_target_" not in node:
        raise ConfigError(path, OmegaConf.to_container(node) if node is not None else None,
                          "expected a config node with a _target_")
    _check_targets(node, path, allowed_prefixes())
    try:
        return hydra.utils.instantiate(node, **kwargs)
    except InstantiationException as error:
        cause = error.__cause__
        if isinstance(cause, ClrunError):
            raise cause from None
        if isinstance(cause, (TypeError, ValueError)):
            # e.g. a misspelled parameter: "got an unexpected keyword argument 'lamda'"
            raise ClrunError(f"{path} ({node._target_}): {cause}") from None
        raise
