"""`run(cfg)`: build scenario, model, plugins and loggers from the config, then drive the loop.

Pure with respect to Hydra: tests call it with a composed config and a directory.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from clrun.checkpoint import FILENAME, load_checkpoint
from clrun.device_check import StepWindow, VirtualDevice
from clrun.errors import ClrunError, ConfigError, Interrupted
from clrun.generative_metrics.evaluation import generative_evaluation
from clrun.instantiate import build
from clrun.loggers import Resumed, build_loggers, finish, log_final
from clrun.loop import LoopSettings, TaskLoop
from clrun.metrics import compute_metrics
from clrun.module import ContinualModule
from clrun.objective import check_learner, check_objective, check_trained_by
from clrun.paths import default_data_dir
from clrun.plots import save_accuracy_curves, save_matrix_heatmap
from clrun.plugin import StrategyPlugin
from clrun.results import RunResult, write_atomic, write_results
from clrun.signals import sigterm_as_interrupt
from clrun.summary import run_title
from clrun.validate import validate

if TYPE_CHECKING:
    from clrun.generators.base import Generator


def quiet_lightning() -> None:
    """Lightning announces its accelerators at every Trainer; with one Trainer per task that is
    noise. Warnings about our deliberate choices (no validation loop, in-memory batches) too."""
    for name in ("pytorch_lightning.utilities.rank_zero", "pytorch_lightning.accelerators.cuda",
                 "lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.seed"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*`training_step` returned.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
    # the Multiband VAE builds a fresh optimizer per phase itself
    warnings.filterwarnings("ignore", message=".*configure_optimizers. returned .None.*")
    # architectural methods keep earlier columns and frozen batch norm in eval mode on purpose
    warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode at the start.*")


def build_plugins(strategy: DictConfig) -> list[StrategyPlugin]:
    """One plugin per non-null entry of `strategy.plugins`, in config order."""
    plugins = []
    for name, node in (strategy.get("plugins") or {}).items():
        if node is None:
            continue
        plugin = build(node, f"strategy.plugins.{name}")
        if not isinstance(plugin, StrategyPlugin):
            raise ConfigError(f"strategy.plugins.{name}._target_", node._target_,
                              "must name a clrun StrategyPlugin subclass")
        plugin.config_key = str(name)
        plugins.append(plugin)
    return plugins


def build_generator(cfg: DictConfig, scenario: Any, **overrides: Any) -> Generator:
    """`generator=...` for the input shape (unless overridden) and natural classes of the
    scenario."""
    overrides.setdefault("input_shape", scenario.input_shape)
    return build(cfg.generator, "generator", n_classes=scenario.n_natural, **overrides)


def attach_generator(cfg: DictConfig, choices: dict[str, str] | None, scenario: Any,
                     plugins: list[StrategyPlugin], net: torch.nn.Module) -> None:
    """Build `generator=...` for what the plugins that use one replay (inputs, or `net`'s
    features) and give it to them; a generator no plugin uses is a mistake."""
    node = cfg.get("generator")
    if node is None:
        return
    users = [p for p in plugins if p.uses_generator]
    if not users:
        name = (choices or {}).get("generator") or node.get("_target_")
        raise ConfigError("generator", name, f"strategy={strategy_label(cfg, choices)} uses "
                          "no generator; drop generator=... or choose a generative strategy "
                          "(dgr, dgr_distill, rtf, bir)")
    generator = build_generator(cfg, scenario,
                                input_shape=users[0].generator_input_shape(net, scenario))
    check_trained_by(generator, strategy_label(cfg, choices))
    for plugin in users:
        plugin.attach_generator(generator)


def trainer_kwargs(cfg: DictConfig) -> dict[str, Any]:
    kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    if kwargs.get("enable_progress_bar") is None:
        kwargs["enable_progress_bar"] = sys.stdout.isatty()
    if cfg.scenario.get("online"):
        kwargs.update(max_epochs=1, max_steps=-1)  # a single pass over each task
    return kwargs


def batch_size(cfg: DictConfig) -> int:
    return cfg.scenario.online_batch_size if cfg.scenario.get("online") else cfg.train.batch_size


def check_optimizer(factory: Any, net: torch.nn.Module) -> None:
    """Build the optimizer once now, so a bad argument fails before any training."""
    try:
        factory([p for p in net.parameters() if p.requires_grad])
    except (TypeError, ValueError) as error:
        raise ConfigError("optimizer", getattr(factory, "func", factory).__name__,
                          str(error)) from None


def strategy_label(cfg: DictConfig, choices: dict[str, str] | None) -> str:
    """The strategy's name; a combination (`strategy=[ewc,lwf]`) is named `ewc+lwf`."""
    choice = str((choices or {}).get("strategy") or "")
    if choice.startswith("[") and choice.endswith("]"):
        return "+".join(part.strip() for part in choice[1:-1].split(","))
    return str(cfg.strategy.get("name") or choice)


