"""Annotations into the ledger: :func:`import_annotations`, atomic and idempotent.

The file is read whole (:func:`pal.labeling.imports.read_annotations`: Label Studio's JSON or
JSON-MIN export, or a CSV of ``path,label``) and checked against the project before anything is
written: a path outside the manifest's pool, an image of the ``val`` or ``test`` split, or a
class the project does not have makes the whole import fail, naming every offending row, and
the ledger stays as it was. Rows that say what the ledger already says (the same label, or
skipped again) add nothing, so importing the same file twice changes nothing. A new label for an
image labeled before is a new row (the latest row wins); a skipped task is recorded ``skipped``
and never offered again.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from pal.labeling.imports import Annotation, AnnotationFileError, read_annotations
from pal.labeling.project import LedgerRow, Project, ProjectError

MAX_LISTED = 20  # offending rows named in full in an error message


@dataclasses.dataclass(frozen=True)
class ImportSummary:
    """What an import did: rows read, labeled and skipped rows added, rows already known."""

    read: int
    labeled: int
    skipped: int
    unchanged: int


def import_annotations(project: Project, file: str | os.PathLike) -> ImportSummary:
    """Add the annotations of ``file`` to the ledger of ``project`` (an open project whose lock
    the caller holds; see the module docstring).

    Raises:
        ProjectError: a changed manifest, a file that cannot be read, or rows that do not fit the
            project; the ledger is unchanged.
    """
    file = Path(file)
    try:
        annotations = read_annotations(file)
    except AnnotationFileError as err:
        raise ProjectError(f"import: {err}") from None
    except OSError as err:
        raise ProjectError(f"import: cannot read {str(file)!r} ({err})") from None
    return record_annotations(project, annotations, file.name)


def record_annotations(
    project: Project, annotations: list[Annotation], source: str
) -> ImportSummary:
    """Add ``annotations`` to the ledger of ``project`` under the rules of the module docstring
    (all or nothing, idempotent), recording ``source`` (a file name, ``label-studio``) as where
    they came from. The caller holds the project's lock.

    Raises:
        ProjectError: a changed manifest, or annotations that do not fit the project (every
            offending one named); the ledger is unchanged.
    """
    pool_paths, held_out = project.manifest_paths()
    classes = set(project.classes)
    problems, unknown = [], set()
    for a in annotations:
        if a.path in held_out:
            problems.append(
                f"row {a.row}: {a.path!r} is a val/test image (labeled in the manifest)"
            )
        elif a.path not in pool_paths:
            problems.append(f"row {a.row}: {a.path!r} is not an image of the manifest's pool")
        elif a.status == "labeled" and a.label not in classes:
            problems.append(f"row {a.row}: unknown class {a.label!r}")
            unknown.add(a.label)
    if problems:
        shown = "; ".join(problems[:MAX_LISTED])
        more = f"; and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
        known = f" (the project's classes: {project.classes})" if unknown else ""
        raise ProjectError(
            f"import: {source}: {len(problems)} rows do not fit the project, nothing was "
            f"imported: {shown}{more}{known}"
        )
    latest = {row.path: row for row in project.ledger()}
    offered_in = {}
    for r in project.rounds():
        for row in project.batch(r):
            offered_in[row["path"]] = r
    new, unchanged = [], 0
    for a in annotations:
        label = a.label if a.status == "labeled" else ""
        before = latest.get(a.path)
        if before is not None and (before.status, before.label) == (a.status, label):
            unchanged += 1
            continue
        row = LedgerRow(a.path, label, offered_in.get(a.path, 0), source, a.status)
        new.append(row)
        latest[a.path] = row
    project.append(new)
    return ImportSummary(
        read=len(annotations),
        labeled=sum(r.status == "labeled" for r in new),
        skipped=sum(r.status == "skipped" for r in new),
        unchanged=unchanged,
    )
