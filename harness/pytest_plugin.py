"""The twinloop pytest plugin: service fixtures, and scenario YAML files as test items.

``pytest scenarios/`` runs every scenario on the emulated rig (or the rig given
with ``--twinloop-rig``), commits it to the ledger and verifies it from there.
A ``hardware: true`` scenario without ``--rig`` is gated instead (``harness.gate``):
it passes only on a verified, passing run recorded by an authorised bench for the
same scenario hash and DUT version (``--require-baseline``: the reviewer-accepted
one), read from ``--ledger`` or ``--chain URL --contract ADDR``; otherwise it fails
with the reason, or skips with it under ``--ledger-missing=skip``. The run's
attestation must be signed by its recorder's address or by a key given with
``--public-key PEM`` (or the ``twinloop_public_keys`` ini setting); an unsigned
run fails unless ``--no-require-attestation`` (or ``twinloop_require_attestation = false``).
Importing this module costs nothing: Ray, web3 and the harness load only when
a scenario item or a twinloop fixture is used.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import pytest

if TYPE_CHECKING:
    from twinloop.harness.services import Services

REQUIRE_ANVIL = "TWINLOOP_REQUIRE_ANVIL"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("twinloop", "twinloop hardware-in-the-loop scenarios")
    group.addoption("--twinloop-rig", "--rig", dest="twinloop_rig", type=Path, default=None,
                    help="rig profile for scenario files (default: emulated devices on 127.0.0.1)")
    group.addoption("--twinloop-home", "--ledger", dest="twinloop_home", type=Path, default=None,
                    help="home of the embedded ledger the runs are committed to "
                         "(default: a fresh temporary directory)")
    group.addoption("--dut-version", dest="twinloop_dut_version", default=None,
                    help="version of the device under test, recorded instead of the scenario's dut.version")
    group.addoption("--chain", dest="twinloop_chain", default=None, metavar="URL",
                    help="JSON-RPC URL of a chain holding RunLedger instead of the embedded anvil (reading it "
                         "needs no key; recording needs the recorder's key in $TWINLOOP_RECORDER_KEY)")
    group.addoption("--contract", dest="twinloop_contract", default=None, metavar="ADDR",
                    help="RunLedger address on --chain")
    group.addoption("--ledger-missing", dest="twinloop_ledger_missing", choices=("fail", "skip"),
                    default="fail",
                    help="a hardware scenario without --rig is gated on the ledger: 'fail' (default) when no "
                         "verified passing run is found, or 'skip' with the reason (tampering always fails)")
    group.addoption("--require-baseline", dest="twinloop_require_baseline", action="store_true",
                    help="the gate accepts only the run a reviewer accepted as the baseline")
    group.addoption("--public-key", dest="twinloop_public_keys", action="append", type=Path, default=[],
                    metavar="PEM", help="a bench's public key (PEM) trusted to sign run attestations, besides "
                                        "the recorders' addresses (repeatable; added to twinloop_public_keys)")
    group.addoption("--require-attestation", dest="twinloop_require_attestation",
                    action=argparse.BooleanOptionalAction, default=None,
                    help="the gate refuses a run whose bundle carries no signed attestation (the default; "
                         "--no-require-attestation accepts unsigned bundles from before twinloop signed runs)")
    parser.addini("twinloop_public_keys", type="paths", default=[],
                  help="PEM public keys of the benches that sign with a standard key (relative to this file)")
    parser.addini("twinloop_require_attestation", type="bool", default=True,
                  help="whether the gate refuses runs without a signed attestation (default: true)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "twinloop_scenario: a scenario file collected by twinloop")
    config.addinivalue_line("markers", "twinloop_hardware: a scenario that needs a physical rig")
    config.addinivalue_line("markers", "scenario(path, point=None): the scenario file the rig, twin and "
                            "run_record fixtures use")


@pytest.fixture(scope="session")
def twinloop_home(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where this session's embedded chain, IPFS store and outbox live."""
    return request.config.getoption("twinloop_home") or tmp_path_factory.mktemp("twinloop-home")


