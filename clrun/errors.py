"""User-facing errors: the CLI prints them as one line and exits with code 2."""

from __future__ import annotations

from pathlib import Path


class ClrunError(Exception):
    """A problem the user can fix (bad config value, missing data); never a bug in clrun."""


class ConfigError(ClrunError):
    """A config value is invalid; the message names the key, the value and what is allowed."""

    def __init__(self, key: str, value: object, allowed: str) -> None:
        super().__init__(f"{key}={value!r} is invalid: {allowed}")
        self.key = key
        self.allowed = allowed

    def naming_option(self, option: str) -> ConfigError:
        """The same error naming the config option a user typed (`generator=vae`) instead of
        the class that option builds (`'VAE'`)."""
        error = ConfigError(self.key, option, self.allowed)
        error.args = (f"{self.key}={option} is invalid: {self.allowed}",)
        return error


def check_positive_int(key: str, value: object, least: int = 1) -> None:
    """A count from the config (steps, samples, epochs) must be an integer >= `least`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ConfigError(key, value, "must be a positive integer" if least == 1
                          else f"must be an integer of at least {least}")


class DataError(ClrunError):
    """A data set is missing or corrupt; the message says where clrun looked and what to do."""


class Interrupted(Exception):  # noqa: N818 - a stop, not an error
    """Ctrl-C during a run: the training stage it stopped (None: before training) and the
    checkpoint that holds the stages before it (None: checkpoints are off)."""

    def __init__(self, task: int | None, checkpoint: Path | None) -> None:
        super().__init__(f"interrupted during task {task}")
        self.task = task
        self.checkpoint = checkpoint
