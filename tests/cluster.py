"""A real dask scheduler process on localhost for the cluster tests, and how to stop it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_scheduler(cwd: Path) -> tuple[str, list[subprocess.Popen], dict]:
    """A real 'dask scheduler' process on localhost; returns its address, the process list and Popen options."""
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    common = dict(cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    procs = [subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                               "--port", str(port), "--no-dashboard"], **common)]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.1)
    return f"tcp://127.0.0.1:{port}", procs, common


def stop(procs: list[subprocess.Popen]) -> None:
    """Kill every process of the cluster (each leads its own session) and reap it."""
    for p in procs:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait()
