"""twinloop: shared roots of the harness, rigs, twins and ledger packages."""

import os

# Ray reads this once, when `ray` is first imported (ray._private.ray_constants.
# ENABLE_RAY_CLUSTER); left unset on Linux, its GCS, raylet, workers and agents
# listen on every interface. Every twinloop module imports this package first,
# so set it here, before anything can import ray. Set it to 1 to opt out.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

__version__ = "0.1.0"
