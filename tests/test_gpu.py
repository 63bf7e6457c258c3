"""GPU checks, skipped without CUDA: `python -m pytest -m gpu tests/test_gpu.py` on a machine
with a GPU (scripts/gpu_check.sh covers the families in one short loan, a process per step)."""

from __future__ import annotations

import pytest
import torch

from clrun.run import run
from tests.conftest import FAST, STRATEGY_OVERRIDES, compose_cfg

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.mark.parametrize("strategy", ["ewc", "er", "lwf", "interval", "dgr", "rtf", "bir",
                                      "binplay", "pnn", "piggyback", "supsup", "hnet", "guide",
                                      "feature_replay"])
@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_two_task_run_on_the_gpu(tmp_path, strategy, precision):
    setting = "task" if strategy in ("pnn", "piggyback") else "class"
    cfg = compose_cfg("trainer=gpu", f"trainer.precision={precision}", f"strategy={strategy}",
                      f"scenario.setting={setting}", "scenario.n_tasks=2", *FAST,
                      *STRATEGY_OVERRIDES.get(strategy, []))
    result = run(cfg, tmp_path)
    assert len(result.matrix) == 2 and result.metrics.acc > 0


@pytest.mark.parametrize("extra", [
    ["strategy=generative_replay", "generator=vae"],
    ["strategy=multiband", "generator=multiband_vae", "generator.local_epochs=1",
     "generator.global_epochs=1", "generator.warmup_epochs=0"],
    ["strategy=pnn_abc", "generator=progressive_vae"],
    ["strategy=binplay", *STRATEGY_OVERRIDES["binplay"]],
], ids=["generative_replay", "multiband", "pnn_abc", "binplay"])
@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_a_generator_as_the_learner_on_the_gpu(tmp_path, extra, precision):
    cfg = compose_cfg("trainer=gpu", f"trainer.precision={precision}", "objective=generative",
                      "scenario.n_tasks=2", "metrics.prd.runs=1", *FAST, *extra)
    result = run(cfg, tmp_path)
    assert len(result.generative["fid"]) == 2 and result.generative["fid"][-1][0] is not None
