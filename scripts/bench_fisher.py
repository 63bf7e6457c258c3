"""EWC's exact (expected) Fisher: the closed form for linear layers against per-sample
gradients, on the same network and data, and how far their values differ.

van de Ven's MLP (784-400-400, one 10-unit head, class-IL with the seen classes active, or
task-IL with five 2-unit heads), random inputs (the cost does not depend on them), one thread.

    python scripts/bench_fisher.py --setting class --samples 2000 --seen 4
    python scripts/bench_fisher.py --setting task --samples 2000
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import torch
from torch import nn

from clrun.models.net import ContinualNet
from clrun.module import ContinualModule
from clrun.strategies.importance import (
    _linear_fisher,
    _linear_owners,
    _per_sample_fisher,
    tracked_parameters,
)


def mlp_module(setting: str, seen: int) -> ContinualModule:
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(784, 400), nn.ReLU(), nn.Linear(400, 400),
                             nn.ReLU())
    heads = [2] * 5 if setting == "task" else [10]
    module = ContinualModule(ContinualNet(backbone, 400, heads),
                             partial(torch.optim.SGD, lr=0.1), [], setting, active_units="seen")
    module.activate_units(torch.arange(seen))
    return module.eval()


def timed(fill, module: ContinualModule, x: torch.Tensor, task: torch.Tensor, batch: int
          ) -> tuple[float, dict[str, torch.Tensor]]:
    totals = {n: torch.zeros_like(p) for n, p in tracked_parameters(module).items()}
    start = time.perf_counter()
    for i in range(0, len(x), batch):
        fill(x[i:i + batch], task[i:i + batch], totals)
    return time.perf_counter() - start, totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--setting", choices=("class", "task"), default="class")
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--seen", type=int, default=4, help="active classes (class-IL)")
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    module = mlp_module(args.setting, args.seen)
    x = torch.rand(args.samples, 1, 28, 28)
    task = torch.full((args.samples,), 1, dtype=torch.long)
    owners = _linear_owners(module)
    assert owners is not None
    closed_s, closed = timed(lambda xb, tb, tot: _linear_fisher(module, owners, xb, tb, tot),
                             module, x, task, args.batch_size)
    per_sample_s, per_sample = timed(lambda xb, tb, tot: _per_sample_fisher(module, xb, tb, tot),
                                     module, x, task, args.batch_size)
    worst = max(float((closed[n] - per_sample[n]).abs().max() / per_sample[n].abs().max())
                for n in closed)
    print(f"{args.setting}-IL, {args.samples} samples, batch {args.batch_size}: closed form "
          f"{closed_s:.2f} s, per-sample gradients {per_sample_s:.2f} s, "
          f"ratio {per_sample_s / closed_s:.1f}; largest difference {worst:.1e} of the "
          f"largest entry")


if __name__ == "__main__":
    main()
