"""SIGTERM stops a run the way Ctrl-C does.

`kill`, a scheduler's preemption and `timeout` send SIGTERM. Lightning turns it into a stop only
inside its training and evaluation loops; between them (evaluating every task, writing the
checkpoint, scoring a generator) the signal would otherwise be lost or end the process without
the message. Raised as KeyboardInterrupt, it takes Ctrl-C's path everywhere: the tasks finished
so far stay saved and the command line says how to resume.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises KeyboardInterrupt (Lightning chains it inside `fit`)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may install handlers (e.g. a launcher's worker thread)
        return
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
