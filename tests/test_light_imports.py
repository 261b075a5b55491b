"""Commit, gate and verify never import Ray: a CI job that only checks the ledger pays nothing for it."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", ["twinloop.harness.commit", "twinloop.harness.gate", "twinloop.harness.verify",
                                    "twinloop.harness.batch_verify", "twinloop.harness.fleet_record",
                                    "twinloop.twins.fleet_shard", "twinloop.twins.fleet_result"])
def test_the_ledger_side_does_not_import_ray(module: str) -> None:
    code = f"import sys, {module}; print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", f"{module} imports Ray: {out.stdout.strip()[:200]}"
