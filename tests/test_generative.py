"""Generative replay: generators, DGR / DGR+distill / RtF, and the generative metrics."""

from __future__ import annotations

import re
from functools import partial
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from clrun.errors import ClrunError
from clrun.generative_metrics.evaluation import GenerativeEvaluation
from clrun.generative_metrics.feature_net import FeatureNetSettings, feature_net
from clrun.generative_metrics.precision_recall import PRDSettings
from clrun.generative_metrics.scores import score_row
from clrun.generators.gan import WGANGP
from clrun.generators.vae import VAE, ConvVAE
from clrun.paths import default_data_dir
from clrun.run import run
from clrun.scenarios.base import InputPipeline
from clrun.scenarios.batches import TensorBatches
from clrun.scenarios.benchmarks import split
from clrun.scenarios.digits import split_digits
from clrun.strategies.generative import GenerativeReplay, replay_groups, replay_loss
from tests.conftest import FAST, compose_cfg, read_metrics, run_cli, run_clis
from tests.test_plugin_contract import make_loop

ADAM = partial(torch.optim.Adam, lr=1e-3)
FMNIST_DGR = ("scenario=split_fmnist", "trainer.max_epochs=-1", "trainer.max_steps=150",
              "train.batch_size=128", "train.active_units=seen", "train.reset_optimizer=false",
              "model.hidden_sizes=[200]", "logger=none")


def test_vae_learns_and_samples_in_unit_space():
    torch.manual_seed(0)
    vae = VAE((1, 8, 8), 10, hidden_sizes=(64,), z_dim=8, optimizer=ADAM)
    data = split_digits().tasks[0].train
    x = data.x.float() / 16
    optimizer = vae.configure_optimizers()
    before = float(vae.loss(x, None).detach())
    for _ in range(200):
        optimizer.zero_grad()
        vae.loss(x, None).backward()
        optimizer.step()
    assert float(vae.loss(x, None).detach()) < before - 0.05
    samples = vae.sample(16)
    assert samples.shape == (16, 1, 8, 8) and 0 <= samples.min() and samples.max() <= 1


def test_conditional_generators_sample_the_asked_classes_shape():
    for generator in (VAE((1, 8, 8), 10, conditional=True, optimizer=ADAM),
                      ConvVAE((1, 8, 8), 10, conditional=True, optimizer=ADAM),
                      WGANGP((1, 8, 8), 10, architecture="dcgan", conditional=True,
                             optimizer=ADAM)):
        out = generator.sample(6, torch.tensor([0, 1, 2, 3, 4, 5]))
        assert out.shape == (6, 1, 8, 8) and 0 <= out.min() and out.max() <= 1


def test_generators_refuse_inputs_they_do_not_fit():
    with pytest.raises(Exception, match="use generator=vae"):
        ConvVAE((1, 10, 10), 10, optimizer=ADAM)
    with pytest.raises(Exception, match="use generator.architecture=fc"):
        WGANGP((3, 30, 30), 10, architecture="dcgan", optimizer=ADAM)


def test_gan_counts_critic_steps_and_trains_both_networks():
    pl.seed_everything(0, verbose=False)
    gan = WGANGP((1, 8, 8), 10, critic_steps=2, optimizer=ADAM, max_steps=4, batch_size=16)
    assert gan.training_budget(10)["max_steps"] == 4 + 2  # Lightning counts both optimizers
    # (the critic's last bias cancels out of the Wasserstein loss: it never moves)
    weights = [p for p in (*gan.generator.parameters(), *gan.critic.parameters()) if p.dim() > 1]
    before = [p.detach().clone() for p in weights]
    data = split_digits().tasks[0].train
    batches = TensorBatches(data, InputPipeline(scale=1 / 16), 16, shuffle=True,
                            drop_last=True, seed=0)
    trainer = pl.Trainer(max_steps=6, logger=False, enable_progress_bar=False,
                         enable_checkpointing=False, enable_model_summary=False)
    trainer.fit(gan, train_dataloaders=batches)
    assert all(not torch.equal(a, b) for a, b in zip(weights, before, strict=True))


