"""BinPlay: codes from sample indices, the binary-latent autoencoder, and the strategy."""

from __future__ import annotations

import re
from functools import partial

import pytest
import pytorch_lightning as pl
import torch

from clrun.errors import ClrunError
from clrun.generators.binplay import BinaryAutoencoder, index_codes
from clrun.run import run
from clrun.scenarios.base import InputPipeline
from clrun.scenarios.batches import TensorBatches
from clrun.scenarios.digits import split_digits
from clrun.strategies.binplay import BinPlay
from tests.conftest import FAST, compose_cfg, interrupt_then_resume, read_metrics, run_clis
from tests.test_plugin_contract import make_loop
from tests.test_scenarios import write_mnist_like

ADAM = partial(torch.optim.Adam, lr=1e-3)
SMALL_AE = ("generator=binary_ae", "generator.architecture=fc", "generator.hidden_sizes=[64]",
            "generator.latent_size=32", "metrics.prd.runs=1")


def test_codes_are_distinct_deterministic_and_spread_over_all_bits():
    codes = index_codes(torch.arange(1 << 12), bits=12, prime=3)
    assert codes.shape == (4096, 12) and set(codes.unique().tolist()) == {-1.0, 1.0}
    assert len({tuple(c) for c in codes.tolist()}) == 4096  # every 12-bit code, once
    wide = index_codes(torch.arange(20000), bits=200, prime=3)
    assert len({tuple(c) for c in wide.tolist()}) == 20000
    assert torch.equal(wide[123:456], index_codes(torch.arange(123, 456), bits=200, prime=3))
    assert not torch.equal(wide[:100], index_codes(torch.arange(100), bits=200, prime=5))
    neighbours = (wide[1:] != wide[:-1]).float().sum(1)  # consecutive samples: far apart
    assert neighbours.mean() > 80 and neighbours.min() > 20


def fit_autoencoder(generator, task, epochs):
    images = task.train.x.float() / 16
    generator.begin_task(task.index, images, task.train.y)
    batches = TensorBatches(task.train, InputPipeline(scale=1 / 16), generator.batch_size,
                            shuffle=True, drop_last=False, seed=0)
    trainer = pl.Trainer(**generator.training_budget(len(batches)), logger=False,
                         enable_progress_bar=False, enable_checkpointing=False,
                         enable_model_summary=False)
    trainer.fit(generator, train_dataloaders=batches)
    return images


def test_every_code_decodes_back_to_the_image_it_was_given():
    pl.seed_everything(0, verbose=False)
    task = split_digits().tasks[0]
    generator = BinaryAutoencoder((1, 8, 8), 10, architecture="fc", hidden_sizes=(128,),
                                  latent_size=64, pretrain_epochs=4, decoder_epochs=80,
                                  code_warmup_epochs=1, optimizer=ADAM, batch_size=32)
    images = fit_autoencoder(generator, task, 84)
    assert sorted(generator.assignment.tolist()) == list(range(len(images)))  # a bijection
    decoded = generator.eval().decode(generator.task_indices(0, generator.assignment))
    nearest = torch.cdist(decoded.flatten(1), images.flatten(1)).argmin(1)
    assert (nearest == torch.arange(len(images))).float().mean() > 0.9
    assert torch.equal(generator.code_classes, generator.labels_by_code(task.train.y))
    by_class = generator.sample(20, torch.full((20,), int(task.train.y[0])))
    assert by_class.shape == (20, 1, 8, 8)


def test_the_classifier_trains_on_decoded_codes_of_every_task_equally():
    generator = BinaryAutoencoder((1, 8, 8), 10, architecture="fc", hidden_sizes=(64,),
                                  latent_size=32, pretrain_epochs=2, decoder_epochs=20,
                                  code_warmup_epochs=1, optimizer=ADAM, batch_size=32)
    plugin = BinPlay()
    plugin.attach_generator(generator)
    loop = make_loop([plugin], n_tasks=2, epochs=3)
    loop.run()
    first, second = loop.scenario.tasks
    data = plugin.train_data(loop, second, second.train)
    n = len(second.train)
    assert len(data) == 2 * n and data.x.dtype == second.train.x.dtype
    assert data.task.tolist() == [1] * n + [0] * n
    # the task's own codes keep the labels of their images; earlier codes get the previous
    # classifier's prediction among the earlier task's labels
    assert sorted(data.y[:n].tolist()) == sorted(second.train.y.tolist())
    assert set(data.y[n:].tolist()) == set(first.train.y.unique().tolist())
    assert generator.task_sizes == [len(first.train), n] and generator.tasks_learned == 2


