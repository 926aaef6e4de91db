"""Real servers for tests, on 127.0.0.1 only: a free port and an ``mlflow server`` process."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def start_mlflow_server(folder: str | os.PathLike, timeout: float = 60.0) -> Iterator[str]:
    """Run ``mlflow server`` on 127.0.0.1 with its SQLite store and artifacts in ``folder``.

    Yields the server's URI once ``/health`` answers. The server proxies artifacts into
    ``folder/artifacts``; its log is ``folder/server.log``. The process (and the uvicorn worker
    it starts, in the same process group) is stopped on exit.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--backend-store-uri",
        f"sqlite:///{(folder / 'server.db').resolve()}",
        "--artifacts-destination",
        str((folder / "artifacts").resolve()),
        "--workers",
        "1",
    ]
    # the GenAI job runner (a pool of task consumers) is not needed to track runs
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    log_path = folder / "server.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    try:
        _wait_for_health(uri, proc, log_path, timeout)
        yield uri
    finally:
        _stop(proc)


def _wait_for_health(uri: str, proc: subprocess.Popen, log_path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"mlflow server exited with code {proc.returncode}:\n{_tail(log_path)}"
            )
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"{uri}/health", timeout=2) as response,
        ):
            if response.status == 200:
                return
        time.sleep(0.25)
    raise RuntimeError(f"mlflow server at {uri} not healthy in {timeout:g} s:\n{_tail(log_path)}")


def _stop(proc: subprocess.Popen) -> None:
    """Stop the server's own process group (started with ``start_new_session``)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)
    else:  # the main process is gone; make sure its worker is too
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)


def _tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


@contextlib.contextmanager
def start_ray_head(env: dict, num_cpus: int = 1, resources: str = "{}") -> Iterator[str]:
    """A Ray head started by ``ray start --head`` with ``env`` (e.g. token authentication), in
    a short temporary folder of its own; yields its address. On exit every process of that
    folder (and its workers) is killed, without touching any other Ray on the machine."""
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # short: socket paths are limited
    command = [
        sys.executable,
        "-m",
        "ray.scripts.scripts",
        "start",
        "--head",
        "--port=0",
        f"--num-cpus={num_cpus}",
        f"--resources={resources}",
        "--include-dashboard=false",
        f"--temp-dir={folder}",
    ]
    try:
        subprocess.run(command, env=env, check=True, capture_output=True, timeout=120)
        yield (folder / "ray_current_cluster").read_text().split()[0]
    finally:
        _kill_processes_of(str(folder))
        shutil.rmtree(folder, ignore_errors=True)


def _kill_processes_of(marker: str) -> None:
    """SIGKILL the processes whose command line names ``marker``, and their children."""

    def scan() -> dict[int, tuple[int, str]]:
        found = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                    ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                    found[int(entry.name)] = (ppid, cmd)
        return found

    procs = scan()
    doomed = {pid for pid, (_, cmd) in procs.items() if marker in cmd}
    doomed |= {pid for pid, (ppid, _) in procs.items() if ppid in doomed}
    for pid in doomed:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
