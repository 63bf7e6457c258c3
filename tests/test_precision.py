"""Every strategy under bf16 autocast (on the CPU here; scripts/gpu_check.sh repeats it on CUDA)."""

from __future__ import annotations

import pytest

from clrun.run import run
from tests.conftest import FAST, STRATEGY_OVERRIDES, compose_cfg

STRATEGIES = ["naive", "l2", "ewc", "oewc", "si", "mas", "lwf", "replay", "latent_replay", "er",
              "mir", "gdumb", "icarl", "gem", "agem", "interval", "dgr", "dgr_distill", "rtf",
              "bir", "binplay", "guide", "feature_replay"]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_bf16_mixed_two_task_run(tmp_path, strategy):
    cfg = compose_cfg(f"strategy={strategy}", "trainer.precision=bf16-mixed", "scenario.n_tasks=2",
                      "model.hidden_sizes=[32]", *FAST, *STRATEGY_OVERRIDES.get(strategy, []))
    result = run(cfg, tmp_path)
    assert len(result.matrix) == 2 and result.metrics.acc > 0

