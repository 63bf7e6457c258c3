"""Checkpoint after every task; a run killed mid-task resumes to the same metrics.json."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from tests.conftest import run_cli

ARGS = ("strategy=[ewc,lwf,er]", "trainer.max_epochs=40", "logger=none", "seed=3")


@pytest.mark.slow
def test_sigkill_during_task_3_then_resume_gives_identical_metrics(tmp_path):
    full = run_cli("hydra.run.dir=full", *ARGS, cwd=tmp_path)
    assert full.returncode == 0, full.stderr

    env = {**os.environ, "WANDB_MODE": "disabled"}
    process = subprocess.Popen([sys.executable, "-m", "clrun.cli", "hydra.run.dir=killed",
                                *ARGS], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    checkpoint = tmp_path / "killed" / "checkpoints" / "checkpoint.pt"
    deadline = time.time() + 300
    while time.time() < deadline:
        if checkpoint.is_file() and torch.load(checkpoint, weights_only=True)["stages_done"] >= 2:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    state = torch.load(checkpoint, weights_only=True)
    assert state["stages_done"] == 2, "the kill should land during task 3"
    assert not (tmp_path / "killed" / "metrics.json").exists()

    resumed = run_cli("hydra.run.dir=killed", "resume=true", *ARGS, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr
    assert (tmp_path / "killed" / "metrics.json").read_text() == \
        (tmp_path / "full" / "metrics.json").read_text()


def test_resume_with_another_model_is_one_line(tmp_path):
    assert run_cli("hydra.run.dir=run", "trainer.max_epochs=1", "logger=none",
                   cwd=tmp_path).returncode == 0
    out = run_cli("hydra.run.dir=run", "trainer.max_epochs=1", "logger=none", "resume=true",
                  "model.hidden_sizes=[8]", cwd=tmp_path)
    assert out.returncode == 2 and "the checkpoint does not fit this model" in out.stderr
    assert "Traceback" not in out.stderr
