"""Checks on config values that must fail before any training, with one line naming the key."""

from __future__ import annotations

import difflib
import inspect

import torch
from omegaconf import DictConfig

from clrun.errors import ConfigError, check_positive_int
from clrun.loop import STREAMS
from clrun.scenarios.base import SETTINGS


def _positive_number(key: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ConfigError(key, value, "must be a positive number")


def _boolean(key: str, value: object) -> None:
    if not isinstance(value, bool):
        raise ConfigError(key, value, "use one of: true, false")


def check_metrics(metrics: DictConfig) -> None:
    """The generative metrics' settings, read only after a task has trained: a bad one would
    otherwise fail (or hang in k-means) after the training it was meant to score."""
    if metrics.get("generative") not in ("auto", True, False):
        raise ConfigError("metrics.generative", metrics.get("generative"),
                          "use one of: auto, true, false")
    _boolean("metrics.sample_grids", metrics.get("sample_grids"))
    check_positive_int("metrics.max_pools", metrics.get("max_pools"))
    prd = metrics.prd
    check_positive_int("metrics.prd.clusters", prd.get("clusters"), least=2)
    samples = metrics.get("samples_per_task")
    if samples is not None:
        check_positive_int("metrics.samples_per_task", samples)
        if samples < prd.clusters:
            raise ConfigError("metrics.samples_per_task", samples,
                              f"precision and recall need at least metrics.prd.clusters="
                              f"{prd.clusters} images per task to mean anything: score at "
                              f"least as many, or lower metrics.prd.clusters")
    check_positive_int("metrics.prd.angles", prd.get("angles"), least=3)
    check_positive_int("metrics.prd.runs", prd.get("runs"))
    net = metrics.feature_net
    check_positive_int("metrics.feature_net.steps", net.get("steps"))
    check_positive_int("metrics.feature_net.batch_size", net.get("batch_size"))
    _positive_number("metrics.feature_net.lr", net.get("lr"))
    check_positive_int("metrics.feature_net.seed", net.get("seed"), least=0)


def check_trainer(trainer: DictConfig) -> None:
    """Every `trainer.*` key is a Lightning Trainer argument (a `+trainer.max_epoch` typo
    would end in a TypeError), and a GPU accelerator needs a GPU torch can see."""
    import pytorch_lightning as pl

    known = [p for p in inspect.signature(pl.Trainer.__init__).parameters if p != "self"]
    for key in trainer:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"; did you mean trainer.{close[0]}?" if close else ""
            raise ConfigError(f"trainer.{key}", trainer[key],
                              f"not an argument of Lightning's Trainer{hint}")
    for key, neutral in (("gradient_clip_val", None), ("accumulate_grad_batches", 1)):
        if trainer.get(key, neutral) not in (neutral, 0):
            raise ConfigError(f"trainer.{key}", trainer[key],
                              "the classifier takes train.steps_per_batch optimizer steps per "
                              "Lightning batch (manual optimization), which Lightning's "
                              f"{key} does not support; drop it (or clip in a plugin's "
                              "on_before_optimizer_step)")
    if str(trainer.get("accelerator")) in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError("trainer.accelerator", trainer.accelerator,
                          "torch sees no CUDA GPU on this machine; use trainer=cpu (or "
                          "trainer=ddp_cpu for DDP on the CPU)")


def validate(cfg: DictConfig) -> None:
    """Raise `ConfigError` for the first invalid value found."""
    if isinstance(cfg.seed, bool) or not isinstance(cfg.seed, int) or cfg.seed < 0:
        raise ConfigError("seed", cfg.seed, "must be a non-negative integer")
    if cfg.scenario.get("setting") not in SETTINGS:
        raise ConfigError("scenario.setting", cfg.scenario.get("setting"),
                          "use one of: " + ", ".join(SETTINGS))
    check_positive_int("scenario.n_tasks", cfg.scenario.get("n_tasks"))
    if cfg.strategy.get("stream", "sequential") not in STREAMS:
        raise ConfigError("strategy.stream", cfg.strategy.stream,
                          "use one of: " + ", ".join(STREAMS))
    check_trainer(cfg.trainer)
    check_positive_int("train.steps_per_batch", cfg.train.get("steps_per_batch"))
    counted = {"limit_train_batches": (None, 1.0), "overfit_batches": (0, 0.0),
               "fast_dev_run": (False,)}
    for key, neutral in counted.items():
        value = cfg.trainer.get(key, neutral[0])
        if cfg.train.steps_per_batch > 1 and value not in neutral:
            raise ConfigError(f"trainer.{key}", value,
                              "Lightning counts batches, and each is train.steps_per_batch "
                              "optimizer steps here: use trainer.max_steps for a step budget, "
                              "or add train.steps_per_batch=1")
    _positive_number("optimizer.lr", cfg.optimizer.get("lr"))
    _positive_number("train.lr_gamma", cfg.train.get("lr_gamma"))
    for key in ("drop_last", "reset_optimizer"):
        _boolean(f"train.{key}", cfg.train.get(key))
    _boolean("checkpoint", cfg.get("checkpoint"))
    _boolean("check_devices", cfg.get("check_devices"))
    check_positive_int("memory_size", cfg.get("memory_size"), least=0)
    if cfg.get("torch_threads") is not None:
        check_positive_int("torch_threads", cfg.torch_threads)
    check_metrics(cfg.metrics)
    milestones = cfg.train.get("lr_milestones")
    if milestones is not None and (
            not all(isinstance(m, int) and not isinstance(m, bool) and m > 0 for m in milestones)
            or list(milestones) != sorted(set(milestones))):
        raise ConfigError("train.lr_milestones", list(milestones),
                          "must be increasing positive epochs, e.g. [50, 90], or null")
    if cfg.train.get("active_units", "all") not in ("all", "seen"):
        raise ConfigError("train.active_units", cfg.train.active_units, "use one of: all, seen")
    if cfg.get("resume") not in (True, False, "auto"):
        raise ConfigError("resume", cfg.get("resume"), "use one of: false, true, auto")
    check_positive_int("train.batch_size", cfg.train.batch_size)
    check_positive_int("train.eval_batch_size", cfg.train.eval_batch_size)
    epochs, steps = cfg.trainer.get("max_epochs"), cfg.trainer.get("max_steps", -1)
    if epochs == -1 and isinstance(steps, int) and steps > 0:
        return
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ConfigError("trainer.max_epochs", epochs,
                          "must be a positive integer (epochs per task), or -1 with "
                          "trainer.max_steps > 0 for a step budget per task")
