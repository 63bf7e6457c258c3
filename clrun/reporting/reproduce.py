"""`clrun-reproduce EXPERIMENT [overrides...]`: run an experiment's whole sweep, then print its
table (ours beside the paper's when the experiment names one). One command for a paper table.

    clrun-reproduce intercontinet_fmnist seed=2001 hydra/launcher=local_parallel torch_threads=1

The exit code is the sweep's: 1 when a job has no result (the table still prints).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from clrun.errors import ClrunError
from clrun.paths import config_dir
from clrun.reporting.cli import report


def experiments() -> list[str]:
    return sorted(p.stem for p in (config_dir() / "experiment").glob("*.yaml"))


def usage() -> str:
    return f"{__doc__}\nexperiments: {', '.join(experiments())}"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in ("-h", "--help"):
        print(usage())
        return 0
    if not args or args[0].startswith("-"):
        print(usage(), file=sys.stderr)
        return 2
    experiment, overrides = args[0], args[1:]
    if experiment not in experiments():
        print(f"clrun-reproduce: error: unknown experiment {experiment!r}; available: "
              f"{', '.join(experiments())}", file=sys.stderr)
        return 2
    sweep_dir = Path("multirun") / experiment / time.strftime("%Y-%m-%d_%H-%M-%S")
    command = [sys.executable, "-m", "clrun.cli", "-m", f"experiment={experiment}",
               f"hydra.sweep.dir={sweep_dir}", *overrides]
    print("running:", " ".join(command[2:]), file=sys.stderr, flush=True)
    done = subprocess.run(command)
    try:
        print(report(sweep_dir, None, "markdown", None))
    except ClrunError as error:
        print(f"clrun-reproduce: error: {error}", file=sys.stderr)
        return done.returncode or 2
    print(f"\nsweep directory: {sweep_dir}", file=sys.stderr)
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
