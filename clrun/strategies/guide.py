"""GUIDE: generative replay steered toward what the classifier is about to forget (Cywiński,
Deja, Trzciński, Twardowski, Kuciński 2024), on `generator=diffusion`.

The diffusion model is trained as in diffusion DGR (self-rehearsal on its own previous copy's
samples). While the classifier learns task t, a replay batch is made every `regenerate_every`
steps: an earlier class y is drawn uniformly, the previous diffusion model samples y by DDIM,
and at every DDIM step the *current* classifier reads the clean-image prediction x̂₀, restricted
to the classes seen so far; the target is the current task's class it finds most likely, and
ε is shifted by −√(1−ᾱ_t)·s·∇ log p(target | x̂₀) (generators/diffusion/sampling.py). The
samples land near the boundary between the old class and the new ones, where forgetting
happens. `guidance=old_class` is the variant of the authors' code that steers with the
previous classifier toward y itself. The scale s is fixed, or drawn per sample from
[scale, scale_max]. A replayed sample is labelled with the class it was drawn for
(`labels=condition`, the authors' choice: guided samples cross towards new classes and must
still teach y) or by the previous classifier as in DGR (`labels=classifier`).

After every task a probe (`probe_samples` earlier-class samples from one seed, with and
without guidance) is scored by the trained classifier: metrics.json gets the mean probability
of the new task's classes on both (`guide_new_class_probability_guided`/`_unguided`), and
`samples/guided_task_<t>.png` shows the pairs.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor

from clrun.errors import ConfigError, check_positive_int
from clrun.generators.base import Generator
from clrun.generators.diffusion import DiffusionGenerator
from clrun.generators.diffusion.sampling import Guidance
from clrun.plots import new_figure, save_figure
from clrun.strategies.generative import GenerativeReplay
from clrun.strategies.importance import check_choice

if TYPE_CHECKING:
    from clrun.loop import TaskLoop
    from clrun.module import ContinualModule
    from clrun.scenarios.base import Scenario, Task

GUIDANCES = ("current_task", "old_class")
LABELS = ("condition", "classifier")
GRID_COLUMNS = 8


def padded_rows(images: Tensor, columns: int) -> Tensor:
    """`images` with blank ones added to fill the last row of a `columns`-wide grid."""
    missing = -len(images) % columns
    return torch.cat([images, images.new_zeros(missing, *images.shape[1:])])


class GuidedReplay(GenerativeReplay):
    """`strategy=guide` (with `generator=diffusion`, conditional, class-IL)."""

    option = "guide"
    supported_settings = ("class",)
    generator_choices = "generator=diffusion"
    # guided replay is always regenerated with the classifier as it is now: a buffer made when
    # the task starts (replay_buffer_per_class) serves the generator's self-rehearsal only
    buffer_feeds_classifier = False

    def __init__(self, scale: float = 0.5, scale_max: float | None = None,
                 guidance: str = "current_task", labels: str = "condition",
                 probe_samples: int = 64, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_choice("strategy.plugins.guide.guidance", guidance, GUIDANCES)
        check_choice("strategy.plugins.guide.labels", labels, LABELS)
        check_positive_int("strategy.plugins.guide.probe_samples", probe_samples)
        if scale < 0 or (scale_max is not None and scale_max < scale):
            raise ConfigError("strategy.plugins.guide.scale", scale,
                              "must be >= 0, and strategy.plugins.guide.scale_max (if given) "
                              "at least as large")
        self.scale, self.scale_max, self.guidance = scale, scale_max, guidance
        self.labels = labels
        self.probe_samples = probe_samples
        self.current_units: Tensor | None = None  # classifier units of the current task
        self.seen_units: Tensor | None = None     # ... of every task so far
        self.unit_of_natural: Tensor | None = None
        self.new_class_probability: dict[str, list[float | None]] = {"guided": [],
                                                                       "unguided": []}
        self.probes: list[tuple[Tensor, Tensor] | None] = []  # (unguided, guided) per task

    def attach_generator(self, generator: Generator) -> None:
        if not isinstance(generator, DiffusionGenerator):
            raise ConfigError("generator", type(generator).__name__,
                              "strategy=guide steers a diffusion model's sampling: use "
                              "generator=diffusion")
        if not generator.conditional:
            raise ConfigError("generator.conditional", False, "strategy=guide draws an "
                              "earlier class for every replayed sample: set it to true")
        super().attach_generator(generator)

    def on_task_start(self, loop: TaskLoop, task: Task) -> None:
        super().on_task_start(loop, task)
        self.locate_units(loop.scenario, task, loop.device)

    def locate_units(self, scenario: Scenario, task: Task, device: torch.device) -> None:
        """The output units of `task` (guidance's targets) and of every task up to it."""
        tasks = scenario.tasks[: task.index + 1]
        self.current_units = task.train.y.unique().to(device)
        self.seen_units = torch.cat([t.train.y.unique() for t in tasks]).unique().to(device)
        self.unit_of_natural = torch.full((scenario.n_natural,), -1, dtype=torch.long)
        for t in tasks:
            units = t.train.y.unique()
            self.unit_of_natural[scenario.natural_of(t, units)] = units
        self.unit_of_natural = self.unit_of_natural.to(device)

    # -- guided replay -------------------------------------------------------------------------
    def log_probability(self, module: ContinualModule) -> Guidance:
        """log p(target | x̂₀) under the classifier `guidance` names (see module doc)."""
        if self.guidance == "old_class":
            teacher = self.teacher
            previous_units = torch.cat([t.train.y.unique() for t in self.previous_tasks])
            units = previous_units.unique().to(self.seen_units.device)

            def toward_old_class(x_unit: Tensor, classes: Tensor | None) -> Tensor:
                logits = teacher(self.pipeline.from_unit(x_unit, train=False)).float()
                log_p = F.log_softmax(logits[:, units], dim=1)
                where = torch.searchsorted(units, self.unit_of_natural[classes])
                return log_p.gather(1, where[:, None]).squeeze(1)

            return toward_old_class
        net = module.net

        def toward_current_task(x_unit: Tensor, classes: Tensor | None) -> Tensor:
            logits = net(self.pipeline.from_unit(x_unit, train=False)).float()
            log_p = F.log_softmax(logits[:, self.seen_units], dim=1)
            current = log_p[:, torch.searchsorted(self.seen_units, self.current_units)]
            return current.max(dim=1).values

        return toward_current_task

    def scales(self, n: int, device: torch.device) -> Tensor | float:
        if self.scale_max is None:
            return self.scale
        return torch.empty(n, device=device).uniform_(self.scale, self.scale_max)

    def generate(self, module: ContinualModule, n: int) -> tuple[Tensor, Tensor]:
        """n guided samples of earlier classes (fresh every `regenerate_every` steps)."""
        classes = self.draw_classes(n)
        was_training = module.training
        module.eval()  # the classifier reads x̂₀ with batch norm's running statistics
        try:
            return self.previous.sample(n, classes, guidance=self.log_probability(module),
                                        scale=self.scales(n, classes.device)), classes
        finally:
            module.train(was_training)

    def replay_term(self, module: ContinualModule, x: Tensor, classes: Tensor | None) -> Tensor:
        """Cross-entropy to the drawn class (`labels=condition`), or DGR's targets."""
        if self.labels == "classifier":
            return super().replay_term(module, x, classes)
        student_units = self.groups[0][0]
        logits = module.net(x).float()[:, student_units]
        return F.cross_entropy(logits, torch.searchsorted(student_units,
                                                          self.unit_of_natural[classes]))

    # -- how far guidance moved the samples ---------------------------------------------------
    def on_task_end(self, loop: TaskLoop, task: Task) -> None:
        super().on_task_end(loop, task)
        if self.previous is None:
            self.new_class_probability["guided"].append(None)
            self.new_class_probability["unguided"].append(None)
            self.probes.append(None)
            return
        module = loop.module
        was_training = module.training
        module.eval()
        seed = 7919 * (task.index + 1)
        unguided = self.probe(module, self.probe_samples, seed, guided=False)
        guided = self.probe(module, self.probe_samples, seed)
        for name, images in (("unguided", unguided), ("guided", guided)):
            self.new_class_probability[name].append(self.new_class_mass(module, images))
        module.train(was_training)
        self.probes.append((unguided[:GRID_COLUMNS * 2].cpu(), guided[:GRID_COLUMNS * 2].cpu()))

    def probe(self, module: ContinualModule, n: int, seed: int, guided: bool = True,
              scale: float | None = None) -> Tensor:
        """n samples of earlier classes from `seed` (the same noise and classes every call):
        unguided, or guided by the classifier at `scale` (None: as configured, drawn per sample
        from [scale, scale_max] when that is set)."""
        device = self.seen_units.device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            classes = self.draw_classes(n)
            if not guided:
                return self.previous.sample(n, classes, seed=seed)
            scales = self.scales(n, classes.device) if scale is None else scale
            return self.previous.sample(n, classes, seed=seed,
                                        guidance=self.log_probability(module), scale=scales)

    @torch.no_grad()
    def new_class_mass(self, module: ContinualModule, images: Tensor) -> float:
        """Mean probability (softmax over the classes seen so far) of the current task's."""
        logits = module.net(self.pipeline.from_unit(images, train=False)).float()
        current = torch.searchsorted(self.seen_units, self.current_units)
        p = logits[:, self.seen_units].softmax(dim=1)[:, current]
        return round(float(p.sum(dim=1).mean()), 4)

    def results(self) -> dict[str, Any]:
        return {"guide_new_class_probability_guided": self.new_class_probability["guided"],
                "guide_new_class_probability_unguided": self.new_class_probability["unguided"]}

    def save_figures(self, run_dir: Path) -> list[Path]:
        """samples/guided_task_<t>.png: unguided samples above, guided ones (same noise and
        class) below."""
        paths = []
        for index, probe in enumerate(self.probes):
            if probe is None:
                continue
            unguided, guided = (padded_rows(images, GRID_COLUMNS) for images in probe)
            channels, height, width = unguided.shape[1:]
            fig, axes = new_figure(0.9 * GRID_COLUMNS, 0.9 * len(unguided) / GRID_COLUMNS + 0.6,
                                   panels=2)
            for ax, images, title in ((axes[0], unguided, "unguided"),
                                      (axes[1], guided, f"guided (s = {self.scale})")):
                grid = images.view(-1, GRID_COLUMNS, channels, height, width)
                canvas = grid.permute(0, 3, 1, 4, 2).reshape(-1, GRID_COLUMNS * width, channels)
                ax.imshow(canvas.squeeze(-1).numpy() if channels == 1 else canvas.numpy(),
                          cmap="gray" if channels == 1 else None, vmin=0, vmax=1)
                ax.set_axis_off()
                ax.set_title(f"task {index}: {title}", fontsize=8)
            path = run_dir / "samples" / f"guided_task_{index}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            paths.append(save_figure(fig, path))
        return paths

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "new_class_probability": self.new_class_probability,
                "probes": self.probes}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.new_class_probability = {k: list(v) for k, v in
                                      state_dict["new_class_probability"].items()}
        self.probes = list(state_dict["probes"])
