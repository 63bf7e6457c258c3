"""Replay family: buffer policies, herding, GEM/A-GEM projections, GDumb, iCaRL, runs."""

from __future__ import annotations

import io

import pytest
import torch

from clrun.errors import ConfigError
from clrun.run import run
from clrun.scenarios.base import Split
from clrun.strategies.buffer import Buffer, herding_order
from clrun.strategies.replay import (
    ExperienceReplay,
    GDumb,
    ICaRL,
    LatentReplay,
    agem_projection,
    solve_gem_dual,
)
from tests.conftest import FAST, compose_cfg
from tests.test_plugin_contract import make_loop


def stream(n: int, n_classes: int = 10):
    return torch.arange(n), torch.arange(n) % n_classes


def test_reservoir_keeps_the_budget_and_samples_uniformly():
    counts = torch.zeros(500)
    for trial in range(300):
        buffer = Buffer(50, seed=trial)
        x, y = stream(500)
        for start in range(0, 500, 32):
            buffer.add_reservoir(x=x[start:start + 32], y=y[start:start + 32],
                                 task=y[start:start + 32])
            assert len(buffer) <= 50
        kept = buffer.get("x")
        assert len(kept) == 50 and len(kept.unique()) == 50
        counts[kept] += 1
    # each item is kept with probability 50/500; compare 10 blocks of the stream (chi-square)
    blocks = counts.view(10, 50).sum(1)
    expected = 300 * 50 / 10
    chi2 = ((blocks - expected) ** 2 / expected).sum().item()
    assert chi2 < 21.67  # 99th percentile of chi-square with 9 degrees of freedom


def test_random_memory_rule_and_budget():
    buffer = Buffer(100, seed=0)
    for task in range(4):
        x = torch.arange(1000) + 1000 * task
        buffer.add_random_memory(Split(x, torch.zeros(1000, dtype=torch.long),
                                       torch.full((1000,), task)), task + 1)
        assert len(buffer) == 100
    per_task = torch.bincount(buffer.get("task"), minlength=4)
    # after task i, 100/i of it come in: the share of each task decays but all remain
    assert (per_task > 0).all() and per_task[3] == 25


def test_class_balanced_sampler_balances():
    buffer = Buffer(60, seed=0)
    y = torch.cat([torch.zeros(300), torch.ones(100), torch.full((40,), 2)]).long()
    buffer.add_class_balanced(x=torch.arange(len(y)), y=y, task=torch.zeros_like(y))
    counts = torch.bincount(buffer.get("y"))
    assert len(buffer) == 60 and counts.max() - counts.min() <= 1


def test_herding_picks_the_samples_closest_to_the_running_mean():
    torch.manual_seed(0)
    features = torch.randn(200, 8)
    order = herding_order(features, 10)
    normalized = torch.nn.functional.normalize(features, dim=1)
    mean = normalized.mean(0)
    assert order[0] == (normalized - mean).norm(dim=1).argmin()
    herded = (normalized[order].mean(0) - mean).norm()
    random = (normalized[torch.randperm(200)[:10]].mean(0) - mean).norm()
    assert herded < random and len(order.unique()) == 10


def test_gem_projection_does_not_increase_any_stored_task_loss():
    torch.manual_seed(0)
    for _ in range(20):
        memory = torch.randn(4, 30)
        g = torch.randn(30)
        v = solve_gem_dual(memory @ memory.T, memory @ g, margin=0.0)
        projected = memory.T @ v + g
        assert (memory @ projected >= -1e-4).all()
        assert (v >= 0).all()


def test_agem_projection_formula():
    g, ref = torch.tensor([1.0, -2.0]), torch.tensor([0.0, 1.0])
    assert torch.allclose(agem_projection(g, ref), torch.tensor([1.0, 0.0]))
    assert torch.equal(agem_projection(torch.tensor([1.0, 1.0]), ref), torch.tensor([1.0, 1.0]))


def test_gdumb_trains_only_on_its_memory_from_scratch():
    gdumb = GDumb(memory_size=40)
    sizes = []
    loop = make_loop([gdumb], n_tasks=5, epochs=1)
    original = gdumb.train_data
    gdumb.train_data = lambda lp, t, s: sizes.append(len(original(lp, t, s))) or original(lp, t, s)
    loop.run()
    assert sizes == [40] * 5
    counts = torch.bincount(gdumb.buffer.get("y"))
    assert counts.max() - counts.min() <= 1


