"""The `clrun` command: a thin Hydra shell around `clrun.run.run`.

User errors become one line on stderr and exit code 2 (set HYDRA_FULL_ERROR=1 for the
traceback). In a multirun a failing job records its error in its directory and the sweep goes on.
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from clrun.errors import ClrunError
from clrun.paths import config_dir
from clrun.results import write_atomic


def _job(cfg: DictConfig) -> float | None:
    from clrun.report import print_summary
    from clrun.run import run

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    own_processes = "submitit" in str(hydra_cfg.launcher.get("_target_", ""))
    if multirun and not own_processes and str(cfg.trainer.get("strategy", "auto")).startswith(
            "ddp") and cfg.trainer.get("devices", 1) != 1:
        print("clrun: error: DDP re-launches the command line in child processes, which would "
              "re-run the whole sweep; run each DDP job as its own `clrun` (or through "
              "hydra/launcher=submitit_slurm, one process group per job)", file=sys.stderr)
        sys.exit(2)
    try:
        result = run(cfg, run_dir, choices=dict(hydra_cfg.runtime.choices),
                     group=str(hydra_cfg.sweep.dir) if multirun else None)
    except ClrunError as error:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"clrun: error: {error}", file=sys.stderr, flush=True)
        if multirun:
            write_atomic(run_dir / "error.txt", f"{error}\n")
            return None
        sys.exit(2)
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
    return result.metrics.acc


def main() -> None:
    hydra.main(config_path=str(config_dir()), config_name="config", version_base="1.3")(_job)()


if __name__ == "__main__":
    main()
