"""Start or join Ray with every port on loopback unless told otherwise."""

from __future__ import annotations

import logging
import os

import ray


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
    # Keeps Ray's own listeners on loopback (checked with ss on Ray 2.60).
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    ray.init(address="local", _node_ip_address="127.0.0.1", num_cpus=num_cpus,
             include_dashboard=dashboard, dashboard_host="127.0.0.1",
             logging_level=logging.WARNING, log_to_driver=False)


def shutdown_ray() -> None:
    """Stop the Ray this process started or joined."""
    if ray.is_initialized():
        ray.shutdown()