@pytest.fixture(scope="session")
def twinloop_services(request: pytest.FixtureRequest, twinloop_home: Path) -> Iterator["Services"]:
    """Services for the session; each part starts on first use and stops at the end."""
    from twinloop.harness.services import ServiceOptions, Services

    config = request.config
    services = Services(ServiceOptions(home=twinloop_home, chain_url=config.getoption("twinloop_chain"),
                                       contract=config.getoption("twinloop_contract")))
    yield services
    services.stop()


@pytest.fixture(scope="session")
def twinloop_ray(twinloop_services: "Services") -> "Services":
    """A local Ray on 127.0.0.1 for the whole session."""
    twinloop_services.start_ray()
    return twinloop_services


@pytest.fixture(scope="session")
def twinloop_ledger(twinloop_services: "Services") -> "Services":
    """The embedded anvil with RunLedger deployed (or the --chain given); skips cleanly if anvil is not installed."""
    from twinloop.errors import LedgerUnavailableError
    from twinloop.ledger.anvil import find_anvil

    if twinloop_services.options.chain_url:
        twinloop_services.start_ledger()
        return twinloop_services
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


def _relative(path: Path) -> Path:
    return path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path


class ScenarioFile(pytest.File):
    """A scenario YAML file: one test item per matrix point, each run, committed and verified."""

    def collect(self) -> Iterator[pytest.Item]:
        from twinloop.errors import ConfigError
        from twinloop.harness.scenario import load_points

        try:
            points = load_points(_relative(self.path))
        except ConfigError as err:
            item = pytest.Function.from_parent(self, name=self.path.stem, callobj=_run_scenario_item)
            item.twinloop_source, item.twinloop_problem = None, str(err)
            yield item
            return
        for source in points:
            name = f"{self.path.stem}[{source.point_id}]" if source.point_id else self.path.stem
            item = pytest.Function.from_parent(self, name=name, callobj=_run_scenario_item)
            item.twinloop_source, item.twinloop_problem = source, None
            item.add_marker("twinloop_scenario")
            if source.scenario.hardware:
                item.add_marker("twinloop_hardware")
            yield item


def _run_scenario_item(request: pytest.FixtureRequest) -> None:
    """Plan, run, commit and verify one scenario point; each measurement becomes a JUnit property."""
    node = request.node
    if node.twinloop_problem is not None:
        pytest.fail(node.twinloop_problem, pytrace=False)
    source = node.twinloop_source
    rig = request.config.getoption("twinloop_rig")
    if source.scenario.hardware and rig is None:
        _gate_hardware_item(request, source)
        return
    from twinloop.errors import ConfigError
    from twinloop.harness.pipeline import Pipeline

    if any(d.twin is not None for d in source.scenario.devices.values()):
        request.getfixturevalue("twinloop_ray")
    services = request.getfixturevalue("twinloop_ledger")
    try:
        result = Pipeline(services).run_scenario(
            source, rig, dut_version=request.config.getoption("twinloop_dut_version"))
    except ConfigError as err:
        pytest.fail(str(err), pytrace=False)
    record, committed, verification = result.record, result.committed, result.verification
    props = node.user_properties
    props += [("run_id", record.run_id), ("bundle_cid", committed.cid), ("tx", committed.tx_hash),
              ("outcome", record.outcome), ("dut", f"{record.dut.id} {record.dut.version}"),
              ("scenario_sha256", record.scenario.sha256)]
    for v in record.verdicts:
        props += [(f"{v.name}.outcome", v.outcome + (" (marginal)" if v.marginal else "")),
                  (f"{v.name}.value", "" if v.value is None else f"{v.value:g}"),
                  (f"{v.name}.limit", v.limit), (f"{v.name}.unit", v.unit)]
    lines = [f"run {record.run_id}: {record.outcome}, bundle {committed.cid}, tx {committed.tx_hash}"]
    lines += [f"  {v.name}: {v.outcome} ({v.value} {v.unit}, limit {v.limit}) {v.detail}"
              for v in record.verdicts]
    if record.error:
        lines.append(f"  error: {record.error}")
    lines += [f"  verify {c.name}: {c.status} {c.detail}" for c in verification.checks if c.status == "failed"]
    if record.outcome != "pass" or not verification.ok:
        pytest.fail("\n".join(lines), pytrace=False)


