"""A Hydra callback that notes, after a multirun, which jobs left no result.

It lives in its own module (not in `clrun.cli`, which may run as `__main__`) so that the CLI
reads the same list the callback fills, and exits non-zero once every job has finished.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

failed_jobs: list[Path] = []


class SweepStatus(Callback):
    """After a multirun (any launcher), list the job directories without a metrics.json."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        jobs = sorted({p.parent for p in sweep_dir.rglob(".hydra")})
        failed_jobs.extend(j for j in jobs if not (j / "metrics.json").is_file())
        if failed_jobs:
            names = ", ".join(str(j) for j in failed_jobs[:5])
            more = f" and {len(failed_jobs) - 5} more" if len(failed_jobs) > 5 else ""
            print(f"clrun: {len(failed_jobs)} of {len(jobs)} jobs have no result ({names}"
                  f"{more}); `clrun-report {sweep_dir}` lists why", file=sys.stderr, flush=True)
