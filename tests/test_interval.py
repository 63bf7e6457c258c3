"""Interval networks and InterContiNet's schedule: sound and tight bounds, nested intervals,
phases, and the guarantee the method is built on (certified samples are never forgotten)."""

from __future__ import annotations

from functools import partial
from types import SimpleNamespace

import pytest
import torch

from clrun.errors import ConfigError
from clrun.models.interval import IntervalLinear, interval_mlp
from clrun.module import ContinualModule
from clrun.plugin import StrategyPlugin
from clrun.run import run
from clrun.scenarios.batches import Batch
from clrun.strategies.interval import IntervalTraining, certified, robust_logits
from tests.conftest import compose_cfg, run_cli
from tests.test_plugin_contract import make_loop


def randomise_intervals(net, seed=0):
    """Random shifts and scales, so middles move and widths differ per weight."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in net.interval_layers():
            for p in (layer.weight_shift, layer.bias_shift):
                p.copy_(torch.randn(p.shape, generator=g))
            for p in (layer.weight_scale, layer.bias_scale):
                p.copy_(torch.randn(p.shape, generator=g) * 2)
            for r in (layer.weight_radius, layer.bias_radius):
                r.mul_(0.05 + torch.rand(r.shape, generator=g) * 0.2)


def sampled_layer_output(layer, h, g):
    """One ordinary linear layer drawn uniformly from inside `layer`'s intervals, applied."""
    if not isinstance(layer, IntervalLinear):
        return layer(h)  # point heads, Flatten, ReLU
    (w_mid, w_half), (b_mid, b_half) = layer.weight_interval(), layer.bias_interval()
    w = w_mid + (2 * torch.rand(w_mid.shape, generator=g) - 1) * w_half
    b = b_mid + (2 * torch.rand(b_mid.shape, generator=g) - 1) * b_half
    return h @ w.T + b


def sampled_network_output(net, x, g):
    """The output of one ordinary network drawn uniformly from inside the intervals."""
    h = x
    for layer in net.backbone:
        h = sampled_layer_output(layer, h, g)
    return torch.cat([sampled_layer_output(head, h, g) for head in net.heads], dim=1)


@pytest.mark.parametrize("heads", [[4], [2, 2, 2]])
def test_bounds_contain_every_network_inside_the_intervals(heads):
    torch.manual_seed(0)
    net = interval_mlp((6,), heads, hidden_sizes=(8, 8))
    randomise_intervals(net)
    x = torch.randn(32, 6)  # negative inputs too: the first layer takes any sign
    with torch.no_grad():
        lower, middle, upper = net.bounds(x)
        assert torch.allclose(middle, net(x), atol=1e-6)
        assert (lower <= middle + 1e-6).all() and (middle <= upper + 1e-6).all()
        g = torch.Generator().manual_seed(1)
        for _ in range(200):
            out = sampled_network_output(net, x, g)
            assert (out >= lower - 1e-5).all() and (out <= upper + 1e-5).all()
    assert (upper - lower).max() > 0.1  # the check above is not vacuous


def test_one_layers_bounds_are_attained_at_a_corner_of_the_weight_box():
    torch.manual_seed(0)
    layer = IntervalLinear(5, 3, max_radius=0.3)
    x = torch.randn(1, 5)
    low, _, high = layer.forward_bounds((x, x, x), point_input=True)
    (w_mid, w_half), (b_mid, b_half) = layer.weight_interval(), layer.bias_interval()
    w_low = torch.where(x > 0, w_mid - w_half, w_mid + w_half)
    w_high = torch.where(x > 0, w_mid + w_half, w_mid - w_half)
    assert torch.allclose(low, x @ w_low.T + b_mid - b_half, atol=1e-6)
    assert torch.allclose(high, x @ w_high.T + b_mid + b_half, atol=1e-6)


