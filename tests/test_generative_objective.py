"""`objective=generative`: the generator is the learner, scored by FID/precision/recall."""

from __future__ import annotations

import re
from functools import partial

import pytest
import torch

from clrun.errors import ClrunError
from clrun.generative_metrics.feature_net import FeatureNetSettings, feature_net
from clrun.generative_metrics.scores import predicted_classes, samples_for_tasks
from clrun.generators.multiband import MultibandVAE, binary_code
from clrun.generators.population import GeneratorPopulation, holding_levels, trailing_ones
from clrun.generators.vae import VAE
from clrun.loop import LoopSettings, TaskLoop
from clrun.paths import default_data_dir
from clrun.plugin import StrategyPlugin
from clrun.reporting.cli import report
from clrun.run import run
from clrun.scenarios.digits import split_digits
from clrun.strategies.generative import GeneratorSelfReplay, LogCL, MultibandTraining
from clrun.strategies.importance import loss_fisher
from clrun.strategies.regularization import EWC
from tests.conftest import FAST, compose_cfg, interrupt_then_resume, read_metrics, run_cli
from tests.test_scenarios import write_mnist_like

ADAM = partial(torch.optim.Adam, lr=1e-3)
LEARNER = ("objective=generative", "generator=vae", "generator.hidden_sizes=[64]",
           "generator.z_dim=8", "metrics.prd.runs=1")


def generator_loop(plugins, epochs=3, n_tasks=5):
    torch.manual_seed(0)
    scenario = split_digits(n_tasks=n_tasks)
    generator = VAE(scenario.input_shape, scenario.n_natural, hidden_sizes=(32,), z_dim=4,
                    optimizer=ADAM, max_epochs=epochs, batch_size=32)
    settings = LoopSettings(batch_size=32, trainer_kwargs=dict(
        accelerator="cpu", devices=1, max_epochs=epochs, enable_progress_bar=False))
    return TaskLoop(scenario, generator, plugins, settings)


@pytest.mark.slow
def test_the_generator_is_the_learner_from_the_cli(tmp_path):
    """Slow (~12 s): the real clrun in a subprocess, importing torch."""
    out = run_cli(*LEARNER, "strategy=generative_replay", "hydra.run.dir=run", *FAST,
                  cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    metrics = read_metrics(tmp_path / "run")
    assert "acc" not in metrics and "accuracy_matrix" not in metrics
    assert metrics["config"]["objective"] == "generative"
    assert metrics["config"]["model"] == "VAE"
    fid = metrics["generative"]["fid"]
    # every seen task is scored after every task (even one the generator forgot), none later
    assert all((v is not None) == (j <= i) for i, row in enumerate(fid) for j, v in
               enumerate(row))
    assert metrics["fid"] == pytest.approx(sum(fid[-1]) / len(fid[-1]))
    assert metrics["fid_forgetting"] == pytest.approx(
        sum(fid[-1][j] - fid[j][j] for j in range(4)) / 4)
    assert "Generator FID per task" in out.stdout and "Accuracy matrix" not in out.stdout
    for name in ("fid", "precision", "recall"):
        lines = (tmp_path / "run" / f"{name}_matrix.csv").read_text().splitlines()
        assert len(lines) == 6 and lines[1].endswith(",,,,")  # after task 0: task 0 only
    assert not (tmp_path / "run" / "accuracy_matrix.csv").exists()
    assert (tmp_path / "run" / "samples" / "task_4.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize("args,needle", [
    (["objective=generative", "generator=vae", "strategy=icarl"],
     "trains a classifier, but objective=generative trains only the generator"),
    (["objective=generative", "generator=vae", "strategy=mas"],
     "trains a classifier, but objective=generative"),
    (["generator=vae", "strategy=generative_replay"], "add objective=generative"),
    (["objective=generative", "strategy=naive"], "objective=generative trains a generator"),
    (["objective=generative", "generator=gan", "strategy=ewc"],
     "penalties need a generator with a likelihood loss"),
    (["objective=generative", "generator=vae", "metrics.generative=false"],
     "measured by the generative metrics alone"),
    (["objective=both"], "objective='both' is invalid: use one of: classification, generative"),
])
def test_objective_mistakes_fail_before_training(tmp_path, args, needle):
    with pytest.raises(ClrunError, match=re.escape(needle)):
        run(compose_cfg(*args, *FAST), tmp_path)
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.slow
def test_a_classifier_strategy_under_the_generative_objective_is_one_line(tmp_path):
    """Slow (~6 s): the real clrun in a subprocess, importing torch."""
    out = run_cli("objective=generative", "generator=vae", "strategy=gem", "logger=none",
                  "hydra.run.dir=run", cwd=tmp_path)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1, out.stderr[-2000:]
    assert ("use naive, joint, l2, ewc, oewc, si, generative_replay, multiband, logcl, binplay "
            "or pnn_abc") in lines[0]


