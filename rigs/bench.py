"""Transport benchmark: each protocol's own client against the emulator, then twinloop's transport over it.

``python -m twinloop.rigs.bench [--quick] [--json]`` alternates raw and
twinloop rounds in one process (machine load swings wall-clock rates 4x, so
ratios are taken between neighbouring rounds) and reports rates, CPU time per
transaction (of this process: the client side), and their ratio. Modbus, OPC
UA and serial emulators run in their own process (``twinloop emulate``), as a
device would; the CAN node lives on the in-process virtual bus, with only the
measured client on it. It then runs one real-time scenario with 50 emulated
devices sampled at 10 Hz through the full runner and reports missed periods
and the worst sampling jitter.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from rich.console import Console
from rich.table import Table

from twinloop.rigs.emulators.power_module import PowerModuleDevice
from twinloop.rigs.registry import emulator_kind, open_transport

SIGNALS = list(PowerModuleDevice.signals)


def _raw_modbus(emulator: Any) -> tuple[Callable[[], None], Callable[[], None]]:
    from pymodbus.client import ModbusTcpClient

    from twinloop.rigs.modbus import parse_modbus_address

    host, port, _ = parse_modbus_address(emulator.address)
    client = ModbusTcpClient(host, port=port, timeout=1, retries=0)
    client.connect()
    return (lambda: client.read_holding_registers(0, count=4, device_id=1)), client.close


def _raw_scpi(emulator: Any) -> tuple[Callable[[], None], Callable[[], None]]:
    import serial

    port = serial.serial_for_url(emulator.address.replace("scpi+socket", "socket"), timeout=1)
    queries = [spec["query"] for spec in PowerModuleDevice.scpi_map.values()]

    def once() -> None:
        for q in queries:
            port.write(q.encode() + b"\n")
            float(port.read_until(b"\n"))
    return once, port.close


def _raw_opcua(emulator: Any) -> tuple[Callable[[], None], Callable[[], None]]:
    from asyncua.sync import Client

    client = Client(emulator.address, timeout=2)
    client.connect()
    nodes = [client.nodes.objects.get_child(["2:power_module", f"2:{n}"]) for n in SIGNALS]
    return (lambda: client.read_values(nodes)), client.disconnect


def _raw_can(emulator: Any) -> tuple[Callable[[], None], Callable[[], None]]:
    import can
    import cantools

    db = cantools.database.load_file(PowerModuleDevice.can_map["dbc"])
    bus = can.Bus(interface="virtual", channel=emulator.server.channel)

    def once() -> None:
        emulator.server.push()  # the node's status cycle, on demand
        frame = bus.recv(timeout=1)
        while frame is not None and frame.arbitration_id != 0x100:
            frame = bus.recv(timeout=1)
        db.decode_message(frame.arbitration_id, frame.data)
    return once, bus.shutdown


RAW = {"modbus": ("modbus", _raw_modbus), "opcua": ("opcua", _raw_opcua), "can": ("can", _raw_can),
       "serial": ("scpi", _raw_scpi)}


def _rate(fn: Callable[[], None], seconds: float) -> tuple[float, float]:
    """(calls per second, CPU seconds per call) of ``fn`` over about ``seconds``."""
    n, start, cpu = 0, time.perf_counter(), time.process_time()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(20):
            fn()
        n += 20
    return n / elapsed, (time.process_time() - cpu) / n


class _Remote:
    """An emulator served by ``twinloop emulate`` in its own process, as a real device would be."""

    def __init__(self, protocol: str, folder: Path) -> None:
        profile = folder / f"bench-{protocol}.yaml"
        profile.write_text(f"rig: bench\ndevices:\n  module: {{emulator: power_module, protocol: {protocol}, "
                           "params: {sensor_noise: 0.0}}\n")
        self.proc = subprocess.Popen([sys.executable, "-m", "twinloop.harness.cli", "emulate", str(profile), "--json"],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                                     text=True)
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"twinloop emulate ({protocol}) did not start")
        self.address = json.loads(line)["devices"][0]["address"]

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def bench_protocol(name: str, rounds: int, seconds: float, folder: Path) -> dict[str, float]:
    """Raw and twinloop rates for one protocol, alternating rounds (CAN in process, the others not).

    On CAN only the measured client is on the bus during a round.
    """
    protocol, raw_factory = RAW[name]
    kind = emulator_kind("power_module", protocol)
    if name == "can":
        emulator: Any = kind.build(sensor_noise=0.0)
        emulator.start()
    else:
        emulator = _Remote(protocol, folder)
    try:
        transport = open_transport("module", emulator.address, kind.signal_map, timeout=2.0,
                                   options=kind.transport_options)
        if name == "can":
            def ours() -> None:
                emulator.server.push()
                transport.read(SIGNALS)

            # Only the measured client is on the bus: one left idle would queue every frame of the
            # other's round and drain them in its own. Both see the same frames of the same node.
            def raw_round() -> tuple[float, float]:
                raw, close_raw = raw_factory(emulator)
                try:
                    raw()
                    return _rate(raw, seconds)
                finally:
                    close_raw()

            def our_round() -> tuple[float, float]:
                with transport:
                    ours()
                    return _rate(ours, seconds)
        else:
            raw, close_raw = raw_factory(emulator)
            transport.open()

            def ours() -> None:
                transport.read(SIGNALS)
            raw(), ours()  # warm up both paths

            def raw_round() -> tuple[float, float]:
                return _rate(raw, seconds)

            def our_round() -> tuple[float, float]:
                return _rate(ours, seconds)
        raws, twins, ratios, raw_cpu, our_cpu = [], [], [], [], []
        for _ in range(rounds):
            r, rc = raw_round()
            t, tc = our_round()
            raws.append(r), twins.append(t), ratios.append(t / r), raw_cpu.append(rc), our_cpu.append(tc)
        if name != "can":
            transport.close()
            close_raw()
    finally:
        emulator.close()
    return {"raw_per_s": round(statistics.median(raws), 1), "twinloop_per_s": round(statistics.median(twins), 1),
            "ratio": round(statistics.median(ratios), 3),
            "raw_cpu_ms": round(1e3 * statistics.median(raw_cpu), 4),
            "twinloop_cpu_ms": round(1e3 * statistics.median(our_cpu), 4)}


def fleet(devices: int, rate_hz: float, seconds: float) -> dict[str, float]:
    """Sample ``devices`` emulated power modules over Modbus at ``rate_hz`` on the real clock."""
    from twinloop.harness.plan import plan
    from twinloop.harness.runner import execute
    from twinloop.harness.scenario import parse_scenario
    from twinloop.rigs.profile import RigProfile, RigSource

    names = [f"m{i:02d}" for i in range(devices)]
    text = ("scenario: fleet-bench\ndut: {id: bench, version: '1'}\ndevices:\n"
            + "".join(f"  {n}: {{type: power_module}}\n" for n in names)
            + f"sample: {{every: {1000 / rate_hz:g} ms}}\nlimits: {{max_samples: 10000000}}\n"
            + f"steps:\n  - wait: {seconds:g} s\nexpect:\n  - {{name: t, signal: m00.temperature, max: 200 degC}}\n")
    profile = RigProfile.model_validate({"rig": "fleet-bench", "clock": "real",
                                         "devices": {n: {"emulator": "power_module"} for n in names}})
    record = execute(plan(parse_scenario("fleet-bench.yaml", text), RigSource(profile, "<bench>", None, "0" * 64)))
    jitter = [r - t for t, r in zip(record.samples.t, record.samples.t_read)]
    missed = sum(e.data.get("missed", 0) for e in record.events if e.kind == "overrun")
    expected = int(seconds * rate_hz) + 1
    return {"devices": devices, "rate_hz": rate_hz, "seconds": seconds, "samples": len(record.samples.t),
            "expected": expected, "missed_periods": missed,
            "worst_jitter_ms": round(1e3 * max(jitter), 2), "median_jitter_ms": round(1e3 * statistics.median(jitter), 2),
            "outcome": record.outcome}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m twinloop.rigs.bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short rounds (about a minute in all)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    parser.add_argument("--protocols", nargs="*", default=list(RAW), choices=list(RAW))
    args = parser.parse_args(argv)
    rounds, seconds = (3, 1.0) if args.quick else (5, 3.0)
    console = Console(stderr=args.json)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as folder:
        for name in args.protocols:
            with console.status(f"{name}: raw library vs twinloop, {rounds} rounds each"):
                results[name] = bench_protocol(name, rounds, seconds, Path(folder))
    with console.status("50 emulated devices at 10 Hz on the real clock"):
        results["fleet"] = fleet(50, 10.0, 10.0 if args.quick else 60.0)
    if args.json:
        print(json.dumps(results))
        return 0
    table = Table(title="Transports: the library's own client vs twinloop, same emulator (reads of 4 signals)")
    for col in ("protocol", "raw reads/s", "twinloop reads/s", "ratio", "raw CPU ms/read", "twinloop CPU ms/read"):
        table.add_column(col, justify="right")
    for name in args.protocols:
        r = results[name]
        table.add_row(name, f"{r['raw_per_s']:,.0f}", f"{r['twinloop_per_s']:,.0f}", f"{r['ratio']:.2f}",
                      f"{r['raw_cpu_ms']:.3f}", f"{r['twinloop_cpu_ms']:.3f}")
    console.print(table)
    f = results["fleet"]
    console.print(f"fleet: {f['devices']} devices at {f['rate_hz']:g} Hz for {f['seconds']:g} s on the real clock: "
                  f"{f['samples']} of {f['expected']} samples, {f['missed_periods']} missed periods, jitter "
                  f"median {f['median_jitter_ms']} ms, worst {f['worst_jitter_ms']} ms ({f['outcome']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
