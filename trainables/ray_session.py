"""Starting or joining Ray, and what a Ray worker was given, for the search and final training alike.

A cluster (`--address` or `RAY_ADDRESS`) is joined exactly as the user's environment
says: a token cluster needs `RAY_AUTH_MODE=token` and its token there, as for any Ray
client. Without an address a new local Ray starts, closed to everyone else: Ray 2.60's
GCS server and raylet listen on every interface whatever node IP is given, so the local
Ray gets a fresh random token, held in this process's environment (inherited by the Ray
processes it starts) and never written to disk. A cluster address that nothing answers at
is refused at once: Ray itself retries such an address forever.
"""

from __future__ import annotations

import os
import secrets
import socket
from typing import TYPE_CHECKING, Any

import ray

from lacmfer.errors import UserError

if TYPE_CHECKING:
    from lacmfer.run.device import Placement

#: Where Ray 2.60 looks for a token, in this order (the C++ token loader).
TOKEN_SOURCES = ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")

#: How long a cluster's address may take to accept a TCP connection.
REACH_TIMEOUT_S = 10.0


def connect_ray(address: str | None, **options: Any) -> None:
    """Join the Ray cluster at `address` (or RAY_ADDRESS), else (or for "local") start a
    token-locked local Ray; `options` go to `ray.init`."""
    check_reachable(address)
    source, address = _given_address(address)
    if address and address != "local":  # Ray's own word for "start a new local Ray"
        try:
            ray.init(address=address, **options)
        except ConnectionError as err:
            raise UserError(
                f"{source} {address}: cannot join the Ray cluster ({err}); for a cluster with token "
                "authentication set RAY_AUTH_MODE=token and give its token (RAY_AUTH_TOKEN, "
                "RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token)"
            ) from None
        return
    _close_local_ray()
    # "local": never join a cluster recorded by an earlier `ray start` on this machine.
    ray.init(address="local", include_dashboard=False, **options)


def check_reachable(address: str | None) -> None:
    """Refuse a cluster address (`address`, else RAY_ADDRESS) of the form `host:port` or
    `ray://host:port` that accepts no TCP connection.

    Ray 2.60 would retry it forever, printing a warning every few seconds. No address,
    "local", "auto" and addresses without a port are left to Ray, which fails fast on them.
    """
    source, address = _given_address(address)
    host, sep, port = (address or "").removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit() or not host:
        return
    host = host.strip("[]")  # an IPv6 literal
    try:
        socket.create_connection((host, int(port)), timeout=REACH_TIMEOUT_S).close()
    except OSError as err:
        reason = "no answer" if isinstance(err, TimeoutError) else (err.strerror or str(err))
        raise UserError(
            f"{source} {address}: nothing answers at {host}:{port} ({reason}); is the head running "
            "(ray start --head)? Check the address, and that its port is open to this machine"
        ) from None


def _given_address(address: str | None) -> tuple[str, str | None]:
    """Where the cluster address comes from (for messages) and the address: `--address`, else RAY_ADDRESS."""
    return ("--address", address) if address else ("RAY_ADDRESS", os.environ.get("RAY_ADDRESS"))


def _close_local_ray() -> None:
    """Give the local Ray a fresh token, unless the user chose the auth mode or the token.

    With RAY_AUTH_MODE unset, `ray.init` of a new local Ray turns token authentication on
    and loads the token from the sources in TOKEN_SOURCES first, so setting
    RAY_AUTH_TOKEN suffices (and Ray then writes no ~/.ray/auth_token).
    RAY_AUTH_MODE=disabled set by the user is respected: an open local Ray, their choice.
    """
    if "RAY_AUTH_MODE" in os.environ or any(os.environ.get(k) for k in TOKEN_SOURCES):
        return
    os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)


def ray_gpu_assignment() -> tuple[list[str], float]:
    """The GPUs Ray assigned to this worker (node-wide ids) and the share of a GPU it reserved.

    Read from Ray rather than from what torch can see: Ray 2.60 no longer hides the GPUs
    of a node from a worker that reserved none.
    """
    share = float(ray.get_runtime_context().get_assigned_resources().get("GPU", 0.0))
    return [str(gpu_id) for gpu_id in ray.get_gpu_ids()], share


def ray_placement(device: str) -> Placement:
    """Where this worker trains: the GPU Ray assigned to it (with its memory share), else the CPU."""
    # Imported here: the drivers that join Ray (tune.py's split drivers) need no torch.
    from lacmfer.run.device import scheduled_placement

    return scheduled_placement(device, *ray_gpu_assignment())