def config_summary(cfg: DictConfig, choices: dict[str, str] | None) -> dict[str, Any]:
    """The key choices of the resolved config, written into metrics.json."""
    plugins = [k for k, v in (cfg.strategy.get("plugins") or {}).items() if v is not None]
    objective = cfg.get("objective", "classification")
    learner = cfg.generator if objective == "generative" else cfg.model
    summary = {
        "objective": objective,
        "scenario": cfg.scenario.get("name"),
        "setting": cfg.scenario.setting,
        "n_tasks": cfg.scenario.n_tasks,
        "strategy": strategy_label(cfg, choices),
        "plugins": plugins,
        "stream": cfg.strategy.get("stream", "sequential"),
        "model": learner._target_.rsplit(".", 1)[-1],
        "optimizer": cfg.optimizer._target_.rsplit(".", 1)[-1],
        "lr": cfg.optimizer.lr,
        "batch_size": batch_size(cfg),
        "online": bool(cfg.scenario.get("online", False)),
        "max_epochs": cfg.trainer.max_epochs,
        "max_steps": cfg.trainer.get("max_steps", -1),
        "seed": cfg.seed,
        "devices": cfg.trainer.get("devices", 1),
        "paper": cfg.get("paper"),
    }
    if choices:
        summary["choices"] = {k: v for k, v in choices.items() if not k.startswith("hydra")}
    return summary


@contextmanager
def errors_naming_options(choices: dict[str, str] | None) -> Iterator[None]:
    """A plugin's refusal of the generator or model it was given names the option a user typed
    (`generator=vae`), not the class that option built (`'VAE'`)."""
    try:
        yield
    except ConfigError as error:
        option = (choices or {}).get(error.key) if error.key in ("generator", "model") else None
        if option is None:
            raise
        raise error.naming_option(option) from None


def run_identity(cfg: DictConfig, choices: dict[str, str] | None) -> dict[str, str | None]:
    """What a run is, as far as resuming goes: its strategy, generator, scenario and model
    options (the class a node builds where no option was recorded)."""
    def option(group: str, node: DictConfig | None) -> str | None:
        if node is None:
            return None
        return str((choices or {}).get(group) or str(node.get("_target_")).rsplit(".", 1)[-1])

    return {"strategy": strategy_label(cfg, choices),
            "generator": option("generator", cfg.get("generator")),
            "scenario": str(cfg.scenario.get("name") or option("scenario", cfg.scenario)),
            "model": option("model", cfg.model)}


def check_same_run(identity: dict[str, str | None], state: dict[str, Any], path: Path) -> None:
    """Refuse to resume a checkpoint another strategy, generator, scenario or model wrote (its
    states would not fit), before anything is trained or written."""
    saved = state.get("identity") or {}  # checkpoints from before clrun recorded it: no check
    differ = [key for key in identity if key in saved and saved[key] != identity[key]]
    if differ:
        then = " ".join(f"{key}={saved[key] or 'none'}" for key in differ)
        now = " ".join(f"{key}={identity[key] or 'none'}" for key in differ)
        raise ClrunError(f"cannot resume: the checkpoint at {path} was written by {then}, this "
                         f"run has {now}; resume with {then}, or start a new run directory "
                         "(another hydra.run.dir); the checkpoint is left as it was")


