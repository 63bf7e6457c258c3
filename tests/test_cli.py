"""The real `clrun` command in a subprocess: outputs, determinism, bad input, real data (value
checks also in-process, through the functions the command calls)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clrun.errors import ClrunError
from clrun.paths import config_dir
from clrun.preflight import check_command_line
from clrun.run import run
from tests.conftest import FAST, compose_cfg, read_metrics, run_cli, run_clis

REPO = Path(__file__).resolve().parents[1]


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


@pytest.mark.slow
def test_joint_training_clearly_beats_fine_tuning_in_class_il(tmp_path):
    """Slow (~12 s): the real clrun in a subprocess, importing torch."""
    naive, joint = run_clis(
        ("hydra.run.dir=naive", "strategy=naive", "scenario.setting=class", "logger=none"),
        ("hydra.run.dir=joint", "strategy=joint", "scenario.setting=class", "logger=none"),
        cwd=tmp_path)
    assert naive.returncode == 0 and joint.returncode == 0
    naive_acc = read_metrics(tmp_path / "naive")["acc"]
    joint_acc = read_metrics(tmp_path / "joint")["acc"]
    assert naive_acc < 30 and joint_acc > 85


@pytest.mark.slow
def test_same_seed_gives_identical_metrics(tmp_path):
    """Slow (~18 s): the real clrun in a subprocess, importing torch."""
    outs = run_clis(*[(f"hydra.run.dir={name}", f"seed={seed}", "strategy=ewc", *FAST)
                      for name, seed in (("a", 7), ("b", 7), ("c", 8))], cwd=tmp_path)
    assert all(out.returncode == 0 for out in outs), [out.stderr for out in outs]
    a = (tmp_path / "a" / "metrics.json").read_text()
    b = (tmp_path / "b" / "metrics.json").read_text()
    assert a == b
    assert json.loads(a)["accuracy_matrix"] != read_metrics(tmp_path / "c")["accuracy_matrix"]


def one_line_error(out) -> str:  # noqa: ANN001
    """The single stderr line of a refused command (exit 2, no traceback)."""
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert out.returncode == 2, out.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("clrun: error: "), out.stderr
    assert "Traceback" not in out.stderr + out.stdout
    return lines[0]


BAD_VALUES = [
    ("scenario.setting=foo", "scenario.setting='foo' is invalid: use one of: task, domain, class"),
    ("optimizer.lr=-0.1", "optimizer.lr=-0.1 is invalid"),
    ("trainer.max_epochs=0", "trainer.max_epochs=0 is invalid"),
    ("scenario.n_tasks=3", "scenario.n_tasks=3 is invalid: 10 classes do not divide evenly"),
    ("train.batch_size=0", "train.batch_size=0 is invalid"),
    ("strategy.plugins.ewc.lambda_=-1", "must be >= 0"),
    ("+strategy.plugins.evil._target_=os.system", "config files may build only"),
    ("strategy.plugins.ewc.fisher_labels=maybe", "fisher_labels='maybe' is invalid"),
    ("model.hidden_sizes=[-5]", "model.hidden_sizes=[-5] is invalid: every width must be"),
    ("train.lr_milestones=[90,50]", "train.lr_milestones=[90, 50] is invalid"),
    # read only when a generator is scored, after a task has trained: checked up front
    ("metrics.prd.clusters=0", "metrics.prd.clusters=0 is invalid: must be an integer of at "
                               "least 2"),
    ("metrics.feature_net.lr=0", "metrics.feature_net.lr=0 is invalid"),
    ("metrics.samples_per_task=10", "metrics.samples_per_task=10 is invalid: precision and "
                                    "recall need at least metrics.prd.clusters=20 images per "
                                    "task"),
    ("train.lr_gamma=0", "train.lr_gamma=0 is invalid"),
    ("memory_size=-1", "memory_size=-1 is invalid"),
]


def with_strategy(override: str) -> list[str]:
    return ["strategy=ewc", override] if "plugins.ewc" in override else [override]


@pytest.mark.parametrize("override,needle", BAD_VALUES)
def test_bad_values_are_refused_before_training(tmp_path, override, needle):
    """Every value check, in-process: the command-line checks, then `run` (what the CLI calls)."""
    overrides = ["logger=none", *with_strategy(override)]
    with pytest.raises(ClrunError) as refused:
        added = check_command_line(str(config_dir()), "config", None, overrides,
                                   multirun=False, will_run=True)
        run(compose_cfg(*overrides, *added), tmp_path / "run")
    assert needle in str(refused.value)
    assert not (tmp_path / "run" / "metrics.json").exists()


@pytest.mark.slow
@pytest.mark.parametrize("override,needle", [BAD_VALUES[1], BAD_VALUES[6]])
def test_bad_values_fail_before_training_with_one_line(tmp_path, override, needle):
    """The CLI turns a refusal (from `run` or from its command-line checks) into one line.
    Slow (~8 s): the real clrun in a subprocess, importing torch."""
    out = run_cli("hydra.run.dir=run", "logger=none", *with_strategy(override), cwd=tmp_path)
    assert needle in one_line_error(out)
    assert not (tmp_path / "run" / "metrics.json").exists()


@pytest.mark.slow
@pytest.mark.parametrize("args,needle", [
    (["strategy=ewcc"], "strategy=ewcc is not an option; did you mean strategy=ewc?"),
    (["experiment=intercontinet"], "did you mean experiment=intercontinet_fmnist?"),
    (["trainer.max_epoch=3"], "trainer.max_epoch is not a config key; did you mean "
                              "trainer.max_epochs? (to add a new key on purpose: "
                              "+trainer.max_epoch=3)"),
    (["scenario.setings=task"], "did you mean scenario.setting?"),
    (["+trainer.max_epoch=3"], "trainer.max_epoch=3 is invalid: not an argument of Lightning's "
                               "Trainer; did you mean trainer.max_epochs?"),
    (["strategy=[ewc,"], "cannot read the override 'strategy=[ewc,'"),
    (["trainer=gpu"], "torch sees no CUDA GPU on this machine; use trainer=cpu"),
    (["+strategy.plugins.mine._target_=clrun.strategies.nowhere.Plugin"], "cannot be imported"),
    (["-m", "strategy=ewcc,si"], "strategy=ewcc is not an option"),
])
def test_hydra_and_trainer_mistakes_are_one_line(tmp_path, args, needle):
    """Slow (~10 s): the real clrun in a subprocess, importing torch."""
    if "trainer=gpu" in args:
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has a GPU")
    out = run_cli(*args, "hydra.run.dir=run", "logger=none", cwd=tmp_path)
    assert needle in one_line_error(out)
    assert not (tmp_path / "run" / "metrics.json").exists()


@pytest.mark.slow
def test_unwritable_run_directory_is_one_line(tmp_path):
    """Slow (~12 s): the real clrun in a subprocess, importing torch."""
    (tmp_path / "a_file").write_text("")
    single, sweep = run_clis(("hydra.run.dir=a_file/run", "logger=none"),
                             ("-m", "hydra.sweep.dir=a_file/sweep", "seed=1,2", "logger=none"),
                             cwd=tmp_path)
    assert "cannot write the run directory" in one_line_error(single)
    assert "hydra.run.dir=" in single.stderr
    assert "choose another with hydra.sweep.dir=" in one_line_error(sweep)


@pytest.mark.slow
def test_combined_strategies_are_named_together(tmp_path):
    """Slow (~10 s): the real clrun in a subprocess, importing torch."""
    out = run_cli("hydra.run.dir=run", "strategy=[ewc,lwf]", "trainer.max_epochs=1",
                  "logger=none", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "strategy=ewc+lwf" in out.stdout
    config = read_metrics(tmp_path / "run")["config"]
    assert config["strategy"] == "ewc+lwf" and config["plugins"] == ["ewc", "lwf"]


@pytest.mark.slow
def test_redirected_output_is_plain_and_unwrapped(tmp_path):
    """Slow (~10 s): the real clrun in a subprocess, importing torch."""
    out = run_cli("hydra.run.dir=a_rather_long_run_directory_name/that_goes/on_and_on",
                  "scenario.n_tasks=10", "trainer.max_epochs=1", "logger=none", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    assert not any(ch in out.stdout for ch in "│┃━…")
    assert lines[-1] == ("results: " + str(tmp_path / "a_rather_long_run_directory_name"
                                           "/that_goes/on_and_on/metrics.json"))
    header = next(line for line in lines if line.startswith("after training"))
    assert header.split()[-2:] == ["task", "9"]
    assert next(line for line in lines if line.startswith("task 0 ")).split()[2] == "100.0"


@pytest.mark.slow
def test_misspelled_plugin_parameter_is_one_line(tmp_path):
    """Slow (~10 s): the real clrun in a subprocess, importing torch."""
    out = run_cli("strategy=ewc", "+strategy.plugins.ewc.lamda=3", cwd=tmp_path)
    assert out.returncode == 2
    assert "unexpected keyword argument 'lamda'" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.slow
@pytest.mark.parametrize("scenario,start", [
    ("split_mnist", "clrun: error: MNIST not found (looked in"),
    ("split_cifar10", "clrun: error: CIFAR-10 not found in"),
])
def test_missing_data_is_one_line_exit_2(tmp_path, scenario, start):
    """Slow (~10 s): the real clrun in a subprocess, importing torch."""
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


@pytest.mark.slow
def test_multirun_returns_acc_and_keeps_going_after_a_failing_job(tmp_path):
    """Slow (~25 s): the real clrun in 2 subprocesses, each importing torch."""
    out = run_cli("-m", "hydra.sweep.dir=sweep", "scenario.n_tasks=3,5", *FAST, cwd=tmp_path)
    assert out.returncode == 1, out.stderr  # after every job ran: the failure is visible
    assert (tmp_path / "sweep" / "1" / "metrics.json").exists()
    assert "n_tasks=3 is invalid" in (tmp_path / "sweep" / "0" / "error.txt").read_text()
    assert "clrun: 1 of 2 jobs have no result" in out.stderr
    ok = run_cli("-m", "hydra.sweep.dir=sweep_ok", "seed=1,2", *FAST, cwd=tmp_path)
    assert ok.returncode == 0 and "have no result" not in ok.stderr


@pytest.mark.slow
@pytest.mark.usefixtures("fmnist_available")
def test_split_fmnist_end_to_end_on_real_data(tmp_path):
    """Slow (~12 s): an epoch per task of the real Fashion-MNIST in a subprocess."""
    out = run_cli("hydra.run.dir=run", "scenario=split_fmnist", "trainer.max_epochs=1",
                  "train.batch_size=128", "scenario.setting=task", "logger=none", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    metrics = read_metrics(tmp_path / "run")
    assert metrics["config"]["scenario"] == "split_fmnist"
    assert metrics["acc"] > 80  # task-IL split Fashion-MNIST is easy after one epoch


@pytest.mark.slow
def test_optuna_preset_maximises_acc(tmp_path):
    """Slow (~20 s): the real clrun in a subprocess, importing torch."""
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


def test_a_key_fixed_on_the_command_line_replaces_the_experiments_sweep_of_it():
    """As in Hydra: `row=...` beside an experiment that sweeps rows runs that row only, so a
    key only that row has (the interval plugin's) is valid."""
    overrides = ["experiment=intercontinet_fmnist", "row=intercontinet_interval",
                 "scenario.setting=task,class", "strategy.plugins.interval.robust_lambda=100"]
    assert check_command_line(str(config_dir()), "config", None, overrides, multirun=True,
                              will_run=False) == []
    check_command_line(str(config_dir()), "config", None, overrides, multirun=True,
                       will_run=True)
    with pytest.raises(ClrunError, match="robust_lambda is not a config key"):
        check_command_line(str(config_dir()), "config", None, overrides[:1] + overrides[2:],
                           multirun=True, will_run=True)


@pytest.mark.slow
def test_submitit_local_sweep_runs_the_slurm_code_path_and_reports(tmp_path):
    """Slow (~25 s): two jobs each in its own submitit process, as on SLURM without a
    scheduler; clrun-report then collects both."""
    from clrun.reporting.cli import report

    out = run_cli("-m", "hydra/launcher=submitit_local", "seed=1,2", "scenario.n_tasks=2",
                  "trainer.max_epochs=1", "logger=none", "hydra.sweep.dir=sweep", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert any((tmp_path / "sweep" / ".submitit").rglob("*_result.pkl"))
    assert [read_metrics(tmp_path / "sweep" / job)["config"]["seed"] for job in "01"] == [1, 2]
    table = report(tmp_path / "sweep", None, "markdown", None)
    assert "| 2 |" in table, table


@pytest.mark.slow
def test_local_parallel_jobs_run_in_processes_of_their_own(tmp_path):
    """Slow (~20 s): a two-job local_parallel sweep (what shares one GPU between N jobs,
    each process with its own CUDA context, here on the CPU)."""
    out = run_cli("-m", "hydra/launcher=local_parallel", "hydra.launcher.n_jobs=2",
                  "torch_threads=1", "seed=1,2", "scenario.n_tasks=2", "trainer.max_epochs=1",
                  "logger=none", "hydra.sweep.dir=sweep",
                  "+strategy.plugins.pid._target_=tests.example_plugin.process_id.ProcessId",
                  cwd=tmp_path, env={"PYTHONPATH": str(REPO),
                                     "CLRUN_ALLOWED_TARGETS": "tests.example_plugin"})
    assert out.returncode == 0, out.stderr[-2000:]
    pids = {read_metrics(tmp_path / "sweep" / job)["pid"] for job in "01"}
    assert len(pids) == 2


@pytest.mark.slow
def test_steps_per_batch_changes_nothing_but_speed(tmp_path):
    """Slow (~15 s): four training runs. Chunks of optimizer steps per Lightning batch give
    the same run as one step per batch: with plugins that edit gradients (EWC) and replay
    and insert after each step (ER), with augmentation and generative replay drawing from the
    global random stream in every step (DGR), and with a step budget that ends mid-chunk and
    mid-epoch."""
    budget = ("trainer.max_epochs=-1", "trainer.max_steps=23", "train.batch_size=16",
              "scenario.n_tasks=2", "scenario.crop_padding=2", "scenario.horizontal_flip=true",
              "logger=none", "checkpoint=false")
    for strategy in (["strategy=[ewc,er]"], ["strategy=dgr", "generator=vae",
                                             "metrics.generative=false"]):
        one = run(compose_cfg(*budget, *strategy, "train.steps_per_batch=1"),
                  tmp_path / "one")
        chunked = run(compose_cfg(*budget, *strategy, "train.steps_per_batch=5"),
                      tmp_path / "five")
        assert one.matrix == chunked.matrix, strategy
