"""The reference for DGR's overhead: van de Ven's DGR on split Fashion-MNIST (or digits),
class-IL, in a plain PyTorch loop — the same work clrun's `strategy=dgr generator=vae` does.

Per task: the generator (clrun's VAE module, used as a plain nn.Module) trains `--steps`
steps on the current batch plus as many samples of the frozen previous generator (weights 1/t,
1 − 1/t); then the classifier (MLP 784-400-400-10) trains `--steps` steps on the current batch
(units of classes seen so far) plus replayed samples labelled by the frozen previous
classifier's argmax over the classes it knew. Adam (1e-3) for both, kept across tasks; test
accuracy after every task. Prints the time split between generator training, classifier
training and replay sampling, per task, so a growing cost would show.
"""

from __future__ import annotations

import copy
import time
from functools import partial

import torch
import torch.nn.functional as F
from bare_loop import evaluate, setup  # scripts/ is on sys.path when run as a script

from clrun.generators.vae import VAE


class Clock:
    """Seconds spent per part, in total and in the current task."""

    def __init__(self) -> None:
        self.total: dict[str, float] = {}

    def __call__(self, part: str):
        clock = self

        class Span:
            def __enter__(self) -> None:
                self.start = time.perf_counter()

            def __exit__(self, *exc: object) -> None:
                clock.total[part] = clock.total.get(part, 0.0) + time.perf_counter() - self.start

        return Span()


def batches(n: int, batch_size: int, steps: int, generator: torch.Generator):
    order, position = torch.randperm(n, generator=generator), 0
    for _ in range(steps):
        if position + batch_size > n:
            order, position = torch.randperm(n, generator=generator), 0
        yield order[position:position + batch_size]
        position += batch_size


def main() -> None:
    args, scenario, model = setup("steps", 300)
    vae = VAE(scenario.input_shape, scenario.n_natural, hidden_sizes=args.vae_hidden,
              z_dim=args.z_dim, optimizer=partial(torch.optim.Adam))
    model_opt = torch.optim.Adam(model.parameters(), lr=1e-3)  # --hidden: its MLP
    vae_opt = torch.optim.Adam(vae.parameters(), lr=1e-3)
    pipeline, clock = scenario.pipeline, Clock()
    teacher = previous = None
    start = time.perf_counter()
    for task in scenario.tasks:
        t = task.index + 1
        w = 1.0 / t
        seen = torch.cat([k.train.y.unique() for k in scenario.tasks[:t]])
        old = torch.cat([k.train.y.unique() for k in scenario.tasks[:t - 1]]) if t > 1 else None
        mask = torch.full((scenario.head_sizes[0],), float("-inf"))
        mask[seen] = 0
        before = dict(clock.total)
        generator = torch.Generator().manual_seed(args.seed * 1000 + 500 + task.index)
        for index in batches(len(task.train), args.batch_size, args.steps, generator):
            with clock("generator"):
                loss = vae.loss(pipeline.to_unit(task.train.x[index]), None)
                if previous is not None:
                    with clock("sampling"):
                        replayed = previous.sample(len(index))
                    loss = w * loss + (1 - w) * vae.loss(replayed, None)
                vae_opt.zero_grad()
                loss.backward()
                vae_opt.step()
        generator = torch.Generator().manual_seed(args.seed * 1000 + task.index)
        for index in batches(len(task.train), args.batch_size, args.steps, generator):
            with clock("classifier"):
                x = pipeline(task.train.x[index], train=True)
                loss = F.cross_entropy(model(x) + mask, task.train.y[index])
                if teacher is not None:
                    with clock("sampling"):
                        replayed = pipeline.from_unit(previous.sample(len(index)), train=True)
                        with torch.no_grad():
                            labels = teacher(replayed)[:, old].argmax(1)
                    logits = model(replayed)[:, seen]
                    target = torch.searchsorted(seen.sort().values, old.sort().values)[labels]
                    loss = w * loss + (1 - w) * F.cross_entropy(logits, target)
                model_opt.zero_grad()
                loss.backward()
                model_opt.step()
        teacher = copy.deepcopy(model).eval().requires_grad_(False)
        previous = copy.deepcopy(vae).eval().requires_grad_(False)
        row = evaluate(model, scenario)
        spent = {k: v - before.get(k, 0.0) for k, v in clock.total.items()}
        print(f"after task {task.index}: " + " ".join(f"{v:.1f}" for v in row) + "  | seconds: "
              + ", ".join(f"{k} {v:.2f}" for k, v in sorted(spent.items())))
    print("time split (s, sampling is inside the other two): "
          + ", ".join(f"{k} {v:.2f}" for k, v in sorted(clock.total.items())))
    print(f"train+eval seconds: {time.perf_counter() - start:.2f}")


if __name__ == "__main__":
    main()
