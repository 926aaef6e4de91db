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
