"""``pal label add``: new pool images for a project, from a second manifest.

:func:`add_images` reads a manifest of the same format as ``init``'s (``path,label,split``; paths
relative to that manifest's folder, or absolute) and grows the project's pool with it:

- every image the project does not hold yet (told apart by the file it resolves to, symbolic
  links followed) becomes a ``pool`` image, offerable from the next round on; one with a label
  goes to the ledger as labeled (round 0, source ``manifest``), as ``init`` does;
- an image the project holds already is skipped when the row agrees with the project (same
  split; no label, or the label the project has), so a manifest that lists the old images with
  the new ones (a folder listed again) adds only the new ones, and adding a manifest twice adds
  nothing the second time; a row that disagrees (another split, another label) is refused;
- a new ``val`` or ``test`` row is refused: the validation split measures every round's task
  network, and a round measured on another one would break the validation curve and its
  stopping signal (a new test row would change what the test accuracy means in the same way);
- a label outside the project's classes is refused (classes are fixed at init).

Every refusal lists every offending row and happens before anything is written. Then the union
(the project's manifest as it is, in its order, and the new rows after it) is written as a new
manifest beside the manifest given at init, so that every earlier path keeps its string and
resolves as before (an image's identity in the ledger and the batches is its manifest path); a
new image's path is written relative to that folder when the file is below it, else absolute.
The union is decoded once (which fills the decode cache the next round reads, and refuses a file
PIL cannot decode before the project changes), the new labels are appended to the ledger,
``project.json`` is pointed at the new manifest (``manifest``, ``manifest_sha256``; the one given
at init is kept as ``initial_manifest``; each add is recorded in ``additions``) and
``config.yaml``'s ``dataset`` follows. A journal (:data:`pal.labeling.project.ADD_JOURNAL`) makes
the whole of it atomic: an add killed at any point is undone by the next command on the project
(or finished, when ``project.json`` was written already).
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import time
from pathlib import Path

from pal.data import load_dataset
from pal.data.image_data import DataError
from pal.data.manifest import ManifestRow, read_manifest
from pal.labeling.project import (
    ADD_JOURNAL,
    LEDGER_FILE,
    LedgerRow,
    Project,
    ProjectError,
    csv_text,
    file_sha256,
    write_atomic,
)

MANIFEST_FIELDS = ("path", "label", "split")
_MAX_LISTED = 10


@dataclasses.dataclass(frozen=True)
class AddSummary:
    """What :func:`add_images` did.

    Attributes:
        manifest: the manifest added (absolute).
        pool_manifest: the manifest the rounds load from now on (unchanged when nothing was new).
        rows: rows read from the added manifest.
        added: new pool images.
        labeled: of those, labeled in the added manifest (new ledger rows).
        already: rows naming an image the project held already (skipped).
        pool: pool images of the project after the add.
        first_round: the first round that may offer the new images.
        decode_seconds: time to decode the union (0 when nothing was new).
        outside: new images outside the folder that held the pool's images so far (the folder
            of the manifest given at init when it held them all, Label Studio's local files
            document root unless ``pal label next`` is given another).
        served_from: that folder.
        document_root: the folder above every pool image when ``outside`` (else None): the
            ``--document-root`` those images' Label Studio URLs need now.
    """

    manifest: Path
    pool_manifest: Path
    rows: int
    added: int
    labeled: int
    already: int
    pool: int
    first_round: int
    decode_seconds: float
    outside: int = 0
    served_from: Path | None = None
    document_root: Path | None = None

    def text(self) -> str:
        """The lines ``pal label add`` prints."""
        if not self.added:
            return (
                f"added nothing from {self.manifest}: its {self.rows} rows name images the "
                f"project holds already; the pool is {self.pool} images"
            )
        text = (
            f"added {self.added} pool images from {self.manifest} ({self.labeled} labeled in it, "
            f"{self.already} rows already in the project); the pool is {self.pool} images, "
            f"offered from round {self.first_round} on\n"
            f"the rounds load {self.pool_manifest} (decoded in {self.decode_seconds:.1f} s)"
        )
        if self.outside:
            text += (
                f"\n{self.outside} new images are outside {self.served_from}, the folder above "
                f"the pool's images so far: for Label Studio's URLs, give pal label next "
                f"--document-root {self.document_root} (and start Label Studio with that "
                "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT)"
            )
        return text


def add_images(project: Project, manifest: str | os.PathLike) -> AddSummary:
    """Grow the pool of ``project`` (open, its lock held by the caller) with the images of
    ``manifest`` (see the module docstring).

    Raises:
        ProjectError: the manifest cannot be read or has rows the project refuses (every one
            named), the project's manifest changed, or the new manifest cannot be written or
            decoded; the project is as it was.
    """
    manifest = Path(manifest).expanduser().resolve()
    if not manifest.is_file():
        raise ProjectError(f"add: no such manifest file {str(manifest)!r}")
    project.check_manifest()
    try:
        added = read_manifest(manifest)
    except DataError as err:
        raise ProjectError(f"add: {str(err).removeprefix('dataset: ')}") from None
    current = project.manifest
    rows = read_manifest(current)
    root = current.parent  # where the pool's relative paths resolve from, since init
    new, already = _new_rows(project, manifest, rows, added)
    rounds = project.rounds()
    first_round = (rounds[-1] if rounds else 0) + 1
    n_pool = sum(r.split == "pool" for r in rows)
    if not new:
        return AddSummary(manifest, current, len(added), 0, 0, already, n_pool, first_round, 0.0)

    union = [{"path": r.path, "label": r.label, "split": r.split} for r in rows]
    union += [{"path": _path_from(root, r), "label": r.label, "split": "pool"} for r in new]
    target = _pool_manifest_name(project, len(project.meta.get("additions", [])) + 1)
    ledger_rows = [
        LedgerRow(row["path"], row["label"], 0, "manifest", "labeled")
        for row in union[len(rows) :]
        if row["label"]
    ]
    journal = {
        "manifest": str(target),
        "previous": str(current),
        "remove_previous": current != project.initial_manifest,
        "ledger_bytes": (project.folder / LEDGER_FILE).stat().st_size,
    }
    try:
        write_atomic(project.folder / ADD_JOURNAL, json.dumps(journal, indent=2) + "\n")
        try:
            write_atomic(target, csv_text(MANIFEST_FIELDS, union))
        except OSError as err:
            raise ProjectError(
                f"add: cannot write the grown pool's manifest {str(target)!r} ({err}); it is "
                "written beside the manifest the project was made with, whose folder the "
                "pool's relative paths resolve from"
            ) from None
        cfg = project.config.replace(dataset=f"manifest:{target}")
        t0 = time.perf_counter()
        try:  # fills the decode cache of the next round; a file PIL cannot read fails here
            load_dataset(cfg.dataset, cfg.data_dir, False, cfg.image_size)
        except DataError as err:
            raise ProjectError(f"add: {str(err).removeprefix('dataset: ')}") from None
        seconds = time.perf_counter() - t0
        project.append(ledger_rows)
        meta = dict(project.meta)
        meta.setdefault(
            "initial_manifest", {"path": meta["manifest"], "sha256": meta["manifest_sha256"]}
        )
        meta["additions"] = [
            *meta.get("additions", []),
            {
                "manifest": str(manifest),
                "sha256": file_sha256(manifest),
                "added": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                "images": len(new),
                "labeled": len(ledger_rows),
                "already": already,
                "first_round": first_round,
                "pool_manifest": str(target),
            },
        ]
        meta["manifest"], meta["manifest_sha256"] = str(target), file_sha256(target)
        project.meta = meta
        project.save_meta()  # the add happened: finish_add completes it from here
    except BaseException:
        project.finish_add()
        raise
    project.finish_add()  # config.yaml, the superseded manifest, the journal
    served_from = root  # the folder above the pool's images so far
    if not all(r.file.is_relative_to(root) for r in rows):
        served_from = Path(os.path.commonpath([r.file for r in rows]))
    outside = [r.file for r in new if not r.file.is_relative_to(served_from)]
    return AddSummary(
        manifest,
        target,
        len(added),
        len(new),
        len(ledger_rows),
        already,
        n_pool + len(new),
        first_round,
        seconds,
        len(outside),
        served_from,
        Path(os.path.commonpath([served_from, *outside])) if outside else None,
    )


def _new_rows(
    project: Project, manifest: Path, rows: list[ManifestRow], added: list[ManifestRow]
) -> tuple[list[ManifestRow], int]:
    """The rows of ``added`` naming images the project does not hold, and how many name one it
    holds (and agree with it).

    Raises:
        ProjectError: every row the project refuses (see the module docstring).
    """
    known = {os.path.realpath(r.file): r for r in rows}
    labels, skipped = project.labels(), project.skipped()
    classes = set(project.classes)
    seen: dict[str, int] = {}
    new: list[ManifestRow] = []
    already = 0
    problems: list[str] = []
    unknown: dict[str, list[int]] = {}
    for r in added:
        key = os.path.realpath(r.file)
        if key in seen:
            problems.append(f"row {r.number}: the same file as row {seen[key]}")
            continue
        seen[key] = r.number
        if r.label and r.label not in classes:
            unknown.setdefault(r.label, []).append(r.number)
        have = known.get(key)
        if have is not None:
            if have.split == "pool":
                label = labels.get(have.path, "")
                held = "skipped" if have.path in skipped else f"labeled {label!r}" if label else ""
            else:
                label, held = have.label, f"labeled {have.label!r}"
            if r.split != have.split:
                problems.append(
                    f"row {r.number}: {r.path!r} is {have.path!r}, a {have.split} image of the "
                    f"project, not a {r.split} one"
                )
            elif r.label and r.label != label:
                problems.append(
                    f"row {r.number}: {r.path!r} is labeled {r.label!r} here but "
                    f"{held or 'not labeled'} in the project (pal label import changes a "
                    "pool image's label)"
                )
            else:
                already += 1
        elif r.split != "pool":
            problems.append(
                f"row {r.number}: a new {r.split} image ({r.path!r}); the val and test splits "
                "are fixed at init (every round is measured on the same val split), so add "
                "images to the pool only (split pool or empty)"
            )
        else:
            new.append(r)
    if unknown:
        shown = ", ".join(
            f"{label!r} (row{'s' if len(n) > 1 else ''} {', '.join(map(str, n[:_MAX_LISTED]))})"
            for label, n in unknown.items()
        )
        problems.insert(
            0,
            f"classes: labels {shown} are not among the project's classes {project.classes}, "
            "fixed at init (start a new project for new classes)",
        )
    if problems:
        more = len(problems) - _MAX_LISTED
        listed = "; ".join(problems[:_MAX_LISTED]) + (f"; and {more} more" if more > 0 else "")
        raise ProjectError(
            f"add: {str(manifest)!r}: {len(problems)} problem{'s' if len(problems) > 1 else ''}, "
            f"nothing was added (row 1 is the header): {listed}"
        )
    return new, already


def _path_from(root: Path, row: ManifestRow) -> str:
    """``row``'s path as the union manifest in ``root`` writes it: relative to ``root`` when
    the file is below it, else absolute (POSIX separators)."""
    try:
        return row.file.relative_to(root).as_posix()
    except ValueError:
        return row.file.as_posix()


def _pool_manifest_name(project: Project, k: int) -> Path:
    """Where the pool manifest of the ``k``-th add goes: beside the manifest given at init,
    named after it and the project (its folder's name and a digest of its path)."""
    initial = project.initial_manifest
    digest = hashlib.sha256(str(project.folder).encode()).hexdigest()[:8]
    return initial.parent / f"{initial.stem}.pal-{project.folder.name}-{digest}.{k:03d}.csv"