def test_ewc_fisher_of_a_generator_is_the_squared_gradient_of_its_own_loss():
    loop = generator_loop([], epochs=1, n_tasks=2)
    generator = loop.module
    data, pipeline = loop.generator_data(loop.scenario.tasks[0])
    torch.manual_seed(1)
    fisher = loss_fisher(generator, data, pipeline, batch_size=len(data), reduction="sum")
    torch.manual_seed(1)
    generator.zero_grad()
    generator.loss(pipeline(data.x, train=False), None).backward()
    assert set(fisher) == {n for n, _ in generator.named_parameters()}
    for name, p in generator.named_parameters():
        torch.testing.assert_close(fisher[name], p.grad.pow(2))


def test_ewc_holds_the_generators_weights_where_its_fisher_is_large():
    def fisher_weighted_move_in_task_2(plugins):
        loop = generator_loop(plugins, n_tasks=2)
        snapshot = _Snapshot()
        loop.plugins.append(snapshot)
        loop.run()
        return sum((snapshot.fisher[n] * (p.detach() - snapshot.weights[n]).pow(2)).sum()
                   for n, p in loop.module.named_parameters())

    naive = fisher_weighted_move_in_task_2([])
    held = fisher_weighted_move_in_task_2([EWC(lambda_=1e4, batch_size=1000)])
    assert held < 0.1 * naive


class _Snapshot(StrategyPlugin):
    """The weights after the first task and their Fisher (of the generator's own loss)."""

    objectives = ("generative",)

    def on_task_start(self, loop, task):
        if task.index == 1:
            self.weights = {n: p.detach().clone() for n, p in loop.module.named_parameters()}
            data, pipeline = loop.generator_data(loop.scenario.tasks[0])
            self.fisher = loss_fisher(loop.module, data, pipeline, 1000, "sum")


def test_generative_replay_replays_the_generator_it_was_after_the_previous_task():
    plugin = GeneratorSelfReplay()
    loop = generator_loop([plugin], epochs=1, n_tasks=5)
    seen = []
    original_fit = loop.fit

    def record(split, number):
        replay = loop.module.replay
        seen.append(None if replay is None else (
            replay.weight_current, replay.previous,
            {n: p.detach().clone() for n, p in loop.module.named_parameters()},
            replay.conditions.tolist()))
        original_fit(split, number)

    loop.fit = record
    loop.run()
    assert seen[0] is None
    for t, (weight, previous, current, conditions) in enumerate(seen[1:], start=2):
        assert weight == pytest.approx(1 / t)
        assert not any(p.requires_grad for p in previous.parameters())
        for name, p in previous.named_parameters():
            assert torch.equal(p, current[name])  # the weights at the task's start
        assert len(conditions) == 2 * (t - 1)  # the natural classes of the earlier tasks
    assert loop.stages_done == 5 and loop.matrix == []


class OneClass:
    """An unconditional 'generator' that only ever makes one class's real images."""

    conditional = False

    def __init__(self, images):
        self.images = images

    def sample(self, n, conditions=None):
        return self.images[torch.randint(len(self.images), (n,))]


