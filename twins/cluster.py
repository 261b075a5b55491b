"""Start or join Ray with every port on loopback unless told otherwise."""

from __future__ import annotations

import logging
import os

import ray
from ray._private import ray_constants

from twinloop.errors import TwinError

LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # twinloop/__init__.py sets it to 0


def _check_loopback_only() -> None:
    """Refuse a local start that would listen on every interface.

    Ray reads the variable once, at import; if ``ray`` came before ``twinloop``
    it is on, and no ray.init argument brings the listeners back to loopback
    (``_node_ip_address="127.0.0.1"`` is then replaced by the external address).
    """
    opted_in = os.environ.get(LOOPBACK_ENV, "").lower() in ("1", "true")
    if ray_constants.ENABLE_RAY_CLUSTER and not opted_in:
        raise TwinError(f"ray was imported before twinloop with {LOOPBACK_ENV} unset; Ray would listen "
                        f"on all interfaces. Import twinloop first or set {LOOPBACK_ENV}=0 in the environment")


def ensure_ray(address: str | None = None, *, num_cpus: int | None = None,
               dashboard: bool = False) -> None:
    """Connect to ``address`` (a running cluster) or start a local Ray on 127.0.0.1.

    Idempotent: a process that already joined Ray keeps its connection.
    """
    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
        return
    _check_loopback_only()
    ray.init(address="local", _node_ip_address="127.0.0.1", num_cpus=num_cpus,
             include_dashboard=dashboard, dashboard_host="127.0.0.1",
             logging_level=logging.WARNING, log_to_driver=False)


def shutdown_ray() -> None:
    """Stop the Ray this process started or joined."""
    if ray.is_initialized():
        ray.shutdown()
