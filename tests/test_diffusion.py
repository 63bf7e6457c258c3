"""generator=diffusion, diffusion DGR (samples | distill), GUIDE and feature replay."""

from __future__ import annotations

import json
import re
from functools import partial

import pytest
import torch
import torch.nn.functional as F

from clrun.errors import ClrunError, ConfigError
from clrun.generative_metrics.feature_net import FeatureNetSettings, feature_net
from clrun.generative_metrics.precision_recall import PRDSettings
from clrun.generative_metrics.scores import predicted_classes, score_row
from clrun.generators.diffusion import DiffusionGenerator
from clrun.run import run
from clrun.scenarios.digits import split_digits
from clrun.strategies.feature_replay import FeatureReplay
from clrun.strategies.generative import GenerativeReplay
from clrun.strategies.guide import padded_rows
from tests.conftest import (
    FAST,
    TINY_DIFFUSION,
    compose_cfg,
    interrupt_then_resume,
    read_metrics,
    run_cli,
)

ADAM = partial(torch.optim.Adam, lr=2e-3)
TINY = TINY_DIFFUSION
THREE_TASKS = ("scenario.n_tasks=3", "scenario.first_task_classes=4")
SMALL_MLP = "model.hidden_sizes=[32]"


def tiny_generator(**kwargs) -> DiffusionGenerator:
    torch.manual_seed(0)
    settings = dict(block_channels=(8, 16), train_steps=100, sample_steps=4, ema_decay=0.0,
                    optimizer=ADAM)
    return DiffusionGenerator((1, 8, 8), 10, **{**settings, **kwargs})


def test_ddim_sampling_is_deterministic_for_a_seed():
    generator = tiny_generator()
    classes = torch.tensor([0, 1, 2, 3])
    first = generator.sample(4, classes, seed=5)
    assert first.shape == (4, 1, 8, 8) and 0 <= first.min() and first.max() <= 1
    assert torch.equal(first, generator.sample(4, classes, seed=5))
    assert not torch.equal(first, generator.sample(4, classes, seed=6))


def test_images_are_padded_to_the_unet_and_cropped_back():
    generator = DiffusionGenerator((1, 28, 28), 10, block_channels=(8, 8, 8, 8), optimizer=ADAM)
    assert generator.image_size == 32
    x = torch.rand(3, 1, 28, 28)
    model = generator.to_model(x)
    assert model.shape == (3, 1, 32, 32) and model[..., 0, :].eq(-1).all()  # black border
    assert torch.allclose(generator.to_unit(model), x)
    assert generator.sample(2, torch.tensor([3, 4])).shape == (2, 1, 28, 28)
    resized = DiffusionGenerator((1, 28, 28), 10, block_channels=(8, 16), image_size=16,
                                 fit="resize", optimizer=ADAM)
    assert resized.to_model(x).shape == (3, 1, 16, 16)
    assert resized.sample(2, torch.tensor([3, 4])).shape == (2, 1, 28, 28)


@pytest.mark.parametrize("kwargs,needle", [
    (dict(block_channels=(8, 16, 16), image_size=30), "generator.image_size=30 is invalid: "
                                                       "must divide by 4"),
    (dict(block_channels=(8, 16), image_size=4), "is smaller than the 8×8 input"),
    (dict(block_channels=(8, 12)), "must divide by generator.norm_groups=8"),
    (dict(sample_steps=200, train_steps=100), "cannot exceed generator.train_steps=100"),
])
def test_a_unet_that_does_not_fit_is_refused_naming_the_option(kwargs, needle):
    with pytest.raises(ConfigError, match=re.escape(needle)):
        DiffusionGenerator((1, 8, 8), 10, optimizer=ADAM, **kwargs)


def linear_classifier() -> torch.nn.Module:
    torch.manual_seed(1)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 4))


def new_class_mass(net: torch.nn.Module, x: torch.Tensor) -> float:
    """Mean probability of classes 2 and 3 (the 'current task') among 4 seen classes."""
    with torch.no_grad():
        return float(net(x).softmax(dim=1)[:, 2:].sum(dim=1).mean())


