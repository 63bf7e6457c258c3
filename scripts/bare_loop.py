"""The reference for the overhead benchmark: the same protocol as clrun in plain PyTorch.

Split Fashion-MNIST (or digits), class-IL fine-tuning: per task a fresh optimizer, shuffled
index-slice batches, and after each task the test accuracy on every task. Data loading uses
clrun's loaders (no Lightning imported) so both sides read the same tensors.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch import nn


def load(scenario: str, batch_size: int):
    if scenario == "split_fmnist":
        from clrun.scenarios.benchmarks import split

        return split("Fashion-MNIST", "split_fmnist", data_dir="/nonexistent", seed=0)
    from clrun.scenarios.digits import split_digits

    return split_digits(seed=0, setting="class")


def classifier(scenario) -> nn.Sequential:  # noqa: ANN001
    """clrun's model=mlp (784-400-400-out) as a plain torch module."""
    pixels = scenario.input_shape[-1] * scenario.input_shape[-2]
    return nn.Sequential(nn.Flatten(), nn.Linear(pixels, 400), nn.ReLU(), nn.Linear(400, 400),
                         nn.ReLU(), nn.Linear(400, scenario.head_sizes[0]))


def evaluate(model: nn.Module, scenario) -> list[float]:  # noqa: ANN001
    """Test accuracy (%) on every task, in eval mode (training mode restored after)."""
    model.eval()
    with torch.no_grad():
        row = []
        for t in scenario.tasks:
            correct = 0
            for s in range(0, len(t.test), 1024):
                x = scenario.pipeline(t.test.x[s:s + 1024], train=False)
                correct += (model(x).argmax(1) == t.test.y[s:s + 1024]).sum().item()
            row.append(100.0 * correct / len(t.test))
    model.train()
    return row


def setup(budget: str, default: int) -> tuple[argparse.Namespace, object, nn.Sequential]:
    """The command line (scenario, budget, batch size, seed), the seeded scenario and the
    classifier: what every bare reference loop starts from."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--scenario", default="split_fmnist")
    parser.add_argument(f"--{budget}", type=int, default=default)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    scenario = load(args.scenario, args.batch_size)
    return args, scenario, classifier(scenario)


def main() -> None:
    args, scenario, model = setup("epochs", 2)
    pipeline = scenario.pipeline
    start = time.perf_counter()
    for task in scenario.tasks:
        optimizer = torch.optim.SGD(model.parameters(), lr=0.001)
        generator = torch.Generator().manual_seed(args.seed * 1000 + task.index)
        model.train()
        for _ in range(args.epochs):
            order = torch.randperm(len(task.train), generator=generator)
            for i in range(len(task.train) // args.batch_size):
                index = order[i * args.batch_size:(i + 1) * args.batch_size]
                x = pipeline(task.train.x[index], train=True)
                loss = F.cross_entropy(model(x), task.train.y[index])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        row = evaluate(model, scenario)
        print(f"after task {task.index}: " + " ".join(f"{v:.1f}" for v in row))
    print(f"train+eval seconds: {time.perf_counter() - start:.2f}")


if __name__ == "__main__":
    main()
