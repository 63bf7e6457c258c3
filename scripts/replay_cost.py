"""What diffusion replay costs per classifier task, as a function of `generator.sample_steps`
and `strategy.plugins.dgr.regenerate_every` (and with GUIDE's guidance), on this machine.

Times DDIM sampling of one replay batch with generator=diffusion's default network on split
Fashion-MNIST's image shape, unguided and guided (gradient through the denoiser and an MLP
classifier 784-400-400), then prints the replay-generation seconds a task of `--steps`
classifier steps spends for each regenerate_every: steps / k regenerations × one batch.
A buffer (`replay_buffer_per_class=N`) costs one draw of N × (earlier classes) samples instead.

    python scripts/replay_cost.py                    # batch 128, 2000 classifier steps
    python scripts/replay_cost.py --threads 2 --sample-steps 5 10 50
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import torch
import torch.nn.functional as F

from clrun.generators.diffusion import DiffusionGenerator
from clrun.models.net import mlp


def seconds_per_batch(generator: DiffusionGenerator, batch: int, steps: int,
                      guided: bool, repeats: int) -> float:
    classes = torch.arange(batch) % 8
    guidance = None
    if guided:
        net = mlp((1, 28, 28), [10], hidden_sizes=(400, 400)).eval()

        def guidance(x_unit: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
            return F.log_softmax(net(x_unit), dim=1)[:, 8:].max(dim=1).values

    generator.sample(batch, classes, steps=steps, guidance=guidance, scale=0.5)  # warm-up
    started = time.perf_counter()
    for _ in range(repeats):
        generator.sample(batch, classes, steps=steps, guidance=guidance, scale=0.5)
    return (time.perf_counter() - started) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=2000, help="classifier steps per task")
    parser.add_argument("--sample-steps", type=int, nargs="+", default=[5, 10, 20, 50])
    parser.add_argument("--regenerate-every", type=int, nargs="+", default=[1, 5, 20, 100])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    generator = DiffusionGenerator((1, 28, 28), 10, conditional=True,
                                   optimizer=partial(torch.optim.Adam, lr=2e-4)).eval()
    columns = " | ".join(f"k={k}" for k in args.regenerate_every)
    print(f"| sampler | s per batch of {args.batch} | replay s per task of {args.steps} steps, "
          f"{columns} |")
    print("|---|---|" + "---|" * len(args.regenerate_every))
    for guided in (False, True):
        for steps in args.sample_steps:
            seconds = seconds_per_batch(generator, args.batch, steps, guided, args.repeats)
            per_task = " | ".join(f"{seconds * -(-args.steps // k):.0f}"
                                  for k in args.regenerate_every)
            name = f"DDIM-{steps}" + (" guided" if guided else "")
            print(f"| {name} | {seconds:.2f} | {per_task} |", flush=True)


if __name__ == "__main__":
    main()
