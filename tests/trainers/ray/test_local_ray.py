"""A Ray that ``init_ray`` starts on this machine listens on 127.0.0.1 only and keeps its session files
in a directory of its own that ``shutdown_ray`` removes. Run in a fresh interpreter: the session's shared
Ray (``ray_session``) must not be the one inspected."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

pytest.importorskip("ray", reason="needs ray (pip install 'vortex-rl[train]')")

SCRIPT = r"""
import json, subprocess, shutil, ray
from vortex_rl.trainers.ray import cluster
assert cluster.init_ray(None, dashboard_host="127.0.0.1")
node = ray.nodes()[0]
temp_dir = cluster._started_temp_dirs[0]
listening = []
if shutil.which("ss"):  # every TCP socket Ray's processes listen on, when ss is there to tell
    import psutil  # Ray's processes: those whose command line names this Ray's session directory
    pids = {str(p.pid) for p in psutil.process_iter(["cmdline"]) if temp_dir in " ".join(p.info["cmdline"] or [])}
    pids.add(str(__import__("os").getpid()))
    for line in subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True).stdout.splitlines():
        if any(f"pid={pid}," in line for pid in pids):
            listening.append(line.split()[3])
result = {"node_ip": node["NodeManagerAddress"], "gcs": ray.get_runtime_context().gcs_address,
          "temp_dir": temp_dir, "session_dirs": [d for d in __import__("os").listdir(temp_dir) if d.startswith("session_")],
          "listening": listening}
cluster.shutdown_ray()
result["temp_dir_left"] = __import__("os").path.exists(temp_dir)
print("RESULT", json.dumps(result))
"""


def test_a_local_ray_binds_to_loopback_and_cleans_its_session_dir():
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")}
    env["PYTHONPATH"] = os.pathsep.join([os.getcwd(), env.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=240)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    result = json.loads(lines[-1][len("RESULT "):])
    assert result["node_ip"] == "127.0.0.1" and result["gcs"].startswith("127.0.0.1:")
    assert os.path.basename(result["temp_dir"]).startswith(f"vortex-ray-")
    assert result["session_dirs"] and not result["temp_dir_left"]  # Ray wrote there, and it is gone
    if shutil.which("ss"):
        assert len(result["listening"]) >= 4, result["listening"]  # GCS, raylet, object manager, agents, ...
        hosts = {address.rsplit(":", 1)[0] for address in result["listening"]}
        assert hosts <= {"127.0.0.1", "[::ffff:127.0.0.1]", "[::1]"}, hosts
