"""The diagnostic scripts read a finished run's directory (config and last checkpoint)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import STRATEGY_OVERRIDES, run_cli

SMALL = ("trainer.max_epochs=1", "model.hidden_sizes=[16]", "logger=none")


@pytest.mark.slow
@pytest.mark.parametrize("script,args,options,first_line", [
    ("supsup_mask_entropies.py", ("strategy=supsup", "scenario.setting=class"), (),
     "task 0: mean entropy per mask"),
    ("bir_prior_modes.py", ("strategy=bir", "generator=vae", "metrics.generative=false",
                            "generator.hidden_sizes=[16]", "generator.z_dim=4"), (),
     "classes per task:"),
    ("guide_scale_probe.py", ("strategy=guide", *STRATEGY_OVERRIDES["guide"],
                              "metrics.generative=false"),
     ("--samples", "32", "--scales", "0.5", "2", "8"), "earlier classes"),
])
def test_script_reads_a_finished_run(tmp_path, script, args, options, first_line):
    """Slow (~19 s): the real clrun in 2 subprocesses, each importing torch."""
    run_dir = tmp_path / "run"
    trained = run_cli(*args, *SMALL, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    out = subprocess.run([sys.executable, f"scripts/{script}", str(run_dir), *options],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[0].startswith(first_line) and len(lines) >= 5


@pytest.mark.slow
def test_replay_cost_prints_a_row_per_sampler():
    """Slow (~10 s): the script in a subprocess, importing torch and diffusers."""
    out = subprocess.run([sys.executable, "scripts/replay_cost.py", "--batch", "2",
                          "--sample-steps", "1", "2", "--regenerate-every", "1", "10",
                          "--steps", "20", "--repeats", "1"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    rows = out.stdout.strip().splitlines()
    assert len(rows) == 6 and rows[2].startswith("| DDIM-1 |") and "guided" in rows[-1]
