"""The compiled RunLedger that twinloop ships: ABI, bytecode, runtime code hash and version.

``contracts/RunLedger.json`` is loaded at run time and nothing is compiled
then, so a twinloop only ever attaches the ABI its bytecode was compiled with;
clients compare a deployed contract's code with ``runtime_code_hash`` before
using it. After editing ``contracts/RunLedger.vy``, regenerate the artifact
with the installed vyper (a test checks that recompiling reproduces it
byte for byte)::

    python -m twinloop.ledger.artifact           # rewrite contracts/RunLedger.json
    python -m twinloop.ledger.artifact --check   # exit 1 if it is out of date
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import importlib.resources
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_utils import keccak

from twinloop.errors import LedgerError

SOURCE = "contracts/RunLedger.vy"
ARTIFACT = "contracts/RunLedger.json"
V1_SOURCE = "contracts/RunLedgerV1.vy"  # only for the gas benchmark's comparison
_VERSION_RE = re.compile(r'^VERSION: public\(constant\(String\[\d+\]\)\) = "([^"]+)"$', re.MULTILINE)


@dataclass(frozen=True)
class Artifact:
    """One compiled contract as shipped."""

    name: str
    version: str
    compiler: str
    source_sha256: str
    abi: list[dict[str, Any]]
    bytecode: str
    runtime_bytecode: str
    runtime_code_hash: str


def _package_file(relative: str) -> Any:
    return importlib.resources.files("twinloop.ledger").joinpath(relative)


def read_source(relative: str = SOURCE) -> str:
    """The text of a contract shipped in the package."""
    return _package_file(relative).read_text(encoding="utf-8")


def compile_source(text: str) -> dict[str, Any]:
    """ABI, deployment bytecode and runtime bytecode of Vyper source, with the installed vyper."""
    from vyper import compile_code  # only here: loading the artifact never imports vyper

    out = compile_code(text, output_formats=["abi", "bytecode", "bytecode_runtime"])
    return {"abi": out["abi"], "bytecode": out["bytecode"], "runtime_bytecode": out["bytecode_runtime"]}


def build(text: str | None = None, name: str = "RunLedger") -> dict[str, Any]:
    """The artifact for RunLedger.vy (or ``text``), compiled now, as the JSON object written to disk."""
    import vyper

    text = read_source() if text is None else text
    match = _VERSION_RE.search(text)
    if match is None:
        raise LedgerError(f"{name}: no `VERSION: public(constant(String[N])) = \"...\"` in the source")
    compiled = compile_source(text)
    runtime = bytes.fromhex(compiled["runtime_bytecode"].removeprefix("0x"))
    return {
        "name": name,
        "version": match.group(1),
        "compiler": f"vyper {vyper.__version__}",
        "source_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
        "abi": compiled["abi"],
        "bytecode": compiled["bytecode"],
        "runtime_bytecode": compiled["runtime_bytecode"],
        "runtime_code_hash": "0x" + keccak(runtime).hex(),
    }


def render(artifact: dict[str, Any]) -> str:
    """The artifact's file text: sorted keys, fixed indentation, one trailing newline."""
    return json.dumps(artifact, indent=1, sort_keys=True) + "\n"


@functools.cache
def load() -> Artifact:
    """The shipped RunLedger artifact (read once per process; never compiled here)."""
    path = _package_file(ARTIFACT)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return Artifact(**{field: data[field] for field in Artifact.__dataclass_fields__})
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise LedgerError(f"the RunLedger artifact {path} is missing or unreadable ({err}); "
                          "regenerate it with `python -m twinloop.ledger.artifact`") from err


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m twinloop.ledger.artifact", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true",
                        help="do not write: exit 1 if the artifact differs from a fresh compile")
    args = parser.parse_args(argv)
    path = Path(str(_package_file(ARTIFACT)))
    text = render(build())
    current = path.read_text(encoding="utf-8") if path.exists() else ""
    if args.check:
        if current != text:
            print(f"{path} is out of date: run `python -m twinloop.ledger.artifact`", file=sys.stderr)
            return 1
        print(f"{path} matches RunLedger.vy compiled with the installed vyper")
        return 0
    if current == text:
        print(f"{path} is up to date")
        return 0
    path.write_text(text, encoding="utf-8")
    print(f"wrote {path} ({json.loads(text)['version']}, runtime code hash "
          f"{json.loads(text)['runtime_code_hash']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
