"""Checkpoint after every task; a run killed mid-task resumes to the same metrics.json."""

from __future__ import annotations

import csv
import os
import re
import shlex
import signal
import subprocess
import sys
import time

import pytest
import torch

from tests.conftest import STRATEGY_OVERRIDES, run_cli

ARGS = ("strategy=[ewc,lwf,er]", "trainer.max_epochs=30", "logger=none", "seed=3")
# a generator strategy: the generator, its optimizer and the generative scores are restored
GENERATIVE_ARGS = ("strategy=dgr", "generator=vae", "generator.hidden_sizes=[64]",
                   "train.reset_optimizer=false", "trainer.max_epochs=15", "metrics.prd.runs=1",
                   "logger=none", "seed=3")

# a diffusion model (weights, weight average, optimizer), GUIDE's probes and the time split
DIFFUSION_ARGS = ("strategy=guide", *STRATEGY_OVERRIDES["guide"], "model.hidden_sizes=[32]",
                  "train.reset_optimizer=false", "trainer.max_epochs=15",
                  "generator.max_epochs=4", "logger=none", "seed=3")

# the generator as the learner: its penalties' state and its replay of itself
LEARNER_ARGS = ("objective=generative", "generator=vae", "strategy=[si,generative_replay]",
                "generator.hidden_sizes=[64]", "train.reset_optimizer=false",
                "trainer.max_epochs=30", "metrics.prd.runs=1", "logger=none", "seed=3")

MULTIBAND_ARGS = ("objective=generative", "generator=multiband_vae", "strategy=multiband",
                  "generator.width=8", "generator.local_epochs=15", "generator.global_epochs=15",
                  "generator.warmup_epochs=3", "generator.cosine_threshold=0.5",
                  "metrics.prd.runs=1", "logger=none", "seed=3")


@pytest.mark.slow
@pytest.mark.parametrize("args", [ARGS, GENERATIVE_ARGS, DIFFUSION_ARGS, LEARNER_ARGS,
                                  MULTIBAND_ARGS],
                         ids=["ewc_lwf_er", "dgr", "guide_diffusion", "objective_generative",
                              "multiband"])
