"""Run bundles as deterministic bytes: canonical JSON (RFC 8785), so same data -> same bytes -> same CID."""

from __future__ import annotations

import json
from typing import Any

import rfc8785


def encode(data: Any) -> bytes:
    """RFC 8785 canonical JSON of plain data (sorted keys, no whitespace, ES6 number form).

    Non-finite floats are not JSON; the run record turns them into null first.
    """
    try:
        return rfc8785.dumps(data)
    except (rfc8785.CanonicalizationError, TypeError) as err:
        raise ValueError(f"cannot encode as canonical JSON: {err}") from err


def decode(data: bytes) -> Any:
    """Parse bundle bytes (UTF-8 JSON) back into plain data."""
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise ValueError(f"not UTF-8: {err}") from err
