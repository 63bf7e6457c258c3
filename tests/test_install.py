"""The config tree ships inside the wheel: a plain `pip install .` finds it from any folder."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

from clrun.paths import config_dir

REPO = Path(__file__).resolve().parents[1]


def test_editable_install_finds_the_checkout_config():
    assert config_dir() == REPO / "conf"


@pytest.mark.slow
def test_wheel_install_into_a_fresh_venv_runs_clrun(tmp_path):
    """Slow (~21 s): builds a wheel and installs it into a fresh venv."""
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels),
                    str(REPO)], check=True, capture_output=True, timeout=600)
    wheel = next(wheels.glob("clrun-*.whl"))
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    # The new venv gets its own clrun but borrows this environment's dependencies (torch,
    # Lightning, ...) through a .pth line; the editable clrun here is not activated by it.
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()"
                           "['purelib'])"], capture_output=True, text=True, check=True)
    borrowed = {sysconfig.get_paths()[k] for k in ("purelib", "platlib")}
    (Path(site.stdout.strip()) / "borrowed_dependencies.pth").write_text(
        "\n".join(sorted(borrowed)) + "\n")
    subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "-q", str(wheel)],
                   check=True, capture_output=True, timeout=600)
    where = subprocess.run([str(python), "-c", "from clrun.paths import config_dir; "
                            "print(config_dir())"], capture_output=True, text=True, cwd=tmp_path,
                           check=True).stdout.strip()
    assert where.startswith(str(env_dir)) and where.endswith("clrun/conf")
    out = subprocess.run([str(env_dir / "bin" / "clrun"), "trainer.max_epochs=1", "logger=none",
                          "hydra.run.dir=run"], capture_output=True, text=True, cwd=tmp_path,
                         timeout=600)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "run" / "metrics.json").is_file()