def _module_after(setting: str, n_tasks: int = 5):
    loop = make_loop([], setting=setting, n_tasks=n_tasks, epochs=1)
    loop.module.activate_units(torch.arange(10))
    return loop


@pytest.mark.parametrize("setting", ["task", "domain", "class"])
def test_replayed_targets_are_the_previous_solvers_predictions(setting):
    loop = _module_after(setting)
    previous = loop.scenario.tasks[:2]
    groups = replay_groups(loop.module, previous)
    assert len(groups) == (2 if setting == "task" else 1)
    torch.manual_seed(0)
    x = torch.rand(32, 1, 8, 8)
    teacher = torch.randn(32, sum(loop.module.net.head_sizes))
    student = loop.module.net(x)
    expected = []
    for student_units, teacher_units in groups:
        labels = teacher[:, teacher_units].argmax(1)  # the previous solver's prediction
        assert set(teacher_units.tolist()) <= set(student_units.tolist())
        position = torch.searchsorted(student_units, teacher_units)[labels]
        expected.append(F.cross_entropy(student[:, student_units], position))
    assert torch.allclose(replay_loss(student, teacher, groups, soft=False, temperature=2),
                          torch.stack(expected).mean())
    if setting == "class":  # old classes only: the teacher knew tasks 0 and 1
        assert groups[0][1].tolist() == [0, 1, 2, 3]


def test_distillation_uses_the_soft_targets():
    groups = [(torch.arange(4), torch.arange(4))]
    teacher = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    same = replay_loss(teacher.clone(), teacher, groups, soft=True, temperature=2.0)
    argmax_only = replay_loss(torch.tensor([[9.0, -9.0, -9.0, -9.0]]), teacher, groups,
                              soft=True, temperature=2.0)
    assert float(same) < 1e-6 < float(argmax_only)  # a soft target, not the argmax
    cfg = compose_cfg("strategy=dgr_distill", "generator=vae")
    assert cfg.strategy.plugins.dgr.targets == "soft" and cfg.strategy.name == "dgr_distill"


def test_rtf_is_one_network_trained_by_the_classifier(tmp_path):
    cfg = compose_cfg("strategy=rtf", "generator=vae", "scenario.n_tasks=2",
                      "model.hidden_sizes=[32]", "metrics.generative=false", *FAST)
    fits = []
    from clrun.loop import TaskLoop

    original = TaskLoop.fit_generator
    TaskLoop.fit_generator = lambda self, *a: fits.append(a) or original(self, *a)
    try:
        result = run(cfg, tmp_path)
    finally:
        TaskLoop.fit_generator = original
    assert fits == []  # no separate generator is trained
    state = torch.load(tmp_path / "checkpoints" / "checkpoint.pt", weights_only=True)
    decoder = [k for k in state["model"] if k.startswith("feedback.")]
    assert decoder and "feedback.mu.weight" in decoder  # the decoder is part of the network
    assert state["plugins"] == [{}] and len(result.matrix) == 2


