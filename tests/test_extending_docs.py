"""docs/extending.md works as printed: its files, written into an empty folder, run with the
`clrun` commands it shows (with a small budget), so the page cannot drift from the code."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from tests.conftest import read_metrics, run_cli

DOC = Path(__file__).resolve().parents[1] / "docs" / "extending.md"
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```\s*$", re.MULTILINE | re.DOTALL)
FILE_LINE = re.compile(r"#\s*((?:mylab|myconf)/\S+\.(?:py|yaml))\s*$")
KINDS = ("strategy", "model", "scenario", "generator")
# a small budget on top of every documented command; a generator is scored by a feature net
# trained for a few steps, once per test (CLRUN_DATA is the test's own folder)
BUDGET = ("trainer.max_epochs=1", "logger=none")
GENERATOR_BUDGET = ("metrics.prd.runs=1", "metrics.feature_net.steps=50",
                    "metrics.sample_grids=false")


def blocks() -> list[tuple[str, str]]:
    """(language, body) of every fenced code block of the page."""
    return FENCE.findall(DOC.read_text())


def documented_files() -> dict[str, str]:
    """Path -> text of every block whose first line is a comment naming a file."""
    files = {}
    for _, body in blocks():
        match = FILE_LINE.fullmatch(body.splitlines()[0].strip()) if body.strip() else None
        if match:
            assert match.group(1) not in files, f"{match.group(1)} is shown twice"
            files[match.group(1)] = body
    return files


def documented_commands() -> list[str]:
    """Every command line of the bash blocks (continuation lines joined)."""
    commands = []
    for language, body in blocks():
        if language != "bash":
            continue
        for line in body.replace("\\\n", " ").splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                commands.append(line.strip())
    return commands


def parse(command: str, folder: Path) -> tuple[dict[str, str], list[str]]:
    """The environment assignments and clrun's arguments of a documented command, with
    $PWD standing for `folder`; anything else a shell would do fails here, not silently."""
    words = shlex.split(command.replace("$PWD", str(folder)), comments=True)
    env = {}
    while words and re.fullmatch(r"[A-Z_]+=.*", words[0]):
        name, value = words.pop(0).split("=", 1)
        env[name] = value
    assert words and words[0] == "clrun", f"not a clrun command: {command}"
    assert not any("$" in w for w in words), f"unexpanded shell syntax: {command}"
    return env, words[1:]


def choices(args: list[str]) -> dict[str, str]:
    """Config group choices a command makes (`group=option`, `'group=[a,b]'`)."""
    return {k: v for k, _, v in (a.partition("=") for a in args) if k in KINDS}


def test_page_shows_all_four_kinds_and_runs_each():
    files = documented_files()
    commands = documented_commands()
    assert commands, "no clrun command found in docs/extending.md"
    chosen = [choices(parse(c, Path("/x"))[1]) for c in commands]
    for kind in KINDS:
        configs = [f for f in files if f.startswith(f"myconf/{kind}/")]
        assert configs, f"docs/extending.md shows no myconf/{kind}/*.yaml"
        for config in configs:
            name = Path(config).stem
            assert any(name in c.get(kind, "").strip("[]").split(",") for c in chosen), (
                f"no documented command uses {kind}={name}")
    for path, text in files.items():
        if path.endswith(".yaml"):
            module = re.search(r"_target_:\s*(mylab\.[\w.]+)\.\w+", text)
            if module:
                assert module.group(1).replace(".", "/") + ".py" in files, (
                    f"{path} names {module.group(1)}, which the page does not show")


def command_id(command: str) -> str:
    return " ".join(f"{k}={v}" for k, v in choices(parse(command, Path("/x"))[1]).items())


@pytest.mark.slow
@pytest.mark.parametrize("command", documented_commands(), ids=command_id)
def test_documented_command_runs(command, tmp_path):
    """Slow (~13 s): the real clrun in a subprocess, importing torch."""
    for path, text in documented_files().items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    env, args = parse(command, tmp_path)
    chosen = choices(args)
    extra = list(BUDGET) + (list(GENERATOR_BUDGET) if "generator" in chosen else [])
    typed = {a.split("=", 1)[0] for a in args}
    extra = [e for e in extra if e.split("=", 1)[0] not in typed]
    result = run_cli(*args, "hydra.run.dir=run", *extra, cwd=tmp_path,
                     env={**env, "CLRUN_DATA": str(tmp_path / "data")})
    assert result.returncode == 0, f"{command}\n{result.stderr[-3000:]}"
    metrics = read_metrics(tmp_path / "run")
    assert metrics["config"]["choices"]["strategy"] == chosen.get("strategy", "naive")
    for kind, option in chosen.items():
        assert metrics["config"]["choices"][kind] == option
    if "generator" in chosen:  # the generator was sampled and scored after every task
        fid = metrics["generative"]["fid"]
        assert len(fid) == metrics["config"]["n_tasks"] and None not in fid[-1]
