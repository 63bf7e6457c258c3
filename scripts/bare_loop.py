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
from bare_strategies import STRATEGIES  # scripts/ is on sys.path when run as a script
from torch import nn


def load(scenario: str, batch_size: int):
    if scenario == "split_fmnist":
        from clrun.scenarios.benchmarks import split

        return split("Fashion-MNIST", "split_fmnist", data_dir="/nonexistent", seed=0)
    from clrun.scenarios.digits import split_digits

    return split_digits(seed=0, setting="class")


def classifier(scenario, hidden: list[int] | None = None) -> nn.Sequential:  # noqa: ANN001
    """clrun's model=mlp (784-400-400-out by default) as a plain torch module."""
    widths = [scenario.input_shape[-1] * scenario.input_shape[-2], *(hidden or [400, 400])]
    layers: list[nn.Module] = [nn.Flatten()]
    for fan_in, fan_out in zip(widths, widths[1:], strict=False):
        layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(widths[-1], scenario.head_sizes[0]))


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
    parser.add_argument("--hidden", type=int, nargs="+", default=[400, 400])
    parser.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd")
    parser.add_argument("--lr", type=float, default=0.001)
    parser.add_argument("--strategy", choices=sorted(STRATEGIES), default="naive")
    parser.add_argument("--device", default="cpu", help="e.g. cuda: data and model live there")
    parser.add_argument("--bf16", action="store_true", help="autocast to bfloat16 (on --device)")
    # scripts/bare_dgr.py's generator: clrun's VAE of these hidden sizes and latent size
    parser.add_argument("--vae-hidden", type=int, nargs="+", default=[400, 400])
    parser.add_argument("--z-dim", type=int, default=100)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    scenario = load(args.scenario, args.batch_size).to(torch.device(args.device))
    return args, scenario, classifier(scenario, args.hidden).to(args.device)


def main() -> None:
    args, scenario, model = setup("epochs", 2)
    pipeline = scenario.pipeline
    strategy = STRATEGIES[args.strategy]()
    start = time.perf_counter()
    for task in scenario.tasks:
        make = torch.optim.Adam if args.optimizer == "adam" else torch.optim.SGD
        optimizer = make(model.parameters(), lr=args.lr)
        generator = torch.Generator().manual_seed(args.seed * 1000 + task.index)
        model.train()
        strategy.task_start(model)
        for _ in range(args.epochs):
            order = torch.randperm(len(task.train), generator=generator).to(args.device)
            for i in range(len(task.train) // args.batch_size):
                index = order[i * args.batch_size:(i + 1) * args.batch_size]
                raw, y = task.train.x[index], task.train.y[index]
                trained_raw, trained_y = strategy.extend(raw, y)
                x = pipeline(trained_raw, train=True)
                strategy.inputs = x[:len(y)]  # what LwF's teacher sees
                with torch.autocast(x.device.type, torch.bfloat16, enabled=args.bf16):
                    logits = model(x)
                    loss = F.cross_entropy(logits, trained_y) + strategy.penalty(
                        model, logits[:len(y)])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                strategy.after_step(raw, y)
        strategy.task_end(model, (task.train.x, task.train.y), pipeline)
        row = evaluate(model, scenario)
        print(f"after task {task.index}: " + " ".join(f"{v:.1f}" for v in row))
    print(f"train+eval seconds: {time.perf_counter() - start:.2f}")


if __name__ == "__main__":
    main()
