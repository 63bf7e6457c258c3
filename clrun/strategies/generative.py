"""Generative replay: deep generative replay (DGR, Shin et al. 2017), DGR with distillation and
replay-through-feedback (RtF, van de Ven & Tolias 2018), in van de Ven's reading.

DGR: a scholar is a generator plus the classifier (solver). At the start of task t > 1 the
previous pair is frozen; the generator of task t trains first, on the task's data plus samples
of the previous generator (same weighting as below); then, while the classifier trains, every
step adds a batch of the previous generator's samples (as large as the current one), labelled
by the previous classifier, and the loss is w·L_current + (1 − w)·L_replay, w = 1/t
(`weighting=task_ratio`) or 1/2 (`equal`). Targets are hard (the previous classifier's argmax
over the units it knew) or soft (`targets=soft`: its softmax at temperature T, KL × T²).
In task-IL the one replayed batch is scored by every previous task's head and L_replay is the
mean over those tasks; in class-IL the previous classifier scores the classes seen before.

RtF: the classifier is the VAE: a Gaussian latent and a decoder sit on the classifier's last
hidden layer and train with it (classification + reconstruction + KL); it replays samples of
its own frozen previous copy with distillation. Brain-inspired replay builds on it
(clrun/strategies/brain_inspired.py).
"""

from __future__ import annotations

import copy
import time
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clrun.errors import ConfigError, check_positive_int
from clrun.generators.base import GeneratedSamples, Generator, draw_uniformly
from clrun.generators.feedback import FeedbackVAE
from clrun.generators.multiband import MultibandVAE
from clrun.generators.population import GeneratorPopulation
from clrun.generators.vae import VAE
from clrun.plugin import StrategyPlugin
from clrun.scenarios.base import InputPipeline, Split
from clrun.scenarios.batches import Batch
from clrun.strategies.importance import check_choice

if TYPE_CHECKING:
    from clrun.loop import TaskLoop
    from clrun.module import ContinualModule
    from clrun.scenarios.base import Scenario, Task

WEIGHTINGS = ("task_ratio", "equal")
TARGETS = ("hard", "soft")
UnitGroups = list[tuple[Tensor, Tensor]]  # (student units, teacher units) per scored head


def replay_weight(weighting: str, task_number: int) -> float:
    """The weight of the current batch's loss while task `task_number` (1-based) trains."""
    return 1.0 / task_number if weighting == "task_ratio" else 0.5


def replay_groups(module: ContinualModule, previous_tasks: list[Task]) -> UnitGroups:
    """Which output units the replayed batch is scored on, per setting (see module doc)."""
    device = module.device
    offsets = torch.tensor([0, *module.net.head_sizes]).cumsum(0).tolist()
    if module.setting == "task":
        return [(units, units) for units in
                (torch.arange(offsets[t.index], offsets[t.index + 1], device=device)
                 for t in previous_tasks)]
    everything = torch.arange(offsets[-1], device=device)
    if module.setting == "domain":
        return [(everything, everything)]
    student = (everything if module.train_unit_mask is None
               else module.train_unit_mask.nonzero().flatten())
    seen = torch.cat([t.train.y.unique() for t in previous_tasks]).unique().to(device)
    return [(student, seen)]


def replay_loss(student: Tensor, teacher: Tensor, groups: UnitGroups, soft: bool,
                temperature: float) -> Tensor:
    """Mean over `groups` of CE to the teacher's argmax (hard) or KL to its tempered softmax,
    × T² (soft), with the teacher's units placed among the student's (zeros elsewhere)."""
    total = student.new_zeros((), dtype=torch.float32)
    for student_units, teacher_units in groups:
        s = student[:, student_units].float()
        t = teacher[:, teacher_units].float()
        where = torch.searchsorted(student_units, teacher_units)
        if soft:
            target = torch.zeros_like(s)
            target[:, where] = F.softmax(t / temperature, dim=1)
            log_p = F.log_softmax(s / temperature, dim=1)
            total = total + F.kl_div(log_p, target, reduction="batchmean") * temperature ** 2
        else:
            total = total + F.cross_entropy(s, where[t.argmax(dim=1)])
    return total / len(groups)


def frozen(net: nn.Module) -> nn.Module:
    return copy.deepcopy(net).eval().requires_grad_(False)


