"""A labeling project: one folder that holds everything ``pal label`` knows about a user's pool.

Layout of ``PROJECT/``::

    project.json     the manifest the rounds load (absolute path and SHA-256), the class names,
                     where the config came from (a sweep's best configuration, a run, a YAML
                     file), the MLflow run the rounds are logged to, and after ``pal label add``
                     the manifest given at init and each added one (``initial_manifest``,
                     ``additions``: path, SHA-256, counts, the first round that could offer it)
    config.yaml      the config every round trains with (plain keys of pal.config.Config);
                     ``dataset`` is ``manifest:`` the manifest the rounds load
    labels.csv       the ledger, append-only: path, label, round, source, status
    rounds/001/      one folder per batch: batch.csv, tasks.json, round.json
    label_config.xml the Label Studio labeling config for the classes
    .lock            held (flock) by the command that runs

The ledger is the labeling state: an image is labeled by its latest ``labeled`` row, skipped
when its latest row is ``skipped`` (never offered again). Rows are only ever added.

The pool can grow (:func:`pal.labeling.growth.add_images`): the union of the manifest and the
added images is written as a new manifest *beside the manifest given at init*
(``<stem>.pal-<project>-<digest>.<NNN>.csv``), because an image's identity, in the ledger and in
the batches, is its path as the manifest writes it, relative to the manifest's folder: only a
manifest in that folder keeps every earlier path what it was. ``project.json`` then points at it.

Every write goes to a temporary file beside its target and is renamed into place, and a round
folder is built under a temporary name and renamed whole, so a command killed at any point
leaves the project as it was before it. An ``add`` changes three files (the ledger, the pool
manifest, ``project.json``), so it first writes a journal (``.add-journal.json``); a command that
finds one (when it takes the lock) undoes the add, or finishes it when ``project.json`` was
written already. A second command on the same project while one runs is refused
(:func:`Project.lock`). Files and folders are made as ``open`` and ``mkdir`` make them (the
umask decides: 0644 and 0755 under umask 022); a file rewritten keeps its mode.
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
import stat
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
RUNNING_FILE = ".next.json"
"""Where a running ``pal label next`` says what it is doing (``pal label status`` reads it)."""
LABEL_CONFIG_FILE = "label_config.xml"
ADD_JOURNAL = ".add-journal.json"
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


def umask() -> int:
    """The process's umask (read without changing it where ``/proc`` tells it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def make_dir_like_mkdir(path: Path) -> None:
    """Give ``path`` (a folder ``tempfile.mkdtemp`` made: 0700) the mode ``mkdir`` gives."""
    os.chmod(path, 0o777 & ~umask())


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file beside it, flushed to disk and renamed
    into place: a reader (or a killed writer) sees the old file or the new one, never half.

    The file gets the mode ``open`` would give it: the old file's when it is rewritten, else
    0666 less the umask (``mkstemp`` alone makes it 0600, readable by its owner only)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        mode = 0o666 & ~umask()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
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
            make_dir_like_mkdir(tmp)
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
        return cls(folder, meta, cls._read_config(folder, meta))

    @staticmethod
    def _read_config(folder: Path, meta: dict[str, Any]) -> Config:
        config = Config.from_dict(yaml.safe_load((folder / CONFIG_FILE).read_text()))
        if meta.get("additions"):  # a grown pool: the manifest project.json names is the pool
            config = config.replace(dataset=f"manifest:{meta['manifest']}")
        return config

    def reload(self) -> None:
        """Read ``project.json`` and ``config.yaml`` again."""
        self.meta = json.loads((self.folder / PROJECT_FILE).read_text())
        self.config = self._read_config(self.folder, self.meta)

    # ------------------------------------------------------------------ properties
    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])

    @property
    def manifest(self) -> Path:
        """The manifest the rounds load: the one given at init, or after ``pal label add`` the
        union written beside it (so relative paths resolve from the same folder)."""
        return Path(self.meta["manifest"])

    @property
    def initial_manifest(self) -> Path:
        """The manifest given at init."""
        return Path(self.meta.get("initial_manifest", {}).get("path") or self.meta["manifest"])

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
            self.finish_add()
            yield

    def busy(self) -> bool:
        """Whether a command holds the project's lock now (a reader that needs no lock, such
        as ``status``, says so)."""
        with open(self.folder / LOCK_FILE, "a+") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(fh, fcntl.LOCK_UN)
            return False

    def _remove_temporaries(self) -> None:
        """Remove what a killed command left half-written (hidden temporary files and round
        folders); the project's own files never have those names."""
        for leftover in (self.folder / ROUNDS_DIR).glob(".*.writing-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        for leftover in [*self.folder.glob(".*.tmp"), *(self.folder / ROUNDS_DIR).glob(".*.tmp")]:
            leftover.unlink(missing_ok=True)
        (self.folder / RUNNING_FILE).unlink(missing_ok=True)  # a killed next's last words

    def finish_add(self) -> None:
        """Undo an ``add`` that stopped before it wrote ``project.json`` (the ledger cut back to
        its length before, the new pool manifest removed), or finish one that stopped after it
        (``config.yaml`` pointed at the new manifest, the superseded one removed); nothing when
        no add was interrupted. Called under the lock (by :meth:`lock`, and by ``add`` when it
        fails)."""
        journal_file = self.folder / ADD_JOURNAL
        if not journal_file.is_file():
            return
        journal = json.loads(journal_file.read_text())
        meta = json.loads((self.folder / PROJECT_FILE).read_text())
        new = Path(journal["manifest"])
        if meta["manifest"] == journal["manifest"]:  # project.json written: finish
            self.meta = meta
            config = Config.from_dict(yaml.safe_load((self.folder / CONFIG_FILE).read_text()))
            if config.dataset != f"manifest:{new}":
                config = config.replace(dataset=f"manifest:{new}")
                write_atomic(
                    self.folder / CONFIG_FILE, yaml.safe_dump(config.to_dict(), sort_keys=False)
                )
            previous = Path(journal["previous"])
            if journal.get("remove_previous") and previous != new:
                self._drop_decoded(previous)
                previous.unlink(missing_ok=True)
            elif Path(self.config.data_dir).absolute() == self.folder:
                self._drop_decoded(previous)  # the project's own cache of the init manifest
        else:  # undo
            ledger = self.folder / LEDGER_FILE
            data = ledger.read_bytes()
            if len(data) > journal["ledger_bytes"]:
                write_atomic(ledger, data[: journal["ledger_bytes"]])
            if str(new) != meta["manifest"]:
                self._drop_decoded(new)
                new.unlink(missing_ok=True)
        for leftover in new.parent.glob(f".{new.name}.*.tmp"):
            leftover.unlink(missing_ok=True)
        journal_file.unlink()
        self.reload()

    def _drop_decoded(self, manifest: Path) -> None:
        """Remove the decode cache of ``manifest`` (a pool manifest an add made) under the
        project's ``data_dir``; its key as :func:`pal.data.manifest.load_manifest` makes it."""
        from pal.data.cache import CACHE_DIR, digest, slug

        try:
            st = manifest.stat()
        except FileNotFoundError:
            return
        key = [str(manifest), st.st_size, st.st_mtime_ns, self.config.image_size]
        name = f"manifest-{slug(manifest)}-{digest(key)}"
        shutil.rmtree(Path(self.config.data_dir) / CACHE_DIR / name, ignore_errors=True)

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
            make_dir_like_mkdir(tmp)
            for name, content in files.items():
                write_atomic(tmp / name, content)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return final
