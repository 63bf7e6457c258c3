"""DDP on the CPU (two gloo processes): stateful plugins stay identical across ranks."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from clrun.loop import check_ranks_agree
from tests.conftest import STRATEGY_OVERRIDES, read_metrics, run_cli


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ewc", "er", "[si,lwf]", "dgr", "binplay", "guide"])
def test_ddp_cpu_two_task_run_agrees_on_both_ranks(tmp_path, strategy):
    """Slow (~20 s): two DDP processes (gloo), each importing torch and training."""
    # dgr, binplay: each rank's generator, trained under DDP, is compared after every task too
    # (binplay: and each rank gives the images the same codes, or the classifiers would differ)
    extra = {"dgr": ["generator=vae", "metrics.generative=false"],
             "binplay": [*STRATEGY_OVERRIDES["binplay"], "metrics.generative=false"],
             "guide": [*STRATEGY_OVERRIDES["guide"], "metrics.generative=false"],
             }.get(strategy, [])
    out = run_cli("hydra.run.dir=run", "trainer=ddp_cpu", f"strategy={strategy}", *extra,
                  "scenario.n_tasks=2", "trainer.max_epochs=2", "logger=none", cwd=tmp_path)
    # every task's accuracy row is all-gathered and compared; a mismatch fails the run
    assert out.returncode == 0, out.stderr[-3000:]
    metrics = read_metrics(tmp_path / "run")
    assert metrics["config"]["devices"] == 2 and len(metrics["accuracy_matrix"]) == 2
    assert out.stdout.count("Accuracy matrix") == 1  # printed by rank 0 only


def test_rank_disagreement_is_detected():
    rows = torch.tensor([[90.0, 10.0], [90.0, 12.0]])
    trainer = SimpleNamespace(strategy=SimpleNamespace(all_gather=lambda t: rows,
                                                       root_device=torch.device("cpu")))
    with pytest.raises(RuntimeError, match="ranks disagree"):
        check_ranks_agree(trainer, [90.0, 10.0])


@pytest.mark.slow
def test_multirun_with_ddp_is_refused_in_one_line(tmp_path):
    """Slow (~14 s): the real clrun in a subprocess, importing torch."""
    out = run_cli("-m", "trainer=ddp_cpu", "seed=1,2", cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.startswith("clrun: error: DDP re-launches the command line")


@pytest.mark.slow
@pytest.mark.parametrize("extra", [
    ["generator=vae", "strategy=[si,generative_replay]", "trainer.max_epochs=2"],
    ["generator=multiband_vae", "strategy=multiband", "generator.width=4",
     "generator.local_epochs=1", "generator.global_epochs=2", "generator.warmup_epochs=1"],
    # every task after the first fits column 0: a stage that trains nothing, under DDP
    ["generator=progressive_vae", "strategy=pnn_abc", "generator.hidden_sizes=[32]",
     "trainer.max_epochs=2", "strategy.plugins.pnn_abc.fit_tolerance=100"],
], ids=["vae_si_replay", "multiband", "pnn_abc"])
def test_ddp_cpu_generator_as_the_learner_agrees_on_both_ranks(tmp_path, extra):
    """Slow (~22 s): two DDP processes (gloo), each importing torch and training."""
    # the generator's weights are all-gathered and compared after every task
    out = run_cli("hydra.run.dir=run", "trainer=ddp_cpu", "objective=generative", *extra,
                  "scenario.n_tasks=2", "metrics.prd.runs=1", "logger=none", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    metrics = read_metrics(tmp_path / "run")
    assert metrics["config"]["devices"] == 2 and len(metrics["generative"]["fid"]) == 2
    assert out.stdout.count("Generator FID per task") == 1
