"""The optimizer kept across tasks: groups as parameters join, and a resume that rebuilds them."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from torch import nn

from clrun.errors import ClrunError
from clrun.optim import KeptOptimizer


def step(optimizer: torch.optim.Optimizer, net: nn.Module) -> None:
    optimizer.zero_grad()
    net(torch.ones(2, 3)).sum().backward()
    optimizer.step()


def test_a_resume_after_layers_were_frozen_rebuilds_the_kept_optimizer():
    """Layers frozen after task 1 (feature replay, BI-R internal replay) stay in the kept
    optimizer; the checkpoint's state loads into the same groups when the run resumes."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    kept = KeptOptimizer(partial(torch.optim.Adam, lr=0.1), reset=False)
    step(kept.get(net), net)                       # task 1: everything trains
    net[0].requires_grad_(False)                   # frozen at the task's end
    net.add_module("head", nn.Linear(2, 2))        # and a parameter joins at task 2
    optimizer = kept.get(net)
    assert [len(g["params"]) for g in optimizer.param_groups] == [4, 2]
    saved, weights = kept.state_dict(), {k: v.clone() for k, v in net.state_dict().items()}

    resumed = KeptOptimizer(partial(torch.optim.Adam, lr=0.1), reset=False)
    resumed.load_state_dict(saved)
    again = resumed.get(net)
    before, after = optimizer.state_dict(), again.state_dict()
    assert after["param_groups"] == before["param_groups"]
    assert all(torch.equal(after["state"][i][key], value)
               for i, state in before["state"].items() for key, value in state.items())
    step(again, net)
    assert torch.equal(net[0].weight, weights["0.weight"])  # frozen: Adam skips it
    assert not torch.equal(net[2].weight, weights["2.weight"])


def test_an_optimizer_state_without_parameter_names_is_refused():
    kept = KeptOptimizer(partial(torch.optim.SGD, lr=0.1), reset=False)
    kept.load_state_dict(torch.optim.SGD(nn.Linear(1, 1).parameters(), lr=0.1).state_dict())
    with pytest.raises(ClrunError, match="older clrun"):
        kept.get(nn.Linear(1, 1))
