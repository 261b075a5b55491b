"""Run bundles: a run record as deterministic bytes (same record -> same bytes -> same CID)."""

from __future__ import annotations

import json
import math
from typing import Any

FORMAT = "twinloop.run/1"


def _clean(value: Any) -> Any:
    """Replace non-finite floats (not valid JSON) with None, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def encode(record: dict[str, Any]) -> bytes:
    """Canonical JSON: sorted keys, no whitespace, UTF-8, shortest float repr."""
    return json.dumps(_clean(record), sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False, allow_nan=False).encode("utf-8")


def decode(data: bytes) -> dict[str, Any]:
    """Parse bundle bytes back into a record dict."""
    record = json.loads(data.decode("utf-8"))
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise ValueError(f"not a {FORMAT} bundle")
    return record
