"""Where the config tree and the data live, for editable and wheel installs alike."""

import os
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def config_dir() -> Path:
    """The Hydra config root: `clrun/conf` in a wheel, `conf/` beside the package in a checkout."""
    for candidate in (_PACKAGE_DIR / "conf", _PACKAGE_DIR.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"clrun's config tree was not found next to {_PACKAGE_DIR}")


def default_data_dir() -> Path:
    """`CLRUN_DATA` if set, else the user's cache directory."""
    env = os.environ.get("CLRUN_DATA")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME", "~/.cache")
    return Path(cache).expanduser() / "clrun"
