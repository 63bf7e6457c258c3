"""Checks on the command line before Hydra acts on it: one-line errors and config safety.

Hydra composes the config, creates the run directory, configures logging and instantiates its
callbacks before clrun's task function runs, and reports its own errors in many lines. So the
CLI composes the same config first (every swept choice too) and

- turns Hydra's composition errors into one line with the closest valid choice or key;
- refuses, in one line, a `_target_` that a config may not build (see `clrun.instantiate`),
  and Hydra settings that run code (callbacks, logging factories, launcher setup lines, a
  custom search space, environment variables) unless they were typed on the command line;
- checks that the run (or sweep) directory can be written.
"""

from __future__ import annotations

import difflib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig, ListConfig, OmegaConf

from clrun.errors import ClrunError, ConfigError
from clrun.instantiate import check_targets, refusal, user_packages

# Hydra settings through which a config file could run code or load it into a process.
CODE_SETTINGS = ("hydra.callbacks", "hydra.launcher.setup", "hydra.launcher.srun_args",
                 "hydra.launcher.additional_parameters", "hydra.sweeper.custom_search_space")
LOGGING_SETTINGS = ("hydra.job_logging", "hydra.hydra_logging")
SAFE_LOG_FACTORIES = ("logging", "colorlog")
# Environment variables a config file may set for the job (hydra.job.env_set).
SAFE_ENV = re.compile(r"^(OMP_NUM_THREADS|MKL_NUM_THREADS|CUDA_VISIBLE_DEVICES|WANDB_\w+|"
                      r"NCCL_\w+|CUBLAS_WORKSPACE_CONFIG)$")


def _override_keys(overrides: list[str]) -> list[str]:
    """The keys the command line sets (`+key=`, `~key` and `key=` alike)."""
    return [o.split("=", 1)[0].lstrip("+~") for o in overrides]


def _typed(path: str, overrides: list[str]) -> bool:
    """Whether the user typed an override of `path` (or below it) on the command line."""
    keys = _override_keys(overrides)
    return any(k == path or k.startswith(f"{path}.") or path.startswith(f"{k}.") for k in keys)


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, (DictConfig, ListConfig)) and len(value) == 0)


def _log_factories(node: Any, path: str) -> Iterator[tuple[str, str]]:
    """(key, dotted name) of every `()`/`class` entry of a logging dictConfig."""
    if isinstance(node, DictConfig):
        for key in node.keys():
            value = node._get_node(key)
            if key in ("()", "class") and isinstance(node.get(key), str):
                yield f"{path}.{key}", node.get(key)
            else:
                yield from _log_factories(value, f"{path}.{key}")


def is_clrun_callback(target: str) -> bool:
    """One of clrun's own Hydra callbacks (e.g. the sweep status in config.yaml)."""
    import inspect

    from hydra.experimental.callback import Callback
    from hydra.utils import get_object

    if not target.startswith("clrun."):
        return False
    try:
        obj = get_object(target)
    except Exception:  # noqa: BLE001
        return False
    return inspect.isclass(obj) and issubclass(obj, Callback)


def check_hydra_settings(cfg: DictConfig, overrides: list[str]) -> None:
    """Refuse Hydra settings that run code unless the user typed them on the command line."""
    hydra_cfg = cfg.hydra
    for path in CODE_SETTINGS:
        value = OmegaConf.select(cfg, path, default=None)
        if _typed(path, overrides) or _empty(value):
            continue
        if path == "hydra.callbacks":
            for name, node in value.items():
                target = str((node or {}).get("_target_", ""))
                if is_clrun_callback(target) or refusal(target) is None and any(
                        target.startswith(f"{p}.") for p in user_packages()):
                    continue
                raise ConfigError(f"hydra.callbacks.{name}._target_", target,
                                  "a config file may not add Hydra callbacks (they run code); "
                                  "type it on the command line if you mean it")
            continue
        raise ConfigError(path, OmegaConf.to_container(value) if isinstance(
            value, (DictConfig, ListConfig)) else value,
            "a config file may not set this (it runs commands); type it on the command line "
            "if you mean it")
    for section in LOGGING_SETTINGS:
        if _typed(section, overrides):
            continue
        for key, name in _log_factories(OmegaConf.select(cfg, section), section):
            if name.split(".", 1)[0] not in SAFE_LOG_FACTORIES + user_packages():
                raise ConfigError(key, name, "log handlers, formatters and filters must come "
                                  "from Python's logging module (or colorlog)")
    env = hydra_cfg.job.get("env_set") or {}
    for name in env:
        if not SAFE_ENV.match(str(name)) and not _typed(f"hydra.job.env_set.{name}", overrides):
            raise ConfigError(f"hydra.job.env_set.{name}", env[name],
                              "a config file may set only thread, GPU and W&B variables; set "
                              "others in your shell")


