"""`clrun-reproduce EXPERIMENT [overrides...]`: run an experiment's whole sweep, then print its
table (ours beside the paper's when the experiment names one). One command for a paper table.

    clrun-reproduce intercontinet_fmnist seed=2001 hydra/launcher=local_parallel torch_threads=1
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from clrun.errors import ClrunError
from clrun.report_cli import report


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0].startswith("-"):
        print(__doc__, file=sys.stderr)
        return 2
    experiment, overrides = args[0], args[1:]
    sweep_dir = Path("multirun") / experiment / time.strftime("%Y-%m-%d_%H-%M-%S")
    command = [sys.executable, "-m", "clrun.cli", "-m", f"experiment={experiment}",
               f"hydra.sweep.dir={sweep_dir}", *overrides]
    print("running:", " ".join(command[2:]), file=sys.stderr, flush=True)
    done = subprocess.run(command)
    try:
        print(report(sweep_dir, None, "markdown", "acc"))
    except ClrunError as error:
        print(f"clrun-reproduce: error: {error}", file=sys.stderr)
        return 2
    print(f"\nsweep directory: {sweep_dir}", file=sys.stderr)
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