def test_freezing_makes_the_trained_interval_the_new_one_inside_the_old():
    torch.manual_seed(0)
    net = interval_mlp((6,), [4], hidden_sizes=(8,))
    randomise_intervals(net)
    layer = net.interval_layers()[0]
    outer = (layer.weight - layer.weight_radius, layer.weight + layer.weight_radius)
    outer = tuple(t.detach().clone() for t in outer)
    w_mid, w_half = (t.detach().clone() for t in layer.weight_interval())
    net.freeze_task()
    assert torch.allclose(layer.weight, w_mid) and torch.allclose(layer.weight_radius, w_half)
    assert (layer.weight - layer.weight_radius >= outer[0] - 1e-6).all()
    assert (layer.weight + layer.weight_radius <= outer[1] + 1e-6).all()
    assert (layer.weight_shift == 0).all() and (layer.weight_scale == 5.0).all()


def test_phases_choose_what_trains():
    net = interval_mlp((6,), [2, 2], hidden_sizes=(8,))
    expected = {"vanilla": {"backbone.1.weight", "backbone.1.bias", "heads.0.weight",
                            "heads.0.bias", "heads.1.weight", "heads.1.bias"},
                "shift": {"backbone.1.weight_shift", "backbone.1.bias_shift", "heads.0.weight",
                          "heads.0.bias", "heads.1.weight", "heads.1.bias"},
                "scale": {"backbone.1.weight_scale", "backbone.1.bias_scale"}}
    for phase, names in expected.items():
        net.set_phase(phase)
        assert {n for n, p in net.named_parameters() if p.requires_grad} == names


def test_robust_logits_take_the_targets_lower_bound_and_the_others_upper():
    lower = torch.tensor([[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]])
    upper = lower + 10
    robust = robust_logits(lower, upper, torch.tensor([2, 0]))
    assert robust.tolist() == [[10.0, 11.0, 2.0], [3.0, 14.0, 15.0]]


class CertifiedProbe(StrategyPlugin):
    """Records which task-0 test samples the intervals certify at the end of task 0."""

    def on_task_end(self, loop, task):
        if task.index == 0:
            test = loop.scenario.tasks[0].test
            x = loop.scenario.pipeline(test.x, train=False)
            self.certified = certified(loop.module, Batch(x, test.y, test.task))


@pytest.mark.parametrize("setting", ["task", "class"])
def test_samples_certified_after_task_0_are_never_forgotten(setting):
    probe = CertifiedProbe()
    # narrow intervals and a movable scale, so a few epochs on the digits certify many samples
    interval = IntervalTraining(contraction_epochs=2, shift_lr=0.1, scale_lr=100.0)
    loop = make_loop([interval, probe], setting, epochs=4,
                     model=partial(interval_mlp, max_radius=0.02, scale_init=0.0),
                     optimizer=partial(torch.optim.SGD, lr=0.1))
    matrix = loop.run()
    assert probe.certified.float().mean() > 0.3  # not vacuous
    test = loop.scenario.tasks[0].test
    with torch.no_grad():
        scores = loop.module.scores(loop.scenario.pipeline(test.x, train=False), test.task)
    still_correct = scores.argmax(dim=1) == test.y
    assert still_correct[probe.certified].all()
    if setting == "task":  # a new point head learns the new task inside the intervals
        assert matrix[-1][-1] > 60.0


def test_scale_phase_trains_only_while_robust_accuracy_lags():
    plugin = IntervalTraining(robust_threshold=0.5, lookback=2)
    plugin.phase = "scale"
    net = interval_mlp((3,), [2], hidden_sizes=())  # one interval layer, radius 1
    net.track_bounds = True
    module = ContinualModule(net, partial(torch.optim.SGD, lr=0.1), [plugin], "class")
    x = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]).repeat(2, 1)
    batch = Batch(x, torch.tensor([0, 1, 0, 1]), torch.zeros(4, dtype=torch.long))
    with torch.no_grad():  # margin 3: every sample right, none certified at width ~2 per logit
        net.heads[0].weight.copy_(torch.tensor([[1.5, -1.5, 0], [-1.5, 1.5, 0]]))
    assert plugin.loss(module, batch, net(x)).item() > 0
    with torch.no_grad():  # no width: every right sample is certified
        net.heads[0].weight_radius.zero_()
        net.heads[0].bias_radius.zero_()
    losses = [plugin.loss(module, batch, net(x)).item() for _ in range(2)]
    assert losses[-1] == 0.0  # the window (2 batches) no longer lags