def resume_state(cfg: DictConfig, path: Path, identity: dict[str, str | None]
                 ) -> dict[str, Any] | None:
    """The checkpoint at `path` when resuming. `resume=true` refuses a run directory without
    one (a mistyped directory would silently start over); `resume=auto` starts from task 0.
    A checkpoint of another run (`identity`) is refused."""
    mode = cfg.get("resume")
    if mode is False or mode is None:
        return None
    if not path.is_file():
        if mode == "auto":
            print(f"clrun: no checkpoint at {path}; starting from task 0 (resume=auto)",
                  file=sys.stderr)
            return None
        raise ClrunError(f"resume=true, but there is no checkpoint at {path}; check "
                         "hydra.run.dir (the run directory to continue), or use resume=auto "
                         "to start from task 0 when there is none")
    state = load_checkpoint(path)
    check_same_run(identity, state, path)
    print(f"clrun: resuming from {path} after task {state['stages_done'] - 1}", file=sys.stderr)
    return state


def build_classifier(cfg: DictConfig, choices: dict[str, str] | None, scenario: Any,
                     plugins: list[StrategyPlugin]) -> ContinualModule:
    """The network of `model=...` in its Lightning module, extended by the plugins, with the
    generator (if any) given to the plugins that use one."""
    net = build(cfg.model, "model", input_shape=scenario.input_shape,
                head_sizes=scenario.head_sizes)
    attach_generator(cfg, choices, scenario, plugins, net)
    for plugin in plugins:
        plugin.check(scenario)
    optimizer_factory = build(cfg.optimizer, "optimizer")
    check_optimizer(optimizer_factory, net)
    module = ContinualModule(net, optimizer_factory, plugins, scenario.setting,
                             reset_optimizer=cfg.train.reset_optimizer,
                             active_units=cfg.train.get("active_units", "all"),
                             lr_milestones=cfg.train.get("lr_milestones"),
                             lr_gamma=cfg.train.get("lr_gamma", 0.1))
    for plugin in plugins:
        plugin.extend_model(module, scenario)
    return module


def build_learner(cfg: DictConfig, choices: dict[str, str] | None, scenario: Any,
                  plugins: list[StrategyPlugin], objective: str) -> ContinualModule | Generator:
    """The classifier, or under `objective=generative` the generator the plugins train."""
    if objective != "generative":
        return build_classifier(cfg, choices, scenario, plugins)
    strategy = strategy_label(cfg, choices)
    module = build_generator(cfg, scenario)
    for plugin in plugins:
        module = plugin.wrap_learner(
            module, lambda **overrides: build_generator(cfg, scenario, **overrides))
    check_learner(module, plugins, strategy)
    for plugin in plugins:
        plugin.check(scenario)
    return module


class FinishedRun(NamedTuple):
    scenario: Any
    module: ContinualModule
    state: dict[str, Any]          # the last checkpoint
    plugins: list[StrategyPlugin]  # as built (their checkpoint states in state["plugins"])


def finished_classifier(run_dir: Path) -> FinishedRun:
    """A classification run's scenario and network as its last checkpoint left them (eval
    mode), rebuilt from its `.hydra/config.yaml`, the checkpoint and the run's strategy
    plugins: for diagnostic scripts."""
    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    data_dir = Path(cfg.data_dir).expanduser() if cfg.get("data_dir") else default_data_dir()
    scenario = build(cfg.scenario, "scenario", seed=cfg.seed, data_dir=str(data_dir))
    plugins = build_plugins(cfg.strategy)
    module = build_classifier(cfg, None, scenario, plugins)
    state = load_checkpoint(run_dir / "checkpoints" / FILENAME)
    module.net.load_state_dict(state["model"])
    module.eval()
    return FinishedRun(scenario, module, state, plugins)


