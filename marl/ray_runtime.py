"""The Ray connection of a run (``runtime=ray``): start a local instance or join a cluster, and leave it as found.

* ``ray.address=""``: a local Ray instance is started for the run and shut down when the run's
  env copies close (at the end, on an error, on Ctrl-C / SIGTERM).
* ``ray.address=auto`` (the cluster this machine belongs to, started with ``ray start``),
  ``host:port`` or ``ray://host:port`` (Ray Client): the running cluster is joined and left running;
  only this run's driver disconnects.
* A process already connected to Ray (``ray.init`` called by the caller) keeps its connection: the
  run uses it and neither disconnects nor shuts anything down.

Ray is an optional extra: :func:`import_ray` turns its absence into one line naming the extra.
A ``host:port`` address is probed with a plain TCP connection first, so an unreachable address
fails within ``ray.connect_timeout_s`` seconds instead of in Ray's own (much longer) retry loop.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import socket
from types import ModuleType
from typing import Any

from marl.config import ConfigError

AUTH_MODE = "RAY_AUTH_MODE"
"""Ray's switch for token authentication (``token`` / ``disabled``; unset: Ray decides, and records it here)."""

RAY_MISSING = "runtime=ray needs Ray: pip install 'marl[ray]'"


def import_ray() -> ModuleType:
    """The ``ray`` module, or a :class:`ConfigError` naming the extra to install."""
    try:
        import ray
    except ImportError as err:
        raise ConfigError(RAY_MISSING) from err
    return ray


@functools.cache
def remote_class(cls: type) -> Any:
    """``ray.remote(cls)``, made once per process: Ray exports the class again to each job that uses it (a driver
    that disconnects and connects again), so one wrapper serves every connection."""
    return import_ray().remote(cls)


def host_port(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of a ``host:port`` or ``ray://host:port`` address; ``None`` for ``""`` and ``"auto"``.

    >>> host_port("ray://10.0.0.5:10001"), host_port("head:6379"), host_port("auto")
    (('10.0.0.5', 10001), ('head', 6379), None)
    """
    if address in ("", "auto"):
        return None
    rest = address.removeprefix("ray://")
    host, sep, port = rest.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(f"ray.address={address!r}: expected '' (local instance), auto, host:port or "
                          "ray://host:port")
    return host.strip("[]"), int(port)


def check_reachable(address: str, timeout_s: float) -> None:
    """Open (and close) a TCP connection to the address's host and port within ``timeout_s`` seconds."""
    target = host_port(address)
    if target is None:
        return
    try:
        with socket.create_connection(target, timeout=timeout_s):
            pass
    except OSError as err:
        raise ConfigError(f"ray.address={address!r}: cannot reach {target[0]}:{target[1]} within "
                          f"{timeout_s:g} s ({err.strerror or err}); start a cluster there (ray start --head) "
                          "or fix ray.address (empty = a local instance for this run)") from None


def join_hint() -> str:
    """What to check when joining a running cluster fails: the cluster, the address, and token authentication
    (on by default for clusters started on one machine since Ray 2.59; a driver that joins by address sends its
    token only with ``RAY_AUTH_MODE=token``)."""
    hint = "start one (ray start --head) or fix ray.address (empty = a local instance for this run)"
    if os.environ.get(AUTH_MODE) != "token":
        hint += ("; if the cluster uses token authentication (ray start's default since Ray 2.59), run with "
                 "RAY_AUTH_MODE=token and the head's token (ray get-auth-token there; RAY_AUTH_TOKEN or "
                 "~/.ray/auth_token)")
    return hint


class RayConnection:
    """This process's connection to Ray for one run; :meth:`close` undoes what the constructor did.

    Args:
        address: ``ray.address`` (see the module docstring).
        connect_timeout_s: seconds to reach a ``host:port`` address.
        num_cpus: CPUs the run's workers reserve; a local instance offers at least that many
            (more than the machine's cores only when asked: Ray then time-shares them).

    Attributes:
        started: whether this run started the Ray instance (and shuts it down).
        joined: whether this run connected the process (and disconnects it).
    """

    def __init__(self, address: str, connect_timeout_s: float, num_cpus: float = 0.0) -> None:
        ray = import_ray()
        self.address = address
        self.started = self.joined = False
        if ray.is_initialized():
            return
        # Ray turns token authentication on for this whole process when it starts a local instance (or finds a
        # token): RAY_AUTH_MODE=token in os.environ, inherited by every process started later. Put back at close,
        # or at once when connecting fails.
        self._auth_mode = os.environ.get(AUTH_MODE)
        try:
            self._connect(ray, address, connect_timeout_s, num_cpus)
        except BaseException:
            self._restore_auth_mode()
            raise

    def _connect(self, ray: ModuleType, address: str, connect_timeout_s: float, num_cpus: float) -> None:
        if address == "":
            ray.init(address="local", num_cpus=max(os.cpu_count() or 1, math.ceil(num_cpus)), include_dashboard=False,
                     logging_level=logging.WARNING)
            self.started = self.joined = True
            return
        check_reachable(address, connect_timeout_s)
        try:
            ray.init(address=address, logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError, ValueError, TimeoutError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ConfigError(f"ray.address={address!r}: cannot join the Ray cluster ({first}); "
                              f"{join_hint()}") from None
        self.joined = True

    def _restore_auth_mode(self) -> None:
        if self._auth_mode is None:
            os.environ.pop(AUTH_MODE, None)
        else:
            os.environ[AUTH_MODE] = self._auth_mode

    def close(self) -> None:
        """Disconnect if this run connected; a local instance it started is shut down with it. Idempotent."""
        if self.joined:
            self.joined = self.started = False
            import ray

            with contextlib.suppress(Exception):
                ray.shutdown()
            self._restore_auth_mode()