def test_guidance_at_scale_zero_is_unguided_and_a_positive_scale_moves_towards_new_classes():
    generator = tiny_generator()
    net = linear_classifier()

    def toward_current_task(x_unit, classes):
        return F.log_softmax(net(x_unit), dim=1)[:, 2:].max(dim=1).values

    def counted(x_unit, classes):
        calls.append(len(x_unit))
        return toward_current_task(x_unit, classes)

    calls = []
    classes = torch.tensor([0, 1] * 16)
    unguided = generator.sample(32, classes, seed=3)
    zero = generator.sample(32, classes, seed=3, guidance=counted, scale=0.0)
    assert torch.equal(unguided, zero)
    assert calls == []  # s = 0 (GUIDE's unguided baseline) never pays for the gradient
    # an untrained denoiser's x̂₀ is mostly clipped, which passes little gradient: a large s
    guided = generator.sample(32, classes, seed=3, guidance=counted, scale=30.0)
    assert calls and not torch.equal(guided, unguided)
    assert new_class_mass(net, guided) > new_class_mass(net, unguided) + 0.05
    per_sample = torch.full((32,), 30.0)  # scale drawn per sample: the same path
    assert torch.allclose(generator.sample(32, classes, seed=3, guidance=toward_current_task,
                                           scale=per_sample), guided)


def test_guided_grids_fill_their_last_row_with_blanks():
    images = padded_rows(torch.ones(13, 1, 2, 2), 8)
    assert images.shape == (16, 1, 2, 2) and images[13:].eq(0).all() and images[:13].eq(1).all()


def test_generative_distillation_is_zero_when_student_equals_teacher():
    student = tiny_generator()
    teacher = student.frozen_copy()
    x, classes = torch.rand(16, 1, 8, 8), torch.randint(10, (16,))
    with torch.no_grad():
        assert float(student.distillation_loss(teacher, x, classes)) == 0.0
    optimizer = torch.optim.SGD(student.parameters(), lr=0.1)
    student.loss(x, classes).backward()
    optimizer.step()
    assert float(student.distillation_loss(teacher, x, classes).detach()) > 0
    weighted = DiffusionGenerator((1, 8, 8), 10, block_channels=(8, 16), train_steps=100,
                                  distillation_weight=3.0, optimizer=ADAM)
    weighted.load_state_dict(student.state_dict())
    torch.manual_seed(4)
    once = student.distillation_loss(teacher, x, classes)
    torch.manual_seed(4)
    assert torch.allclose(weighted.distillation_loss(teacher, x, classes), 3 * once)


def test_a_frozen_copy_keeps_only_the_weight_average_it_samples_with():
    generator = tiny_generator(ema_decay=0.5)  # the average differs from the raw weights
    optimizer = generator.kept_optimizer.get(generator)  # Adam, with state, as a fit leaves it
    classes = torch.randint(10, (8,))
    generator.loss(torch.rand(8, 1, 8, 8), classes).backward()
    optimizer.step()
    generator.ema.update(generator.denoiser)
    twin = generator.frozen_copy()
    weights = sum(p.numel() for p in generator.ema.average.parameters())
    assert sum(p.numel() for p in generator.parameters()) == 2 * weights
    assert sum(p.numel() for p in twin.parameters()) == weights  # no raw weights
    assert twin.denoiser is twin.ema.average and twin.kept_optimizer is None  # no Adam state
    assert generator.kept_optimizer.optimizer is optimizer and optimizer.state  # untouched
    assert torch.equal(twin.sample(8, classes, seed=1), generator.sample(8, classes, seed=1))


@pytest.mark.parametrize("width", [32, 33])  # an odd width: the step embedding is padded
def test_vectors_get_an_mlp_denoiser(width):
    generator = DiffusionGenerator((40,), 10, vector_hidden_sizes=(width,), train_steps=100,
                                   sample_steps=4, optimizer=ADAM)
    loss = generator.loss(torch.rand(8, 40), torch.randint(10, (8,)))
    loss.backward()
    assert generator.sample(5, torch.arange(5)).shape == (5, 40)


