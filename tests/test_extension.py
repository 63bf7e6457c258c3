"""A method written outside clrun plugs in through the config, once its package is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import read_metrics, run_cli

REPO = Path(__file__).resolve().parents[1]
PLUGIN = "+strategy.plugins.shrink._target_=tests.example_plugin.shrink.ShrinkHeads"


@pytest.mark.slow
def test_own_plugin_needs_its_package_allowed(tmp_path):
    """Slow (~16 s): the real clrun in 2 subprocesses, each importing torch."""
    refused = run_cli("hydra.run.dir=run", PLUGIN, "logger=none", cwd=tmp_path,
                      env={"PYTHONPATH": str(REPO)})
    assert refused.returncode == 2 and "CLRUN_ALLOWED_TARGETS" in refused.stderr
    allowed = run_cli("hydra.run.dir=run", PLUGIN, "+strategy.plugins.shrink.strength=0.1",
                      "trainer.max_epochs=1", "logger=none", cwd=tmp_path,
                      env={"PYTHONPATH": str(REPO),
                           "CLRUN_ALLOWED_TARGETS": "tests.example_plugin"})
    assert allowed.returncode == 0, allowed.stderr[-2000:]
    assert read_metrics(tmp_path / "run")["config"]["plugins"] == ["shrink"]
