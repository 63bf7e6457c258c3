"""Loggers and pictures: W&B offline without a key, one W&B run per sweep job, plots."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import run_cli

NO_KEY = {"WANDB_API_KEY": None, "WANDB_MODE": None}


def offline_runs(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "wandb").glob("offline-run-*"))


@pytest.mark.slow
def test_wandb_logs_offline_without_a_key(tmp_path):
    """Slow (~12 s): the real clrun in a subprocess, importing torch."""
    env = {**NO_KEY, "HOME": str(tmp_path)}  # no ~/.netrc either
    out = run_cli("hydra.run.dir=run", "logger=[csv,wandb]", "trainer.max_epochs=1",
                  cwd=tmp_path, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "no W&B API key found; logging offline" in out.stderr
    runs = offline_runs(tmp_path / "run")
    assert len(runs) == 1 and any(runs[0].glob("*.wandb"))
    assert (tmp_path / "run" / "logs" / "metrics.csv").read_text().count("eval/acc_task_0") == 1


@pytest.mark.slow
def test_sequential_multirun_logs_separate_wandb_runs(tmp_path):
    """Slow (~18 s): the real clrun in a subprocess, importing torch."""
    env = {**NO_KEY, "HOME": str(tmp_path)}
    out = run_cli("-m", "hydra.sweep.dir=sweep", "logger=wandb", "trainer.max_epochs=1",
                  "seed=1,2", cwd=tmp_path, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    first, second = (offline_runs(tmp_path / "sweep" / job) for job in ("0", "1"))
    assert len(first) == 1 and len(second) == 1
    assert first[0].name.rsplit("-", 1)[1] != second[0].name.rsplit("-", 1)[1]  # run ids


@pytest.mark.slow
def test_plots_and_tensorboard_are_written(tmp_path):
    """Slow (~10 s): the real clrun in a subprocess, importing torch."""
    out = run_cli("hydra.run.dir=run", "logger=tensorboard", "trainer.max_epochs=1",
                  cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    for name in ("accuracy_matrix.png", "accuracy_curves.png"):
        data = (tmp_path / "run" / name).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 5000
    assert list((tmp_path / "run" / "tensorboard").rglob("events.out.tfevents.*"))


def test_plots_are_titled_and_curves_start_where_a_task_is_learned():
    from clrun.plots import curves_figure, heatmap_figure

    matrix = [[90.0, 0.0, 0.0], [40.0, 95.0, 0.0], [30.0, 50.0, 97.0]]
    title = "scenario=s strategy=ewc seed=1  ACC 59.00"
    curves = curves_figure(matrix, title)
    axes = curves.axes[0]
    assert axes.get_title() == title
    assert [list(line.get_xdata()) for line in axes.get_lines()] == [[0, 1, 2], [1, 2], [2]]
    legend = axes.get_legend()
    assert legend.get_bbox_to_anchor().x0 > axes.bbox.x1 - 1  # beside the axes, not on the data
    assert heatmap_figure(matrix, title).axes[0].get_title() == title


def test_sample_grids_reach_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from clrun.run import run
    from tests.conftest import compose_cfg

    cfg = compose_cfg("strategy=dgr", "generator=vae", "scenario.n_tasks=2", "logger=tensorboard",
                      "trainer.max_epochs=1", "model.hidden_sizes=[16]",
                      "generator.hidden_sizes=[16]", "metrics.prd.runs=1")
    run(cfg, tmp_path)
    events = EventAccumulator(str(tmp_path / "tensorboard")).Reload()
    assert {"samples/task_0", "samples/task_1"} <= set(events.Tags()["images"])
    assert "generative/fid_task_0" in events.Tags()["scalars"]
