"""A labeling project: one folder that holds everything ``pal label`` knows about a user's pool.

Layout of ``PROJECT/``::

    project.json     the manifest (absolute path and SHA-256), the class names, where the
                     config came from (a sweep's best configuration, a run, a YAML file) and the
                     MLflow run the rounds are logged to
    config.yaml      the config every round trains with (plain keys of pal.config.Config)
    labels.csv       the ledger, append-only: path, label, round, source, status
    rounds/001/      one folder per batch: batch.csv, tasks.json, round.json
    label_config.xml the Label Studio labeling config for the classes
    .lock            held (flock) by the command that runs

The ledger is the labeling state: an image is labeled by its latest ``labeled`` row, skipped
when its latest row is ``skipped`` (never offered again). Rows are only ever added.

Every write goes to a temporary file beside its target and is renamed into place, and a round
folder is built under a temporary name and renamed whole, so a command killed at any point
leaves the project as it was before it. A second command on the same project while one runs is
refused (:func:`Project.lock`).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import datetime
import fcntl
import hashlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

from pal.config import Config, ConfigError
from pal.results import LabelRound

PROJECT_FILE = "project.json"
CONFIG_FILE = "config.yaml"
LEDGER_FILE = "labels.csv"
ROUNDS_DIR = "rounds"
LOCK_FILE = ".lock"
LABEL_CONFIG_FILE = "label_config.xml"
LEDGER_FIELDS = ("path", "label", "round", "source", "status")
STATUSES = ("labeled", "skipped")


class ProjectError(ConfigError):
    """A labeling project cannot do what was asked; the message says why and what to do."""


class ProjectBusyError(ProjectError):
    """Another ``pal label`` command holds the project's lock."""