def _gate_hardware_item(request: pytest.FixtureRequest, source: Any) -> None:
    """A hardware scenario without --rig: pass on a verified passing run from the ledger (``harness.gate``)."""
    from twinloop.errors import ConfigError, LedgerError, LedgerUnavailableError
    from twinloop.harness.gate import gate
    from twinloop.ledger.dsse import key_from_pem_file

    config = request.config
    missing = config.getoption("twinloop_ledger_missing")
    prefix = "needs a physical rig (hardware: true) and the ledger has no verified passing run for it"
    problem, skippable = None, False
    required = config.getoption("twinloop_require_attestation")
    try:  # failing outside the handlers keeps web3's exception chain out of the report
        keys = [key_from_pem_file(p, "--public-key") for p in config.getoption("twinloop_public_keys")]
        keys += [key_from_pem_file(p, "twinloop_public_keys") for p in config.getini("twinloop_public_keys")]
        services = request.getfixturevalue("twinloop_ledger")
        result = gate(source, services, config.getoption("twinloop_dut_version"),
                      config.getoption("twinloop_require_baseline"), public_keys=keys,
                      require_attestation=config.getini("twinloop_require_attestation") if required is None
                      else required)
    except ConfigError as err:
        problem = str(err)
    except LedgerUnavailableError as err:
        problem, skippable = f"{prefix}: ledger unreachable: {err}", True
    except LedgerError as err:
        problem = f"{prefix}: {err}"
    if problem is not None:
        if skippable and missing == "skip":
            pytest.skip(problem)
        pytest.fail(problem, pytrace=False)
    node = request.node
    node.user_properties += [("gate", result.kind), ("scenario_sha256", result.sha256),
                             ("dut", f"{result.dut_id} {result.dut_version}")]
    if result.passed and result.entry is not None:
        e = result.entry
        node.user_properties += [("run_id", e.run_id), ("bundle_cid", e.bundle_cid), ("tx", e.tx_hash),
                                 ("block", str(e.block_number)), ("recorder", e.recorder),
                                 ("outcome", e.verdict)]
        return
    if missing == "skip" and result.missing:
        pytest.skip(f"{prefix}: {result.message()}")
    pytest.fail(f"{prefix}: {result.message()}", pytrace=False)


def _marked_scenario(request: pytest.FixtureRequest) -> Any:
    from twinloop.errors import ConfigError
    from twinloop.harness.plan import plan

    marker = request.node.get_closest_marker("scenario")
    if marker is None or not marker.args:
        raise pytest.UsageError(f"{request.node.nodeid}: the '{request.fixturename}' fixture needs "
                                "@pytest.mark.scenario('path/to/scenario.yaml')")
    from twinloop.harness.scenario import load_scenario

    try:
        source = load_scenario(Path(marker.args[0]), marker.kwargs.get("point"))
        return plan(source, request.config.getoption("twinloop_rig"))
    except ConfigError as err:
        pytest.fail(str(err), pytrace=False)


@pytest.fixture
def rig(request: pytest.FixtureRequest) -> Iterator[Any]:
    """The marked scenario's rig, opened (emulators started on 127.0.0.1), safe state applied after."""
    from twinloop.rigs.rig import Rig

    p = _marked_scenario(request)
    live = Rig({name: d.setup for name, d in p.devices.items()}).open()
    try:
        yield live
    finally:
        live.apply_safe_state()
        live.close()


@pytest.fixture
def twin(request: pytest.FixtureRequest) -> Any:
    """A local (in-process) twin of the marked scenario's first device that has one."""
    from twinloop.twins.actor import DeviceTwin

    p = _marked_scenario(request)
    device, d = next(((n, d) for n, d in p.devices.items() if d.twin is not None), (None, None))
    if d is None:
        pytest.fail(f"scenario {p.source.path} declares no twin", pytrace=False)
    return DeviceTwin(device, d.twin.model, d.twin.params, d.twin.level, d.twin.particles)


@pytest.fixture
def run_record(request: pytest.FixtureRequest, twinloop_ray: "Services",
               twinloop_ledger: "Services") -> Any:
    """The marked scenario run end to end (committed and verified): its ``RunRecord``."""
    from twinloop.harness.pipeline import Pipeline

    p = _marked_scenario(request)
    return Pipeline(twinloop_ledger).run_scenario(p.source, p.rig).record
