"""CAN across processes: the socketcand server on 127.0.0.1 in front of an emulated node's virtual bus,
reached by python-can's own socketcand client (the CAN transport's ``can+socketcand://`` addresses)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import can
import pytest

from twinloop.errors import TransportOperationError, TransportTimeoutError
from twinloop.harness.plan import plan
from twinloop.harness.runner import execute
from twinloop.harness.scenario import parse_scenario
from twinloop.rigs.can import CAN_ERR_BUSOFF, error_frame
from twinloop.rigs.emulators.socketcand import SocketcandServer
from twinloop.rigs.profile import RigProfile, RigSource
from twinloop.rigs.registry import emulator_kind, open_transport

KIND = emulator_kind("power_module", "can-socketcand")
SCENARIO = """\
scenario: remote-can
dut: {id: pm, version: "1"}
devices:
  module: {type: power_module}
sample: {every: 250 ms}
steps:
  - set: {signal: module.fan, value: 1}
  - set: {signal: module.power, value: 30, unit: W}
  - wait: 1500 ms
expect:
  - {name: tj, signal: module.temperature, unit: degC, max: 125}
"""


@pytest.fixture
def node():
    emulator = KIND.build(sensor_noise=0.0)
    emulator.start()
    yield emulator
    emulator.close()


def until(call, done, seconds: float = 3.0):
    """``call()`` again until ``done`` says its result is the one wanted (frames cross TCP in their own time)."""
    deadline = time.monotonic() + seconds
    while not done(result := call()) and time.monotonic() < deadline:
        time.sleep(0.01)
    return result


def transport(node, timeout: float = 0.3):
    return open_transport("module", node.address, KIND.signal_map, timeout=timeout, options=KIND.transport_options)


def test_twinloop_emulate_serves_a_can_node_to_another_process_through_socketcand(tmp_path: Path) -> None:
    rig = tmp_path / "rig.yaml"
    rig.write_text("rig: r\ndevices:\n  module: {emulator: power_module, protocol: can, params: {sensor_noise: 0}}\n")
    proc = subprocess.Popen([sys.executable, "-m", "twinloop.harness.cli", "emulate", str(rig), "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    try:
        served = json.loads(proc.stdout.readline())["devices"][0]
        assert served["address"].startswith("can+socketcand://127.0.0.1:") and served["address"].endswith("/can0")
        with open_transport("module", served["address"], served["signals"], timeout=0.5,
                            options=served["options"]) as t:
            t.write("fan", 1)
            t.write("power", 20)
            deadline = time.monotonic() + 5
            while t.read(["power"])["power"] != 20.0 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert t.read(["power", "ambient", "fan"]) == {"power": 20.0, "ambient": 25.0, "fan": 1.0}
        # a whole scenario, on the real clock, against the node in the other process
        profile = RigProfile.model_validate({"rig": "remote", "clock": "real", "devices": {"module": {
            "address": served["address"], "signals": served["signals"], "options": served["options"],
            "timeout": "500 ms", "safe_state": {"power": 0, "fan": 1}}}})
        record = execute(plan(parse_scenario("remote.yaml", SCENARIO), RigSource(profile, "<remote>", None, "0" * 64)))
        assert record.outcome == "pass", record.error
        temps = record.samples.columns["module.temperature"]
        assert len(temps) == 7 and all(v is not None for v in temps) and temps[-1] > temps[0]
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 130


def test_the_node_through_socketcand_reads_writes_and_goes_silent_when_off(node) -> None:
    address = node.address
    with transport(node) as t:
        t.write("fan", 0)
        t.write("power", 30)
        deadline = time.monotonic() + 5
        while node.values["power"] != 30.0 and time.monotonic() < deadline:
            time.sleep(0.01)
        node.step(600.0)  # pull, physics, push: the new status frames cross the socketcand server
        values = until(lambda: t.read(), lambda v: v["temperature"] > 100)
        assert values["power"] == 30.0 and values["fan"] == 0.0
        node.stop()  # power off: the node leaves the bus, the socketcand server stays
        start = time.monotonic()
        with pytest.raises(TransportTimeoutError, match="no frame of PM_Status within 0.3 s"):
            t.read(["temperature"])
        assert time.monotonic() - start < 1.0
        node.start()
        assert node.address == address
        assert t.read(["ambient"]) == {"ambient": 25.0}
        node.server.wedge()
        with pytest.raises(TransportTimeoutError):
            t.read(["ambient"])
        node.server.unwedge()
        assert t.read(["ambient"]) == {"ambient": 25.0}


def test_error_frames_cross_socketcand_with_their_class(node) -> None:
    with transport(node) as t:
        assert t.read(["ambient"]) == {"ambient": 25.0}
        with can.Bus(interface="virtual", channel=node.server.channel) as other:
            other.send(error_frame(CAN_ERR_BUSOFF))
        with pytest.raises(TransportOperationError, match=r"error frame on the bus: bus-off \(class 0x40\)"):
            until(lambda: t.read(["ambient"]), lambda v: False)  # status frames may arrive first


def test_a_closed_socketcand_server_is_an_error_then_the_transport_connects_again(node) -> None:
    with transport(node) as t:
        assert t.read(["ambient"]) == {"ambient": 25.0}
        node.close()
        time.sleep(0.1)
        with pytest.raises((TransportOperationError, TransportTimeoutError)):
            for _ in range(3):  # frames already on their way may still arrive
                t.read(["ambient"])
        start = time.monotonic()
        with pytest.raises(Exception, match="no socketcand server at 127.0.0.1"):
            t.read(["ambient"])
        assert time.monotonic() - start < 1.0  # not python-can's 10 s of retries
        node.start()  # the same port again
        assert t.read(["ambient"]) == {"ambient": 25.0}


def lines(sock: socket.socket, want: int, timeout: float = 2.0) -> list[str]:
    """The next ``want`` '< ... >' messages from the server."""
    sock.settimeout(timeout)
    got, buffer = [], ""
    while len(got) < want:
        buffer += sock.recv(4096).decode("ascii")
        while ">" in buffer:
            line, buffer = buffer.split(">", 1)
            got.append(line.strip() + " >")
    return got


def test_the_socketcand_protocol_on_the_wire() -> None:
    server = SocketcandServer({"can0": "socketcand-wire-test"})
    server.start()
    try:
        with can.Bus(interface="virtual", channel="socketcand-wire-test") as bus, \
                socket.create_connection(("127.0.0.1", server.port)) as sock:
            assert lines(sock, 1) == ["< hi >"]
            sock.sendall(b"< open can0 >")
            assert lines(sock, 1) == ["< ok >"]
            sock.sendall(b"< echo >")
            assert lines(sock, 1) == ["< echo >"]
            sock.sendall(b"< rawmode >")
            assert lines(sock, 1) == ["< ok >"]
            bus.send(can.Message(arbitration_id=0x123, data=b"\x11\x22\x33", is_extended_id=False))
            bus.send(can.Message(arbitration_id=0x1ABCDE, data=b"", is_extended_id=True))
            bus.send(error_frame(CAN_ERR_BUSOFF))
            frame, ext, err = lines(sock, 3)
            assert frame.startswith("< frame 123 ") and frame.endswith(" 112233 >")
            assert ext.startswith("< frame 001ABCDE ")
            assert err.startswith("< error 040 ")
            sock.sendall(b"< send 200 2 1e 0 >< send 1AAAAAAA 0 >")
            first, second = bus.recv(2), bus.recv(2)
            assert (first.arbitration_id, bytes(first.data), first.is_extended_id) == (0x200, b"\x1e\x00", False)
            assert (second.arbitration_id, second.is_extended_id, second.dlc) == (0x1AAAAAAA, True, 0)
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            assert lines(sock, 1) == ["< hi >"]
            sock.sendall(b"< open can9 >")
            assert lines(sock, 1) == ["< error could not open bus >"]
            assert sock.recv(10) == b""  # and the server hangs up, as socketcand does
    finally:
        server.stop()


def test_python_cans_socketcand_client_talks_to_the_server() -> None:
    server = SocketcandServer({"vcan0": "socketcand-client-test"})
    server.start()
    try:
        with can.Bus(interface="virtual", channel="socketcand-client-test") as bus, \
                can.Bus(interface="socketcand", host="127.0.0.1", port=server.port, channel="vcan0") as client:
            client.send(can.Message(arbitration_id=0x321, data=b"\x01\x02", is_extended_id=False))
            got = bus.recv(2)
            assert (got.arbitration_id, bytes(got.data)) == (0x321, b"\x01\x02")
            bus.send(can.Message(arbitration_id=0x10, data=b"\xff" * 8, is_extended_id=False))
            got = client.recv(2)
            assert (got.arbitration_id, bytes(got.data), got.is_extended_id) == (0x10, b"\xff" * 8, False)
    finally:
        server.stop()


def test_the_server_binds_loopback_only() -> None:
    with pytest.raises(ValueError, match="loopback only"):
        SocketcandServer({"can0": "x"}, host="0.0.0.0")
    assert KIND.scheme == "can+socketcand" and emulator_kind("power_module", "can").scheme == "can+virtual"
