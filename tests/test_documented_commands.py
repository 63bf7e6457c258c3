"""Every command the manual shows composes: each `clrun ...` / `clrun-reproduce ...` line of
the README and the docs pages, and every option of the README's options table, goes through
the checks `clrun` makes before Hydra starts (options, keys, sweeps, config safety) and the value
checks `run` makes before training. A documented command can never be refused again."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

from clrun.errors import ConfigError
from clrun.paths import config_dir
from clrun.preflight import check_command_line
from clrun.validate import validate
from tests.conftest import compose_cfg

REPO = Path(__file__).resolve().parents[1]
# docs/results-history.md records commands as they ran then; the rest is the current manual
PAGES = [REPO / "README.md", *sorted(p for p in (REPO / "docs").glob("*.md")
                                     if p.name != "results-history.md")]
PROGRAMS = ("clrun", "clrun-reproduce")
# words that stand for something the reader fills in
PLACEHOLDER = re.compile(r"<[^>]*>|\.\.\.|^[A-Z_]+$|=[A-Z_]+$|=FOLDER|=DIR|=PATH|=N$")
# values that only make sense on a machine the test does not have
NEEDS_HARDWARE = ("trainer.accelerator",)


@dataclass(frozen=True)
class Documented:
    where: str
    overrides: tuple[str, ...]
    multirun: bool
    # an option the overrides qualify, tried first (`generator=gan` for its architecture)
    context: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"{self.where}: {' '.join(self.overrides)}"


def command_lines(text: str) -> list[tuple[int, str]]:
    """(line number, command) for shell lines in fenced blocks and `clrun ...` code spans."""
    found: list[tuple[int, str]] = []
    fenced = False
    pending = ""
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced, pending = not fenced, ""
            continue
        if fenced:
            pending += line.rstrip().removesuffix("\\") + " "
            if not line.rstrip().endswith("\\"):
                found.append((number, pending.strip().removeprefix("$ ")))
                pending = ""
            continue
        for span in re.findall(r"`((?:clrun|clrun-reproduce) [^`]+)`", line):
            found.append((number, span))
    return found


def as_documented(where: str, line: str) -> Documented | None:
    """The overrides a documented command line passes (None: not a clrun command we can
    compose — another program, a placeholder, a user's own config folder)."""
    try:
        words = shlex.split(line.replace("\\|", "|"), comments=True)
    except ValueError:
        return None
    while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):  # VAR=value before the command
        words = words[1:]
    if not words or words[0] not in PROGRAMS:
        return None
    program, args = words[0], words[1:]
    if any(PLACEHOLDER.search(a) for a in args) or any("searchpath" in a for a in args):
        return None
    if program == "clrun-reproduce":
        if not args or args[0].startswith("-"):
            return None
        return Documented(where, (f"experiment={args[0]}", *args[1:]), multirun=True)
    flags = {a for a in args if a.startswith("-")}
    if flags - {"-m", "--multirun", "--cfg", "job", "--resolve"} or "--help" in args:
        return None
    overrides = tuple(a for a in args if not a.startswith("-") and a != "job")
    return Documented(where, overrides, multirun=bool(flags & {"-m", "--multirun"}))


def documented_commands() -> list[Documented]:
    commands = []
    for page in PAGES:
        for number, line in command_lines(page.read_text()):
            command = as_documented(f"{page.relative_to(REPO)}:{number}", line)
            if command is not None:
                commands.append(command)
    return commands


