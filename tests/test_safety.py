"""A config file is data: it cannot make clrun (or Hydra) run code the user did not choose."""

from __future__ import annotations

from pathlib import Path

import pytest

from clrun.instantiate import refusal
from tests.conftest import run_cli

DANGEROUS = [
    "os.system", "builtins.eval", "builtins.exec", "subprocess.run", "importlib.import_module",
    "torch.hub.load", "torch.load", "torch.jit.load", "torch.compile", "torch.ops.load_library",
    "torch.utils.cpp_extension.load_inline", "torch.package.PackageImporter",
    "torch.serialization.load", "torchvision.datasets.MNIST", "torchvision.io.read_file",
    "pytorch_lightning.Trainer", "pytorch_lightning.cli.LightningCLI",
    "clrun.results.write_atomic", "clrun.checkpoint.load_checkpoint", "clrun.run.run",
    "hydra.utils.call", "omegaconf.OmegaConf.save",
]
BUILT_BY_CLRUN = [
    "torch.optim.Adam", "torch.nn.Linear", "torch.optim.lr_scheduler.StepLR",
    "pytorch_lightning.loggers.TensorBoardLogger", "clrun.loggers.CSVLogger",
    "clrun.loggers.wandb_logger", "clrun.models.net.mlp", "clrun.scenarios.benchmarks.split",
    "clrun.strategies.regularization.EWC", "pytorch_lightning.strategies.DDPStrategy",
]


@pytest.mark.parametrize("target", DANGEROUS)
def test_dangerous_targets_are_refused(target):
    assert refusal(target) is not None


@pytest.mark.parametrize("target", BUILT_BY_CLRUN)
def test_what_clrun_builds_is_allowed(target):
    assert refusal(target) is None


def test_a_users_package_is_allowed_only_by_the_environment(monkeypatch):
    assert refusal("mylab.shrink.Shrink") is not None
    monkeypatch.setenv("CLRUN_ALLOWED_TARGETS", "mylab")
    assert refusal("mylab.shrink.Shrink") is None and refusal("mylabx.X") is not None


EXPERIMENTS = {
    "hub": "model:\n  _target_: torch.hub.load\n  repo_or_dir: {dir}\n  model: x\n"
           "  source: local\n",
    "callback": "hydra:\n  callbacks:\n    boom:\n      _target_: os.system\n"
                "      command: touch {dir}/PWNED\n",
    "env": "hydra:\n  job:\n    env_set:\n      CLRUN_ALLOWED_TARGETS: os\n",
    "logging": "hydra:\n  job_logging:\n    handlers:\n      console:\n"
               "        class: subprocess.Popen\n        args: touch {dir}/PWNED\n",
    "setup": "defaults:\n  - override /hydra/launcher: slurm\nhydra:\n  launcher:\n"
             "    setup: ['touch {dir}/PWNED']\n",
}
NEEDLES = {
    "hub": "model._target_='torch.hub.load' is invalid: config files may build only",
    "callback": "hydra.callbacks.boom._target_='os.system' is invalid",
    "env": "hydra.job.env_set.CLRUN_ALLOWED_TARGETS='os' is invalid",
    "logging": "hydra.job_logging.handlers.console.class='subprocess.Popen' is invalid",
    "setup": "hydra.launcher.setup=",
}


@pytest.fixture
def downloaded(tmp_path: Path) -> Path:
    """A folder of experiment files as someone else wrote them, and a hubconf that leaves a
    mark if it ever runs."""
    folder = tmp_path / "downloaded"
    (folder / "experiment").mkdir(parents=True)
    (folder / "hubconf.py").write_text(f"open({str(tmp_path / 'PWNED')!r}, 'w').close()\n"
                                       "def x():\n    return None\n")
    for name, body in EXPERIMENTS.items():
        (folder / "experiment" / f"{name}.yaml").write_text(
            "# @package _global_\n" + body.format(dir=tmp_path))
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_experiment_files_cannot_run_code(tmp_path, downloaded, name):
    """Slow (~13 s): the real clrun in a subprocess, importing torch."""
    search = f"hydra.searchpath=[file://{downloaded}]"
    for mode in ([], ["-m"]):
        out = run_cli(*mode, search, f"experiment={name}", "logger=none", "hydra.run.dir=run",
                      "hydra.sweep.dir=sweep", cwd=tmp_path)
        lines = out.stderr.strip().splitlines()
        assert out.returncode == 2 and len(lines) == 1 and NEEDLES[name] in lines[0], out.stderr
        assert not (tmp_path / "PWNED").exists()
        assert not (tmp_path / "run").exists() and not (tmp_path / "sweep").exists()


@pytest.mark.slow
def test_a_swept_experiment_is_checked_too(tmp_path, downloaded):
    """Slow (~10 s): the real clrun in a subprocess, importing torch."""
    out = run_cli("-m", f"hydra.searchpath=[file://{downloaded}]", "experiment=replay_fmnist,hub",
                  "hydra.sweep.dir=sweep", cwd=tmp_path)
    assert out.returncode == 2 and NEEDLES["hub"] in out.stderr
    assert not (tmp_path / "sweep").exists()


@pytest.mark.slow
def test_typed_on_the_command_line_is_the_users_choice(tmp_path):
    """Slow (~11 s): the real clrun in a subprocess, importing torch."""
    out = run_cli("+hydra.job.env_set.MY_FLAG=1", "hydra.run.dir=run", "trainer.max_epochs=1",
                  "logger=none", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