def test_a_forgotten_task_is_scored_on_what_the_generator_makes_instead():
    scenario = split_digits()
    net = feature_net(scenario, FeatureNetSettings(steps=300), default_data_dir())
    task0 = scenario.tasks[0]
    natural = scenario.natural_of(task0, task0.train.y)
    only = scenario.pipeline.to_unit(task0.train.x[natural == natural.min()])
    fake = samples_for_tasks(OneClass(only), scenario, scenario.tasks[:2], net,
                             torch.device("cpu"))
    for task, images in zip(scenario.tasks[:2], fake, strict=True):
        assert len(images) == len(task.test.y)  # full size, not just the class it makes
    read = net.net(fake[1]).argmax(1)
    assert (read == natural.min()).float().mean() > 0.9


@pytest.mark.parametrize("scenario,row", [
    *(("split_fmnist", row) for row in ("naive", "ewc", "si", "gr", "mb", "mb_conv", "logcl",
                                        "pnn_abc")),
    ("dirichlet_fmnist", "gr"), ("dirichlet_fmnist", "mb")])
def test_multiband_experiment_wiring_on_fake_fashion_mnist(tmp_path, scenario, row):
    write_mnist_like(tmp_path / "FashionMNIST" / "raw", gz=False, n_train=400, n_test=200)
    small = (["generator.width=4", "generator.local_epochs=1", "generator.global_epochs=1",
              "generator.warmup_epochs=0"] if row.startswith("mb")
             else ["generator.hidden_sizes=[16]"])
    cfg = compose_cfg("experiment=multiband_fmnist", f"row=multiband_{row}",
                      f"scenario={scenario}", f"data_dir={tmp_path}", "trainer.max_epochs=-1",
                      "trainer.max_steps=2", "logger=none", *small, "metrics.prd.runs=1",
                      "metrics.feature_net.steps=5", "metrics.sample_grids=false")
    assert cfg.objective == "generative" and cfg.train.batch_size == 64
    if row.startswith("mb"):
        assert cfg.generator.cosine_threshold == (1.0 if scenario == "split_fmnist" else 0.98)
        assert cfg.generator.architecture == ("conv" if row == "mb_conv" else "fc")
    assert cfg.optimizer.weight_decay == 1e-5 and cfg.generator.optimizer.weight_decay == 1e-5
    result = run(cfg, tmp_path / "run")
    n_tasks = 5 if scenario == "split_fmnist" else 10
    assert len(result.generative["fid"]) == n_tasks and result.metrics is None
    assert result.config["strategy"] == {"naive": "naive", "ewc": "ewc", "si": "si",
                                         "gr": "generative_replay", "mb": "multiband",
                                         "mb_conv": "multiband", "logcl": "logcl",
                                         "pnn_abc": "pnn_abc"}[row]


