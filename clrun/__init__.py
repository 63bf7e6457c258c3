"""clrun: a config-driven experiment runner for continual learning."""

__version__ = "0.1.0"