class _ReplayBase(StrategyPlugin):
    """Bookkeeping shared by DGR and RtF: the task number, the tasks seen, the pipeline, the
    frozen previous classifier and the loss weighting."""

    def __init__(self, weighting: str = "task_ratio", targets: str = "hard",
                 temperature: float = 2.0, replay_batch_size: int | None = None) -> None:
        super().__init__()
        check_choice("strategy.plugins.*.weighting", weighting, WEIGHTINGS)
        check_choice("strategy.plugins.*.targets", targets, TARGETS)
        self.weighting = weighting
        self.soft = targets == "soft"
        self.temperature = temperature
        self.replay_batch_size = replay_batch_size
        self.pipeline = InputPipeline()
        self.task_number = 1
        self.previous_tasks: list[Task] = []
        self.teacher: nn.Module | None = None
        self.groups: UnitGroups = []
        self.seen_classes: Tensor | None = None  # natural classes of the previous tasks

    def on_task_start(self, loop: TaskLoop, task: Task) -> None:
        self.pipeline = loop.scenario.pipeline
        self.task_number = task.index + 1
        self.previous_tasks = loop.scenario.tasks[: task.index]
        self.teacher = None
        if self.previous_tasks:
            self.teacher = frozen(loop.module.net)
            self.groups = replay_groups(loop.module, self.previous_tasks)
            self.seen_classes = loop.scenario.natural_classes(self.previous_tasks).to(
                loop.device)

    def replay_size(self, batch: Batch) -> int:
        return self.replay_batch_size or len(batch.y)

    def weighted(self, current: Tensor, replayed: Tensor) -> Tensor:
        w = replay_weight(self.weighting, self.task_number)
        return w * current + (1 - w) * replayed


GENERATOR_REPLAYS = ("samples", "distill")