@pytest.mark.slow
def test_report_of_a_generative_sweep_tabulates_fid(tmp_path):
    """Slow (~12 s): the real clrun in a subprocess, importing torch."""
    out = run_cli("-m", *LEARNER, "strategy=naive,generative_replay", "trainer.max_epochs=1",
                  "scenario.n_tasks=2", "logger=none", "metrics.sample_grids=false",
                  "hydra.sweep.dir=sweep", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    table = report(tmp_path / "sweep", None, "markdown", None, tmp_path / "plots")
    header = table.splitlines()[0]
    assert header.startswith("| strategy | fid | precision | recall | runs")
    assert "generative_replay" in table
    drawn = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert drawn == ["fid_final_per_task.png", "fid_matrices.png", "fid_over_tasks.png",
                     "report.md"]


def multiband_loop(n_tasks=2, **settings):
    torch.manual_seed(0)
    scenario = split_digits(n_tasks=n_tasks)
    generator = MultibandVAE(scenario.input_shape, scenario.n_natural, optimizer=ADAM,
                             batch_size=32, **{"width": 8, "local_epochs": 2,
                                               "global_epochs": 3, "warmup_epochs": 1,
                                               **settings})
    plugin = MultibandTraining()
    plugin.attach_generator(generator)
    settings = LoopSettings(batch_size=32, trainer_kwargs=dict(
        accelerator="cpu", devices=1, max_epochs=1, enable_progress_bar=False))
    return TaskLoop(scenario, generator, [plugin], settings), plugin


def test_task_codes_are_distinct_fixed_sign_bits():
    codes = binary_code(torch.arange(16), bits=4, prime=9)
    assert codes.shape == (16, 4) and set(codes.unique().tolist()) == {-1.0, 1.0}
    assert len({tuple(c) for c in codes.tolist()}) == 16
    assert torch.equal(codes, binary_code(torch.arange(16), bits=4, prime=9))


def test_multiband_phases_follow_the_protocol():
    loop, _ = multiband_loop(local_epochs=70, global_epochs=140, warmup_epochs=5)
    generator = loop.module
    generator.begin_task(0, torch.zeros(4, 1, 8, 8))
    assert generator.training_budget(10)["max_epochs"] == 210  # the first task: all local
    assert generator.phase(209) == ("local", 209)
    generator.begin_task(1, torch.zeros(4, 1, 8, 8))
    assert generator.training_budget(10)["max_epochs"] == 210
    assert generator.phase(69) == ("local", 69) and generator.phase(70) == ("consolidate", 0)
    start, params, lr = generator.schedule("local", 6)  # encoder only for min(20, 70 // 10)
    assert (start, lr) == (0, 0.0001) and len(params) == len(generator.encoder_parameters())
    assert generator.schedule("local", 7)[0] == 7
    generator.encoder_epochs = 1  # a short budget keeps local epochs for the decoder
    assert generator.schedule("local", 1)[0] == 1
    start, params, _ = generator.schedule("consolidate", 4)  # the warm-up: translator only
    assert len(params) == len(list(generator.global_decoder.translator.parameters()))
    assert generator.schedule("consolidate", 5)[0] == 5
    assert generator.previous_decoder is not None  # the frozen decoder the task replays


@pytest.mark.parametrize("threshold,moved", [(1.0, False), (-1.0, True)])
def test_earlier_bands_move_to_new_data_only_past_the_cosine_threshold(threshold, moved):
    loop, plugin = multiband_loop(cosine_threshold=threshold)
    loop.run()
    assert plugin.band_moves[0] == 0 and (plugin.band_moves[1] > 0) == moved
    assert plugin.results() == {"multiband_band_moves": plugin.band_moves}


@pytest.mark.slow
def test_the_consolidated_decoder_still_generates_the_earlier_tasks_classes():
    """Slow (~11 s): trains networks end to end in-process."""
    loop, _ = multiband_loop(width=16, local_epochs=20, global_epochs=20, warmup_epochs=2)
    loop.run()
    generator, scenario = loop.module, loop.scenario
    net = feature_net(scenario, FeatureNetSettings(), default_data_dir())
    for task in scenario.tasks:
        read = predicted_classes(net, generator.sample_task(500, task.index))
        mine = torch.isin(read, scenario.natural_of(task, task.train.y).unique())
        assert mine.float().mean() > 0.8, (task.index, torch.bincount(read).tolist())
    assert int(generator.tasks_learned) == 2


@pytest.mark.parametrize("args,needle", [
    (["strategy=multiband", "generator=vae"], "strategy=multiband trains generator=multiband_vae"),
    (["strategy=naive", "generator=multiband_vae"], "is trained by strategy=multiband"),
    (["strategy=multiband", "generator=multiband_vae", "generator.reconstruction=l1"],
     "generator.reconstruction='l1' is invalid"),
    (["strategy=multiband", "generator=multiband_vae", "generator.architecture=conv"],
     "needs 28×28 one-channel images; this scenario's are (1, 8, 8)"),
])
def test_multiband_mistakes_fail_before_training(tmp_path, args, needle):
    with pytest.raises(ClrunError, match=re.escape(needle)):
        run(compose_cfg("objective=generative", *args, *FAST), tmp_path)


def test_logcl_levels_follow_the_binary_counter():
    assert [trailing_ones(n) for n in range(8)] == [0, 1, 0, 2, 0, 1, 0, 3]
    assert holding_levels(5) == [0, 2] and holding_levels(0) == []
    levels = [VAE((1, 8, 8), 10, hidden_sizes=(8,), z_dim=2, optimizer=ADAM) for _ in range(3)]
    population = GeneratorPopulation(levels)
    retrained, held = [], []
    for _ in range(7):
        retrained.append(population.begin_task())
        population.end_task()
        held.append(holding_levels(int(population.tasks_learned)))
    assert retrained == [0, 1, 0, 2, 0, 1, 0]
    assert held[-1] == [0, 1, 2] and population.capacity == 7


def test_logcl_retrains_only_the_carry_level_and_replays_what_it_absorbs():
    plugin = LogCL(levels=3, width_growth=2.0)
    generator = VAE((1, 8, 8), 10, hidden_sizes=(16,), z_dim=4, optimizer=ADAM,
                    max_epochs=1, batch_size=32)
    population = plugin.wrap_learner(
        generator, lambda **kw: VAE((1, 8, 8), 10, z_dim=4, optimizer=ADAM, max_epochs=1,
                                    batch_size=32, **kw))
    assert [lv.hidden_sizes for lv in population.levels] == [[16], [32], [64]]
    loop = TaskLoop(split_digits(), population, [plugin], LoopSettings(
        batch_size=32, trainer_kwargs=dict(accelerator="cpu", devices=1, max_epochs=1,
                                           enable_progress_bar=False)))
    changed = []
    original_fit = loop.fit

    def record(split, number):
        before = [{n: p.clone() for n, p in lv.named_parameters()} for lv in population.levels]
        replayed = list(population.merged)
        original_fit(split, number)
        moved = [k for k, lv in enumerate(population.levels)
                 if any(not torch.equal(p, before[k][n]) for n, p in lv.named_parameters())]
        changed.append((moved, replayed))

    loop.fit = record
    loop.run()
    assert changed == [([0], []), ([1], [0]), ([0], []), ([2], [0, 1]), ([0], [])]
    assert plugin.results() == {"logcl_retrained_level": [0, 1, 0, 2, 0]}
    counts = torch.bincount(torch.multinomial(torch.tensor([1.0, 4.0]), 5000, True))
    assert 3.5 < counts[1] / counts[0] < 4.5  # draw(): shares in proportion to 2^k tasks


@pytest.mark.parametrize("args,needle", [
    (["strategy=logcl", "generator=vae", "generator.conditional=true"],
     "strategy=logcl grows generator=vae (unconditional)"),
    (["strategy=logcl", "generator=gan"], "strategy=logcl grows generator=vae"),
    (["strategy=logcl", "generator=vae", "strategy.plugins.logcl.levels=2"],
     "holds 3 tasks and the scenario has 5; use 3"),
])
def test_logcl_mistakes_fail_before_training(tmp_path, args, needle):
    with pytest.raises(ClrunError, match=re.escape(needle)):
        run(compose_cfg("objective=generative", *args, *FAST), tmp_path)


def test_logcl_interrupted_and_resumed_ends_with_the_same_metrics(tmp_path):
    args = ("objective=generative", "generator=vae", "strategy=logcl",
            "generator.hidden_sizes=[32]", "trainer.max_epochs=2", "metrics.prd.runs=1",
            "metrics.sample_grids=false", "logger=none", "seed=4")
    run(compose_cfg(*args), tmp_path / "full")
    interrupt_then_resume(args, tmp_path / "cut")
    assert (tmp_path / "cut" / "metrics.json").read_text() == \
        (tmp_path / "full" / "metrics.json").read_text()
