"""The backbones CL papers use: exact parameter counts, every strategy runs on them, and the
split-CIFAR scenarios train the reduced ResNet-18 unless a model is named."""

from __future__ import annotations

import pytest
import torch

from clrun.errors import ClrunError
from clrun.models.alexnet import alexnet
from clrun.models.resnet import resnet18_reduced
from clrun.run import run
from tests.conftest import FAST, STRATEGY_OVERRIDES, compose_cfg, read_metrics, run_cli
from tests.test_scenarios import write_cifar


def count(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def test_parameter_counts_match_the_papers():
    assert count(resnet18_reduced((3, 32, 32), [10])) == 1_094_750  # GEM, nf = 20
    assert count(resnet18_reduced((3, 32, 32), [100])) == 1_109_240
    assert count(alexnet((3, 32, 32), [10])) == 23_272_266  # InterContiNet's CIFAR AlexNet
    assert resnet18_reduced((3, 32, 32), [2] * 5)(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_backbones_refuse_inputs_they_cannot_take():
    with pytest.raises(ClrunError, match="needs images of at least 16"):
        alexnet((1, 8, 8), [10])
    with pytest.raises(ClrunError, match="use model=mlp"):
        resnet18_reduced((64,), [10])


STRATEGIES = ["naive", "l2", "ewc", "oewc", "si", "mas", "lwf", "replay", "latent_replay", "er",
              "mir", "gdumb", "icarl", "gem", "agem", "dgr", "dgr_distill"]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_runs_on_the_reduced_resnet(tmp_path, strategy):
    """The replay and regularization plugins know nothing of the architecture."""
    cfg = compose_cfg(f"strategy={strategy}", "model=resnet18_reduced", "model.nf=4",
                      "scenario.n_tasks=2", "trainer.max_epochs=1",
                      *STRATEGY_OVERRIDES.get(strategy, []), "logger=none",
                      "metrics.generative=false")
    result = run(cfg, tmp_path)
    assert len(result.matrix) == 2 and 0 <= result.metrics.acc <= 100


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ewc", "er", "lwf"])
def test_strategies_run_on_the_alexnet(tmp_path, strategy):
    """Slow (~9 s): trains networks end to end in-process."""
    write_cifar(tmp_path, 10, n_train=20, n_test=10)
    cfg = compose_cfg(f"strategy={strategy}", "scenario=split_cifar10", "model=alexnet",
                      f"data_dir={tmp_path}", "scenario.n_tasks=2", "scenario.setting=task",
                      "trainer.max_epochs=1", "logger=none")
    result = run(cfg, tmp_path / "run")
    assert len(result.matrix) == 2


@pytest.mark.slow
def test_split_cifar_trains_the_reduced_resnet_unless_a_model_is_named(tmp_path):
    """Slow (~23 s): the real clrun in 2 subprocesses, each importing torch."""
    write_cifar(tmp_path, 10, n_train=20, n_test=10)
    common = ("scenario=split_cifar10", f"data_dir={tmp_path}", "trainer.max_epochs=1", *FAST)
    out = run_cli("strategy=ewc", "hydra.run.dir=default", *common, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert read_metrics(tmp_path / "default")["config"]["model"] == "resnet18_reduced"
    named = run_cli("model=mlp", "hydra.run.dir=named", *common, cwd=tmp_path)
    assert named.returncode == 0, named.stderr[-2000:]
    assert read_metrics(tmp_path / "named")["config"]["model"] == "mlp"


@pytest.mark.slow
def test_interval_alexnet_bounds_hold_and_its_centres_are_the_alexnet():
    """Slow (~8 s): trains networks end to end in-process."""
    import copy

    from clrun.models.interval import interval_alexnet

    torch.manual_seed(0)
    net = interval_alexnet((3, 32, 32), [10], max_radius=0.01).eval()
    centres = sum(p.numel() for n, p in net.named_parameters()
                  if n.endswith(("weight", "bias")))
    assert centres == 23_272_266
    x = torch.rand(4, 3, 32, 32)
    lower, middle, upper = net.bounds(x)
    assert torch.allclose(middle, net(x), atol=1e-5)
    inside = copy.deepcopy(net)  # a network drawn inside the intervals
    with torch.no_grad():
        for layer in inside.interval_layers():
            for name in ("weight", "bias"):
                mid, half = getattr(layer, f"{name}_interval")()
                getattr(layer, name).copy_(mid + (torch.rand_like(mid) * 2 - 1) * half)
                getattr(layer, f"{name}_shift").zero_()
                getattr(layer, f"{name}_radius").zero_()
    out = inside(x)
    assert bool((lower <= out + 1e-4).all() and (out <= upper + 1e-4).all())


@pytest.mark.slow
def test_interval_strategy_runs_on_the_interval_alexnet(tmp_path):
    """Slow (~20 s): trains networks end to end in-process."""
    write_cifar(tmp_path, 10, n_train=20, n_test=10)
    cfg = compose_cfg("strategy=interval", "scenario=split_cifar10", "model=interval_alexnet",
                      f"data_dir={tmp_path}", "scenario.n_tasks=2", "scenario.setting=task",
                      "trainer.max_epochs=2", "strategy.plugins.interval.contraction_epochs=1",
                      "optimizer=sgd", "logger=none")
    assert len(run(cfg, tmp_path / "run").matrix) == 2