@pytest.mark.slow
def test_a_diffusion_model_learns_a_task(tmp_path):
    """Slow (~35 s): trains a small conditional UNet on the digits of task 0 (real data), then
    scores its samples with the digits feature net. At 600 steps FID is ~4 % of the untrained
    model's and each class is read as itself 42-48 % of the time (measured 2026-12-05)."""
    scenario = split_digits(setting="class")
    net = feature_net(scenario, FeatureNetSettings(steps=600), tmp_path)
    task = scenario.tasks[0]
    x = scenario.pipeline.to_unit(task.train.x)
    y = scenario.natural_of(task, task.train.y)
    torch.manual_seed(0)
    generator = DiffusionGenerator((1, 8, 8), 10, block_channels=(16, 32), train_steps=200,
                                   sample_steps=20, ema_decay=0.99, optimizer=ADAM)
    untrained = score_row(generator, scenario, 1, net, PRDSettings(runs=1), torch.device("cpu"),
                          0)["fid"][0]
    optimizer = generator.configure_optimizers()
    for _ in range(600):
        pick = torch.randint(len(x), (64,))
        optimizer.zero_grad()
        generator.loss(x[pick], y[pick]).backward()
        optimizer.step()
        generator.ema.update(generator.denoiser)
    trained = score_row(generator, scenario, 1, net, PRDSettings(runs=1), torch.device("cpu"),
                        0)["fid"][0]
    assert trained < 0.3 * untrained, (trained, untrained)
    for c in y.unique().tolist():  # the feature net reads 10 classes: chance is 0.1
        read = predicted_classes(net, generator.sample(50, torch.full((50,), c)))
        assert float((read == c).float().mean()) > 0.3


def test_dgr_with_diffusion_in_both_generator_replay_modes(tmp_path):
    for mode, replay in (("samples", "regenerate_every=4"),
                         ("distill", "replay_buffer_per_class=8")):
        cfg = compose_cfg("strategy=dgr", *TINY, *FAST, SMALL_MLP, *THREE_TASKS,
                          f"strategy.plugins.dgr.{replay}",
                          f"strategy.plugins.dgr.generator_replay={mode}")
        result = run(cfg, tmp_path / mode)
        assert len(result.matrix) == 3 and result.generative["fid"][2][0] is not None
        assert (tmp_path / mode / "samples" / "task_2.png").is_file()
        split = json.loads((tmp_path / mode / "timing.json").read_text())["seconds_per_task"]
        assert len(split) == 3 and split[0]["replay_generation"] == 0
        assert all(s["replay_generation"] > 0 and s["generator_training"] > 0 for s in split[1:])


@pytest.mark.slow
@pytest.mark.parametrize("args", [
    ("strategy=dgr", *TINY, SMALL_MLP, "strategy.plugins.dgr.generator_replay=distill",
     "strategy.plugins.dgr.replay_buffer_per_class=8"),
    ("strategy=feature_replay", *TINY[:5], "model.hidden_sizes=[48,32]",
     "strategy.plugins.feature_replay.layer=3"),
], ids=["dgr_distill_buffer", "feature_replay"])
def test_diffusion_replay_interrupted_and_resumed_ends_with_the_same_metrics(tmp_path, args):
    """Stopped as the last task starts and resumed: the frozen previous diffusion model, its
    replay buffer (or the frozen lower layers) are rebuilt from the checkpoint exactly.
    Slow (3–17 s): a run and an interrupted, resumed one of three tasks in-process."""
    args = (*args, *FAST, *THREE_TASKS, "seed=3")
    run(compose_cfg(*args), tmp_path / "full")
    interrupt_then_resume(args, tmp_path / "cut", task=2)
    assert (tmp_path / "cut" / "metrics.json").read_text() == \
        (tmp_path / "full" / "metrics.json").read_text()