def test_sigkill_during_task_3_then_resume_gives_identical_metrics(tmp_path, args):
    """Slow (~40 s): trains twice in subprocesses, one killed during task 3 and resumed."""
    env = {**os.environ, "WANDB_MODE": "disabled"}

    def start(run_dir: str) -> subprocess.Popen:
        with open(tmp_path / f"{run_dir}.log", "w") as log:
            return subprocess.Popen([sys.executable, "-m", "clrun.cli",
                                     f"hydra.run.dir={run_dir}", *args], cwd=tmp_path, env=env,
                                    stdout=log, stderr=subprocess.STDOUT)

    full = start("full")  # the uninterrupted run, beside the one we kill
    process = start("killed")
    checkpoint = tmp_path / "killed" / "checkpoints" / "checkpoint.pt"
    wait_for_checkpoint(checkpoint, stages=2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert full.wait(timeout=900) == 0, (tmp_path / "full.log").read_text()[-3000:]
    state = torch.load(checkpoint, weights_only=True)
    assert state["stages_done"] == 2, "the kill should land during task 3"
    assert not (tmp_path / "killed" / "metrics.json").exists()

    resumed = run_cli("hydra.run.dir=killed", "resume=true", *args, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr
    assert (tmp_path / "killed" / "metrics.json").read_text() == \
        (tmp_path / "full" / "metrics.json").read_text()


@pytest.mark.slow
def test_resume_with_another_model_is_one_line(tmp_path):
    """Slow (~20 s): the real clrun in 2 subprocesses, each importing torch."""
    assert run_cli("hydra.run.dir=run", "trainer.max_epochs=1", "logger=none",
                   cwd=tmp_path).returncode == 0
    out = run_cli("hydra.run.dir=run", "trainer.max_epochs=1", "logger=none", "resume=true",
                  "model.hidden_sizes=[8]", cwd=tmp_path)
    assert out.returncode == 2 and "the checkpoint does not fit this model" in out.stderr
    assert "Traceback" not in out.stderr


def wait_for_checkpoint(path, stages: int, timeout: float = 600) -> None:  # noqa: ANN001
    deadline = time.time() + timeout
    while time.time() < deadline:
        if path.is_file() and torch.load(path, weights_only=True)["stages_done"] >= stages:
            return
        time.sleep(0.05)
    raise AssertionError(f"no checkpoint with {stages} stages at {path}")


@pytest.mark.slow
def test_ctrl_c_says_what_is_saved_and_the_printed_command_resumes_logs_and_wandb(tmp_path):
    """Slow (~24 s): a 40-epoch run in a subprocess interrupted, then resumed in another."""
    args = ["strategy=ewc", "trainer.max_epochs=40", "logger=[csv,wandb]", "seed=3"]
    env = {**os.environ, "WANDB_MODE": "offline", "HOME": str(tmp_path)}
    env.pop("WANDB_API_KEY", None)
    # a shell's Ctrl-C: the child must not inherit an ignored SIGINT from the test worker
    # (an ignored SIGINT survives exec; which earlier test leaves a worker so is not known)
    inherited = signal.getsignal(signal.SIGINT)
    process = subprocess.Popen([sys.executable, "-m", "clrun.cli", "hydra.run.dir=run", *args],
                               cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    wait_for_checkpoint(tmp_path / "run" / "checkpoints" / "checkpoint.pt", 1)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, f"worker's SIGINT handler: {inherited}\n{stderr}"
    message = next(line for line in stderr.splitlines() if "interrupted" in line)
    match = re.fullmatch(r"clrun: interrupted during task (\d); tasks 0\.\.(\d) are saved; "
                         r"resume with: (clrun .*)", message)
    assert match and int(match.group(2)) == int(match.group(1)) - 1, message
    command = shlex.split(match.group(3))
    assert command[-2:] == ["resume=true", f"hydra.run.dir={tmp_path / 'run'}"]
    assert command[1:-2] == args

    resumed = subprocess.run([sys.executable, "-m", "clrun.cli", *command[1:]], cwd=tmp_path,
                             env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    with open(tmp_path / "run" / "logs" / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    evaluated = [int(r["task"]) for r in rows if r.get("eval/acc_task_0")]
    assert evaluated == [0, 1, 2, 3, 4]  # rows of the tasks before the interrupt are kept once
    runs = sorted((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and len({r.name.rsplit("-", 1)[1] for r in runs}) == 1  # one W&B id


@pytest.mark.slow
def test_sigterm_between_tasks_and_inside_them_stops_like_ctrl_c(tmp_path):
    """Slow (~7 s): the real clrun in a subprocess, importing torch."""
    from clrun.signals import sigterm_as_interrupt

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt), sigterm_as_interrupt():
        os.kill(os.getpid(), signal.SIGTERM)  # what a `kill` between two fits meets
    assert signal.getsignal(signal.SIGTERM) is before

    process = subprocess.Popen([sys.executable, "-m", "clrun.cli", "hydra.run.dir=run",
                                "trainer.max_epochs=40", "logger=none"], cwd=tmp_path,
                               env={**os.environ, "WANDB_MODE": "disabled"},
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for_checkpoint(tmp_path / "run" / "checkpoints" / "checkpoint.pt", 1)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-2000:]
    assert re.search(r"clrun: interrupted during task \d; tasks 0\.\.\d are saved; resume with:",
                     stderr), stderr[-2000:]


@pytest.mark.slow
def test_resume_without_a_checkpoint_is_refused_unless_auto(tmp_path):
    """Slow (~19 s): the real clrun in 3 subprocesses, each importing torch."""
    refused = run_cli("hydra.run.dir=typo", "resume=true", "logger=none", cwd=tmp_path)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert refused.stderr.startswith("clrun: error: resume=true, but there is no checkpoint at")
    assert "use resume=auto" in refused.stderr
    assert not (tmp_path / "typo" / "metrics.json").exists()
    fresh = run_cli("hydra.run.dir=new", "resume=auto", "trainer.max_epochs=1", "logger=none",
                    cwd=tmp_path)
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    assert "no checkpoint at" in fresh.stderr and "starting from task 0 (resume=auto)" in \
        fresh.stderr
    bad = run_cli("hydra.run.dir=new", "resume=maybe", "logger=none", cwd=tmp_path)
    assert bad.returncode == 2 and "resume='maybe' is invalid" in bad.stderr
