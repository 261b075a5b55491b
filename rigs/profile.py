"""Rig profiles: where each scenario device is, how its signals map, and its safe state (YAML)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from twinloop.config import Strict, load_model, parse_duration, read_text


class DeviceBinding(Strict):
    """One device on a rig: a real address, or an emulator started on loopback.

    ``safe_state`` (signal -> value, in the signal's unit) is written on every
    way out of a run: pass, fail, error, Ctrl-C or SIGTERM. ``server`` holds an
    emulator's protocol server options (an OPC UA server's security settings).
    """

    address: str | None = None
    emulator: str | None = None
    protocol: str = "modbus"
    params: dict[str, float] = Field(default_factory=dict)
    signals: dict[str, dict[str, Any]] = Field(default_factory=dict)
    options: dict[str, Any] = Field(default_factory=dict)
    server: dict[str, Any] = Field(default_factory=dict)
    safe_state: dict[str, float] = Field(default_factory=dict)
    timeout: float = 1.0

    _duration = field_validator("timeout", mode="before")(lambda v: parse_duration(v))

    @model_validator(mode="after")
    def _one_of(self) -> "DeviceBinding":
        if (self.address is None) == (self.emulator is None):
            raise ValueError("give exactly one of 'address' (a real device) or 'emulator'")
        if self.address is not None and not self.signals:
            raise ValueError("a device reached by 'address' needs a 'signals' map")
        if self.address is not None and self.server:
            raise ValueError("'server' options are for an emulator's protocol server, not a real device")
        if self.timeout <= 0:
            raise ValueError("timeout must be greater than 0 s")
        return self


class RigProfile(Strict):
    """A bench: its devices, and whether its clock is real or simulated."""

    rig: str
    description: str = ""
    clock: Literal["real", "simulated"] | None = None
    devices: dict[str, DeviceBinding]

    @property
    def emulated(self) -> bool:
        """True when every device is an emulator (so time can be simulated)."""
        return all(d.emulator for d in self.devices.values())

    @property
    def clock_kind(self) -> Literal["real", "simulated"]:
        """The clock to run with: as declared, else simulated for all-emulated rigs."""
        return self.clock or ("simulated" if self.emulated else "real")


@dataclass(frozen=True)
class RigSource:
    """A loaded rig profile with where it came from (for error locations) and its SHA-256."""

    profile: RigProfile
    path: str
    text: str | None
    sha256: str


def load_rig(path: str | Path) -> RigSource:
    """Load and validate a rig profile file."""
    text = read_text(Path(path))
    profile = load_model(Path(path), RigProfile, text=text)
    return RigSource(profile, str(path), text, hashlib.sha256(text.encode()).hexdigest())


def emulated_rig(device_types: dict[str, str]) -> RigSource:
    """The built-in ``emulated`` rig: one emulator per device, by device type, simulated clock."""
    profile = RigProfile(rig="emulated", clock="simulated",
                         devices={name: DeviceBinding(emulator=kind) for name, kind in device_types.items()})
    digest = hashlib.sha256(profile.model_dump_json().encode()).hexdigest()
    return RigSource(profile, "<built-in emulated rig>", None, digest)