def test_replay_is_regenerated_every_k_steps_or_drawn_from_the_buffer(monkeypatch, tmp_path):
    steps, generated, sampled = [], [], []
    replayed_unit, generate = GenerativeReplay.replayed_unit, GenerativeReplay.generate
    sample = DiffusionGenerator.sample
    monkeypatch.setattr(GenerativeReplay, "replayed_unit",
                        lambda self, *a: steps.append(1) or replayed_unit(self, *a))
    monkeypatch.setattr(GenerativeReplay, "generate",
                        lambda self, *a: generated.append(1) or generate(self, *a))
    monkeypatch.setattr(DiffusionGenerator, "sample",
                        lambda self, n, *a, **k: sampled.append(n) or sample(self, n, *a, **k))
    overrides = ("strategy=dgr", *TINY, *FAST, SMALL_MLP, "scenario.n_tasks=2",
                 "metrics.generative=false")
    run(compose_cfg(*overrides, "strategy.plugins.dgr.regenerate_every=5"), tmp_path / "k")
    assert len(steps) > 10 and len(generated) == -(-len(steps) // 5)
    steps.clear(), generated.clear(), sampled.clear()
    run(compose_cfg(*overrides, "strategy.plugins.dgr.replay_buffer_per_class=7"), tmp_path / "b")
    assert steps and not generated and sampled == [7 * 5]  # one buffer: 7 per earlier class


def test_guide_runs_probes_and_draws_guided_beside_unguided(tmp_path):
    cfg = compose_cfg("strategy=guide", *TINY, *FAST, SMALL_MLP, *THREE_TASKS,
                      "strategy.plugins.guide.regenerate_every=8",
                      "strategy.plugins.guide.probe_samples=12", "strategy.plugins.guide.scale=1.0")
    result = run(cfg, tmp_path)
    metrics = read_metrics(tmp_path)
    guided = metrics["guide_new_class_probability_guided"]
    unguided = metrics["guide_new_class_probability_unguided"]
    assert guided[0] is None and all(0 <= p <= 1 for p in guided[1:] + unguided[1:])
    assert len(result.matrix) == 3
    assert (tmp_path / "samples" / "guided_task_2.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize("args,needle", [
    (["strategy=guide", "generator=vae"], "strategy=guide steers a diffusion model's sampling: "
                                          "use generator=diffusion"),
    (["strategy=guide", *TINY, "generator.conditional=false"], "generator.conditional=False"),
    (["strategy=guide", *TINY, "scenario.setting=task"], "supports only class"),
    (["strategy=dgr", "generator=vae", "strategy.plugins.dgr.generator_replay=distill"],
     "distils a diffusion model's noise predictions"),
    (["strategy=dgr", *TINY, "strategy.plugins.dgr.regenerate_every=0"],
     "strategy.plugins.dgr.regenerate_every=0 is invalid"),
    (["strategy=dgr", *TINY, "generator.image_size=6"], "generator.image_size=6 is invalid"),
    (["strategy=dgr", *TINY, "strategy.plugins.dgr.regenerate_every=5",
      "strategy.plugins.dgr.replay_buffer_per_class=10"],
     "the classifier's replay comes from the buffer: leave it at 1"),
    (["strategy=guide"], "choose one with generator=diffusion"),
    (["strategy=feature_replay", "generator=vae", "strategy.plugins.feature_replay.layer=9"],
     "strategy.plugins.feature_replay.layer=9 is invalid: must cut the model's sequential "
     "backbone inside it: 1..3"),
    (["strategy=feature_replay", "generator=vae", "model=convnet",
      "strategy.plugins.feature_replay.layer=3"], "replay of features models vectors"),
    (["strategy=feature_replay", "generator=vae",
      "strategy.plugins.feature_replay.lower_from=nowhere"],
     "strategy.plugins.feature_replay.lower_from='nowhere' is invalid"),
    (["strategy=dgr", *TINY, "metrics.samples_per_task=0"], "metrics.samples_per_task=0"),
])
def test_diffusion_mistakes_fail_before_training(tmp_path, args, needle):
    with pytest.raises(ClrunError, match=re.escape(needle)):
        model = [] if any(a.startswith("model=") for a in args) else [SMALL_MLP]
        run(compose_cfg(*args, *FAST, *model), tmp_path)
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.slow
def test_guide_without_a_diffusion_generator_is_one_line_exit_2(tmp_path):
    """Slow (~10 s): the real clrun in a subprocess, importing torch."""
    out = run_cli("strategy=guide", "generator=vae", "hydra.run.dir=run", "logger=none",
                  cwd=tmp_path)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1, out.stderr[-2000:]
    assert "use generator=diffusion" in lines[0] and "Traceback" not in out.stderr