def check_writable(directory: str, key: str) -> None:
    """A folder can be made in the nearest existing folder of `directory` (Hydra creates the
    rest); probed by making and removing one, since permission bits do not tell for root."""
    path = Path(directory).expanduser().absolute()
    existing = next(p for p in (path, *path.parents) if p.exists())
    try:
        if not existing.is_dir():
            raise NotADirectoryError(f"{existing} is a file")
        os.rmdir(tempfile.mkdtemp(dir=existing, prefix=".clrun-probe-"))
    except OSError as error:
        reason = error.strerror or str(error)
        raise ClrunError(f"cannot write the run directory {path} ({existing}: {reason}); choose "
                         f"another with {key}=..., or run clrun from a writable folder") from None


def _closest(word: str, options: list[str]) -> str:
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.5)
    return close[0] if close else ""


def _missing_option(error: MissingConfigException) -> ClrunError:
    match = re.search(r"Could not find '([^']+)'", str(error))
    if not match or not error.options:
        return ClrunError(str(error).splitlines()[0])
    group, _, option = match.group(1).rpartition("/")
    best = _closest(option, list(error.options))
    hint = f"did you mean {group}={best}? " if best else ""
    return ClrunError(f"{group}={option} is not an option; {hint}(options for {group}: "
                      f"{', '.join(error.options)})")


def _missing_key(key: str, value: str, cfg: DictConfig | None) -> ClrunError:
    """`key` is not in the config: name the closest existing key at the first wrong level."""
    parts, node, known = key.split("."), cfg, []
    for part in parts:
        if not isinstance(node, DictConfig) or part not in node:
            break
        known.append(part)
        node = node[part]
    hint = ""
    if isinstance(node, DictConfig) and len(known) < len(parts):
        best = _closest(parts[len(known)], [str(k) for k in node.keys()])
        if best:
            hint = f"did you mean {'.'.join([*known, best, *parts[len(known) + 1:]])}? "
    return ClrunError(f"{key} is not a config key; {hint}(to add a new key on purpose: "
                      f"+{key}={value})")


def _bad_override(overrides: list[str], error: OverrideParseException) -> ClrunError:
    parser = OverridesParser.create()
    for override in overrides:
        try:
            parser.parse_overrides([override])
        except OverrideParseException as own:
            detail = str(own).splitlines()[0]
            return ClrunError(f"cannot read the override {override!r} ({detail}); quote lists "
                              "and sweeps for the shell, e.g. 'strategy=[ewc,lwf]'")
    return ClrunError(str(error).splitlines()[0])


class Composer:
    """Composes the config a command line names, as Hydra will, with one-line errors."""

    def __init__(self, config_path: str, config_name: str, extra_search_path: str | None,
                 overrides: list[str]) -> None:
        self.config_path = config_path
        self.config_name = config_name
        self.search = ([f"hydra.searchpath=[file://{Path(extra_search_path).absolute()}]"]
                       if extra_search_path else [])
        self.overrides = overrides

    def _compose(self, overrides: list[str]) -> DictConfig:
        with initialize_config_dir(config_dir=self.config_path, version_base="1.3",
                                   job_name="clrun"):
            return compose(self.config_name, overrides=self.search + overrides,
                           return_hydra_config=True)

    def compose(self, overrides: list[str]) -> DictConfig:
        try:
            return self._compose(overrides)
        except MissingConfigException as error:
            raise _missing_option(error) from None
        except OverrideParseException as error:
            raise _bad_override(overrides, error) from None
        except ConfigCompositionException as error:
            match = re.search(r"Could not override '([^']+)'", str(error))
            if not match:
                cause = f" ({str(error.__cause__).splitlines()[0]})" if error.__cause__ else ""
                raise ClrunError(str(error).splitlines()[0] + cause) from None
            key = match.group(1)
            typed = next((o for o in overrides if o.split("=", 1)[0] == key), f"{key}=...")
            rest = [o for o in overrides if o != typed]
            try:
                cfg = self._compose(rest)
            except Exception:  # noqa: BLE001 - the hint is optional
                cfg = None
            raise _missing_key(key, typed.split("=", 1)[-1], cfg) from None


