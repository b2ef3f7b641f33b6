"""A throwaway Ray cluster on this machine, for tests and benchmarks: ``ray start`` per node.

Each node is a ``ray start`` run in a process group of its own, so ``stop`` (and ``kill``
of one node) ends exactly the processes it started; a node's worker processes exit with
its raylet. The nodes and every driver given ``env`` share an auth token of their own,
so a ``~/.ray/auth_token`` left by an earlier ``ray.init()`` does not get in the way.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

_SERVICE_PORTS = (
    "node-manager-port", "object-manager-port", "runtime-env-agent-port", "dashboard-agent-grpc-port",
    "dashboard-agent-listen-port", "metrics-export-port",
)  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalCluster:
    """A head node plus ``workers`` worker nodes on 127.0.0.1, ``cpus`` CPUs each."""

    def __init__(self, workers: int = 1, cpus: int = 1):
        self.cpus = cpus
        self.temp = tempfile.mkdtemp(prefix="imgdb-ray-", dir="/tmp")  # Ray's socket paths must stay short
        self.address = f"127.0.0.1:{free_port()}"
        self.env = {
            **os.environ,
            "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": os.urandom(16).hex(),
            # A raylet starts at most one worker process at a time per CPU it has; these
            # nodes are slices of one machine, so let each start as many as the machine
            # could (else a 1-CPU node starts its actors one after another).
            "RAY_worker_maximum_startup_concurrency": str(os.cpu_count() or 1),
        }
        self.groups: list[int] = []
        try:
            port = self.address.rsplit(":", 1)[1]
            self.head = self._start("--head", f"--port={port}", "--include-dashboard=false", f"--temp-dir={self.temp}")
            self.workers = [self._start(f"--address={self.address}") for _ in range(workers)]
        except BaseException:
            self.stop()  # the nodes that did start are stopped when a later one fails
            raise

    def _start(self, *args: str) -> int:
        ray = str(Path(sys.executable).with_name("ray"))
        head = int(self.address.rsplit(":", 1)[1])
        low = free_port()
        while low <= head <= low + 200:  # the head's port inside the worker range: ray start refuses that
            low = free_port()
        taken = set(range(low, low + 201)) | {head}
        picked: list[int] = []
        while len(picked) < len(_SERVICE_PORTS):  # none inside the worker port range: ray start refuses that
            port = free_port()
            if port not in taken:
                taken.add(port)
                picked.append(port)
        ports = [f"--{name}={port}" for name, port in zip(_SERVICE_PORTS, picked)]
        command = [ray, "start", *args, "--node-ip-address=127.0.0.1", f"--num-cpus={self.cpus}",
                   "--disable-usage-stats", *ports, f"--min-worker-port={low}", f"--max-worker-port={low + 200}"]  # fmt: skip
        proc = subprocess.Popen(
            command, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=self.env
        )
        self.groups.append(proc.pid)
        out, _ = proc.communicate(timeout=180)
        if proc.returncode != 0:
            raise RuntimeError(f"ray start failed: {out.decode(errors='replace')[-2000:]}")
        return proc.pid

    def kill(self, group: int) -> None:
        """SIGKILL one node (its process group)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)

    def stop(self) -> None:
        for group in reversed(self.groups):
            self.kill(group)
        self.groups.clear()
        shutil.rmtree(self.temp, ignore_errors=True)  # Ray's session logs and sockets

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