@pytest.fixture(scope="module")
def fmnist():
    from tests.conftest import FMNIST_DIR

    if not (FMNIST_DIR / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("Debian's dataset-fashion-mnist is not installed (.ci/run installs it)")
    return split("Fashion-MNIST", "split_fmnist", str(default_data_dir()), seed=0)


class RealImages:
    """A 'generator' that returns real training images (of the asked classes)."""

    conditional = True

    def __init__(self, scenario):
        self.by_class = {}
        for task in scenario.tasks:
            for c in scenario.natural_of(task, task.train.y).unique().tolist():
                self.by_class[c] = task.train.x[scenario.natural_of(task, task.train.y) == c]
        self.pipeline = scenario.pipeline

    def sample(self, n, conditions=None):
        images = [self.by_class[int(c)][i] for i, c in enumerate(conditions)]
        return self.pipeline.to_unit(torch.stack(images))


def test_fid_precision_recall_separate_real_from_untrained_samples(fmnist):
    net = feature_net(fmnist, FeatureNetSettings(), default_data_dir())
    assert net.test_acc > 80
    prd = PRDSettings(runs=2)
    real = score_row(RealImages(fmnist), fmnist, 2, net, prd, torch.device("cpu"), 0)
    torch.manual_seed(0)
    untrained = VAE((1, 28, 28), 10, conditional=True, optimizer=ADAM)
    noise = score_row(untrained, fmnist, 2, net, prd, torch.device("cpu"), 0)
    assert real["fid"][2:] == [None, None, None]
    for j in (0, 1):
        assert real["fid"][j] < 0.1 * noise["fid"][j]  # real training images vs test images
        assert real["fid"][j] < 15
        for name in ("precision", "recall"):
            assert 0 <= noise[name][j] <= 1 and 0.8 <= real[name][j] <= 1
        assert noise["precision"][j] < 0.5


@pytest.mark.slow
def test_dgr_beats_fine_tuning_in_class_il_and_keeps_earlier_classes(tmp_path, fmnist):
    """Slow (~50 s): DGR and fine-tuning trained on the real Fashion-MNIST, in subprocesses."""
    # two pools: reading twenty pools of a half-trained generator's samples took most of the time
    dgr, naive = run_clis(("hydra.run.dir=dgr", "strategy=dgr", "generator=vae",
                           "generator.hidden_sizes=[200]", "metrics.prd.runs=1",
                           "metrics.max_pools=2", *FMNIST_DGR),
                          ("hydra.run.dir=naive", "strategy=naive", *FMNIST_DGR), cwd=tmp_path)
    assert dgr.returncode == 0, dgr.stderr[-3000:]
    assert naive.returncode == 0, naive.stderr[-3000:]
    ours, baseline = read_metrics(tmp_path / "dgr"), read_metrics(tmp_path / "naive")
    assert baseline["acc"] < 21 and ours["acc"] > baseline["acc"] + 15
    assert "FID" in dgr.stdout and "fid" not in baseline
    # after the last task the generator still draws task 0's classes: the feature net finds
    # enough of them to score (an unconditional generator's samples are routed by class)
    last = ours["generative"]
    assert all(v is not None for v in last["fid"][-1])
    assert all(r[j] is None for i, r in enumerate(last["fid"]) for j in range(i + 1, 5))
    assert all(0 <= v <= 1 for v in last["precision"][-1] + last["recall"][-1])
    for t in range(5):
        grid = tmp_path / "dgr" / "samples" / f"task_{t}.png"
        assert grid.read_bytes().startswith(b"\x89PNG")


@pytest.mark.slow
def test_a_generator_strategy_without_a_generator_is_one_line(tmp_path):
    """Slow (~10 s): the real clrun in a subprocess, importing torch."""
    out = run_cli("strategy=dgr", "hydra.run.dir=run", "logger=none", cwd=tmp_path)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1, out.stderr[-2000:]
    assert "choose one with generator=vae" in lines[0] and "conv_vae" in lines[0]


@pytest.mark.parametrize("args,needle", [
    (["strategy=rtf"], "add generator=vae"),
    (["strategy=rtf", "generator=gan"], "needs the fully connected, unconditional VAE"),
    (["strategy=ewc", "generator=vae"], "strategy=ewc uses no generator"),
    (["strategy=naive", "metrics.generative=true"], "the strategy has no generator to score"),
    (["strategy=dgr", "generator=gan", "generator.architecture=cnn"],
     "generator.architecture='cnn' is invalid"),
    (["strategy=dgr", "generator=vae", "metrics.generative=maybe"],
     "metrics.generative='maybe' is invalid"),
    (["strategy=dgr", "generator=vae", "metrics.max_pools=0"], "metrics.max_pools=0 is invalid"),
])
def test_generator_mistakes_fail_before_training(tmp_path, args, needle):
    with pytest.raises(ClrunError, match=re.escape(needle)):
        run(compose_cfg(*args, *FAST), tmp_path)
    assert not (tmp_path / "checkpoints").exists()


def test_dgr_checkpoint_holds_the_generator(tmp_path):
    cfg = compose_cfg("strategy=dgr", "generator=vae", "scenario.n_tasks=2",
                      "model.hidden_sizes=[32]", "generator.hidden_sizes=[32]",
                      "metrics.prd.runs=1", *FAST)
    result = run(cfg, tmp_path)
    state = torch.load(tmp_path / "checkpoints" / "checkpoint.pt", weights_only=True)
    weights = state["plugins"][0]["generator"]["weights"]
    assert "decoder.1.weight" in weights and state["generative"]["fid"][1][1] is not None
    assert result.generative["fid"] == state["generative"]["fid"]


def test_generator_replays_its_predecessor_with_the_task_weight():
    plugin = GenerativeReplay()
    generator = VAE((1, 8, 8), 10, hidden_sizes=(16,), z_dim=4, optimizer=ADAM)
    plugin.attach_generator(generator)
    loop = make_loop([plugin], n_tasks=5, epochs=1)
    seen = []
    loop.fit_generator = lambda g, task, data=None: seen.append(
        (task.index, g.replay and g.replay.weight_current, g.replay and g.replay.previous))
    loop.run()
    assert [s[0] for s in seen] == [0, 1, 2, 3, 4] and seen[0][1] is None
    assert seen[1][1] == pytest.approx(1 / 2) and seen[2][1] == pytest.approx(1 / 3)
    previous = seen[2][2]
    assert previous is not generator and not any(p.requires_grad for p in previous.parameters())
    assert previous.replay is None  # a frozen copy does not carry the chain of predecessors


def test_sampler_protocol_of_rtf_and_dgr():
    assert GenerativeReplay().sampler() is None
    plugin = GenerativeReplay()
    plugin.attach_generator(VAE((1, 8, 8), 10, optimizer=ADAM))
    assert plugin.sampler() is plugin.generator


def test_the_feature_net_is_seeded_and_leaves_the_run_random_stream_alone(tmp_path):
    """A run's results must not depend on whether the feature net was cached already."""
    scenario, settings = split_digits(), FeatureNetSettings(steps=5)
    torch.manual_seed(11)
    state = torch.random.get_rng_state()
    trained = feature_net(scenario, settings, tmp_path / "a")
    assert torch.equal(torch.random.get_rng_state(), state)
    cached = feature_net(scenario, settings, tmp_path / "a")
    assert torch.equal(torch.random.get_rng_state(), state)
    torch.manual_seed(12)  # another run's stream trains the same net
    again = feature_net(scenario, settings, tmp_path / "b")
    for net in (cached, again):
        assert same_weights(trained.net, net.net)


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(),
                                                 b.state_dict().values(), strict=True))


