"""Checks on config values that must fail before any training, with one line naming the key."""

from __future__ import annotations

from omegaconf import DictConfig

from clrun.errors import ConfigError
from clrun.loop import STREAMS
from clrun.scenarios.base import SETTINGS


def _positive_int(key: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(key, value, "must be a positive integer")


def validate(cfg: DictConfig) -> None:
    """Raise `ConfigError` for the first invalid value found."""
    if isinstance(cfg.seed, bool) or not isinstance(cfg.seed, int) or cfg.seed < 0:
        raise ConfigError("seed", cfg.seed, "must be a non-negative integer")
    if cfg.scenario.get("setting") not in SETTINGS:
        raise ConfigError("scenario.setting", cfg.scenario.get("setting"),
                          "use one of: " + ", ".join(SETTINGS))
    _positive_int("scenario.n_tasks", cfg.scenario.get("n_tasks"))
    if cfg.strategy.get("stream", "sequential") not in STREAMS:
        raise ConfigError("strategy.stream", cfg.strategy.stream,
                          "use one of: " + ", ".join(STREAMS))
    lr = cfg.optimizer.get("lr")
    if not isinstance(lr, (int, float)) or isinstance(lr, bool) or lr <= 0:
        raise ConfigError("optimizer.lr", lr, "must be a positive number")
    if cfg.train.get("active_units", "all") not in ("all", "seen"):
        raise ConfigError("train.active_units", cfg.train.active_units, "use one of: all, seen")
    _positive_int("train.batch_size", cfg.train.batch_size)
    _positive_int("train.eval_batch_size", cfg.train.eval_batch_size)
    epochs, steps = cfg.trainer.get("max_epochs"), cfg.trainer.get("max_steps", -1)
    if epochs == -1 and isinstance(steps, int) and steps > 0:
        return
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ConfigError("trainer.max_epochs", epochs,
                          "must be a positive integer (epochs per task), or -1 with "
                          "trainer.max_steps > 0 for a step budget per task")
