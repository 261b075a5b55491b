"""Start or join Ray with every port on loopback unless told otherwise.

Ray is imported when first needed, not with this module: the services,
commit, gate and verify import it and must not pull Ray (and its start-up
cost) into processes that never run a twin.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import sys

from twinloop.errors import TwinError

LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # twinloop/__init__.py sets it to 0
_dashboard: str | None = None  # the URL ray.init gave this process (ray keeps no public getter)


def is_loopback_address(address: str) -> bool:
    """Whether a Ray address (``127.0.0.1:6379``, ``localhost:6379``, ``ray://[::1]:10001``) is on loopback."""
    rest = address.strip().split("://", 1)[-1].split("/", 1)[0]
    if rest.startswith("[") and "]" in rest:
        hosts = [rest[1:rest.index("]")]]
    else:
        hosts = [rest, rest.rsplit(":", 1)[0]]  # a bare IPv6 address, else host:port
    for host in hosts:
        if host.lower() == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            continue
    return False


def _check_loopback_only() -> None:
    """Refuse a local start, or joining a cluster on loopback, that would listen on every interface.

    Ray reads the variable once, at import; if ``ray`` came before ``twinloop``
    it is on, and no ray.init argument brings the listeners back to loopback
    (``_node_ip_address="127.0.0.1"`` is then replaced by the external address).
    """
    from ray._private import ray_constants

    opted_in = os.environ.get(LOOPBACK_ENV, "").lower() in ("1", "true")
    if ray_constants.ENABLE_RAY_CLUSTER and not opted_in:
        raise TwinError(f"ray was imported before twinloop with {LOOPBACK_ENV} unset; Ray would listen "
                        f"on all interfaces. Import twinloop first or set {LOOPBACK_ENV}=0 in the environment")


def ensure_ray(address: str | None = None, *, num_cpus: int | None = None,
               dashboard: bool = False) -> str | None:
    """Connect to ``address`` (a running cluster) or start a local Ray on 127.0.0.1; the dashboard URL.

    Without ``address``, ``$RAY_ADDRESS`` is joined if set (as inside a Ray
    Job). Idempotent: a process that already joined Ray keeps its connection.
    The URL is None where no dashboard runs (``dashboard=False`` locally).
    """
    global _dashboard
    import ray

    if ray.is_initialized():
        return _dashboard
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        if is_loopback_address(address):  # this driver's own listeners would follow the same rule
            _check_loopback_only()
        ctx = ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    else:
        _check_loopback_only()
        ctx = ray.init(address="local", _node_ip_address="127.0.0.1", num_cpus=num_cpus,
                       include_dashboard=dashboard, dashboard_host="127.0.0.1",
                       logging_level=logging.WARNING, log_to_driver=False)
    url = getattr(ctx, "dashboard_url", None) or None
    _dashboard = f"http://{url}" if url and "://" not in url else url
    return _dashboard


def shutdown_ray() -> None:
    """Stop the Ray this process started or joined."""
    global _dashboard
    if "ray" in sys.modules and sys.modules["ray"].is_initialized():  # nothing to stop where Ray never came
        sys.modules["ray"].shutdown()
    _dashboard = None


def first_line(err: BaseException) -> str:
    """Ray wraps remote tracebacks in long messages; the cause's line is what a person needs."""
    cause = getattr(err, "cause", None)
    if cause is not None:
        return f"{type(cause).__name__}: {cause}"
    lines = [ln for ln in str(err).splitlines() if ln.strip()]
    return lines[-1] if lines else type(err).__name__
