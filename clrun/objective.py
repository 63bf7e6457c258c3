"""`objective=`: what a run trains and how it is measured.

`classification` (the default) trains a classifier and fills the accuracy matrix.
`generative` makes the generator itself the learner (continual generative modelling): tasks
stream data to `generator=...`, and after every task it is scored on every task seen so far by
FID, precision and recall; there is no classifier. Only plugins that apply to any network with
a loss take part (their `objectives` name `generative`): L2, EWC and online EWC (Fisher of the
generator's own loss), SI, `generative_replay` (the generator replays its frozen previous
copy), and the generators' own strategies (Multiband VAE, LogCL, BinPlay's autoencoder);
classifier-only strategies are refused in one line.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from clrun.errors import ConfigError
from clrun.plugin import StrategyPlugin

if TYPE_CHECKING:
    from clrun.generators.base import Generator

OBJECTIVES = ("classification", "generative")


def plugins_for(objective: str, plugins: list[StrategyPlugin]) -> list[str]:
    """Names of the plugins that cannot run under `objective`."""
    return [type(p).__name__ for p in plugins if objective not in p.objectives]


def check_objective(objective: object, plugins: list[StrategyPlugin], strategy: str,
                    has_generator: bool) -> str:
    """Refuse an unknown objective, a strategy that does not train that kind of learner, and
    `objective=generative` without a generator."""
    if objective not in OBJECTIVES:
        raise ConfigError("objective", objective, "use one of: " + ", ".join(OBJECTIVES))
    wrong = plugins_for(str(objective), plugins)
    if wrong and objective == "generative":
        raise ConfigError("strategy", strategy, "trains a classifier, but objective=generative "
                          "trains only the generator; use naive, joint, l2, ewc, oewc, si, "
                          "generative_replay, multiband, logcl, binplay or pnn_abc there (or drop "
                          "objective=generative)")
    if wrong:
        raise ConfigError("strategy", strategy, "trains only a generator; add "
                          "objective=generative (or replay into a classifier with strategy=dgr)")
    if objective == "generative" and not has_generator:
        raise ConfigError("generator", None, "objective=generative trains a generator: choose "
                          "one with generator=vae (any input), generator=conv_vae (28×28, "
                          "32×32 images) or generator=gan")
    return str(objective)


def check_trained_by(generator: Generator, strategy: str) -> None:
    """A generator with phases of its own (Multiband VAE, BinPlay's autoencoder, PNN+ABC's
    columns) is trained by its strategy alone, under either objective."""
    own = generator.trained_by_strategy
    if own is not None and strategy != own:
        raise ConfigError("strategy", strategy, f"this generator is trained by strategy={own} "
                          "(alone); use it")


def check_learner(generator: Generator, plugins: list[StrategyPlugin], strategy: str) -> None:
    """A generator with phases of its own runs with its strategy alone; penalties act on the
    gradients of one optimizer step per batch and on the Fisher of a likelihood, so a GAN (two
    optimizers, no likelihood) cannot take them. Plugins that use the generator receive it."""
    from clrun.strategies.regularization import QuadraticPenalty

    check_trained_by(generator, strategy)
    if not generator.automatic_optimization and any(isinstance(p, QuadraticPenalty)
                                                    for p in plugins):
        raise ConfigError("strategy", strategy, "penalties need a generator with a likelihood "
                          "loss and one optimizer step per batch; use generator=vae or "
                          "generator=conv_vae (a GAN runs with naive, joint or "
                          "generative_replay)")
    for plugin in plugins:
        if plugin.uses_generator:
            plugin.attach_generator(generator)
