"""A Hydra callback that notes, after a multirun, which jobs left no result, and exits 1.

Hydra calls `on_multirun_end` callbacks in reverse order, so this one (first in
`hydra.callbacks`) runs after any a user adds; exiting here keeps `clrun.cli` free of
imports from the reporting package.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

EXIT_JOBS_FAILED = 1


class SweepStatus(Callback):
    """After a multirun (any launcher), list the job directories without a metrics.json."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        jobs = sorted({p.parent for p in sweep_dir.rglob(".hydra")})
        failed = [j for j in jobs if not (j / "metrics.json").is_file()]
        if not failed:
            return
        names = ", ".join(str(j) for j in failed[:5])
        more = f" and {len(failed) - 5} more" if len(failed) > 5 else ""
        print(f"clrun: {len(failed)} of {len(jobs)} jobs have no result ({names}{more}); "
              f"`clrun-report {sweep_dir}` lists why", file=sys.stderr, flush=True)
        sys.exit(EXIT_JOBS_FAILED)
