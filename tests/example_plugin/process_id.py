"""A plugin that records which process trained the run (tests of launchers)."""

from __future__ import annotations

import os
from typing import Any

from clrun.plugin import StrategyPlugin


class ProcessId(StrategyPlugin):
    """`pid` in metrics.json: the process that trained."""

    def results(self) -> dict[str, Any]:
        return {"pid": os.getpid()}
