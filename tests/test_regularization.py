"""Regularization plugins: penalties, importances, SI's path integral, LwF's distillation."""

from __future__ import annotations

from functools import partial
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from clrun.models.net import ContinualNet
from clrun.module import ContinualModule
from clrun.run import run
from clrun.scenarios.base import InputPipeline, Split
from clrun.scenarios.batches import Batch
from clrun.strategies.distillation import LwF
from clrun.strategies.importance import expected_fisher, fisher
from clrun.strategies.regularization import EWC, L2, SI
from tests.conftest import FAST, compose_cfg
from tests.test_plugin_contract import make_loop


def tiny_module(setting="class", heads=(3,)):
    torch.manual_seed(0)
    net = ContinualNet(nn.Sequential(nn.Flatten(), nn.Linear(4, 5), nn.ReLU()), 5, list(heads))
    return ContinualModule(net, partial(torch.optim.SGD, lr=0.1), [], setting)


def tiny_split(n=10, classes=3, task=0):
    g = torch.Generator().manual_seed(1)
    return Split(torch.randn(n, 4, generator=g), torch.arange(n) % classes,
                 torch.full((n,), task, dtype=torch.long))


def test_penalty_is_zero_at_the_anchor_and_grows_with_distance():
    module = tiny_module()
    ewc = EWC(lambda_=2.0)
    ewc.consolidate(module, {n: torch.ones_like(p) for n, p in module.net.named_parameters()})
    assert ewc.penalty_value(module).item() == pytest.approx(0.0)
    values = []
    for step in (0.1, 0.2, 0.4):
        with torch.no_grad():
            moved = tiny_module()
            for p in moved.net.parameters():
                p.add_(step)
        values.append(ewc.penalty_value(moved).item())
    n_params = sum(p.numel() for p in module.net.parameters())
    assert values[0] == pytest.approx(2.0 * n_params * 0.01, rel=1e-4)
    assert values[0] < values[1] < values[2]


def test_separate_terms_fold_into_one_quadratic_with_the_same_gradient():
    module = tiny_module()
    ewc = EWC(lambda_=1.5, mode="separate")
    anchors, importances = [], []
    for _ in range(3):
        with torch.no_grad():
            for p in module.net.parameters():
                p.add_(torch.randn_like(p) * 0.1)
        imp = {n: torch.rand_like(p) for n, p in module.net.named_parameters()}
        anchors.append({n: p.detach().clone() for n, p in module.net.named_parameters()})
        importances.append(imp)
        ewc.consolidate(module, imp)
    with torch.no_grad():
        for p in module.net.parameters():
            p.add_(0.3)
    folded = torch.autograd.grad(ewc.penalty_value(module), list(module.net.parameters()))
    explicit_value = sum(
        1.5 * (imp[n] * (p - anchor[n]).pow(2)).sum()
        for anchor, imp in zip(anchors, importances, strict=True)
        for n, p in module.net.named_parameters())
    explicit = torch.autograd.grad(explicit_value, list(module.net.parameters()))
    for a, b in zip(folded, explicit, strict=True):
        assert torch.allclose(a, b, atol=1e-5)


def test_online_importance_decays():
    module = tiny_module()
    ewc = EWC(lambda_=1.0, mode="online", decay=0.5)
    ones = {n: torch.ones_like(p) for n, p in module.net.named_parameters()}
    ewc.consolidate(module, ones)
    ewc.consolidate(module, ones)
    ewc.consolidate(module, ones)
    weight = next(iter(ewc.weight.values()))
    assert torch.allclose(weight, torch.full_like(weight, 1 + 0.5 + 0.25))


def test_fisher_reduction_and_labels():
    module = tiny_module()
    split, pipeline = tiny_split(n=10), InputPipeline()
    summed = fisher(module, split, pipeline, batch_size=5, labels="predicted", reduction="sum")
    averaged = fisher(module, split, pipeline, batch_size=5, labels="predicted", reduction="mean")
    for n in summed:
        assert torch.allclose(summed[n], 2 * averaged[n])
    true = fisher(module, split, pipeline, batch_size=5, labels="true", reduction="sum")
    assert any(not torch.allclose(true[n], summed[n]) for n in summed)


def fisher_by_loop(module, split, units):
    """The exact Fisher sample by sample and label by label, over the given output units."""
    want = {n: torch.zeros_like(p) for n, p in module.net.named_parameters()}
    for i in range(len(split)):
        probs = torch.softmax(module.net(split.x[i:i + 1])[:, units], 1)[0].detach()
        for c in range(len(units)):
            module.net.zero_grad()
            torch.log_softmax(module.net(split.x[i:i + 1])[:, units], 1)[0, c].backward()
            for n, p in module.net.named_parameters():
                want[n] += probs[c] * p.grad.pow(2) / len(split)
    return want