def test_one_data_set_trains_one_feature_net_whatever_the_split(tmp_path):
    """Runs of a sweep with other seeds (class orders) or settings must score in one space,
    also when two of them train the feature net at the same time."""
    settings = FeatureNetSettings(steps=5)
    nets = [feature_net(split_digits(setting=setting, class_order=order, seed=seed), settings,
                        tmp_path / name).net
            for name, setting, order, seed in [("a", "class", "fixed", 0),
                                               ("b", "class", "permuted", 3),
                                               ("c", "task", "permuted", 4)]]
    for net in nets[1:]:
        assert same_weights(nets[0], net)


@pytest.mark.parametrize("setting", ["task", "class"])
def test_grid_captions_the_classifiers_answer_as_the_rows_natural_class(setting):
    """Rows are natural classes; with a permuted class order the classifier's own labels are
    not, so a right answer must be captioned with its row's class."""
    scenario = split_digits(setting=setting, class_order="permuted", seed=3)
    evaluation = GenerativeEvaluation(sampler=lambda: None, feature_net=None, prd=None,
                                      samples_dir=None, seed=0)
    images = torch.rand(4, 1, 8, 8)
    renamed = 0
    for task in scenario.tasks:
        for label in task.train.y.unique().tolist():
            answer = F.one_hot(torch.full((len(images),), label), 10).float()
            loop = SimpleNamespace(classifies=True, scenario=scenario,
                                   module=SimpleNamespace(scores=lambda x, t, a=answer: a))
            labeller, whose = evaluation.labeller(loop)
            captions = labeller(images, torch.full((len(images),), task.index))
            row_class = int(scenario.natural_of(task, torch.tensor([label])))
            assert whose == "the classifier's" and captions.tolist() == [row_class] * 4
            renamed += row_class != label
    assert renamed  # the permuted order renames classes: the check above can fail
