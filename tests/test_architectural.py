"""The architectural family: progressive networks, Piggyback, SupSup and hypernetworks."""

from __future__ import annotations

import hydra.utils
import pytest
import torch
import torch.nn.functional as F
import yaml

from clrun.architectural.hnet import HyperNet
from clrun.architectural.masks import masked_layers, use_superposition, use_task
from clrun.architectural.piggyback import THRESHOLD, PiggybackLayer, PiggybackNet
from clrun.architectural.pnn import ProgressiveNet
from clrun.architectural.supsup import SupermaskLayer, SupSupNet
from clrun.errors import ClrunError
from clrun.models.net import convnet, mlp
from clrun.paths import config_dir
from clrun.run import run
from clrun.scenarios.digits import split_digits
from tests.conftest import compose_cfg, interrupt_then_resume, run_cli

DIGITS = split_digits(setting="task")


def fit(net, t: int, steps: int = 60, lr: float = 1e-2, data=None) -> None:
    params = [p for p in net.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=lr)
    split = data or DIGITS.tasks[t].train
    x, y = split.x.float() / 16, split.y
    for _ in range(steps):
        loss = F.cross_entropy(net.forward_task(x, t), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("template", [mlp, convnet])
def test_pnn_keeps_earlier_columns_bitwise_and_uses_its_laterals(template):
    torch.manual_seed(0)
    net = ProgressiveNet(template(DIGITS.input_shape, DIGITS.head_sizes), DIGITS.head_sizes)
    x = DIGITS.tasks[0].test.x.float() / 16
    net.train_only(0)
    fit(net, 0)
    column0, before = snapshot(net.columns[0]), net.forward_task(x, 0).detach()
    net.train_only(1)
    fit(net, 1)
    assert all(torch.equal(v, snapshot(net.columns[0])[k]) for k, v in column0.items())
    assert torch.equal(net.forward_task(x, 0), before)  # task 0's outputs bitwise unchanged
    with_laterals = net.forward_task(x, 1).detach()
    net.use_laterals = False
    assert not torch.allclose(net.forward_task(x, 1), with_laterals)
    assert net.forward_task(x, 7) is None  # no such column: the module counts an error


def test_pnn_refuses_other_settings_in_one_line(tmp_path):
    with pytest.raises(ClrunError, match=r"supports only task \(scenario.setting=task\)"):
        run(compose_cfg("strategy=pnn", "scenario.setting=class", "logger=none"), tmp_path)


def test_piggyback_starts_as_the_backbone_thresholds_strictly_and_never_moves_it():
    torch.manual_seed(0)
    template = mlp(DIGITS.input_shape, DIGITS.head_sizes, hidden_sizes=(32,))
    x = DIGITS.tasks[1].test.x.float() / 16
    plain = template.heads[1](template.backbone(x)).detach()
    net = PiggybackNet(template, n_tasks=5, plain_tasks=0)
    assert torch.allclose(net.forward_task(x, 1), plain)  # scores 1e-2 > 5e-3: all ones
    layer = next(m for m in net.modules() if isinstance(m, PiggybackLayer))
    with torch.no_grad():
        layer.scores[1].fill_(THRESHOLD)
    assert int(layer.mask(1).sum()) == 0  # exactly at the threshold: masked out
    with torch.no_grad():
        layer.scores[1].fill_(1e-2)
    backbone = {k: v for k, v in snapshot(net.backbone).items() if "scores" not in k}
    for p in net.parameters():
        p.requires_grad_(False)
    for layer in masked_layers(net):
        layer.scores[1].requires_grad_(True)
    net.heads[1].requires_grad_(True)
    fit(net, 1, steps=30, lr=1e-2)
    assert all(torch.equal(v, snapshot(net.backbone)[k]) for k, v in backbone.items())
    assert any(not torch.equal(layer.scores[1], torch.full_like(layer.scores[1], 1e-2))
               for layer in masked_layers(net))


def test_piggyback_refuses_a_random_backbone_and_loads_a_checkpoint(tmp_path):
    with pytest.raises(ClrunError, match="random backbone are strategy=supsup"):
        run(compose_cfg("strategy=piggyback", "scenario.setting=task",
                        "strategy.plugins.piggyback.backbone=random"), tmp_path)
    first = run(compose_cfg("strategy=naive", "scenario.setting=task", "trainer.max_epochs=2",
                            "logger=none"), tmp_path / "trained")
    assert first.metrics.acc > 0
    cfg = compose_cfg("strategy=piggyback", "scenario.setting=task", "trainer.max_epochs=1",
                      "logger=none", "strategy.plugins.piggyback.backbone=checkpoint:"
                      f"{tmp_path / 'trained' / 'checkpoints' / 'checkpoint.pt'}")
    assert run(cfg, tmp_path / "masked").metrics.bwt == 0  # masks never interfere
    missing = compose_cfg("strategy=piggyback", "scenario.setting=task",
                          "strategy.plugins.piggyback.backbone=checkpoint:/nowhere.pt")
    with pytest.raises(ClrunError, match="cannot be read"):
        run(missing, tmp_path / "missing")


def test_supsup_weights_fixed_topk_share_and_one_hot_superposition():
    torch.manual_seed(0)
    net = SupSupNet(mlp(DIGITS.input_shape, DIGITS.head_sizes, hidden_sizes=(64,)), 5, "topk",
                    0.3, seed=1)
    layer = next(m for m in net.modules() if isinstance(m, SupermaskLayer))
    assert layer.bias is None and layer.weight.abs().unique().numel() == 1  # signed constant
    assert int(layer.mask(2).sum()) == round(0.3 * layer.weight.numel())  # exactly its share
    weights = {k: v for k, v in snapshot(net).items() if "scores" not in k}
    net.train_only(0)
    fit(net, 0, steps=20)
    assert all(torch.equal(v, snapshot(net)[k]) for k, v in weights.items())
    x = DIGITS.tasks[0].test.x.float() / 16
    single = net.forward_task(x, 0).detach()
    use_superposition(net, torch.tensor([1.0, 0.0]))
    assert torch.allclose(net.outputs(x, 0), single)
    use_task(net, None)
    again = SupSupNet(mlp(DIGITS.input_shape, DIGITS.head_sizes, hidden_sizes=(64,)), 5,
                      "topk", 0.3, seed=1)
    assert torch.equal(next(m for m in again.modules()
                            if isinstance(m, SupermaskLayer)).weight, layer.weight)


@pytest.mark.parametrize("search", ["one_shot", "every_mask"])
def test_supsup_inference_finds_the_task_on_a_two_task_problem(search):
    torch.manual_seed(0)
    scenario = split_digits(setting="domain")
    net = SupSupNet(mlp(scenario.input_shape, scenario.head_sizes, hidden_sizes=(128,)), 2,
                    "topk", 0.5, seed=0)
    task0, task1 = scenario.tasks[0].train, scenario.tasks[1].train
    inverted = type(task1)(16 - task1.x, task1.y, task1.task)  # a very different task
    net.train_only(0)
    fit(net, 0, steps=150, data=task0)
    net.train_only(1)
    fit(net, 1, steps=150, data=inverted)
    right = 0
    for t, images in ((0, scenario.tasks[0].test.x), (1, 16 - scenario.tasks[1].test.x)):
        images = images.float() / 16
        right += sum(net.infer_task(images[i:i + 1], 2, search=search) == t for i in range(40))
    assert right >= 72  # of 80 single-image inferences


def test_supsup_class_il_shares_one_head_so_every_mask_trains_what_the_entropy_reads():
    scenario = split_digits(setting="class")
    units = [t.train.y.unique() for t in scenario.tasks]
    net = SupSupNet(mlp(scenario.input_shape, scenario.head_sizes, hidden_sizes=(32,)), 5,
                    "topk", 0.5, seed=0, shared_units=units)
    assert net.heads[0].weight.shape[0] == 2 and net.head_sizes == [10]
    x = scenario.tasks[3].test.x[:4].float() / 16
    out = net(x, torch.full((4,), 3))
    assert out.shape == (4, 10)
    assert torch.isfinite(out[:, units[3]]).all() and torch.isinf(out).sum() == 4 * 8
    use_superposition(net, torch.full((5,), 0.2))
    assert net.outputs(x, 0).shape == (4, 2)  # the entropy's units: trained by every mask
    use_task(net, None)


def test_supsup_superfluous_units_train_low_and_steer_the_g_objective():
    """The penalty turns cross-entropy over a task's units into cross-entropy over them and the
    superfluous ones; after training those stay below the real units on the task's data."""
    torch.manual_seed(0)
    scenario = split_digits(setting="class")
    units = [t.train.y.unique() for t in scenario.tasks]
    net = SupSupNet(mlp(scenario.input_shape, scenario.head_sizes, hidden_sizes=(64,)), 5,
                    "topk", 0.5, seed=0, shared_units=units, superfluous_units=6)
    assert net.heads[0].weight.shape[0] == 2 + 6
    x = scenario.tasks[1].train.x.float() / 16
    y = scenario.tasks[1].train.y - units[1].min()  # labels within the task
    real = net.forward_task(x, 1)
    union = F.cross_entropy(net.outputs(x, 1), y)
    with_term = F.cross_entropy(real, y) + net.take_superfluous_term() / len(x)
    assert torch.allclose(with_term, union, atol=1e-5)
    net.eval()
    net.forward_task(x, 1)
    assert net.take_superfluous_term() is None  # nothing collected outside training
    net.train()
    net.train_only(1)
    params = [p for p in net.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=1e-2)
    for _ in range(60):
        loss = F.cross_entropy(net.forward_task(x, 1), y) + net.take_superfluous_term() / len(x)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        out = net.outputs(scenario.tasks[1].test.x.float() / 16, 1)
    assert (out[:, 2:].max(1).values < out[:, :2].max(1).values).float().mean() > 0.95
    use_task(net, None)
    assert 0 <= net.infer_task(x[:1], 2, objective="superfluous") < 2


@pytest.mark.slow
@pytest.mark.parametrize("overrides,message", [
    (["strategy.plugins.supsup.objective=superfluous"], "also set strategy.plugins.supsup."
                                                        "superfluous_units"),
    (["strategy.plugins.supsup.superfluous_units=8", "scenario.setting=task"],
     "task-IL gives the task"),
    (["strategy.plugins.supsup.superfluous_units=-1"], "whole number >= 0"),
    (["strategy.plugins.supsup.inference=every_mask", "strategy.plugins.supsup.objective="
      "superfluous", "strategy.plugins.supsup.superfluous_units=8"], "one_shot inference only"),
    (["strategy.plugins.supsup.inference=twice"], "one_shot, every_mask"),
])
def test_supsup_inference_options_are_refused_in_one_line(tmp_path, overrides, message):
    """Slow (~16 s): the real clrun in a subprocess, importing torch."""
    result = run_cli("strategy=supsup", "scenario.setting=class", "logger=none", *overrides,
                     f"hydra.run.dir={tmp_path}", cwd=tmp_path)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


def test_hnet_chunks_cover_every_weight_once_and_the_regulariser():
    torch.manual_seed(0)
    target = mlp(DIGITS.input_shape, DIGITS.head_sizes, hidden_sizes=(16,))
    total = sum(p.numel() for p in target.parameters())
    net = HyperNet(target, 5, embedding_size=8, hidden_sizes=[10], chunk_size=300,
                   chunk_embedding_size=4)
    assert len(net.chunk_embeddings) * 300 >= total > (len(net.chunk_embeddings) - 1) * 300
    weights = net.weights(0)
    assert list(weights) == [n for n, _ in target.named_parameters()]
    assert sum(w.numel() for w in weights.values()) == total == net.flat_weights(0).numel()
    from clrun.architectural.hnet import HNET

    plugin = HNET(beta=1.0)
    module = type("M", (), {"net": net})()
    plugin.targets = [net.flat_weights(0).detach().clone()]
    assert float(plugin.penalty(module, None, None)) == 0.0  # zero at the stored targets


def test_hnet_look_ahead_takes_the_regulariser_after_the_task_loss_step(tmp_path):
    from types import SimpleNamespace

    from clrun.architectural.hnet import HNET
    from clrun.scenarios.batches import Batch

    torch.manual_seed(0)
    net = HyperNet(mlp(DIGITS.input_shape, DIGITS.head_sizes, hidden_sizes=(16,)), 5,
                   embedding_size=8, hidden_sizes=[10], chunk_size=300, chunk_embedding_size=4)
    target = net.flat_weights(0).detach() + 0.1
    x, y = DIGITS.tasks[1].train.x[:32].float() / 16, DIGITS.tasks[1].train.y[:32]
    batch, logits = Batch(x, y, torch.ones(32, dtype=torch.long)), net.forward_task(x, 1)
    module = SimpleNamespace(
        net=net, setting="task", current_task=1,
        trainer=SimpleNamespace(optimizers=[SimpleNamespace(param_groups=[{"lr": 0.5}])]),
        classification_loss=lambda b, out: F.cross_entropy(out, b.y))
    ahead, plain = HNET(beta=1.0, look_ahead=True), HNET(beta=1.0)
    ahead.targets = plain.targets = [target]
    theta = net.theta()
    grads = torch.autograd.grad(F.cross_entropy(logits, y), list(theta.values()),
                                retain_graph=True)
    stepped = {n: p - 0.5 * g for (n, p), g in zip(theta.items(), grads, strict=True)}
    expected = (net.flat_weights(0, stepped) - target).pow(2).sum()
    got = ahead.penalty(module, batch, logits)
    assert torch.allclose(got, expected) and not torch.allclose(got, plain.penalty(
        module, batch, logits))
    got.backward()
    assert all(p.grad is not None for p in theta.values())  # the regulariser trains θ
    result = run(compose_cfg("strategy=hnet", "scenario.setting=task", "scenario.n_tasks=2",
                             "strategy.plugins.hnet.look_ahead=true",
                             "strategy.plugins.hnet.chunk_size=500", "trainer.max_epochs=2",
                             "logger=none"), tmp_path)
    assert len(result.matrix) == 2 and result.metrics.acc > 60


def hnet_drift(beta: float) -> float:
    """Largest change of task 0's generated weights while task 1 trains under the
    regulariser β·‖h(e_0) − h*(e_0)‖²."""
    torch.manual_seed(0)
    net = HyperNet(mlp(DIGITS.input_shape, DIGITS.head_sizes, hidden_sizes=(16,)), 5,
                   embedding_size=8, hidden_sizes=[16], chunk_size=300, chunk_embedding_size=4)
    fit(net, 0, steps=60)
    target = net.flat_weights(0).detach().clone()
    net.task_embeddings[0].requires_grad_(False)
    optimizer = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=1e-2)
    x, y = DIGITS.tasks[1].train.x.float() / 16, DIGITS.tasks[1].train.y
    for _ in range(60):
        loss = F.cross_entropy(net.forward_task(x, 1), y)
        loss = loss + beta * (net.flat_weights(0) - target).pow(2).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return float((net.flat_weights(0) - target).abs().max())