class TwiceApplied(nn.Module):
    """One linear layer run twice: the closed form does not hold, per-sample gradients do."""

    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(4, 4)

    def forward(self, x):
        return torch.relu(self.layer(torch.relu(self.layer(x))))


@pytest.mark.parametrize("backbone", ["linear", "conv", "twice"])
def test_expected_fisher_matches_a_per_sample_loop(backbone):
    """The closed form for linear layers (MLPs), and the per-sample gradients every other
    network takes (a conv layer; a linear layer used twice), against the plain loop."""
    torch.manual_seed(0)
    body = {"linear": lambda: nn.Sequential(nn.Flatten(), nn.Linear(4, 5), nn.ReLU()),
            "conv": lambda: nn.Sequential(nn.Unflatten(1, (1, 2, 2)), nn.Conv2d(1, 5, 2),
                                          nn.ReLU(), nn.Flatten()),
            "twice": lambda: nn.Sequential(TwiceApplied(), nn.Linear(4, 5))}[backbone]()
    net = ContinualNet(body, 5, [3])
    module = ContinualModule(net, partial(torch.optim.SGD, lr=0.1), [], "class")
    split = tiny_split(n=6)
    got = expected_fisher(module, split, InputPipeline(), batch_size=4, reduction="mean")
    want = fisher_by_loop(module, split, [0, 1, 2])
    for n in want:
        assert torch.allclose(got[n], want[n], atol=1e-6), n


def test_fisher_uses_only_the_units_training_uses():
    """Under active_units=seen (van de Ven's class-IL) the Fisher's softmax spans the seen
    classes only, as his code's `allowed_classes`: unit 2 is masked, so the expected Fisher is
    the per-sample loop over units 0-1, and the predicted label is never unit 2."""
    torch.manual_seed(0)
    net = ContinualNet(nn.Sequential(nn.Flatten(), nn.Linear(4, 5), nn.ReLU()), 5, [3])
    module = ContinualModule(net, partial(torch.optim.SGD, lr=0.1), [], "class",
                             active_units="seen")
    module.activate_units(torch.tensor([0, 1]))
    with torch.no_grad():
        net.heads[0].bias[2] = 50.0  # the unseen unit would win every argmax and the softmax
    split = tiny_split(n=6, classes=2)
    got = expected_fisher(module, split, InputPipeline(), batch_size=4, reduction="mean")
    want = fisher_by_loop(module, split, [0, 1])
    for n in want:
        assert torch.allclose(got[n], want[n], atol=1e-6)
    assert got["heads.0.bias"][2] == 0 and got["heads.0.weight"][2].abs().sum() == 0
    predicted = fisher(module, split, InputPipeline(), 6, labels="predicted", reduction="sum")
    assert predicted["heads.0.bias"][:2].sum() > 0 and predicted["heads.0.bias"][2] == 0


def test_ewc_importance_is_computed_on_the_finished_task_on_the_device():
    ewc = EWC(lambda_=1.0, mode="online", decay=0.0, reduction="sum")
    loop = make_loop([ewc], n_tasks=2, epochs=1)
    loop.run()
    last = loop.scenario.tasks[1].train
    want = fisher(loop.module, last, loop.scenario.pipeline, 128, "predicted", "sum")
    for n, w in want.items():
        assert torch.allclose(ewc.weight[n], w, rtol=1e-4, atol=1e-8)
        assert ewc.weight[n].device == loop.device


def test_l2_leaves_other_tasks_heads_free_in_task_il():
    l2 = L2(lambda_=1.0)
    loop = make_loop([l2], setting="task", n_tasks=2, epochs=1)
    loop.run()
    assert "heads.0.weight" in l2.weight and "heads.1.weight" in l2.weight
    assert "backbone.1.weight" in l2.weight
    l2_first = L2(lambda_=1.0)
    loop = make_loop([l2_first], setting="task", n_tasks=2, epochs=1)
    l2_first.on_task_end(SimpleNamespace(module=loop.module), loop.scenario.tasks[0])
    assert "heads.1.weight" not in l2_first.weight


def test_si_path_integral_matches_a_hand_computation():
    net = ContinualNet(nn.Identity(), 2, [])
    net.w = nn.Parameter(torch.tensor([1.0, -2.0]))
    net.heads = nn.ModuleList()
    module = SimpleNamespace(net=net)
    si = SI(lambda_=1.0, epsilon=0.1, c=1.0, clamp_max=None)
    loop = SimpleNamespace(module=module)
    si.on_task_start(loop, None)
    steps = [(torch.tensor([0.5, -1.0]), torch.tensor([-0.1, 0.2])),
             (torch.tensor([0.2, 0.4]), torch.tensor([-0.05, -0.1]))]
    for g, delta in steps:
        net.w.grad = g.clone()
        si.on_before_optimizer_step(None, module, None)
        with torch.no_grad():
            net.w.add_(delta)
        si.on_train_batch_end(None, module, None, None, 0)
    omega = si.importances(loop, None)["w"]
    path = sum(g * d for g, d in steps)
    total = sum(d for _, d in steps)
    assert torch.allclose(omega, -path / (total.pow(2) + 0.1))


