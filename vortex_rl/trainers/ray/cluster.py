"""Joining, starting and waiting for a Ray cluster.

``init_ray`` connects the trainer to ``cluster.ray_address`` (or ``RAY_ADDRESS``, as set by the Slurm
and Ray job launchers in ``scripts/``), else starts a one-machine Ray that listens on 127.0.0.1 only
(GCS, raylet, object manager, dashboard agent, workers; the dashboard on ``cluster.ray_dashboard_host``,
localhost by default) and keeps its session files in a temporary directory of its own, removed by
``shutdown_ray`` (so ``/tmp/ray/session_*`` do not pile up run after run). ``python -m vortex_rl.trainers.ray.cluster wait
--nodes N [--timeout S]`` blocks until the cluster at ``RAY_ADDRESS`` has ``N`` live nodes, or exits
non-zero naming what it saw; ``... head-address`` prints this node's IP and four free ports (GCS,
dashboard, client server, dashboard agent) for a Ray head that must not collide with another Ray.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

# Ray binds its node IP, and with it every port but the dashboard's, to the machine's routable address
# unless this is false; it is Ray's own switch (read when ray is imported, and by the processes it starts).
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
TEMP_PREFIX = "vortex-ray-"  # + <pid of the trainer>-<random>
_started_temp_dirs: list[str] = []


def import_ray():
    """The ``ray`` module, or an ImportError naming the extra that installs it."""
    try:
        import ray
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("trainer.orchestrator=ray needs ray: pip install 'vortex-rl[train]' "
                          "(or use trainer.orchestrator=local)") from err
    return ray


def init_ray(address: str | None, *, dashboard_host: str = "127.0.0.1") -> bool:
    """Connect to the cluster at ``address`` (else ``RAY_ADDRESS``), or start Ray on this machine.

    A Ray already initialised in this process (a test session, a notebook) is used as it is. Returns
    whether this call started or connected Ray, i.e. whether the caller should ``ray.shutdown()`` it.
    """
    address = address or os.environ.get("RAY_ADDRESS") or None
    if not address and "ray" not in sys.modules:
        os.environ.setdefault(LOOPBACK_ENV, "0")
    ray = import_ray()
    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, logging_level="ERROR")
        return True
    _loopback_only(ray)
    remove_dead_temp_dirs()
    temp_dir = tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-")
    _started_temp_dirs.append(temp_dir)
    ray.init(dashboard_host=dashboard_host, logging_level="ERROR", _temp_dir=temp_dir)
    return True


def _loopback_only(ray) -> None:
    # ray imported before init_ray (a notebook, a test session) read the switch already: set it there too.
    os.environ.setdefault(LOOPBACK_ENV, "0")
    constants = getattr(getattr(ray, "_private", None), "ray_constants", None)
    if constants is not None and os.environ[LOOPBACK_ENV] == "0":
        constants.ENABLE_RAY_CLUSTER = False


def remove_dead_temp_dirs() -> list[str]:
    """Session directories of local Rays whose trainer died without ``shutdown_ray`` (killed)."""
    removed = []
    for path in sorted(os.listdir(tempfile.gettempdir())):
        pid = path[len(TEMP_PREFIX):].split("-", 1)[0]
        if not path.startswith(TEMP_PREFIX) or not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
            continue  # its trainer still runs
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        shutil.rmtree(os.path.join(tempfile.gettempdir(), path), ignore_errors=True)
        removed.append(path)
    return removed


def shutdown_ray() -> None:
    """``ray.shutdown()``, then remove the session directory of a Ray that ``init_ray`` started."""
    ray = import_ray()
    if ray.is_initialized():
        ray.shutdown()
    while _started_temp_dirs:
        shutil.rmtree(_started_temp_dirs.pop(), ignore_errors=True)


def live_nodes(address: str | None = None) -> int:
    """Number of alive nodes in the Ray cluster at ``address`` (``RAY_ADDRESS`` when None)."""
    ray = import_ray()
    if not ray.is_initialized():
        ray.init(address=address or "auto", logging_level="ERROR", log_to_driver=False)
    return sum(1 for node in ray.nodes() if node.get("Alive"))


def wait_for_nodes(nodes: int, *, timeout: float = 300.0, address: str | None = None, poll: float = 2.0) -> int:
    """Block until ``nodes`` nodes are alive; raise ``TimeoutError`` with the count seen otherwise."""
    if nodes < 1:
        raise ValueError(f"nodes={nodes} must be >= 1")
    deadline = time.monotonic() + timeout
    seen, last_error = 0, None
    while time.monotonic() < deadline:
        try:
            seen = live_nodes(address)
            if seen >= nodes:
                return seen
        except (ConnectionError, RuntimeError) as err:  # head still starting
            last_error = err
        time.sleep(poll)
    raise TimeoutError(f"Ray cluster has {seen} of {nodes} nodes after {timeout:.0f}s (last error: {last_error})")


def head_address() -> str:
    """``"<node ip> <gcs port> <dashboard port> <client port> <agent port>"`` (free ports of this node)."""
    import socket

    from ray.util import get_node_ip_address

    sockets = [socket.socket() for _ in range(4)]
    try:  # held open together so the four ports differ
        for s in sockets:
            s.bind(("", 0))
        ports = [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()
    return " ".join([get_node_ip_address(), *map(str, ports)])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vortex_rl.trainers.ray.cluster")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("head-address", help="print this node's IP and free ports for a Ray head")
    wait = sub.add_parser("wait", help="wait until the cluster has --nodes live nodes")
    wait.add_argument("--nodes", type=int, required=True)
    wait.add_argument("--timeout", type=float, default=300.0)
    wait.add_argument("--address", default=None, help="Ray address (default: RAY_ADDRESS)")
    args = parser.parse_args(argv)
    if args.command == "head-address":
        print(head_address())
        return 0
    seen = wait_for_nodes(args.nodes, timeout=args.timeout, address=args.address)
    print(f"ray cluster ready: {seen} node(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
