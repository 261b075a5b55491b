"""The wheel holds one top-level package, and the installed entry points work and stay light."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "node_modules", "build", "dist", "*.egg-info",
                                    "__pycache__", ".pytest_cache", ".twinloop")
HEAVY = ("ray", "web3", "vyper", "pymodbus", "numpy")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    """The wheel built offline from a copy of the source tree (keeps build/ out of the repo)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=NOT_SOURCE)
    run = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                          "--no-index", "--disable-pip-version-check", "-w", str(tmp / "dist"), str(src)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    (whl,) = (tmp / "dist").glob("twinloop-*.whl")
    with zipfile.ZipFile(whl) as zf:
        yield zf


def test_wheel_has_only_the_twinloop_package(wheel: zipfile.ZipFile) -> None:
    """harness/, rigs/, twins/, ledger/ ship as twinloop.*, never as top-level packages."""
    names = set(wheel.namelist())
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"twinloop"}
    for path in ("twinloop/__init__.py", "twinloop/harness/cli.py", "twinloop/rigs/modbus.py",
                 "twinloop/twins/model.py", "twinloop/ledger/contracts/RunLedger.vy",
                 "twinloop/ledger/contracts/RunLedger.json"):
        assert path in names


def test_wheel_entry_points(wheel: zipfile.ZipFile) -> None:
    """The console script and the pytest11 plugin point into the twinloop namespace."""
    (entry_points,) = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    text = wheel.read(entry_points).decode()
    assert "twinloop.harness.cli:main" in text
    assert "twinloop.harness.pytest_plugin" in text


def test_pytest_plugin_import_is_light() -> None:
    """Importing the plugin (as pytest does in every session) pulls in none of the heavy stacks."""
    code = (f"import sys, twinloop.harness.pytest_plugin; "
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


@pytest.mark.parametrize("cmd", [
    [str(Path(sys.executable).with_name("twinloop")), "--help"],
    [sys.executable, "-m", "twinloop.harness.cli", "--help"],
], ids=["console-script", "python-m"])
def test_cli_help(cmd: list[str]) -> None:
    """``twinloop --help`` and ``python -m twinloop.harness.cli --help`` exit 0."""
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "usage:" in run.stdout