@dataclasses.dataclass(frozen=True)
class LedgerRow:
    """One row of ``labels.csv``.

    Attributes:
        path: the image's manifest path (its identity).
        label: the class name (empty when skipped).
        round: the round whose batch offered it (0: labeled before the first round).
        source: where the label came from: ``manifest``, or the imported file's name.
        status: ``labeled`` or ``skipped``.
    """

    path: str
    label: str
    round: int
    source: str
    status: str

    def to_row(self) -> dict[str, str]:
        return {f: str(getattr(self, f)) for f in LEDGER_FIELDS}


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file beside it, flushed to disk and renamed
    into place: a reader (or a killed writer) sees the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode() if isinstance(data, str) else data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def csv_text(fields: Iterable[str], rows: Iterable[dict[str, Any]]) -> str:
    """``rows`` as CSV text with a header of ``fields`` (``\\n`` line ends)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(fields), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of the file at ``path``."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class Project:
    """An open labeling project (see the module docstring). :meth:`create` makes one,
    :meth:`open` opens one."""

    def __init__(self, folder: Path, meta: dict[str, Any], config: Config):
        self.folder = folder
        self.meta = meta
        self.config = config

    # ------------------------------------------------------------------ create and open
    @classmethod
    def create(
        cls,
        folder: str | os.PathLike,
        manifest: str | os.PathLike,
        config: Config,
        classes: list[str],
        source: dict[str, Any],
        initial: list[LedgerRow],
        label_config: str,
    ) -> Project:
        """Write a new project into ``folder`` (absent or empty), all at once: the files are
        written into a temporary folder beside it that is renamed into place.

        Args:
            manifest: the manifest CSV (its absolute path and checksum are recorded).
            config: the config the rounds train with (``dataset`` is the manifest).
            classes: the class names, in label order.
            source: where the config came from, e.g. ``{"kind": "sweep", "name": ...,
                "run_id": ...}``.
            initial: ledger rows of the labels known before the first round.
            label_config: the Label Studio labeling config (XML).
        """
        folder = Path(folder).expanduser().absolute()
        if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
            raise ProjectError(
                f"project: {str(folder)!r} exists and is not an empty folder; give a new folder"
            )
        manifest = Path(manifest).expanduser().resolve()
        meta = {
            "manifest": str(manifest),
            "manifest_sha256": file_sha256(manifest),
            "classes": list(classes),
            "source": source,
            "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "mlflow_run_id": None,
            "tracking_uri": None,
        }
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.creating-", dir=folder.parent))
        try:
            write_atomic(tmp / PROJECT_FILE, json.dumps(meta, indent=2) + "\n")
            write_atomic(tmp / CONFIG_FILE, yaml.safe_dump(config.to_dict(), sort_keys=False))
            write_atomic(tmp / LEDGER_FILE, csv_text(LEDGER_FIELDS, (r.to_row() for r in initial)))
            write_atomic(tmp / LABEL_CONFIG_FILE, label_config)
            (tmp / ROUNDS_DIR).mkdir()
            (tmp / LOCK_FILE).touch()
            if folder.exists():
                folder.rmdir()  # empty, checked above
            os.replace(tmp, folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return cls.open(folder)

    @classmethod
    def open(cls, folder: str | os.PathLike) -> Project:
        """Open the project in ``folder``.

        Raises:
            ProjectError: no project there (``pal label init`` makes one).
        """
        folder = Path(folder).expanduser().absolute()
        meta_file = folder / PROJECT_FILE
        if not meta_file.is_file():
            raise ProjectError(
                f"project: {str(folder)!r} is not a labeling project (no {PROJECT_FILE}); "
                "make one with pal label init"
            )
        meta = json.loads(meta_file.read_text())
        config = Config.from_dict(yaml.safe_load((folder / CONFIG_FILE).read_text()))
        return cls(folder, meta, config)

    # ------------------------------------------------------------------ properties
    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])

    @property
    def manifest(self) -> Path:
        return Path(self.meta["manifest"])

    def check_manifest(self) -> None:
        """Refuse to go on when the manifest changed since ``init`` (its checksum differs):
        the ledger's paths and the rounds' batches refer to the manifest it was made with."""
        if not self.manifest.is_file():
            raise ProjectError(f"manifest: {str(self.manifest)!r} is gone (the project's pool)")
        now = file_sha256(self.manifest)
        if now != self.meta["manifest_sha256"]:
            raise ProjectError(
                f"manifest: {str(self.manifest)!r} changed since the project was made (SHA-256 "
                f"{self.meta['manifest_sha256'][:12]}... then, {now[:12]}... now); restore it, or "
                "start a new project on the new manifest (pal label export gives the labels so far)"
            )

    def manifest_paths(self) -> tuple[set[str], set[str]]:
        """``(pool paths, val and test paths)`` of the manifest, after :meth:`check_manifest`:
        the images that may be labeled here and those labeled in the manifest."""
        from pal.data.manifest import read_manifest

        self.check_manifest()
        rows = read_manifest(self.manifest)
        return {r.path for r in rows if r.split == "pool"}, {
            r.path for r in rows if r.split != "pool"
        }

    def save_meta(self) -> None:
        write_atomic(self.folder / PROJECT_FILE, json.dumps(self.meta, indent=2) + "\n")

    # ------------------------------------------------------------------ the lock
    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the project's lock for the block; refuse at once when another command holds it.

        The lock is an ``flock`` on ``.lock``, released by the kernel when the holder exits, so
        a killed command never leaves the project locked."""
        with open(self.folder / LOCK_FILE, "a+") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ProjectBusyError(
                    f"project: another pal label command is running on {str(self.folder)!r}; "
                    "wait for it to finish"
                ) from None
            self._remove_temporaries()
            yield

    def _remove_temporaries(self) -> None:
        """Remove what a killed command left half-written (hidden temporary files and round
        folders); the project's own files never have those names."""
        for leftover in (self.folder / ROUNDS_DIR).glob(".*.writing-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        for leftover in [*self.folder.glob(".*.tmp"), *(self.folder / ROUNDS_DIR).glob(".*.tmp")]:
            leftover.unlink(missing_ok=True)

    # ------------------------------------------------------------------ the ledger
    def ledger(self) -> list[LedgerRow]:
        """Every row of ``labels.csv``, oldest first."""
        with open(self.folder / LEDGER_FILE, newline="") as fh:
            return [
                LedgerRow(r["path"], r["label"], int(r["round"]), r["source"], r["status"])
                for r in csv.DictReader(fh)
            ]

    def labels(self) -> dict[str, str]:
        """Path -> class name of every labeled image (its latest row is ``labeled``)."""
        latest = {row.path: row for row in self.ledger()}
        return {p: r.label for p, r in latest.items() if r.status == "labeled"}

    def skipped(self) -> set[str]:
        """Paths whose latest row is ``skipped``: never offered again."""
        latest = {row.path: row for row in self.ledger()}
        return {p for p, r in latest.items() if r.status == "skipped"}

    def append(self, rows: list[LedgerRow]) -> None:
        """Add ``rows`` to the ledger (one atomic rewrite: all of them or none)."""
        if not rows:
            return
        old = (self.folder / LEDGER_FILE).read_bytes()
        new = csv_text(LEDGER_FIELDS, (r.to_row() for r in rows)).split("\n", 1)[1]
        write_atomic(self.folder / LEDGER_FILE, old + new.encode())

    # ------------------------------------------------------------------ rounds
    def rounds(self) -> list[int]:
        """The numbers of the rounds with a batch, ascending."""
        folder = self.folder / ROUNDS_DIR
        return sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit())

    def round_dir(self, r: int) -> Path:
        return self.folder / ROUNDS_DIR / f"{r:03d}"

    def batch(self, r: int) -> list[dict[str, str]]:
        """The rows of round ``r``'s ``batch.csv``."""
        with open(self.round_dir(r) / "batch.csv", newline="") as fh:
            return list(csv.DictReader(fh))

    def round_record(self, r: int) -> LabelRound:
        """Round ``r``'s record, from its ``round.json`` (what it trained on, measured and
        chose)."""
        return LabelRound.from_dict(json.loads((self.round_dir(r) / "round.json").read_text()))

    def offered(self) -> set[str]:
        """Every path some round's batch offered."""
        return {row["path"] for r in self.rounds() for row in self.batch(r)}

    def write_round(self, r: int, files: dict[str, str | bytes]) -> Path:
        """Create round ``r``'s folder with ``files`` (name -> content) in one rename."""
        final = self.round_dir(r)
        if final.exists():
            raise ProjectError(f"project: round {r} exists already ({str(final)!r})")
        tmp = Path(tempfile.mkdtemp(prefix=f".{r:03d}.writing-", dir=final.parent))
        try:
            for name, content in files.items():
                write_atomic(tmp / name, content)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return final