@pytest.mark.parametrize("setting", ["task", "domain", "class"])
def test_two_task_run_in_each_setting(tmp_path, setting):
    cfg = compose_cfg("strategy=interval", "model=interval_mlp", f"scenario.setting={setting}",
                      "scenario.n_tasks=2", "model.hidden_sizes=[32]", "trainer.max_epochs=3",
                      "strategy.plugins.interval.contraction_epochs=1", "optimizer=sgd",
                      "optimizer.lr=0.1", "strategy.plugins.interval.shift_lr=0.1", "logger=none")
    result = run(cfg, tmp_path)
    assert len(result.matrix) == 2 and result.matrix[-1][-1] > 50.0  # each task is learnt


def test_row_picks_the_authors_per_setting_values():
    for setting, shift_lr, threshold, normalize in [("task", 1.0, 0.9, True),
                                                    ("domain", 10.0, 0.8, True),
                                                    ("class", 0.001, 0.9, False)]:
        cfg = compose_cfg("experiment=intercontinet_fmnist", "row=intercontinet_interval",
                          f"scenario.setting={setting}")
        plugin = cfg.strategy.plugins.interval
        assert (plugin.shift_lr, plugin.robust_threshold) == (shift_lr, threshold)
        assert cfg.model.normalize_shift is normalize
        assert cfg.model._target_ == "clrun.models.interval.interval_mlp"
        assert cfg.trainer.max_epochs == 30 and cfg.optimizer.lr == 0.001


@pytest.mark.slow
@pytest.mark.parametrize("overrides,needle", [
    (["strategy=interval"], "strategy=interval needs an interval network: add model=interval_mlp"),
    (["strategy=interval", "model=interval_mlp", "trainer.max_epochs=5"],
     "trainer.max_epochs=5 is invalid: the interval strategy needs more epochs per task"),
])
def test_misconfigurations_are_one_line(tmp_path, overrides, needle):
    """Slow (~11 s): the real clrun in a subprocess, importing torch."""
    out = run_cli("hydra.run.dir=run", "logger=none", *overrides, cwd=tmp_path)
    assert out.returncode == 2
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert lines == [lines[0]] and needle in lines[0], out.stderr
    assert "Traceback" not in out.stderr + out.stdout


def test_ddp_is_refused():
    net = interval_mlp((3,), [2], hidden_sizes=())
    loop = SimpleNamespace(module=SimpleNamespace(net=net), matrix=[],
                           trainer=SimpleNamespace(world_size=2, max_epochs=30))
    with pytest.raises(ConfigError, match="DDP cannot follow"):
        IntervalTraining().on_task_start(loop, None)


def test_integer_config_values_build_float_intervals():
    net = interval_mlp((3,), [2], hidden_sizes=(4,), max_radius=1, scale_init=0)
    layer = net.interval_layers()[0]
    assert layer.weight_scale.dtype == layer.weight_radius.dtype == torch.float32


def test_robust_lambda_weights_the_scale_phase_loss_and_is_off_by_default():
    def scale_loss(plugin: IntervalTraining) -> float:
        plugin.phase = "scale"
        torch.manual_seed(0)
        net = interval_mlp((3,), [2], hidden_sizes=())
        net.track_bounds = True
        module = ContinualModule(net, partial(torch.optim.SGD, lr=0.1), [plugin], "class")
        x = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]])
        batch = Batch(x, torch.tensor([0, 1]), torch.zeros(2, dtype=torch.long))
        return plugin.loss(module, batch, net(x)).item()

    assert IntervalTraining().robust_lambda is None
    plain = scale_loss(IntervalTraining())
    weighted = scale_loss(IntervalTraining(robust_lambda=100))
    assert plain > 0 and weighted == pytest.approx(100 * plain)
    with pytest.raises(ConfigError, match="robust_lambda=0 is invalid"):
        IntervalTraining(robust_lambda=0)
