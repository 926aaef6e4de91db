"""Label Studio task files: the labeling config and the tasks of a batch, with pal's predictions.

A batch goes to Label Studio as ``tasks.json`` (Data Import, or ``POST /api/projects/ID/import``),
a list of tasks in Label Studio's basic JSON task format::

    [
      {
        "data": {"image": "/data/local-files/?d=pool/images/00012.png",
                 "pal_path": "images/00012.png", "rank": 1},
        "predictions": [
          {"model_version": "round-3", "score": 0.41,
           "result": [{"from_name": "choice", "to_name": "image", "type": "choices",
                       "value": {"choices": ["cat"]}}]}
        ]
      }
    ]

- ``data``: what Label Studio shows and keeps with the task. ``image`` is the URL the ``<Image>``
  tag reads (``value="$image"``); ``pal_path`` (:data:`PATH_KEY`) is the image's manifest path,
  carried so that every export format gives it back (the full JSON export keeps ``data`` as is,
  JSON-MIN and CSV write its keys as columns); further keys (rank, scores) are shown in the Data
  Manager's columns.
- ``predictions``: pre-annotations, shown to the annotator as a starting answer: the model's
  ``model_version`` (a free string Label Studio groups predictions by), the task's ``score``
  (sortable in the Data Manager) and a ``result`` in the same shape as an annotation's result: a
  ``choices`` region from the ``<Choices name="choice">`` tag to the ``<Image name="image">`` tag.
  A task without a prediction has no ``predictions`` key.

:func:`label_config` is the project's labeling config (Settings > Labeling Interface > Code), and
:func:`local_files_url` the URL of an image served from the local disk.
"""

from __future__ import annotations

import html
import os
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePath
from typing import Any
from urllib.parse import quote

# The <Choices> tag's name: an annotation's result regions carry it as ``from_name``, and JSON-MIN
# exports write the chosen class under this key.
FROM_NAME = "choice"
# The <Image> tag's name: the ``to_name`` of every result region.
TO_NAME = "image"
# The task data key the <Image> tag reads its URL from (``value="$image"``).
IMAGE_KEY = "image"
# The task data key holding the image's manifest path.
PATH_KEY = "pal_path"

# Keys a row's extra data may not use: pal's own data keys, and the keys Label Studio's JSON-MIN
# export writes beside the task data (a data key of the same name would be overwritten there) or
# that mark a full-format task.
RESERVED_DATA_KEYS = frozenset(
    {
        IMAGE_KEY,
        PATH_KEY,
        FROM_NAME,
        "id",
        "annotator",
        "annotation_id",
        "created_at",
        "updated_at",
        "lead_time",
        "agreement",
        "data",
        "annotations",
        "predictions",
    }
)


def label_config(classes: list[str]) -> str:
    """The Label Studio labeling config for single-label image classification over ``classes``.

    One ``<Image>`` tag (named :data:`TO_NAME`, reading the task's ``$image``) and one
    ``<Choices choice="single">`` tag (named :data:`FROM_NAME`) with a ``<Choice>`` per class, in
    the order given; class names are XML-escaped (``& < > " '``).

    Raises:
        ValueError: no classes, a duplicate, an empty name or one with surrounding whitespace
            (imported labels are stripped, so it could never be matched).
    """
    if not classes:
        raise ValueError("label_config: no classes given")
    problems = []
    seen: set[str] = set()
    for name in classes:
        if not isinstance(name, str) or not name.strip():
            problems.append(f"empty class name {name!r}")
        elif name != name.strip():
            problems.append(f"class name {name!r} has surrounding whitespace")
        elif name in seen:
            problems.append(f"class {name!r} given twice")
        seen.add(name)
    if problems:
        raise ValueError("label_config: " + "; ".join(problems))
    choices = "\n".join(
        f'    <Choice value="{html.escape(name, quote=True)}"/>' for name in classes
    )
    return (
        "<View>\n"
        f'  <Image name="{TO_NAME}" value="${IMAGE_KEY}"/>\n'
        f'  <Choices name="{FROM_NAME}" toName="{TO_NAME}" choice="single" showInline="true">\n'
        f"{choices}\n"
        "  </Choices>\n"
        "</View>\n"
    )