def save_plots(result: RunResult) -> list[Path]:
    """The accuracy matrix as a heatmap and each task's accuracy over time (classifiers)."""
    if result.metrics is None:
        return []
    title = f"{run_title(result.config)}  ACC {result.metrics.acc:.2f}"
    return [save_matrix_heatmap(result.matrix, result.run_dir / "accuracy_matrix.png", title),
            save_accuracy_curves(result.matrix, result.run_dir / "accuracy_curves.png", title)]


def run(cfg: DictConfig, run_dir: Path, choices: dict[str, str] | None = None,
        group: str | None = None) -> RunResult:
    """Validate, build, train through every task, write metrics.json and return the result.

    `group` names the sweep a job belongs to (W&B's group).
    """
    validate(cfg)
    quiet_lightning()
    if cfg.get("torch_threads"):
        torch.set_num_threads(int(cfg.torch_threads))
    pl.seed_everything(cfg.seed, verbose=False)
    data_dir = Path(cfg.data_dir).expanduser() if cfg.get("data_dir") else default_data_dir()
    scenario = build(cfg.scenario, "scenario", seed=cfg.seed, data_dir=str(data_dir))
    plugins = build_plugins(cfg.strategy)
    strategy = strategy_label(cfg, choices)
    objective = check_objective(cfg.get("objective", "classification"), plugins, strategy,
                                cfg.get("generator") is not None)
    with errors_naming_options(choices):
        module = build_learner(cfg, choices, scenario, plugins, objective)
    identity = run_identity(cfg, choices)
    settings = LoopSettings(
stream=cfg.strategy.get("stream", "sequential"),
                            batch_size=batch_size(cfg),
                            eval_batch_size=cfg.train.eval_batch_size,
                            drop_last=cfg.train.drop_last, seed=cfg.seed,
                            trainer_kwargs=trainer_kwargs(cfg), identity=identity,
                            steps_per_batch=cfg.train.steps_per_batch)
    run_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = run_dir / "checkpoints" / FILENAME
    state = resume_state(cfg, checkpoint, identity)
    loggers = build_loggers(cfg.get("logger"), run_dir,
                            OmegaConf.to_container(cfg, resolve=True), group,
                            resumed=Resumed.of(state))
    failed = True
    try:
        generative = generative_evaluation(cfg.metrics.generative, cfg.metrics, plugins,
                                           scenario, data_dir, run_dir, cfg.seed,
                                           learner=module if objective == "generative" else None)
        device_check = VirtualDevice() if cfg.get("check_devices") else nullcontext()
        loop = TaskLoop(scenario, module, plugins, settings, loggers,
                        checkpoint_path=checkpoint if cfg.get("checkpoint", True) else None,
                        generative=generative,
                        watchers=[StepWindow(device_check)] if cfg.get("check_devices") else [])
        started = time.perf_counter()
        try:
            with sigterm_as_interrupt(), errors_naming_options(choices), device_check:
                loop.run(state)
        except KeyboardInterrupt:  # outside a task's fit (Lightning handles it inside)
            raise Interrupted(len(loop.matrix), loop.checkpoint_path) from None
        loop_seconds = time.perf_counter() - started
        metrics = compute_metrics(loop.matrix, loop.initial) if loop.classifies else None
        result = RunResult(loop.matrix, loop.initial, metrics, run_dir,
                           config_summary(cfg, choices),
                           generative.to_dict() if generative is not None else None,
                           {k: v for plugin in plugins for k, v in plugin.results().items()})
        if loop.trainer is None or loop.trainer.is_global_zero:
            write_results(result)
            timings = {k: v for plugin in plugins for k, v in plugin.timings().items()}
            write_atomic(run_dir / "timing.json", json.dumps(
                {"train_eval_seconds": round(loop_seconds, 3), **timings}) + "\n")
            figures = [path for plugin in plugins for path in plugin.save_figures(run_dir)]
            log_final(loggers, result.tables(), result.summary(), save_plots(result) + figures)
        failed = False
    finally:
        finish(loggers, failed)
    return result