def test_feature_replay_freezes_the_lower_layers_and_replays_their_shape(monkeypatch, tmp_path):
    lower_states, replay_shapes = [], []
    end, replayed = FeatureReplay.on_task_end, FeatureReplay.replayed_unit

    def record_end(self, loop, task):
        end(self, loop, task)
        lower_states.append({k: v.clone() for k, v in self.lower.state_dict().items()})

    def record_replay(self, module, n):
        x, classes = replayed(self, module, n)
        replay_shapes.append(tuple(x.shape))
        return x, classes

    monkeypatch.setattr(FeatureReplay, "on_task_end", record_end)
    monkeypatch.setattr(FeatureReplay, "replayed_unit", record_replay)
    for generator in (["generator=vae", "generator.hidden_sizes=[32]"], [*TINY[:5]]):
        lower_states.clear()
        replay_shapes.clear()
        cfg = compose_cfg("strategy=feature_replay", *generator, *FAST, *THREE_TASKS,
                          "model.hidden_sizes=[48,32]", "strategy.plugins.feature_replay.layer=3")
        result = run(cfg, tmp_path / generator[0])
        assert len(result.matrix) == 3 and result.generative is None  # activations: no FID
        assert len(lower_states) == 3
        for later in lower_states[1:]:
            assert all(torch.equal(later[k], lower_states[0][k]) for k in later)
        assert replay_shapes and {shape[1:] for shape in replay_shapes} == {(48,)}


def test_feature_replay_loads_the_lower_layers_from_another_run(tmp_path):
    first = compose_cfg("strategy=naive", *FAST, "scenario.n_tasks=2", "model.hidden_sizes=[32]")
    run(first, tmp_path / "pretrained")
    pretrained = torch.load(tmp_path / "pretrained" / "checkpoints" / "checkpoint.pt",
                            weights_only=True)["model"]
    cfg = compose_cfg("strategy=feature_replay", "generator=vae", "generator.hidden_sizes=[32]",
                      *FAST, "scenario.n_tasks=2", "model.hidden_sizes=[32]",
                      f"strategy.plugins.feature_replay.lower_from={tmp_path / 'pretrained'}")
    run(cfg, tmp_path / "feature")
    after = torch.load(tmp_path / "feature" / "checkpoints" / "checkpoint.pt",
                       weights_only=True)["model"]
    assert torch.equal(after["backbone.1.weight"], pretrained["backbone.1.weight"])
    assert not torch.equal(after["heads.0.weight"], pretrained["heads.0.weight"])


@pytest.mark.slow
def test_guide_cifar10_runs_end_to_end_on_cifar_files_in_the_real_format(tmp_path):
    """GUIDE's CIFAR-10/5 experiment as composed (the paper's settings), then shrunk to a tiny
    UNet and ResNet and run on fake CIFAR-10 pickles: the wiring a GPU user relies on. Its five
    test images per task are fewer than the 20 PRD clusters: FID only, not a crash after
    training. Slow (~6 s): two tasks end to end in-process."""
    from tests.test_scenarios import write_cifar

    for row, scale in (("gcifar_guide", 0.5), ("gcifar_dgr_diffusion", 0.0)):
        paper = compose_cfg("experiment=guide_cifar10", f"row={row}")
        guide = paper.strategy.plugins.guide
        assert (guide.scale, guide.regenerate_every, guide.replay_buffer_per_class) == (
            scale, 5, 5000)
    assert list(paper.generator.block_channels) == [128, 256, 256, 256]
    assert (paper.generator.sample_steps, paper.model.nf, paper.optimizer.lr) == (50, 64, 0.1)
    write_cifar(tmp_path, 10, n_train=20, n_test=10)
    cfg = compose_cfg("experiment=guide_cifar10", "row=gcifar_guide", f"data_dir={tmp_path}",
                      "scenario.n_tasks=2", "model.nf=4", "generator.block_channels=[8,16]",
                      "generator.layers_per_block=1", "generator.attention_resolutions=[16]",
                      "generator.norm_groups=4", "generator.max_steps=2",
                      "generator.batch_size=8", "generator.sample_steps=2",
                      "trainer.max_steps=4", "train.batch_size=8", "logger=none",
                      "strategy.plugins.guide.replay_buffer_per_class=4",
                      "strategy.plugins.guide.probe_samples=8", "metrics.samples_per_task=20",
                      "metrics.feature_net.steps=20")
    result = run(cfg, tmp_path / "run")
    assert len(result.matrix) == 2 and result.config["paper"] == "guide_cifar10"
    assert all(v is not None for v in result.generative["fid"][-1])
    assert result.generative["precision"][-1] == [None, None]
    assert "guide_new_class_probability_guided" in result.extra
    assert (tmp_path / "run" / "samples" / "guided_task_1.png").exists()
