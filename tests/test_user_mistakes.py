"""Mistakes found by trying what a user would type: each is one line naming what is wrong
(by the option's name), exit 2, before anything is trained or overwritten."""

from __future__ import annotations

import pytest

from tests.conftest import compose_cfg, run_cli
from tests.test_cli import one_line_error

TINY_DGR = ("strategy=dgr", "generator=vae", "scenario.n_tasks=2", "trainer.max_epochs=1",
            "metrics.generative=false", "logger=none")


def test_the_generators_optimizer_follows_the_classifiers_unless_set():
    cfg = compose_cfg("strategy=dgr", "generator=vae", "optimizer=sgd", "optimizer.lr=0.1",
                      "optimizer.momentum=0.9")
    assert cfg.generator.optimizer._target_ == "torch.optim.SGD"
    assert cfg.generator.optimizer.lr == 0.1 and cfg.generator.optimizer.momentum == 0.9
    own = compose_cfg("strategy=dgr", "generator=vae", "generator.optimizer.lr=0.0005")
    assert own.generator.optimizer.lr == 0.0005 and own.optimizer.lr == 0.001
    assert list(own.generator.optimizer.betas) == list(own.optimizer.betas)
    experiment = compose_cfg("experiment=binplay_mnist")  # its optimizer.lr reaches the AE
    assert experiment.generator.optimizer.lr == experiment.optimizer.lr == 0.002


@pytest.mark.slow
def test_resuming_with_another_strategy_is_one_line_and_keeps_the_checkpoint(tmp_path):
    """Slow (~33 s): the real clrun in 3 subprocesses, each importing torch."""
    first = run_cli("hydra.run.dir=run", *TINY_DGR, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    checkpoint = tmp_path / "run" / "checkpoints" / "checkpoint.pt"
    before = checkpoint.read_bytes()
    refused = run_cli("hydra.run.dir=run", "strategy=ewc", "resume=true", "logger=none",
                      "scenario.n_tasks=2", cwd=tmp_path)
    line = one_line_error(refused)
    assert "written by strategy=dgr generator=vae, this run has strategy=ewc generator=none" in line
    assert checkpoint.read_bytes() == before
    other_model = run_cli("hydra.run.dir=run", *TINY_DGR, "model=convnet", "resume=true",
                          cwd=tmp_path)
    assert "model=mlp, this run has model=convnet" in one_line_error(other_model)
    assert checkpoint.read_bytes() == before


@pytest.mark.slow
def test_a_generator_a_strategy_refuses_is_named_by_its_option(tmp_path):
    """Slow (~19 s): the real clrun in 2 subprocesses, each importing torch."""
    out = run_cli("hydra.run.dir=run", "strategy=binplay", "generator=vae", "logger=none",
                  cwd=tmp_path)
    assert one_line_error(out).startswith("clrun: error: generator=vae is invalid: "
                                          "strategy=binplay decodes")
    setting = run_cli("hydra.run.dir=run", "strategy=pnn", "scenario.setting=class",
                      "logger=none", cwd=tmp_path)
    assert "strategy=pnn supports only task" in one_line_error(setting)


def test_a_plugin_on_lightnings_batch_hook_is_refused_naming_after_step(tmp_path):
    """The module takes several steps per Lightning batch: per-batch hooks would see chunks."""
    import pytest

    from clrun.errors import ConfigError
    from clrun.module import ContinualModule
    from clrun.plugin import StrategyPlugin
    from clrun.run import run
    from tests.conftest import compose_cfg

    class OldStyle(StrategyPlugin):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):  # noqa: ANN001
            pass

    cfg = compose_cfg("logger=none")
    with pytest.raises(ConfigError, match="move per-step work to after_step"):
        ContinualModule(__import__("torch").nn.Linear(2, 2), None, [OldStyle()], "class")
    with pytest.raises(ConfigError, match="trainer.limit_train_batches"):
        run(compose_cfg("logger=none", "+trainer.limit_train_batches=5"), tmp_path)
    assert cfg.train.steps_per_batch == 32
