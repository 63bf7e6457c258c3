"""clrun: a config-driven experiment runner for continual learning."""

from omegaconf import OmegaConf

__version__ = "0.1.0"

# `${clrun.div:a,b}` in configs: integer division, e.g. a memory budget split over tasks.
if not OmegaConf.has_resolver("clrun.div"):
    OmegaConf.register_new_resolver("clrun.div", lambda a, b: int(a) // int(b))