class GenerativeReplay(_ReplayBase):
    """DGR and DGR+distill with a separate generator (`generator=vae|conv_vae|gan|diffusion`).

    Replay for the classifier is drawn fresh every `regenerate_every` steps (GUIDE's scheme
    for costly samplers; 1: every step), or from `replay_buffer_per_class` samples per earlier
    class made by the frozen previous generator when the task starts (then the generator's
    self-rehearsal draws from the same buffer). The generator learns earlier tasks from those
    samples as data (`generator_replay=samples`) or by distillation of the previous
    generator's predictions on them (`distill`, generator=diffusion)."""

    uses_generator = True
    option = "dgr"  # strategy.plugins.<option> in the one-line errors
    generator_choices = ("generator=vae (any input), generator=conv_vae (28×28, 32×32 images), "
                         "generator=gan or generator=diffusion")
    buffer_feeds_classifier = True  # False: the buffer serves the generator's self-rehearsal

    def __init__(self, weighting: str = "task_ratio", targets: str = "hard",
                 temperature: float = 2.0, replay_batch_size: int | None = None,
                 regenerate_every: int = 1, replay_buffer_per_class: int | None = None,
                 generator_replay: str = "samples") -> None:
        super().__init__(weighting, targets, temperature, replay_batch_size)
        key = f"strategy.plugins.{self.option}"
        check_positive_int(f"{key}.regenerate_every", regenerate_every)
        if replay_buffer_per_class is not None:
            check_positive_int(f"{key}.replay_buffer_per_class", replay_buffer_per_class)
            if regenerate_every != 1 and self.buffer_feeds_classifier:
                raise ConfigError(f"{key}.regenerate_every", regenerate_every,
                                  "applies to replay drawn fresh; with replay_buffer_per_class "
                                  "the classifier's replay comes from the buffer: leave it at 1")
        check_choice(f"{key}.generator_replay", generator_replay, GENERATOR_REPLAYS)
        self.regenerate_every = regenerate_every
        self.replay_buffer_per_class = replay_buffer_per_class
        self.distill_generator = generator_replay == "distill"
        self.generator: Generator | None = None
        self.previous: Generator | None = None
        self.buffer: GeneratedSamples | None = None
        self._replayed: Tensor | None = None  # unit-space replay, reused regenerate_every steps
        self._steps = 0
        self.seconds: list[dict[str, float]] = []  # per task: where the time went
        self._clock: dict[str, float] = {}

    def attach_generator(self, generator: Generator) -> None:
        if self.distill_generator and not hasattr(generator, "distillation_loss"):
            raise ConfigError(f"strategy.plugins.{self.option}.generator_replay", "distill",
                              "distils a diffusion model's noise predictions: use "
                              "generator=diffusion, or generator_replay=samples")
        self.generator = generator

    def check(self, scenario: Scenario) -> None:
        super().check(scenario)
        if self.generator is None:
            raise ConfigError("generator", None, "this strategy replays a generator's samples: "
                              f"choose one with {self.generator_choices}")

    def on_task_start(self, loop: TaskLoop, task: Task) -> None:
        self.prepare_replay(loop, task)
        self.train_generator(loop, task)

    def prepare_replay(self, loop: TaskLoop, task: Task) -> None:
        """Freeze the previous classifier and generator; make the replay buffer (if asked)."""
        self._clock = {"start": time.perf_counter(), "replay_generation": 0.0,
                       "generator_training": 0.0}
        super().on_task_start(loop, task)
        self.previous = self.generator.frozen_copy().to(loop.device) if self.teacher else None
        self.buffer, self._replayed, self._steps = None, None, 0
        if self.previous is not None and self.replay_buffer_per_class:
            started = time.perf_counter()
            self.buffer = GeneratedSamples.make(self.previous, self.seen_classes,
                                                self.replay_buffer_per_class)
            self._clock["replay_generation"] += time.perf_counter() - started

    def train_generator(self, loop: TaskLoop, task: Task, data: Split | None = None) -> None:
        """The generator learns `task` (or `data`: unit-space samples, natural labels) and
        rehearses the previous generator's samples."""
        self.generator.replay_from(self.previous, replay_weight(self.weighting,
                                                                self.task_number),
                                   self.seen_classes, self.buffer, self.distill_generator)
        started = time.perf_counter()
        loop.fit_generator(self.generator, task, data)
        self._clock["generator_training"] += time.perf_counter() - started

    def on_task_end(self, loop: TaskLoop, task: Task) -> None:
        """Where the task's time went: the generator's training, making replay (the buffer
        and every regeneration; on a GPU, the launch time unless the sampler syncs) and the
        classifier's training (the rest)."""
        total = time.perf_counter() - self._clock["start"]
        spent = {k: round(self._clock[k], 3) for k in ("generator_training", "replay_generation")}
        self.seconds.append({**spent, "classifier_training": round(total - sum(spent.values()), 3)})

    def timings(self) -> dict[str, Any]:
        return {"seconds_per_task": self.seconds}

    def sampler(self) -> Generator | None:
        return self.generator

    def draw_classes(self, n: int) -> Tensor | None:
        """Earlier natural classes, uniformly, for a conditional generator's replay."""
        if not self.previous.conditional:
            return None
        return draw_uniformly(self.seen_classes, n)

    def generate(self, module: ContinualModule, n: int) -> tuple[Tensor, Tensor | None]:
        """n fresh unit-space replay samples of the previous generator, and the natural
        classes they were drawn for (None: unconditional)."""
        classes = self.draw_classes(n)
        return self.previous.sample(n, classes), classes

    def replayed_unit(self, module: ContinualModule, n: int) -> tuple[Tensor, Tensor | None]:
        """This step's unit-space replay (and classes): from the buffer, or regenerated every
        `regenerate_every` steps."""
        if self.buffer is not None and self.buffer_feeds_classifier:
            return self.buffer.draw(n)
        if self._replayed is None or self._steps % self.regenerate_every == 0:
            started = time.perf_counter()
            self._replayed = self.generate(module, n)
            self._clock["replay_generation"] += time.perf_counter() - started
        self._steps += 1
        return self._replayed

    def replay_term(self, module: ContinualModule, x: Tensor, classes: Tensor | None) -> Tensor:
        """The classifier's loss on replayed inputs x: the previous classifier's targets."""
        with torch.no_grad():
            teacher = self.teacher(x)
        return replay_loss(module.net(x), teacher, self.groups, self.soft, self.temperature)

    def loss(self, module: ContinualModule, batch: Batch, logits: Tensor) -> Tensor | None:
        current = module.classification_loss(batch, logits)
        if self.previous is None:
            return current
        x_unit, classes = self.replayed_unit(module, self.replay_size(batch))
        x = self.pipeline.from_unit(x_unit, train=True)
        return self.weighted(current, self.replay_term(module, x, classes))

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.checkpoint_state(), "seconds": self.seconds}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.generator.load_checkpoint_state(state_dict["generator"])
        self.seconds = list(state_dict.get("seconds", []))


