"""The `clrun` command: a thin Hydra shell around `clrun.run.run`.

User errors become one line on stderr and exit code 2 (set HYDRA_FULL_ERROR=1 for the
traceback); Ctrl-C says what was saved and how to resume, exit code 130. In a multirun a failing
job records its error in its directory, the sweep goes on, and the command exits 1 at the end.
"""

from __future__ import annotations

import os
import shlex
import sys
import traceback
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from clrun.errors import ClrunError, Interrupted
from clrun.paths import config_dir
from clrun.results import write_atomic

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def fail(message: str, code: int = EXIT_USER_ERROR) -> None:
    print(f"clrun: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def strategy_choice(hydra_cfg: DictConfig) -> str | None:
    """The strategy option; Hydra records none for a list (`strategy=[ewc,lwf]`)."""
    choice = hydra_cfg.runtime.choices.get("strategy")
    if choice is not None:
        return str(choice)
    typed = [o.split("=", 1)[1] for o in hydra_cfg.overrides.task
             if o.split("=", 1)[0].lstrip("+~") == "strategy"]
    return typed[-1] if typed else None


def resume_command(hydra_cfg: DictConfig, run_dir: Path) -> str:
    """The command line that continues this job in its run directory."""
    kept = [o for o in hydra_cfg.overrides.task
            if o.split("=", 1)[0].lstrip("+~") not in ("resume", "hydra.run.dir")]
    return shlex.join(["clrun", *kept, "resume=true", f"hydra.run.dir={run_dir}"])


def interrupted_message(stop: Interrupted, hydra_cfg: DictConfig, run_dir: Path) -> str:
    if stop.task is None:
        return "interrupted before training started; nothing to resume"
    where = f"interrupted during task {stop.task}"
    if stop.task == 0:
        return f"{where}; no task had finished, so nothing is saved: rerun the command"
    if stop.checkpoint is None:
        return f"{where}; nothing is saved (checkpoint=false)"
    return (f"{where}; tasks 0..{stop.task - 1} are saved; resume with: "
            f"{resume_command(hydra_cfg, run_dir)}")


def _job(cfg: DictConfig) -> float | None:
    from clrun.run import run
    from clrun.summary import print_summary

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    own_processes = "submitit" in str(hydra_cfg.launcher.get("_target_", ""))
    if multirun and not own_processes and str(cfg.trainer.get("strategy", "auto")).startswith(
            "ddp") and cfg.trainer.get("devices", 1) != 1:
        fail("error: DDP re-launches the command line in child processes, which would re-run "
             "the whole sweep; run each DDP job as its own `clrun` (or through "
             "hydra/launcher=slurm, one process group per job)")
    choices = {**hydra_cfg.runtime.choices, "strategy": strategy_choice(hydra_cfg)}
    try:
        result = run(cfg, run_dir, choices=choices,
                     group=str(hydra_cfg.sweep.dir) if multirun else None)
    except Interrupted as stop:
        fail(interrupted_message(stop, hydra_cfg, run_dir), EXIT_INTERRUPTED)
    except ClrunError as error:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"clrun: error: {error}", file=sys.stderr, flush=True)
        if multirun:
            write_atomic(run_dir / "error.txt", f"{error}\n")
            return None
        sys.exit(EXIT_USER_ERROR)
    except Exception as error:
        if not multirun:
            raise
        # One broken job must not lose the sweep: record it for the report and go on.
        write_atomic(run_dir / "error.txt",
                     f"{type(error).__name__}: {error}\n\n{traceback.format_exc()}")
        print(f"clrun: job {run_dir} failed: {type(error).__name__}: {error}",
              file=sys.stderr, flush=True)
        return None
    if int(os.environ.get("LOCAL_RANK", "0")) == 0:
        print_summary(result)
    return result.objective_value()


def preflight(argv: list[str]) -> list[str]:
    """Compose and check the command line before Hydra acts on it (clrun.preflight); returns
    overrides to add (a scenario's own default model)."""
    from hydra._internal.utils import get_args_parser

    from clrun.preflight import check_command_line

    args, _ = get_args_parser().parse_known_args(argv)
    if args.help or args.hydra_help or args.shell_completion or args.info:
        return []
    config_path = args.config_path or str(config_dir())
    if not os.path.isabs(config_path):
        config_path = os.path.abspath(config_path)
    return check_command_line(config_path, args.config_name or "config", args.config_dir,
                              args.overrides, multirun=args.multirun, will_run=args.cfg is None)


def main() -> None:
    try:
        sys.argv.extend(preflight(sys.argv[1:]))
    except ClrunError as error:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        fail(f"error: {error}")
    # A multirun whose jobs failed exits 1 from its Hydra callback (clrun.reporting.sweep_status).
    hydra.main(config_path=str(config_dir()), config_name="config", version_base="1.3")(_job)()


if __name__ == "__main__":
    main()