def test_si_clamp():
    si = SI(lambda_=1.0, clamp_max=0.001)
    si._names, si._start = ["w"], [torch.zeros(2)]
    si._path = [torch.tensor([-5.0, 5.0])]
    loop = SimpleNamespace(module=SimpleNamespace(net=nn.ParameterDict(
        {"w": nn.Parameter(torch.tensor([1.0, 1.0]))})))
    omega = si.importances(loop, None)["w"]
    assert omega[0].item() == pytest.approx(0.001) and omega[1].item() < 0


def test_lwf_teacher_is_frozen_and_distils_only_old_outputs():
    """The teacher is the network as the last task left it (taken at the next task's start)."""
    lwf = LwF(alpha=1.0, temperature=2.0, softmax_over="old")
    loop = make_loop([lwf], n_tasks=5, epochs=1)
    task0 = loop.scenario.tasks[0]
    loop.module.to("cpu")
    lwf.on_task_end(SimpleNamespace(module=loop.module), task0)
    lwf.on_task_start(SimpleNamespace(module=loop.module), loop.scenario.tasks[1])
    assert all(not p.requires_grad for p in lwf.teacher.parameters())
    x = loop.scenario.pipeline(task0.train.x[:8], train=False)
    logits = loop.module.net(x).detach().requires_grad_(True)
    with torch.no_grad():
        loop.module.net.heads[0].weight.add_(0.5)  # student drifts from the teacher
    penalty = lwf.penalty(loop.module, Batch(x, task0.train.y[:8], task0.train.task[:8]), logits)
    (grad,) = torch.autograd.grad(penalty, logits)
    assert grad[:, 2:].abs().sum() == 0 and grad[:, :2].abs().sum() > 0
    lwf_all = LwF(alpha=1.0, temperature=2.0, softmax_over="all")
    lwf_all.on_task_end(SimpleNamespace(module=loop.module), task0)
    lwf_all.on_task_start(SimpleNamespace(module=loop.module), loop.scenario.tasks[1])
    (grad_all,) = torch.autograd.grad(lwf_all.penalty(loop.module, Batch(x, None, None), logits),
                                      logits)
    assert grad_all[:, 2:].abs().sum() > 0  # softmax over every unit couples the new ones


def test_lwf_task_il_distils_each_previous_head():
    lwf = LwF()
    loop = make_loop([lwf], setting="task", n_tasks=5, epochs=1)
    loop.module.to("cpu")
    for task in loop.scenario.tasks[:2]:
        lwf.on_task_end(SimpleNamespace(module=loop.module), task)
    assert [units.tolist() for units, _ in lwf.groups] == [[0, 1], [2, 3]]


@pytest.mark.parametrize("strategy", ["l2", "ewc", "oewc", "si", "mas", "lwf"])
@pytest.mark.parametrize("setting", ["task", "domain", "class"])
def test_two_task_run_per_strategy_and_setting(tmp_path, strategy, setting):
    cfg = compose_cfg(f"strategy={strategy}", f"scenario.setting={setting}",
                      "scenario.n_tasks=2", "model.hidden_sizes=[32]", *FAST)
    result = run(cfg, tmp_path)
    assert len(result.matrix) == 2 and 0 <= result.metrics.acc <= 100
    assert result.config["plugins"]


def test_two_plugins_combine(tmp_path):
    cfg = compose_cfg("strategy=[ewc,lwf]", "scenario.n_tasks=2", "model.hidden_sizes=[32]", *FAST)
    assert set(cfg.strategy.plugins) == {"ewc", "lwf"}
    assert run(cfg, tmp_path).config["plugins"] == ["ewc", "lwf"]


def test_gradient_added_before_the_step_equals_the_penalty_gradient():
    module = tiny_module()
    ewc = EWC(lambda_=3.0, mode="separate")
    for _ in range(2):
        ewc.consolidate(module, {n: torch.rand_like(p) for n, p in module.net.named_parameters()})
        with torch.no_grad():
            for p in module.net.parameters():
                p.add_(torch.randn_like(p) * 0.1)
    want = torch.autograd.grad(ewc.penalty_value(module), list(module.net.parameters()))
    for p in module.net.parameters():
        p.grad = torch.zeros_like(p)
    ewc.on_before_optimizer_step(None, module, None)
    for p, g in zip(module.net.parameters(), want, strict=True):
        assert torch.allclose(p.grad, g, atol=1e-6)