def local_files_url(
    path: str,
    document_root: Path,
    manifest_dir: Path,
    prefix: str = "/data/local-files/?d=",
) -> str:
    """The URL Label Studio serves the image at manifest path ``path`` from the local disk.

    Label Studio serves local files when started with
    ``LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true`` and
    ``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=<document_root>``, at
    ``/data/local-files/?d=<the file relative to the document root>``; the project also needs a
    Local Files storage (Settings > Cloud Storage) whose path is a folder above the images, or
    the server refuses them.

    Args:
        path: the manifest path: relative to ``manifest_dir``, or absolute.
        document_root: Label Studio's local files document root.
        manifest_dir: the folder of the manifest CSV.
        prefix: what comes before the relative path (a full ``http://host:8080/data/...`` when
            the tasks are used outside the Label Studio that serves them).

    Returns:
        ``prefix`` + the file's path relative to ``document_root``, POSIX separators,
        URL-quoted except for ``/``.

    Raises:
        ValueError: the file is not under ``document_root`` (named in the message).
    """
    file = Path(path)
    if not file.is_absolute():
        file = Path(manifest_dir) / file
    root = Path(document_root)
    relative = _relative_to(Path(os.path.abspath(file)), Path(os.path.abspath(root)))
    if relative is None:
        # The same folder may be reached through a symbolic link on one side only.
        relative = _relative_to(file.resolve(), root.resolve())
    if relative is None:
        raise ValueError(
            f"image {path!r} ({file}) is not under Label Studio's local files document root "
            f"{root}; Label Studio can only serve files below it"
        )
    return prefix + quote("/".join(relative.parts), safe="/")


def _relative_to(file: Path, root: Path) -> PurePath | None:
    """``file`` relative to ``root`` (both absolute and normalised), or None when not below it."""
    try:
        relative = file.relative_to(root)
    except ValueError:
        return None
    return relative if relative.parts else None


def tasks_json(rows: Iterable[Mapping[str, Any]], model_version: str) -> list[dict[str, Any]]:
    """Label Studio tasks for a batch, one per row, in the rows' order (see the module's format).

    Args:
        rows: one mapping per image, with keys

            - ``path``: the manifest path, written to ``data["pal_path"]``;
            - ``image``: the image's URL (:func:`local_files_url`), written to ``data["image"]``;
            - ``predicted``: the predicted class name, or None for no prediction;
            - ``probability``: the prediction's probability (the prediction's ``score``), or None;
            - ``data`` (optional): further task data, plain JSON values (rank, scores), shown as
              Data Manager columns.
        model_version: the predictions' ``model_version``.

    Raises:
        ValueError: an extra data key that Label Studio's exports would confuse with their own
            (:data:`RESERVED_DATA_KEYS`).
    """
    tasks = []
    for i, row in enumerate(rows):
        extra = dict(row.get("data") or {})
        clash = sorted(RESERVED_DATA_KEYS & extra.keys())
        if clash:
            raise ValueError(
                f"task {i + 1} ({row['path']}): extra data keys {clash} are reserved "
                f"({sorted(RESERVED_DATA_KEYS)})"
            )
        task: dict[str, Any] = {"data": {IMAGE_KEY: row["image"], PATH_KEY: row["path"], **extra}}
        predicted = row.get("predicted")
        if predicted is not None:
            task["predictions"] = [prediction(predicted, row.get("probability"), model_version)]
        tasks.append(task)
    return tasks


def prediction(
    label: str,
    score: float | None,
    model_version: str,
    from_name: str = FROM_NAME,
    to_name: str = TO_NAME,
) -> dict[str, Any]:
    """One Label Studio prediction: the class ``label`` chosen in the ``choices`` tag
    ``from_name`` over the image tag ``to_name``, with its ``score`` (left out when ``None``)."""
    out: dict[str, Any] = {"model_version": model_version}
    if score is not None:
        out["score"] = float(score)
    region = {"choices": [str(label)]}
    out["result"] = [
        {"from_name": from_name, "to_name": to_name, "type": "choices", "value": region}
    ]
    return out
