"""Real servers for tests, on 127.0.0.1 only: a free port, an ``mlflow server`` process, a Ray
head and a Label Studio server (from a virtual environment of its own)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
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


def _wait_for_health(
    uri: str, proc: subprocess.Popen, log_path: Path, timeout: float, name: str = "mlflow server"
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with code {proc.returncode}:\n{_tail(log_path)}")
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"{uri}/health", timeout=2) as response,
        ):
            if response.status == 200:
                return
        time.sleep(0.25)
    raise RuntimeError(f"{name} at {uri} not healthy in {timeout:g} s:\n{_tail(log_path)}")


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


# The Label Studio server the tests run against. It lives in a virtual environment of its own:
# label-studio pins Django, pytz<2023, pyarrow<25 and (through label-studio-sdk and opencv)
# numpy<2.3, which would downgrade pal's.
LABEL_STUDIO_VERSION = "1.23.2"


# Label Studio refuses ML backends and webhooks on loopback and private addresses unless told
# otherwise (ml/serializers.py and ml/api_connector.py check ML_BLOCK_LOCAL_IP, webhooks'
# ssrf_safe_post SSRF_PROTECTION_ENABLED): the tests' pal label serve listens on 127.0.0.1.
LOCAL_ML_ENV = {"ML_BLOCK_LOCAL_IP": "false", "SSRF_PROTECTION_ENABLED": "false"}


class LabelStudioUnavailable(RuntimeError):
    """The Label Studio server's virtual environment cannot be built (e.g. no network)."""


def label_studio_command(version: str = LABEL_STUDIO_VERSION, timeout: float = 1800.0) -> Path:
    """The ``label-studio`` command of a virtual environment with ``label-studio==version``,
    built once and kept in ``$PAL_TEST_CACHE/label-studio-<version>`` (default cache:
    ``~/.cache/pal-tests``). A build holds a lock, so a second test session waits for it; one
    that was stopped half-way (no ``.complete`` marker) is removed and made again.

    Raises:
        LabelStudioUnavailable: ``python -m venv`` or ``pip install`` failed (the message ends
            with pip's output).
    """
    cache = Path(os.environ.get("PAL_TEST_CACHE") or "~/.cache/pal-tests").expanduser()
    venv = cache / f"label-studio-{version}"
    command = venv / "bin" / "label-studio"
    done = venv / ".complete"
    if done.is_file():
        return command
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / f".label-studio-{version}.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if done.is_file():
            return command
        shutil.rmtree(venv, ignore_errors=True)
        # built in place: a virtual environment's scripts name its folder, it cannot be moved
        steps = {
            "python -m venv": [sys.executable, "-m", "venv", str(venv)],
            f"pip install label-studio=={version}": [
                str(venv / "bin" / "python"), "-m", "pip", "install",
                "--disable-pip-version-check", "--no-input", "--quiet", f"label-studio=={version}",
            ],
        }  # fmt: skip
        for what, argv in steps.items():
            try:
                subprocess.run(argv, check=True, capture_output=True, text=True, timeout=timeout)
            except subprocess.CalledProcessError as err:
                failure = f"exit status {err.returncode}:\n{(err.stdout + err.stderr)[-2000:]}"
            except subprocess.TimeoutExpired:
                failure = f"still running after {timeout:g} s"
            except OSError as err:
                failure = str(err)
            else:
                continue
            shutil.rmtree(venv, ignore_errors=True)
            raise LabelStudioUnavailable(
                f"cannot build Label Studio {version}'s environment in {venv}: {what}: {failure}"
            )
        done.write_text(version + "\n")
    return command


@contextlib.contextmanager
def start_label_studio(
    command: str | os.PathLike,
    folder: str | os.PathLike,
    token: str,
    document_root: str | os.PathLike,
    username: str = "pal@localhost",
    password: str = "pal-test-password",
    timeout: float = 300.0,
    extra_env: dict[str, str] | None = None,
) -> Iterator[str]:
    """Run ``label-studio start`` on 127.0.0.1 with its data (SQLite database, media, exports)
    in ``folder``; yields its URL once ``/health`` answers.

    The first start makes the admin user ``username`` whose legacy API token is ``token``
    (legacy tokens enabled for the organization, so it works as is, without a JWT refresh).
    Local files below ``document_root`` are served at ``/data/local-files/?d=...``. The server
    gets a clean environment of its own: Label Studio reads ``HOST``, ``PORT``, ``USERNAME`` and
    ``LABEL_STUDIO_*`` variables from it, and ``extra_env`` on top (e.g. :data:`LOCAL_ML_ENV`).
    Its log is ``folder/server.log``; the process group is stopped on exit.
    """
    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [
        str(command), "start", "--no-browser",
        "--internal-host", "127.0.0.1", "--port", str(port),
        "--data-dir", str(folder),
        "--username", username, "--password", password,
        "--user-token", token, "--enable-legacy-api-token",
        "--log-level", "WARNING",
    ]  # fmt: skip
    env = {key: os.environ[key] for key in ("PATH", "HOME", "LANG", "TMPDIR") if key in os.environ}
    env.update(
        LABEL_STUDIO_BASE_DATA_DIR=str(folder),
        LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED="true",
        LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=str(Path(document_root).resolve()),
        # nothing leaves the machine: no usage analytics, no PyPI version check, and no error
        # reports to the Sentry project that Label Studio sends them to by default
        LABEL_STUDIO_COLLECT_ANALYTICS="false",
        LABEL_STUDIO_LATEST_VERSION_CHECK="false",
        LABEL_STUDIO_SENTRY_DSN="",
        LABEL_STUDIO_FRONTEND_SENTRY_DSN="",
    )
    env.update(extra_env or {})
    log_path = folder / "server.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    try:
        _wait_for_health(url, proc, log_path, timeout, name="label-studio")
        yield url
    finally:
        _stop(proc)


@contextlib.contextmanager
def local_cluster(*workers: dict) -> Iterator:
    """A Ray cluster in this machine's processes: a head with no CPUs (nothing runs there) and
    one worker node per ``workers`` entry (``ray.cluster_utils.Cluster.add_node`` arguments);
    yields ``(cluster, worker nodes)``. The driver is not connected to it."""
    import ray
    from ray.cluster_utils import Cluster

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False}
    )
    nodes = [cluster.add_node(**args) for args in workers]
    cluster.wait_for_nodes()
    try:
        yield cluster, nodes
    finally:
        ray.shutdown()
        cluster.shutdown()


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
