"""OPC UA Basic256Sha256: the emulator trusts only listed client certificates; the transport signs and encrypts."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from twinloop.errors import ConfigError, TransportInitError
from twinloop.harness.plan import plan
from twinloop.harness.runner import execute
from twinloop.harness.services import Services
from twinloop.rigs.certificates import make_certificate
from twinloop.rigs.emulators.base import EmulatorKind
from twinloop.rigs.emulators.opcua_server import OpcUaDeviceServer
from twinloop.rigs.emulators.power_module import PowerModuleDevice
from twinloop.rigs.registry import open_transport

ROOT = Path(__file__).parents[1]
KIND = EmulatorKind(PowerModuleDevice, OpcUaDeviceServer)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trusted client, a stranger, and the folder of trusted certificates (holding the first only)."""
    root = tmp_path_factory.mktemp("pki")
    cert, _ = make_certificate(root / "own", "client", "urn:bench:client")
    make_certificate(root / "own", "stranger", "urn:elsewhere:client")
    (root / "trusted").mkdir()
    shutil.copy(cert, root / "trusted" / "client.pem")
    return root


@pytest.fixture(scope="module")
def secured(pki: Path):
    options = KIND.server_options({"security_policy": "Basic256Sha256", "trusted": ["trusted"]}, pki)
    emulator = KIND.build(sensor_noise=0.0, server_options=options)
    emulator.start()
    yield emulator
    emulator.close()


def client(pki: Path, name: str = "client", **more: str) -> dict[str, str]:
    return {"security_policy": "Basic256Sha256", "certificate": str(pki / "own" / f"{name}.pem"),
            "private_key": str(pki / "own" / f"{name}-key.pem"), **more}


def test_a_trusted_client_reads_and_writes_over_a_secured_session(secured, pki: Path) -> None:
    with open_transport("module", secured.address, KIND.signal_map, timeout=3.0, options=client(pki)) as t:
        t.write("power", 20.0)
        secured.step(1.0)
        assert t.read(["power", "ambient"]) == {"power": 20.0, "ambient": 25.0}
        t.write("power", 0.0)
        secured.step(1.0)


def test_a_client_certificate_the_server_does_not_list_is_refused(secured, pki: Path) -> None:
    with pytest.raises(TransportInitError, match=r"does not trust this client's certificate .*stranger\.pem "
                                                 r"\(BadCertificateUntrusted\)"):
        open_transport("module", secured.address, KIND.signal_map, timeout=3.0,
                       options=client(pki, "stranger")).open()


def test_an_unsecured_client_finds_no_endpoint(secured) -> None:
    with pytest.raises(TransportInitError, match="offers no endpoint with security policy None"):
        open_transport("module", secured.address, KIND.signal_map, timeout=3.0).open()


def test_a_mode_the_server_does_not_offer_is_named(secured, pki: Path) -> None:
    with pytest.raises(TransportInitError, match="no endpoint with security policy Basic256Sha256, mode Sign"):
        open_transport("module", secured.address, KIND.signal_map, timeout=3.0,
                       options=client(pki, security_mode="Sign")).open()


def test_a_pem_key_under_any_name_and_an_encrypted_key_read(secured, pki: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from cryptography.hazmat.primitives import serialization

    from twinloop.rigs.certificates import read_private_key

    key = read_private_key(pki / "own" / "client-key.pem")
    (tmp_path / "client.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"bench-secret")))
    monkeypatch.setenv("BENCH_KEY_PASSWORD", "bench-secret")
    options = client(pki, private_key=str(tmp_path / "client.key"), private_key_password_env="BENCH_KEY_PASSWORD")
    with open_transport("module", secured.address, KIND.signal_map, timeout=3.0, options=options) as t:
        assert t.read(["ambient"]) == {"ambient": 25.0}
    monkeypatch.setenv("BENCH_KEY_PASSWORD", "wrong")
    with pytest.raises(TransportInitError, match=r"client\.key: cannot read it \(a wrong password"):
        open_transport("module", secured.address, KIND.signal_map, timeout=3.0, options=options).open()
    monkeypatch.delenv("BENCH_KEY_PASSWORD")
    with pytest.raises(TransportInitError, match="environment variable BENCH_KEY_PASSWORD is not set"):
        open_transport("module", secured.address, KIND.signal_map, timeout=3.0, options=options).open()


def test_a_missing_client_certificate_file_is_named(secured, pki: Path) -> None:
    with pytest.raises(TransportInitError, match=r"certificate .*nobody\.pem: cannot read it"):
        open_transport("module", secured.address, KIND.signal_map, timeout=3.0,
                       options=client(pki, certificate=str(pki / "own" / "nobody.pem"))).open()


@pytest.mark.parametrize("server, words", [
    ({"security_policy": "Basic256Sha256"}, "needs 'trusted'"),
    ({"security_policy": "Basic256Sha256", "trusted": ["own/client.pem"]}, "is a file: list the folder"),
    ({"security_policy": "Basic256Sha256", "trusted": ["absent"]}, "trusted folder .*absent does not exist"),
    ({"security_policy": "Basic256Sha256", "trusted": ["own"]}, r"client-key\.pem: not an X\.509 certificate"),
    ({"trusted": ["trusted"]}, "need a security_policy other than None"),
    ({"security_policy": "Basic256Sha256", "trusted": ["trusted"], "certificate": "own/client.pem"},
     "give both 'certificate' and 'private_key'"),
    ({"security_policy": "Basic256", "trusted": ["trusted"]}, "Input should be 'None' or 'Basic256Sha256'"),
])
def test_server_security_options_are_checked_at_plan_with_line_and_key(
        pki: Path, tmp_path: Path, server: dict, words: str) -> None:
    import yaml

    rig = pki / f"rig-{tmp_path.name}.yaml"
    rig.write_text("rig: secured\ndevices:\n  module:\n    emulator: power_module\n    protocol: opcua\n"
                   f"    server: {yaml.safe_dump(server, default_flow_style=True).strip()}\n")
    with pytest.raises(ConfigError, match=words) as err:
        plan(ROOT / "scenarios" / "smoke.yaml", rig)
    assert (err.value.file, err.value.line) == (str(rig), 6)
    assert err.value.key.startswith("devices.module.server")


def test_the_smoke_scenario_passes_on_a_secured_emulated_profile(pki: Path, twinloop_ray: Services) -> None:
    rig = pki / "emulated-opcua-secured.yaml"
    rig.write_text(
        "rig: emulated-opcua-secured\nclock: simulated\ndevices:\n  module:\n    emulator: power_module\n"
        "    protocol: opcua\n    timeout: 2 s\n"
        "    server: {security_policy: Basic256Sha256, trusted: [trusted]}\n"
        "    options: {security_policy: Basic256Sha256, certificate: own/client.pem,"
        " private_key: own/client-key.pem}\n")
    record = execute(plan(ROOT / "scenarios" / "smoke.yaml", rig))
    assert record.outcome == "pass", record.error
    assert record.samples.columns["module.temperature"][-1] > 100


def test_the_certificate_command_writes_a_client_certificate_the_transport_uses(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "twinloop.harness.cli", "certificate", str(tmp_path / "own"),
                           "--uri", "urn:bench-7:twinloop", "--name", "bench-7"],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)
    assert proc.returncode == 0, proc.stderr
    from twinloop.rigs.certificates import application_uri, read_certificate

    cert = tmp_path / "own" / "bench-7.pem"
    assert application_uri(read_certificate(cert), cert) == "urn:bench-7:twinloop"
    assert (tmp_path / "own" / "bench-7-key.pem").stat().st_mode & 0o077 == 0