class ReplayThroughFeedback(_ReplayBase):
    """RtF: the classifier is the VAE (`generator=vae` gives the latent size and the decoder's
    hidden sizes); distillation replay from its frozen previous copy."""

    uses_generator = True

    def __init__(self, weighting: str = "task_ratio", targets: str = "soft",
                 temperature: float = 2.0, replay_batch_size: int | None = None) -> None:
        super().__init__(weighting, targets, temperature, replay_batch_size)
        self.template: VAE | None = None
        self.net: nn.Module | None = None
        self._features: Tensor | None = None

    method = "replay-through-feedback"  # in the one-line errors

    def attach_generator(self, generator: Generator) -> None:
        if not isinstance(generator, VAE) or generator.conditional:
            raise ConfigError("generator", type(generator).__name__,
                              f"{self.method} needs the fully connected, "
                              "unconditional VAE: generator=vae")
        self.template = generator

    def check(self, scenario: Scenario) -> None:
        super().check(scenario)
        if self.template is None:
            raise ConfigError("generator", None, f"{self.method} takes its latent "
                              "size and decoder from generator=vae; add generator=vae")

    def extend_model(self, module: ContinualModule, scenario: Scenario) -> None:
        """The decoder joins the classifier (one network, one optimizer, one checkpoint); a
        hook keeps the features of the classifier's own forward for the VAE loss."""
        net = module.net
        net.add_module("feedback", self.make_feedback(net.feature_size, scenario))
        self.net = net

        def keep_features(layer: nn.Module, inputs: Any, output: Tensor) -> None:
            # a function, not a bound method: frozen copies of the network share it rather
            # than deep-copying this plugin; they are told apart here
            if layer is self.net.backbone:
                self._features = output

        net.backbone.register_forward_hook(keep_features)

    def make_feedback(self, feature_size: int, scenario: Scenario) -> FeedbackVAE:
        return FeedbackVAE(feature_size, scenario.input_shape, self.template.hidden_sizes,
                           self.template.z_dim)

    def sampler(self) -> FeedbackVAE | None:
        return None if self.net is None else self.net.feedback

    def current_contexts(self, batch: Batch) -> Tensor | None:
        """What the decoder is conditioned on for the current batch (nothing in RtF)."""
        return None

    def draw_replay(self, n: int) -> tuple[Tensor, Tensor | None]:
        """n unit-space samples of the frozen previous network and their decoder contexts."""
        return self.teacher.feedback.sample(n), None

    def reconstruction_target(self, batch: Batch) -> Tensor:
        """What the decoder reconstructs for the current batch: its unit-space images."""
        return self.pipeline.to_unit(batch.raw) if batch.raw is not None else batch.x

    def replayed_logits(self, net: nn.Module, x_unit: Tensor) -> Tensor:
        """A network's outputs on replayed samples (the student's features are kept)."""
        return net(self.pipeline.from_unit(x_unit, train=True))

    def loss(self, module: ContinualModule, batch: Batch, logits: Tensor) -> Tensor:
        feedback = module.net.feedback
        features = self._features  # of batch.x, from the module's forward
        current = (module.classification_loss(batch, logits)
                   + feedback.loss(features, self.reconstruction_target(batch),
                                   self.current_contexts(batch)))
        if self.teacher is None:
            return current
        x_unit, contexts = self.draw_replay(self.replay_size(batch))
        with torch.no_grad():
            teacher = self.replayed_logits(self.teacher, x_unit)
        student = self.replayed_logits(module.net, x_unit)
        replayed = (replay_loss(student, teacher, self.groups, self.soft, self.temperature)
                    + feedback.loss(self._features, x_unit, contexts))
        return self.weighted(current, replayed)