def table_options() -> list[Documented]:
    """The README options table's spans of `key=value` words, each composed as one command. A
    bare name is an option of the row's group (the strategy row, or the key of the cell's first
    span: `scenario=split_digits`, `split_fmnist`); a bare number a value of the key just
    before it (`scenario.n_tasks=10` or `20`). A dotted key is tried with the option of its
    group named before it in the cell (`gan` ... `generator.architecture=dcgan`)."""
    text = (REPO / "README.md").read_text()
    options = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.startswith("| ") or "`" not in line:
            continue
        label, cell = line.split("|")[1].strip(), line.split("|", 2)[-1]
        primary: str | None = label if (config_dir() / label).is_dir() else None
        last: str | None = None
        chosen: dict[str, str] = {}  # group -> the option named last in this cell
        for span in re.findall(r"`([^`]+)`", cell):
            if "clrun" in span or PLACEHOLDER.search(span) or span.endswith("="):
                continue
            words = span.replace("\\|", "|").split()
            if all("=" in w for w in words):
                primary = primary or words[0].split("=")[0]
                last = words[-1].split("=")[0]
                sets = [words]
            elif len(words) == 1 and re.fullmatch(r"-?[0-9.]+", span) and last:
                sets = [[f"{last}={span}"]]
            elif len(words) == 1 and re.fullmatch(r"[a-z0-9_]+", span) and primary:
                sets = [[f"{primary}={span}"]]
            else:
                continue
            for words in sets:
                name, _, value = words[0].partition("=")
                group = name.lstrip("+~").split(".")[0]
                for alternative in value.split("|") if "[" not in value else [value]:
                    overrides = (f"{name}={alternative}", *words[1:])
                    context = (chosen[group],) if "." in name and group in chosen else ()
                    options.append(Documented(f"README.md:{number}", overrides, False, context))
                    if "." not in name:
                        chosen[group] = overrides[0]
    return options


def needed_strategy(overrides: tuple[str, ...]) -> tuple[str, ...]:
    """A plugin's or a generator's own key needs its strategy (and generator) chosen."""
    keys = [o.split("=", 1)[0].lstrip("+~") for o in overrides]
    added: list[str] = []
    if {"experiment", "row"} & set(keys):  # they choose their own strategy and generator
        return ()
    for key in keys:
        parts = key.split(".")
        if key.startswith("strategy.plugins.") and not any(k == "strategy" for k in keys):
            added.append(f"strategy={parts[2]}")
        if key.startswith("generator.") and "generator" not in keys:
            added += ["strategy=dgr", "generator=vae"] if not added else ["generator=vae"]
    return tuple(dict.fromkeys(added))


def composes(command: Documented, tmp_path: Path) -> None:
    if command.context:
        try:
            return composes(Documented(command.where, (*command.context, *command.overrides),
                                       command.multirun), tmp_path)
        except Exception:  # noqa: BLE001 - the option may not qualify that one; try alone
            pass
    overrides = [*needed_strategy(command.overrides), *command.overrides]
    added = check_command_line(str(config_dir()), "config", None, overrides,
                               multirun=command.multirun, will_run=True)
    if command.multirun:
        return  # every sweep point was composed and checked above
    try:
        validate(compose_cfg(*overrides, *added))
    except ConfigError as error:
        if error.key not in NEEDS_HARDWARE:
            raise


DOCUMENTED = documented_commands()
OPTIONS = table_options()


def test_the_manual_shows_commands_and_options():
    assert len(DOCUMENTED) >= 20 and len(OPTIONS) >= 60


@pytest.mark.slow
@pytest.mark.parametrize("command", DOCUMENTED + OPTIONS, ids=str)
def test_documented_command_composes(command, tmp_path, monkeypatch):
    """Slow (~45 s for all 216): each composes the whole config tree through Hydra."""
    monkeypatch.chdir(tmp_path)  # run directories a check may create stay in tmp
    composes(command, tmp_path)


def test_a_command_that_does_not_compose_is_caught(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bad = as_documented("x", "clrun strategy=dgr generator=vae generator.optimiser.lr=0.1")
    with pytest.raises(Exception, match="generator.optimiser"):
        composes(bad, tmp_path)
    line = "clrun -m strategy=ewc,si seed=1,2,3   # sweep"
    assert as_documented("x", line) == Documented("x", ("strategy=ewc,si", "seed=1,2,3"), True)