def _group_keys(cfg: DictConfig) -> set[str]:
    return {str(k) for k in cfg.hydra.runtime.choices.keys()} | {"strategy"}


def _sweep_variants(composer: Composer, base: DictConfig, fixed: list[str],
                    swept: dict[str, list[str]]) -> Iterator[DictConfig]:
    """The config of every swept value of a config group, one group at a time."""
    for key, values in swept.items():
        if key.lstrip("+~") not in _group_keys(base):
            continue  # a plain value cannot bring in another file
        for value in values:
            yield composer.compose([*fixed, f"{key}={value}"])


def _swept(parser: OverridesParser, overrides: list[str]
           ) -> tuple[list[str], dict[str, list[str]]]:
    fixed, swept = [], {}
    for text, parsed in zip(overrides, parser.parse_overrides(overrides), strict=True):
        if parsed.is_sweep_override():
            try:
                swept[parsed.get_key_element()] = list(parsed.sweep_string_iterator())
            except Exception:  # noqa: BLE001 - ranges/intervals of plain values
                swept[parsed.get_key_element()] = []
        else:
            fixed.append(text)
    return fixed, swept


def _config_sweeps(cfg: DictConfig) -> dict[str, list[str]]:
    """Sweeps an experiment file declares under hydra.sweeper.params."""
    params = OmegaConf.select(cfg, "hydra.sweeper.params", default=None) or {}
    parser = OverridesParser.create()
    swept = {}
    for key, value in params.items():
        try:
            parsed = parser.parse_overrides([f"{key}={value}"])[0]
            swept[str(key)] = list(parsed.sweep_string_iterator())
        except Exception:  # noqa: BLE001 - optuna's search spaces are plain values
            continue
    return swept


def scenario_model(cfg: DictConfig, overrides: list[str], swept: dict[str, list[str]]
                   ) -> list[str]:
    """`model=<scenario.default_model>` when the scenario names a model (split CIFAR: the
    reduced ResNet-18) and neither the command line nor an experiment chose one."""
    wanted = cfg.scenario.get("default_model")
    chose_model = "model" in _override_keys(overrides)
    if not wanted or chose_model or cfg.hydra.runtime.choices.get("experiment") is not None:
        return []
    if "scenario" in swept:  # a sweep over scenarios: only when every one names this model
        return []
    return [f"model={wanted}"]


def check_command_line(config_path: str, config_name: str, extra_search_path: str | None,
                       overrides: list[str], multirun: bool, will_run: bool) -> list[str]:
    """Raise `ClrunError` (one line) for what would fail, or run code, once Hydra starts.
    Returns overrides to add: a scenario's own default model."""
    composer = Composer(config_path, config_name, extra_search_path, overrides)
    parser = OverridesParser.create()
    try:
        parser.parse_overrides(overrides)
    except OverrideParseException as error:
        raise _bad_override(overrides, error) from None
    fixed, swept = _swept(parser, overrides) if multirun else (overrides, {})
    base = composer.compose(fixed)
    added = scenario_model(base, overrides, swept)
    if added:
        fixed, base = [*fixed, *added], composer.compose([*fixed, *added])
    if not will_run:
        return added
    # a key the command line sets, swept or not, replaces the experiment file's sweep of it
    typed = set(_override_keys(overrides))
    swept = {**{k: v for k, v in _config_sweeps(base).items() if k not in typed}, **swept}
    for cfg in (base, *_sweep_variants(composer, base, fixed, swept)):
        check_hydra_settings(cfg, overrides)
        job = OmegaConf.masked_copy(cfg, [k for k in cfg.keys() if k != "hydra"])
        check_targets(job, "")
    if multirun:
        check_writable(str(base.hydra.sweep.dir), "hydra.sweep.dir")
    else:
        check_writable(str(base.hydra.run.dir), "hydra.run.dir")
    return added
