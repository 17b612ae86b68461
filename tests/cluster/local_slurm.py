"""A one-node Slurm cluster on localhost for tests: munge + slurmctld + slurmd under a temp directory."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

REQUIRED = ("munged", "slurmctld", "slurmd", "sbatch", "sinfo", "srun")


def missing_tools() -> list[str]:
    return [tool for tool in REQUIRED if shutil.which(tool) is None]


def _slurm_conf(root: Path, host: str, cpus: int, memory_mb: int) -> str:
    return f"""ClusterName=vortex-test
SlurmctldHost={host}
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmdSpoolDir={root}/slurmd
StateSaveLocation={root}/state
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
SlurmctldPort=16817
SlurmdPort=16818
SlurmUser=root
SlurmdUser=root
ReturnToService=2
MpiDefault=none
NodeName={host} CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


def _ensure_munge() -> None:
    key = Path("/etc/munge/munge.key")
    if not key.exists():
        key.parent.mkdir(parents=True, exist_ok=True)
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
    for d in ("/etc/munge", "/var/run/munge", "/run/munge", "/var/log/munge", "/var/lib/munge"):
        Path(d).mkdir(parents=True, exist_ok=True)
        subprocess.run(["chown", "-R", "munge:munge", d], check=False, capture_output=True)
    if subprocess.run(["pgrep", "-x", "munged"], capture_output=True).returncode != 0:
        subprocess.run(["munged", "--force"], check=True, capture_output=True)


class LocalSlurm:
    """Start with :meth:`start`, stop with :meth:`stop`; ``env`` points Slurm's tools at this cluster."""

    def __init__(self, root: Path, cpus: int | None = None, memory_mb: int = 8000):
        self.root = Path(root)
        self.host = socket.gethostname()
        self.cpus = cpus or os.cpu_count() or 1
        self.memory_mb = memory_mb
        self.conf = self.root / "slurm.conf"
        self.env = dict(os.environ, SLURM_CONF=str(self.conf))

    def start(self, timeout: float = 30.0) -> None:
        (self.root / "slurmd").mkdir(parents=True, exist_ok=True)
        (self.root / "state").mkdir(parents=True, exist_ok=True)
        self.conf.write_text(_slurm_conf(self.root, self.host, self.cpus, self.memory_mb))
        _ensure_munge()
        subprocess.run(["slurmctld", "-c"], env=self.env, check=True, capture_output=True)
        subprocess.run(["slurmd"], env=self.env, check=True, capture_output=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = subprocess.run(["sinfo", "-h", "-o", "%T"], env=self.env, capture_output=True, text=True)
            if state.returncode == 0 and state.stdout.strip() in ("idle", "mixed", "allocated"):
                return
            time.sleep(0.5)
        raise RuntimeError(f"local Slurm did not come up in {timeout}s; see {self.root}/slurmctld.log")

    def stop(self) -> None:
        subprocess.run(["scancel", "--user", "root"], env=self.env, capture_output=True)
        for name in ("slurmd.pid", "slurmctld.pid"):
            pid_file = self.root / name
            if pid_file.exists():
                try:
                    os.kill(int(pid_file.read_text().strip()), signal.SIGTERM)
                except (ProcessLookupError, ValueError):
                    pass