class GeneratorSelfReplay(StrategyPlugin):
    """`objective=generative`'s generative replay: from task 2 on the generator trains on the
    task's data plus samples of its own frozen copy from the end of the previous task, with
    the loss w·L(current) + (1 − w)·L(replayed) (w = 1/t, or 1/2 with `weighting=equal`);
    a conditional generator replays the natural classes seen before. The frozen copy is the
    checkpointed generator itself, so nothing else needs saving."""

    objectives = ("generative",)

    def __init__(self, weighting: str = "task_ratio") -> None:
        super().__init__()
        check_choice("strategy.plugins.generative_replay.weighting", weighting, WEIGHTINGS)
        self.weighting = weighting

    def on_task_start(self, loop: TaskLoop, task: Task) -> None:
        generator: Generator = loop.module
        earlier = loop.scenario.tasks[: task.index]
        if not earlier:
            generator.replay_from(None, 1.0, None)
            return
        generator.replay_from(generator.frozen_copy().to(loop.device),
                              replay_weight(self.weighting, task.index + 1),
                              loop.scenario.natural_classes(earlier).to(loop.device))


class MultibandTraining(StrategyPlugin):
    """`strategy=multiband` (with `generator=multiband_vae`, `objective=generative`): tells the
    Multiband VAE which task starts and gives it the task's images (in unit space), from which
    its consolidation draws the images earlier bands may move to. The phases themselves (local
    VAE, then consolidation of the global decoder) are the generator's epochs."""

    objectives = ("generative",)
    uses_generator = True

    def __init__(self) -> None:
        super().__init__()
        self.band_moves: list[int] = []  # per task: replayed samples that moved to its data

    def attach_generator(self, generator: Generator) -> None:
        if not isinstance(generator, MultibandVAE):
            raise ConfigError("generator", type(generator).__name__,
                              "strategy=multiband trains generator=multiband_vae")

    def on_task_start(self, loop: TaskLoop, task: Task) -> None:
        data, pipeline = loop.generator_data(task)
        loop.module.begin_task(task.index, pipeline(data.x, train=False))

    def on_task_end(self, loop: TaskLoop, task: Task) -> None:
        self.band_moves.append(loop.module.band_moves)

    def results(self) -> dict[str, Any]:
        return {"multiband_band_moves": self.band_moves}

    def state_dict(self) -> dict[str, Any]:
        return {"band_moves": self.band_moves}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.band_moves = list(state_dict["band_moves"])


class LogCL(StrategyPlugin):
    """`strategy=logcl` (with `generator=vae`, `objective=generative`): logarithmic continual
    learning's population of generators on a binary counter (clrun/generators/population.py);
    `levels` levels hold up to 2^levels − 1 tasks. metrics.json gets the level retrained at
    each task (`logcl_retrained_level`)."""

    objectives = ("generative",)

    def __init__(self, levels: int = 4, width_growth: float = 2 ** 0.5,
                 fresh_init: bool = True) -> None:
        super().__init__()
        if levels < 1:
            raise ConfigError("strategy.plugins.logcl.levels", levels, "must be >= 1")
        if width_growth <= 0:
            raise ConfigError("strategy.plugins.logcl.width_growth", width_growth, "must be > 0")
        self.levels, self.width_growth, self.fresh_init = levels, width_growth, fresh_init
        self.retrained: list[int] = []

    def check(self, scenario: Scenario) -> None:
        super().check(scenario)
        if scenario.n_tasks > 2 ** self.levels - 1:
            needed = scenario.n_tasks.bit_length()
            raise ConfigError("strategy.plugins.logcl.levels", self.levels,
                              f"holds {2 ** self.levels - 1} tasks and the scenario has "
                              f"{scenario.n_tasks}; use {needed}")

    def wrap_learner(self, generator: Generator, make: Any) -> Generator:
        if not isinstance(generator, VAE) or generator.conditional:
            raise ConfigError("generator", type(generator).__name__,
                              "strategy=logcl grows generator=vae (unconditional) level by level")
        levels = [generator, *(make(hidden_sizes=[round(h * self.width_growth ** k)
                                                  for h in generator.hidden_sizes])
                               for k in range(1, self.levels))]
        return GeneratorPopulation(levels, self.fresh_init)

    def on_task_start(self, loop: TaskLoop, task: Task) -> None:
        self.retrained.append(loop.module.begin_task())

    def on_task_end(self, loop: TaskLoop, task: Task) -> None:
        loop.module.end_task()

    def results(self) -> dict[str, Any]:
        return {"logcl_retrained_level": self.retrained}

    def state_dict(self) -> dict[str, Any]:
        return {"retrained": self.retrained}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.retrained = list(state_dict["retrained"])