@pytest.mark.slow
def test_binplay_remembers_earlier_classes_where_fine_tuning_forgets(tmp_path):
    """Slow (~27 s): the real clrun in a subprocess, importing torch."""
    common = ("scenario.n_tasks=2", "trainer.max_epochs=8", "logger=none")
    binplay, naive = run_clis(
        ("strategy=binplay", "generator=binary_ae", "generator.architecture=fc",
         "generator.pretrain_epochs=6", "generator.decoder_epochs=30", "metrics.prd.runs=1",
         *common, "hydra.run.dir=binplay"),
        ("strategy=naive", *common, "hydra.run.dir=naive"), cwd=tmp_path)
    assert binplay.returncode == 0, binplay.stderr[-3000:]
    assert naive.returncode == 0, naive.stderr[-3000:]
    ours, fine_tuned = read_metrics(tmp_path / "binplay"), read_metrics(tmp_path / "naive")
    assert ours["acc"] > fine_tuned["acc"] + 30, (ours["acc"], fine_tuned["acc"])
    assert ours["fid"] is not None and (tmp_path / "binplay" / "samples" / "task_1.png").exists()


@pytest.mark.slow
def test_binplay_interrupted_and_resumed_ends_with_the_same_metrics(tmp_path):
    """Slow (~8 s): trains networks end to end in-process."""
    args = ("strategy=binplay", *SMALL_AE, "generator.pretrain_epochs=2",
            "generator.decoder_epochs=2", "generator.code_warmup_epochs=1",
            "trainer.max_epochs=2", "metrics.sample_grids=false", "logger=none", "seed=3")
    run(compose_cfg(*args), tmp_path / "full")
    interrupt_then_resume(args, tmp_path / "cut")
    assert (tmp_path / "cut" / "metrics.json").read_text() == \
        (tmp_path / "full" / "metrics.json").read_text()


@pytest.mark.parametrize("args,needle", [
    (["strategy=binplay"], "strategy=binplay needs its autoencoder: add generator=binary_ae"),
    (["strategy=binplay", "generator=vae"], "strategy=binplay decodes the codes of "
     "generator=binary_ae"),
    (["strategy=dgr", *SMALL_AE], "is trained by strategy=binplay"),
    (["strategy=binplay", "generator=binary_ae"], "needs 28×28 or 32×32 images; this "
     "scenario's are (1, 8, 8) (use generator.architecture=fc)"),
    (["strategy=binplay", *SMALL_AE, "generator.code_prime=4"], "must be odd"),
])
def test_binplay_mistakes_fail_before_training(tmp_path, args, needle):
    with pytest.raises(ClrunError, match=re.escape(needle)):
        run(compose_cfg(*args, *FAST), tmp_path)


@pytest.mark.parametrize("experiment,folder", [("binplay_fmnist", "FashionMNIST"),
                                               ("binplay_mnist", "MNIST")])
def test_binplay_experiments_wiring_on_fake_data(tmp_path, experiment, folder):
    write_mnist_like(tmp_path / folder / "raw", gz=False, n_train=200, n_test=100)
    cfg = compose_cfg(f"experiment={experiment}", "row=binplay_binplay", f"data_dir={tmp_path}",
                      "trainer.max_epochs=-1", "trainer.max_steps=2", "logger=none",
                      "generator.width=2", "generator.latent_size=16",
                      "generator.pretrain_epochs=1", "generator.decoder_epochs=1",
                      "generator.code_warmup_epochs=0", "metrics.prd.runs=1",
                      "metrics.feature_net.steps=5", "metrics.sample_grids=false")
    assert cfg.scenario.setting == "class" and cfg.strategy.name == "binplay"
    assert cfg.generator.architecture == "conv" and cfg.generator.batch_size == 40
    if experiment == "binplay_mnist":
        assert cfg.model._target_.endswith("lenet_g") and cfg.optimizer.lr == 0.002
        assert cfg.train.batch_size == 120 and cfg.train.active_units == "all"
    else:
        assert cfg.model.hidden_sizes == [400, 400] and cfg.memory_size == 1000
        gem = compose_cfg(f"experiment={experiment}", "row=binplay_gem")
        assert gem.strategy.plugins.gem.memory_per_task == 200
    result = run(cfg, tmp_path / "run")
    assert len(result.matrix) == 5


def test_the_autoencoder_alone_is_the_learner_under_the_generative_objective(tmp_path):
    result = run(compose_cfg("objective=generative", "strategy=binplay", *SMALL_AE,
                             "generator.pretrain_epochs=2", "generator.decoder_epochs=3",
                             "generator.code_warmup_epochs=1", "scenario.n_tasks=2",
                             "metrics.sample_grids=false", "logger=none"), tmp_path)
    assert result.metrics is None and len(result.generative["fid"]) == 2
    assert all(v is not None for v in result.generative["fid"][-1])
