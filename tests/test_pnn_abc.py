"""Progressive generators with autonomous branch construction (`strategy=pnn_abc`)."""

from __future__ import annotations

import re
from functools import partial

import pytest
import torch

from clrun.errors import ClrunError
from clrun.generators.progressive import ProgressiveVAE
from clrun.loop import LoopSettings, TaskLoop
from clrun.plugin import StrategyPlugin
from clrun.run import run
from clrun.scenarios.digits import split_digits
from clrun.strategies.pnn_abc import AutonomousBranches
from tests.conftest import FAST, compose_cfg, interrupt_then_resume

ADAM = partial(torch.optim.Adam, lr=1e-3)


class FirstColumnSnapshots(StrategyPlugin):
    """Column 0's weights at the end of every task."""

    objectives = ("generative",)

    def __init__(self):
        super().__init__()
        self.states = []

    def on_task_end(self, loop, task):
        self.states.append({k: v.clone() for k, v in loop.module.columns[0].state_dict().items()})


def branch_loop(n_tasks=5, epochs=30, fit_tolerance=0.1):
    torch.manual_seed(0)
    scenario = split_digits(n_tasks=n_tasks)
    generator = ProgressiveVAE(scenario.input_shape, scenario.n_natural, hidden_sizes=(64,),
                               z_dim=8, optimizer=ADAM, max_epochs=epochs, batch_size=32)
    branches, snapshots = AutonomousBranches(fit_tolerance), FirstColumnSnapshots()
    branches.attach_generator(generator)
    settings = LoopSettings(batch_size=32, trainer_kwargs=dict(
        accelerator="cpu", devices=1, max_epochs=epochs, enable_progress_bar=False))
    return TaskLoop(scenario, generator, [branches, snapshots], settings), branches, snapshots


def test_new_distributions_open_columns_and_old_columns_stay_bitwise_unchanged():
    loop, branches, snapshots = branch_loop()
    loop.run()
    generator = loop.module
    assert branches.results() == {"pnn_abc_columns": [0, 1, 2, 3, 4],
                                  "pnn_abc_opened": [True] * 5}
    assert len(generator.columns) == 5 and generator.columns[0].encoder.laterals is None
    for state in snapshots.states[1:]:
        assert all(torch.equal(state[k], v) for k, v in snapshots.states[0].items())
    # the same distribution fits its column; another opens one
    first, third = loop.scenario.tasks[0], loop.scenario.tasks[2]
    assert branches.fitting_column(first.test.x.float() / 16) == 0
    assert branches.fitting_column(third.test.x.float() / 16) == 2
    assert branches.fitting_column(third.test.x.float() / 16 * 0.3) is None  # faded digits
    images = first.test.x.float() / 16
    assert generator.column_error(images, 0, with_kl=True) > generator.column_error(images, 0)
    samples = generator.sample_task(10, 1)
    assert samples.shape == (10, 1, 8, 8) and 0 <= samples.min() and samples.max() <= 1


def test_a_task_that_fits_a_column_trains_nothing_and_is_still_scored():
    loop, branches, snapshots = branch_loop(n_tasks=2, epochs=3, fit_tolerance=100.0)
    loop.run()
    assert branches.results()["pnn_abc_opened"] == [True, False]
    assert len(loop.module.columns) == 1 and loop.stages_done == 2
    assert all(torch.equal(snapshots.states[1][k], v) for k, v in snapshots.states[0].items())


def test_pnn_abc_interrupted_and_resumed_ends_with_the_same_metrics(tmp_path):
    args = ("objective=generative", "strategy=pnn_abc", "generator=progressive_vae",
            "generator.hidden_sizes=[32]", "generator.z_dim=8", "trainer.max_epochs=3",
            "metrics.prd.runs=1", "metrics.sample_grids=false", "logger=none", "seed=5")
    full = run(compose_cfg(*args), tmp_path / "full")
    assert len(full.generative["fid"]) == 5
    interrupt_then_resume(args, tmp_path / "cut")
    assert (tmp_path / "cut" / "metrics.json").read_text() == \
        (tmp_path / "full" / "metrics.json").read_text()


@pytest.mark.parametrize("args,needle", [
    (["strategy=pnn_abc", "generator=vae"], "strategy=pnn_abc grows generator=progressive_vae"),
    (["strategy=naive", "generator=progressive_vae"], "is trained by strategy=pnn_abc"),
    (["strategy=pnn_abc", "generator=progressive_vae",
      "strategy.plugins.pnn_abc.fit_tolerance=-1"], "fit_tolerance=-1 is invalid: must be >= 0"),
    (["strategy=pnn_abc", "generator=progressive_vae", "strategy.plugins.pnn_abc.score=fid"],
     "strategy.plugins.pnn_abc.score='fid' is invalid: use one of: reconstruction, elbo"),
])
def test_pnn_abc_mistakes_fail_before_training(tmp_path, args, needle):
    with pytest.raises(ClrunError, match=re.escape(needle)):
        run(compose_cfg("objective=generative", *args, *FAST), tmp_path)
