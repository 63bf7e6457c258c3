"""Shared helpers: compose the real config tree and run clrun in-process or as the real CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from clrun.paths import config_dir

FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
# Small, fast settings for end-to-end tests on the digits scenario.
FAST = ("trainer.max_epochs=2", "logger=none")
# A diffusion model of two UNet levels on 8×8 digits, few noise levels and DDIM steps.
TINY_DIFFUSION = ("generator=diffusion", "generator.block_channels=[8,16]",
                  "generator.train_steps=100", "generator.sample_steps=3",
                  "generator.ema_decay=0.9", "metrics.prd.runs=1", "metrics.samples_per_task=40")
# What some strategies need on top of FAST to run on the default (digits) scenario.
STRATEGY_OVERRIDES = {
    "guide": [*TINY_DIFFUSION, "strategy.plugins.guide.regenerate_every=8",
              "strategy.plugins.guide.probe_samples=16"],
    "feature_replay": ["generator=vae", "generator.hidden_sizes=[32]"],
    "latent_replay": ["strategy.plugins.latent_replay.latent_layer=2"],
    "interval": ["model=interval_mlp", "trainer.max_epochs=3",
                 "strategy.plugins.interval.contraction_epochs=1"],
    "dgr": ["generator=gan", "metrics.prd.runs=1"],
    "dgr_distill": ["generator=vae", "generator.conditional=true", "metrics.prd.runs=1"],
    "rtf": ["generator=vae", "metrics.prd.runs=1"],
    "bir": ["generator=vae", "metrics.prd.runs=1"],
    "binplay": ["generator=binary_ae", "generator.architecture=fc", "generator.hidden_sizes=[64]",
                "generator.latent_size=32", "generator.pretrain_epochs=2",
                "generator.code_warmup_epochs=1", "generator.decoder_epochs=2",
                "metrics.prd.runs=1"],
}


def compose_cfg(*overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose("config", overrides=list(overrides))


# Two pytest workers share the cores (pyproject's addopts): one thread each, for the tests and
# for every clrun they start, so no core is oversubscribed. Results do not depend on it.
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
os.environ.update(ONE_THREAD)
torch.set_num_threads(1)


def run_cli(*args: str, cwd: Path, env: dict[str, str | None] | None = None,
            timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `clrun` in a subprocess; `env` values of None remove a variable."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "WANDB_MODE": "disabled", **(env or {})}
    full_env = {k: v for k, v in full_env.items() if v is not None}
    full_env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run([sys.executable, "-m", "clrun.cli", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def run_clis(*commands: tuple[str, ...], cwd: Path) -> list[subprocess.CompletedProcess]:
    """Run independent `clrun` commands side by side (they mostly wait on one core each)."""
    with ThreadPoolExecutor(max_workers=len(commands)) as pool:
        return list(pool.map(lambda args: run_cli(*args, cwd=cwd), commands))


def read_metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.fixture
def fmnist_available() -> None:
    if not (FMNIST_DIR / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("Debian's dataset-fashion-mnist is not installed (.ci/run installs it)")


def interrupt_then_resume(args: tuple[str, ...], run_dir: Path, task: int = 3):
    """Run in-process with a Ctrl-C as task `task` starts, then again with resume=true in
    the same directory; returns the resumed run's result."""
    from clrun.errors import Interrupted
    from clrun.loop import TaskLoop
    from clrun.run import run

    original = TaskLoop.fit

    def stop_at_task(loop, split, number):  # noqa: ANN001
        if number == task:
            raise KeyboardInterrupt
        return original(loop, split, number)

    TaskLoop.fit = stop_at_task
    try:
        with pytest.raises(Interrupted):
            run(compose_cfg(*args), run_dir)
    finally:
        TaskLoop.fit = original
    return run(compose_cfg(*args, "resume=true"), run_dir)
