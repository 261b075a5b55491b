"""The twinloop pytest plugin: service fixtures, and scenario YAML files as test items.

``pytest scenarios/`` runs every scenario on the emulated rig (or the rig given
with ``--twinloop-rig``), commits it to the ledger and verifies it from there.
Importing this module costs nothing: Ray, web3 and the harness load only when
a scenario item or a twinloop fixture is used.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import pytest

if TYPE_CHECKING:
    from twinloop.harness.services import Services

REQUIRE_ANVIL = "TWINLOOP_REQUIRE_ANVIL"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("twinloop", "twinloop hardware-in-the-loop scenarios")
    group.addoption("--twinloop-rig", type=Path, default=None,
                    help="rig profile for scenario files (default: emulated devices on 127.0.0.1)")
    group.addoption("--twinloop-home", type=Path, default=None,
                    help="home for the ledger of scenario runs (default: a fresh temporary directory)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "twinloop_scenario: a scenario file collected by twinloop")


@pytest.fixture(scope="session")
def twinloop_home(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where this session's embedded chain, IPFS store and outbox live."""
    return request.config.getoption("--twinloop-home") or tmp_path_factory.mktemp("twinloop-home")


@pytest.fixture(scope="session")
def twinloop_services(twinloop_home: Path) -> Iterator["Services"]:
    """Services for the session; each part starts on first use and stops at the end."""
    from twinloop.harness.services import ServiceOptions, Services

    services = Services(ServiceOptions(home=twinloop_home))
    yield services
    services.stop()


@pytest.fixture(scope="session")
def twinloop_ray(twinloop_services: "Services") -> "Services":
    """A local Ray on 127.0.0.1 for the whole session."""
    twinloop_services.start_ray()
    return twinloop_services


@pytest.fixture(scope="session")
def twinloop_ledger(twinloop_services: "Services") -> "Services":
    """The embedded anvil with RunLedger deployed; skips cleanly if anvil is not installed."""
    from twinloop.errors import LedgerUnavailableError
    from twinloop.ledger.anvil import find_anvil

    try:
        find_anvil()
    except LedgerUnavailableError as err:
        if os.environ.get(REQUIRE_ANVIL):
            raise
        pytest.skip(str(err))
    twinloop_services.start_ledger()
    return twinloop_services


@pytest.fixture(scope="session")
def power_module_emulator() -> Iterator[Any]:
    """A Modbus TCP power-module emulator on 127.0.0.1 for the session."""
    from twinloop.rigs.emulators.power_module import PowerModuleEmulator

    with PowerModuleEmulator() as emulator:
        yield emulator


def _is_scenario(file_path: Path) -> bool:
    """A YAML file under a ``scenarios`` folder whose text declares ``scenario:`` at the top level."""
    if file_path.suffix not in (".yaml", ".yml") or "scenarios" not in file_path.parts:
        return False
    try:
        text = file_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return True  # let the item report the error
    return any(line.startswith("scenario:") for line in text.splitlines())


def pytest_collect_file(parent: pytest.Collector, file_path: Path) -> pytest.Collector | None:
    if _is_scenario(file_path):
        return ScenarioFile.from_parent(parent, path=file_path)
    return None


class ScenarioFile(pytest.File):
    """A scenario YAML file: one test item that runs, commits and verifies it."""

    def collect(self) -> Iterator[pytest.Item]:
        yield pytest.Function.from_parent(self, name=self.path.stem, callobj=_run_scenario_file)


def _run_scenario_file(request: pytest.FixtureRequest, twinloop_ray: "Services",
                       twinloop_ledger: "Services") -> None:
    from twinloop.errors import ConfigError
    from twinloop.harness.pipeline import Pipeline

    path: Path = request.node.path
    scenario = path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path
    try:
        result = Pipeline(twinloop_ledger).run_scenario(scenario, request.config.getoption("--twinloop-rig"))
    except ConfigError as err:
        pytest.fail(str(err), pytrace=False)
    record, committed, verification = result.record, result.committed, result.verification
    lines = [f"run {record.run_id}: {record.outcome}, bundle {committed.cid}, tx {committed.tx_hash}"]
    lines += [f"  {v.name}: {v.outcome} ({v.value} {v.unit}, limit {v.limit}) {v.detail}"
              for v in record.verdicts]
    if record.error:
        lines.append(f"  error: {record.error}")
    lines += [f"  verify {c.name}: {c.status} {c.detail}" for c in verification.checks if c.status == "failed"]
    if record.outcome != "pass" or not verification.ok:
        pytest.fail("\n".join(lines), pytrace=False)
