"""The real `clrun` command in a subprocess: outputs, determinism, bad input, real data."""

from __future__ import annotations

import json

import pytest

from tests.conftest import FAST, read_metrics, run_cli


def test_default_run_prints_the_matrix_and_writes_metrics(tmp_path):
    out = run_cli("hydra.run.dir=run", *FAST, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "Accuracy matrix" in out.stdout and "ACC" in out.stdout and "BWT" in out.stdout
    metrics = read_metrics(tmp_path / "run")
    for key in ("acc", "bwt", "fwt", "forgetting", "accuracy_matrix", "per_task_acc", "config"):
        assert key in metrics
    assert len(metrics["accuracy_matrix"]) == 5 and len(metrics["accuracy_matrix"][0]) == 5
    assert metrics["config"]["choices"]["strategy"] == "naive"
    csv_lines = (tmp_path / "run" / "accuracy_matrix.csv").read_text().splitlines()
    assert csv_lines[0].startswith("after_stage,task_0") and len(csv_lines) == 6


def test_joint_training_clearly_beats_fine_tuning_in_class_il(tmp_path):
    naive = run_cli("hydra.run.dir=naive", "strategy=naive", "scenario.setting=class",
                    "logger=none", cwd=tmp_path)
    joint = run_cli("hydra.run.dir=joint", "strategy=joint", "scenario.setting=class",
                    "logger=none", cwd=tmp_path)
    assert naive.returncode == 0 and joint.returncode == 0
    naive_acc = read_metrics(tmp_path / "naive")["acc"]
    joint_acc = read_metrics(tmp_path / "joint")["acc"]
    assert naive_acc < 30 and joint_acc > 85


def test_same_seed_gives_identical_metrics(tmp_path):
    for name in ("a", "b"):
        out = run_cli(f"hydra.run.dir={name}", "seed=7", "strategy=ewc", *FAST, cwd=tmp_path)
        assert out.returncode == 0, out.stderr
    a = (tmp_path / "a" / "metrics.json").read_text()
    b = (tmp_path / "b" / "metrics.json").read_text()
    assert a == b
    other = run_cli("hydra.run.dir=c", "seed=8", "strategy=ewc", *FAST, cwd=tmp_path)
    assert other.returncode == 0
    assert json.loads(a)["accuracy_matrix"] != read_metrics(tmp_path / "c")["accuracy_matrix"]


@pytest.mark.parametrize("override,needle", [
    ("scenario.setting=foo", "scenario.setting='foo' is invalid: use one of: task, domain, class"),
    ("optimizer.lr=-0.1", "optimizer.lr=-0.1 is invalid"),
    ("trainer.max_epochs=0", "trainer.max_epochs=0 is invalid"),
    ("scenario.n_tasks=3", "scenario.n_tasks=3 is invalid: 10 classes do not divide evenly"),
    ("train.batch_size=0", "train.batch_size=0 is invalid"),
    ("strategy.plugins.ewc.lambda_=-1", "must be >= 0"),
    ("+strategy.plugins.evil._target_=os.system", "only classes under clrun, torch"),
    ("strategy.plugins.ewc.fisher_labels=maybe", "fisher_labels='maybe' is invalid"),
    ("model.hidden_sizes=[-5]", "model.hidden_sizes=[-5] is invalid: every width must be"),
])
def test_bad_values_fail_before_training_with_one_line(tmp_path, override, needle):
    args = ["hydra.run.dir=run", "logger=none", override]
    if "plugins.ewc" in override:
        args.insert(0, "strategy=ewc")
    out = run_cli(*args, cwd=tmp_path)
    assert out.returncode == 2
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert lines == [lines[0]] and lines[0].startswith("clrun: error: ") and needle in lines[0]
    assert "Traceback" not in out.stderr + out.stdout
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_misspelled_key_and_unknown_option_keep_hydras_message(tmp_path):
    out = run_cli("scenario.setings=task", cwd=tmp_path)
    assert out.returncode != 0 and "Key 'setings' is not in struct" in out.stderr
    out = run_cli("strategy=ewcc", cwd=tmp_path)
    assert out.returncode != 0 and "Could not find 'strategy/ewcc'" in out.stderr
    assert "Available options" in out.stderr


def test_misspelled_plugin_parameter_is_one_line(tmp_path):
    out = run_cli("strategy=ewc", "+strategy.plugins.ewc.lamda=3", cwd=tmp_path)
    assert out.returncode == 2
    assert "unexpected keyword argument 'lamda'" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("scenario,start", [
    ("split_mnist", "clrun: error: MNIST not found (looked in"),
    ("split_cifar10", "clrun: error: CIFAR-10 not found in"),
])
def test_missing_data_is_one_line_exit_2(tmp_path, scenario, start):
    (tmp_path / "empty").mkdir()
    out = run_cli(f"scenario={scenario}", f"data_dir={tmp_path / 'empty'}", cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.startswith(start) and len(out.stderr.strip().splitlines()) == 1


def test_help_and_cfg_job(tmp_path):
    out = run_cli("--help", cwd=tmp_path)
    scenarios = next(line for line in out.stdout.splitlines() if line.startswith("scenario: "))
    assert out.returncode == 0
    for name in ("split_digits", "split_fmnist", "split_cifar100", "permuted_mnist",
                 "rotated_mnist", "dirichlet_mnist"):
        assert name in scenarios
    out = run_cli("--cfg", "job", "strategy=ewc", cwd=tmp_path)
    assert out.returncode == 0 and "clrun.strategies.regularization.EWC" in out.stdout


def test_multirun_returns_acc_and_keeps_going_after_a_failing_job(tmp_path):
    out = run_cli("-m", "hydra.sweep.dir=sweep", "scenario.n_tasks=5,3", *FAST, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "sweep" / "0" / "metrics.json").exists()
    assert "n_tasks=3 is invalid" in (tmp_path / "sweep" / "1" / "error.txt").read_text()


@pytest.mark.usefixtures("fmnist_available")
def test_split_fmnist_end_to_end_on_real_data(tmp_path):
    out = run_cli("hydra.run.dir=run", "scenario=split_fmnist", "trainer.max_epochs=1",
                  "train.batch_size=128", "scenario.setting=task", "logger=none", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    metrics = read_metrics(tmp_path / "run")
    assert metrics["config"]["scenario"] == "split_fmnist"
    assert metrics["acc"] > 80  # task-IL split Fashion-MNIST is easy after one epoch


def test_optuna_preset_maximises_acc(tmp_path):
    out = run_cli("-m", "hydra/sweeper=optuna_acc", "hydra.sweeper.n_trials=2",
                  "hydra.sweep.dir=opt", "strategy=ewc",
                  "strategy.plugins.ewc.lambda_=tag(log, interval(1, 100000))", *FAST,
                  cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    results = (tmp_path / "opt" / "optimization_results.yaml").read_text()
    assert "best_params" in results and "strategy.plugins.ewc.lambda_" in results


def test_launcher_presets_compose():
    from hydra import compose, initialize_config_dir

    from clrun.paths import config_dir

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        slurm = compose("config", overrides=["hydra/launcher=slurm"], return_hydra_config=True)
        local = compose("config", overrides=["hydra/launcher=local_parallel"],
                        return_hydra_config=True)
    assert slurm.hydra.launcher._target_.endswith("SlurmLauncher")
    assert slurm.hydra.launcher.gpus_per_node == 1
    assert local.hydra.launcher._target_.endswith("JoblibLauncher")


def test_shell_completion_script(tmp_path):
    out = run_cli("-sc", "install=bash", cwd=tmp_path)
    assert out.returncode == 0 and "hydra_bash_completion" in out.stdout