def test_hnet_with_a_large_beta_keeps_old_tasks_generated_weights():
    free, held = hnet_drift(0.0), hnet_drift(100.0)
    assert held < 0.05 < free


@pytest.mark.parametrize("strategy,setting", [("pnn", "task"), ("piggyback", "task"),
                                              ("supsup", "class"), ("hnet", "class")])
def test_interrupted_and_resumed_runs_end_with_the_same_metrics(tmp_path, strategy, setting):
    args = (f"strategy={strategy}", f"scenario.setting={setting}", "trainer.max_epochs=2",
            "model.hidden_sizes=[32]", "logger=none", "seed=4")
    if strategy == "hnet":
        args = (*args, "strategy.plugins.hnet.chunk_size=500")
    full = run(compose_cfg(*args), tmp_path / "full")
    resumed = interrupt_then_resume(args, tmp_path / "cut")
    assert resumed.to_dict() | {"config": None} == full.to_dict() | {"config": None}
    assert (tmp_path / "cut" / "metrics.json").read_text() == \
        (tmp_path / "full" / "metrics.json").read_text()


@pytest.mark.parametrize("experiment", ["architectural_fmnist", "generative_fmnist"])
def test_every_row_of_a_table_experiment_builds_its_optimizer(experiment):
    """Rows switch optimizers (the interval row uses SGD): the experiment's own optimizer
    settings must fit every row's."""
    declared = yaml.safe_load((config_dir() / "experiment" / f"{experiment}.yaml").read_text())
    rows = declared["hydra"]["sweeper"]["params"]["row"].split(",")
    for row in rows:
        cfg = compose_cfg(f"experiment={experiment}", f"row={row}")
        hydra.utils.instantiate(cfg.optimizer)([torch.nn.Parameter(torch.zeros(1))])


def test_supsup_infers_each_batch_from_its_first_inference_images(tmp_path):
    cfg = compose_cfg("strategy=supsup", "scenario.setting=class", "trainer.max_epochs=1",
                      "model.hidden_sizes=[16]", "logger=none",
                      "strategy.plugins.supsup.inference_images=5",
                      "strategy.plugins.supsup.inference_batch_size=32")
    seen = []
    original = SupSupNet.infer_task

    def recording(net, x, *args):
        seen.append(len(x))
        return original(net, x, *args)

    SupSupNet.infer_task = recording
    try:
        run(cfg, tmp_path)
    finally:
        SupSupNet.infer_task = original
    assert seen and set(seen) <= {5, 4, 3, 2, 1} and seen.count(5) > len(seen) // 2
    with pytest.raises(ClrunError, match="inference_images=0 is invalid"):
        run(compose_cfg("strategy=supsup", "scenario.setting=class",
                        "strategy.plugins.supsup.inference_images=0", "logger=none"),
            tmp_path / "bad")