def test_icarl_classifies_by_nearest_exemplar_mean():
    icarl = ICaRL(memory_size=100)
    loop = make_loop([icarl], n_tasks=5, epochs=2)
    loop.run()
    assert len(icarl.buffer) <= 100 and sorted(icarl.seen_classes) == list(range(10))
    test = loop.scenario.tasks[0].test
    x = loop.scenario.pipeline(test.x, train=False)
    module = loop.module.eval()
    features = torch.nn.functional.normalize(module.net.features(x), dim=1)
    nearest = torch.cdist(features, icarl.class_means).argmin(1)
    assert torch.equal(module.scores(x, test.task).argmax(1), nearest)


def test_icarl_refuses_other_settings_before_training(tmp_path):
    cfg = compose_cfg("strategy=icarl", "scenario.setting=domain", *FAST)
    with pytest.raises(ConfigError, match="strategy=icarl supports only class"):
        run(cfg, tmp_path)


def test_buffer_survives_a_checkpoint_round_trip():
    buffer = Buffer(20, seed=3)
    x, y = stream(50)
    buffer.add_reservoir(x=x.to(torch.uint8), y=y, task=y)
    data = io.BytesIO()
    torch.save(buffer.state_dict(), data)
    data.seek(0)
    restored = Buffer(1)
    restored.load_state_dict(torch.load(data, weights_only=True))
    assert len(restored) == 20 and restored.seen == 50
    for name in ("x", "y", "task"):
        assert torch.equal(restored.get(name), buffer.get(name))
    assert torch.equal(restored.sample(5)["x"], buffer.sample(5)["x"])


@pytest.mark.parametrize("strategy", ["replay", "latent_replay", "er", "mir", "gdumb", "gem",
                                      "agem", "icarl"])
@pytest.mark.parametrize("setting", ["task", "domain", "class"])
def test_two_task_run_per_replay_strategy_and_setting(tmp_path, strategy, setting):
    if strategy == "icarl" and setting != "class":
        pytest.skip("iCaRL is class-IL only (refusal tested above)")
    cfg = compose_cfg(f"strategy={strategy}", f"scenario.setting={setting}",
                      "scenario.n_tasks=2", "model.hidden_sizes=[32]",
                      f"strategy.plugins.{strategy}.seed=1", *FAST,
                      *(["strategy.plugins.latent_replay.latent_layer=2"]
                        if strategy == "latent_replay" else []))
    result = run(cfg, tmp_path)
    assert len(result.matrix) == 2 and result.config["plugins"] == [strategy]


def test_latent_replay_freezes_the_lower_layers_and_stores_activations():
    plugin = LatentReplay(memory_size=60, latent_layer=2)  # after Flatten and Linear
    loop = make_loop([plugin], n_tasks=5, epochs=1)
    snapshots = []
    original = plugin.on_task_end

    def on_task_end(lp, task):
        original(lp, task)
        snapshots.append(lp.module.net.backbone[1].weight.detach().clone())

    plugin.on_task_end = on_task_end
    loop.run()
    assert torch.equal(snapshots[0], snapshots[-1])  # frozen after the first task
    assert plugin.buffer.get("x").shape == (60, 32)  # activations of the 32-unit hidden layer
    assert loop.matrix[-1][0] > 0  # replayed activations keep task 0 alive in class-IL


def test_er_per_class_memory_grows_with_the_classes_seen():
    plugin = ExperienceReplay(memory_size=7, per_class=5, weighting="task_ratio")
    loop = make_loop([plugin], n_tasks=5, epochs=1)
    loop.run()
    labels = plugin.buffer.get("y")
    assert plugin.buffer.capacity == 50 and len(labels) == 50  # 5 per class, 10 classes
    assert torch.bincount(labels, minlength=10).tolist() == [5] * 10
    with pytest.raises(ConfigError, match="per_class=0 is invalid"):
        ExperienceReplay(memory_size=7, per_class=0)
