"""Annotations coming back from Label Studio (or a spreadsheet): one answer per image.

:func:`read_annotations` reads three formats, told apart by the file's suffix and shape:

**Label Studio JSON** (Export > JSON; ``.json``): the list of tasks as Label Studio stores them::

    [
      {"id": 7, "data": {"image": "/data/local-files/?d=...", "pal_path": "images/00012.png"},
       "annotations": [
         {"id": 31, "completed_by": 1, "was_cancelled": false, "lead_time": 4.2,
          "created_at": "2024-05-02T10:00:00.000000Z", "updated_at": "2024-05-02T10:01:00.000000Z",
          "result": [{"id": "aB3x", "from_name": "choice", "to_name": "image", "type": "choices",
                      "origin": "manual", "value": {"choices": ["cat"]}}]}],
       "predictions": [...], "total_annotations": 1, "cancelled_annotations": 0, ...}
    ]

- the image is ``data["pal_path"]`` (see :mod:`pal.labeling.studio`), else ``data["image"]``
  (as written there: for tasks made without ``pal_path``);
- ``annotations`` holds one entry per submission, with ``was_cancelled`` true for a skip
  (the old key ``skipped`` and the pre-1.0 list name ``completions`` are read too). Of the
  annotations that are not cancelled, the one updated last (``updated_at``, else ``created_at``,
  else the last in the list) is the answer: its ``choices`` region (``from_name`` ``"choice"``, or
  the only ``choices`` region) holds exactly one class in ``value.choices``;
- a task whose annotations are all cancelled, or that has none but counts
  ``cancelled_annotations`` (an export that left skips out), is ``skipped``;
- a task with no annotations at all is not labeled yet and gives no answer (the export's
  "all tasks" option writes them).

**Label Studio JSON-MIN** (Export > JSON-MIN; ``.json`` or ``.min.json``): one flat record per
annotation: the task's data keys, the task ``id``, the chosen class under the ``<Choices>`` tag's
name (``"choice": "cat"``; ``{"choices": ["cat", "dog"]}`` when several were chosen), and
``annotator``, ``annotation_id``, ``created_at``, ``updated_at``, ``lead_time``. Label Studio's
converter (``label_studio_sdk/converter/converter.py``, ``Converter.annotation_result_from_task``
and ``convert_to_json_min``; the same in the archived ``label-studio-converter``) drops the
cancelled annotations and writes nothing at all for a task whose annotations are all cancelled,
so **a skipped task is missing from JSON-MIN** and reads as not labeled yet (use the JSON export
to bring skips back). A task without annotations is written with its data only and
``annotation_id`` null: not labeled yet, no answer. A task with several live annotations gives
one record each; as in the JSON export, the record updated last is the answer.

**CSV** (``.csv``): a header with ``path`` and ``label`` columns and an optional ``status``
column (``labeled`` or ``skipped``); other columns are ignored. A row with a label is
``labeled``; a row with an empty label must say ``skipped``.

Every answer has one status: ``labeled`` with a label, or ``skipped`` without one. Labels are
returned stripped and unchecked (the project knows its classes). Rows that give one path the
same answer collapse into the first; rows that give it different answers are an error. Every bad
row of a file is reported at once, in one :class:`AnnotationFileError`.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pal.labeling.studio import FROM_NAME, IMAGE_KEY, PATH_KEY

LABELED = "labeled"
SKIPPED = "skipped"
STATUSES = (LABELED, SKIPPED)

ACCEPTED_FORMATS = (
    "accepted: Label Studio's JSON or JSON-MIN export (.json, .min.json: a list of tasks or "
    "records), or a CSV with path and label columns and an optional status column (.csv)"
)


@dataclasses.dataclass(frozen=True)
class Annotation:
    """One image's answer.

    Attributes:
        path: the image's manifest path (``pal_path``; see the module docstring for fallbacks).
        label: the chosen class name, stripped; None when skipped.
        status: ``"labeled"`` or ``"skipped"``.
        row: where the answer is in its file, for messages: the 1-based position of the task
            (JSON) or record (JSON-MIN) in the list; in a CSV, the spreadsheet row (the header
            is row 1).
    """

    path: str
    label: str | None
    status: str
    row: int


class AnnotationFileError(ValueError):
    """An annotation file that cannot be read, or that has bad rows (all of them are listed).

    Attributes:
        path: the file, as given.
        problems: ``(row, what is wrong)`` pairs; row is None for a problem of the whole file.
    """

    def __init__(self, path: Path | str, problems: Sequence[tuple[int | None, str]]):
        self.path = str(path)
        self.problems = list(problems)
        parts = [text if row is None else f"row {row}: {text}" for row, text in self.problems]
        super().__init__(f"{self.path}: " + "; ".join(parts))


class RowProblem(Exception):
    """What is wrong with one row; ``row`` overrides the row being read when given."""

    def __init__(self, text: str, row: int | None = None):
        super().__init__(text)
        self.text = text
        self.row = row


def read_annotations(path: Path | str) -> list[Annotation]:
    """The answers in a Label Studio JSON or JSON-MIN export, or a CSV (see the module docstring).

    Returns:
        One :class:`Annotation` per image answered, in the file's order. Tasks not labeled yet
        are left out.

    Raises:
        AnnotationFileError: an unknown suffix, a file that does not parse or is not a list, or
            bad rows (each named with its row number and what is wrong).
        OSError: the file cannot be read.
    """
    path = Path(path)
    name = path.name.lower()
    if name.endswith(".csv"):
        answers, problems = _read_csv(path, _read_text(path))
    elif name.endswith(".json"):
        records = _load_json_list(path)
        if _is_full_export(records):
            answers, problems = _read_full(records)
        else:
            answers, problems = _read_min(records)
    else:
        raise AnnotationFileError(
            path, [(None, f"unknown file type {path.suffix!r}; {ACCEPTED_FORMATS}")]
        )
    answers = _collapse_duplicates(answers, problems)
    if problems:
        problems.sort(key=lambda problem: (problem[0] is not None, problem[0] or 0))
        raise AnnotationFileError(path, problems)
    return answers


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")  # a spreadsheet's byte-order mark is dropped
    except UnicodeDecodeError as exc:
        raise AnnotationFileError(
            path, [(None, f"not UTF-8 text ({exc.reason} at byte {exc.start})")]
        ) from exc


def _load_json_list(path: Path) -> list[Any]:
    text = _read_text(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AnnotationFileError(
            path,
            [
                (
                    None,
                    f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); "
                    + ACCEPTED_FORMATS,
                )
            ],
        ) from exc
    if not isinstance(data, list):
        raise AnnotationFileError(
            path, [(None, f"a JSON {type(data).__name__}, not a list; {ACCEPTED_FORMATS}")]
        )
    return data


def _is_full_export(records: list[Any]) -> bool:
    """Whether a JSON list is Label Studio's full export (tasks with ``data``) and not JSON-MIN."""
    return any(
        isinstance(record, dict)
        and (
            "annotations" in record
            or "completions" in record
            or isinstance(record.get("data"), dict)
        )
        for record in records
    )


# Label Studio JSON


def _read_full(tasks: list[Any]) -> tuple[list[Annotation], list[tuple[int | None, str]]]:
    answers: list[Annotation] = []
    problems: list[tuple[int | None, str]] = []
    for row, task in enumerate(tasks, start=1):
        try:
            answer = _full_task(task, row)
        except RowProblem as problem:
            problems.append((problem.row or row, problem.text))
            continue
        if answer is not None:
            answers.append(answer)
    return answers, problems


def _full_task(task: Any, row: int) -> Annotation | None:
    if not isinstance(task, dict):
        raise RowProblem(f"a {type(task).__name__}, not a task object")
    data = task.get("data")
    if not isinstance(data, dict):
        raise RowProblem("no data object in the task")
    path = _path_of(data, "the task's data")
    annotations = task.get("annotations", task.get("completions")) or []
    if not isinstance(annotations, list) or not all(isinstance(a, dict) for a in annotations):
        raise RowProblem("annotations is not a list of annotation objects")
    live = [a for a in annotations if not _cancelled(a)]
    if not live:
        if annotations or _count(task.get("cancelled_annotations")) > 0:
            return Annotation(path, None, SKIPPED, row)
        return None
    _, annotation = _latest([(row, a) for a in live])
    where = f"annotation {annotation['id']}: " if annotation.get("id") is not None else ""
    try:
        label = _label_from_result(annotation.get("result"))
    except RowProblem as problem:
        raise RowProblem(where + problem.text) from None
    return Annotation(path, label, LABELED, row)


def answer_of(annotation: Mapping[str, Any], path: str, row: int) -> Annotation:
    """The answer one Label Studio annotation object (``was_cancelled``, ``result``) gives for
    the image at ``path``: skipped, or its one choice (a webhook's event, ``pal label serve``).

    Raises:
        RowProblem: no single choice in it.
    """
    if _cancelled(annotation):
        return Annotation(path, None, SKIPPED, row)
    return Annotation(path, _label_from_result(annotation.get("result")), LABELED, row)


def _cancelled(annotation: Mapping[str, Any]) -> bool:
    return bool(annotation.get("was_cancelled") or annotation.get("skipped"))


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _label_from_result(result: Any) -> str:
    """The class of an annotation's ``result``: its one ``choices`` region's one choice."""
    if not isinstance(result, list):
        raise RowProblem("the annotation's result is not a list")
    regions = [r for r in result if isinstance(r, dict) and r.get("type") == "choices"]
    named = [r for r in regions if r.get("from_name") == FROM_NAME]
    if len(named) == 1 or (not named and len(regions) == 1):
        region = named[0] if named else regions[0]
    elif not regions:
        raise RowProblem("no choices result in the annotation (nothing was chosen)")
    else:
        raise RowProblem(f"{len(named) or len(regions)} choices results; expected one")
    value = region.get("value")
    return _one_choice(value.get("choices") if isinstance(value, dict) else None)


def _one_choice(choices: Any) -> str:
    if not isinstance(choices, list):
        raise RowProblem("the choices result has no list of choices")
    if len(choices) != 1:
        if not choices:
            raise RowProblem("no choice in the choices result")
        shown = ", ".join(str(c) for c in choices)
        raise RowProblem(f"more than one choice ({shown}); expected one class")
    return _label_text(choices[0])


def _label_text(value: Any) -> str:
    if not isinstance(value, str):
        raise RowProblem(f"the choice {value!r} is not a string")
    if not value.strip():
        raise RowProblem("empty choice")
    return value.strip()


# Label Studio JSON-MIN


def _read_min(records: list[Any]) -> tuple[list[Annotation], list[tuple[int | None, str]]]:
    problems: list[tuple[int | None, str]] = []
    # One task's annotations are one record each; group them by the task id.
    groups: dict[tuple[str, Any], list[tuple[int, dict[str, Any]]]] = {}
    for row, record in enumerate(records, start=1):
        if not isinstance(record, dict):
            problems.append((row, f"a {type(record).__name__}, not a record object"))
            continue
        task_id = record.get("id")
        key = (
            ("row", row)
            if task_id is None or isinstance(task_id, (dict, list))
            else ("id", task_id)
        )
        groups.setdefault(key, []).append((row, record))
    answers: list[Annotation] = []
    for group in groups.values():
        annotated = [(row, record) for row, record in group if _is_annotation(record)]
        if not annotated:
            continue  # a task without annotations: not labeled yet
        row = annotated[0][0]
        try:
            row, record = _latest(annotated)
            path = _path_of(record, "the record")
            answers.append(Annotation(path, _min_label(record), LABELED, row))
        except RowProblem as problem:
            problems.append((problem.row or row, problem.text))
    answers.sort(key=lambda answer: answer.row)
    return answers, problems


def _is_annotation(record: Mapping[str, Any]) -> bool:
    """False only for the record Label Studio writes for a task with no annotation."""
    return FROM_NAME in record or record.get("annotation_id", "absent") is not None


def _min_label(record: Mapping[str, Any]) -> str:
    if FROM_NAME not in record:
        raise RowProblem(
            f"no {FROM_NAME!r} key: an annotation without a choice, or a Choices tag not named "
            f"{FROM_NAME!r}"
        )
    value = record[FROM_NAME]
    if isinstance(value, dict):
        return _one_choice(value.get("choices"))
    if isinstance(value, list):
        raise RowProblem(f"{len(value)} choices results under {FROM_NAME!r}; expected one")
    return _label_text(value)


# Shared by the two Label Studio formats


def _path_of(record: Mapping[str, Any], where: str) -> str:
    for key in (PATH_KEY, IMAGE_KEY):
        value = record.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    raise RowProblem(f"no {PATH_KEY} or {IMAGE_KEY} in {where}")


def _latest(items: list[tuple[int, dict[str, Any]]]) -> tuple[int, dict[str, Any]]:
    """The item updated last: by ``updated_at``, else ``created_at``, else the last in the list."""
    lowest = datetime.datetime.min.replace(tzinfo=datetime.UTC)
    keyed = []
    for position, (row, item) in enumerate(items):
        stamp = _timestamp(item, row)
        keyed.append(((stamp is not None, stamp or lowest, position), (row, item)))
    return max(keyed, key=lambda pair: pair[0])[1]


def _timestamp(item: Mapping[str, Any], row: int) -> datetime.datetime | None:
    for key in ("updated_at", "created_at"):
        value = item.get(key)
        if value is None or value == "":
            continue
        try:
            stamp = datetime.datetime.fromisoformat(value)
        except (TypeError, ValueError):
            raise RowProblem(f"{key} {value!r} is not an ISO 8601 time", row) from None
        return stamp if stamp.tzinfo else stamp.replace(tzinfo=datetime.UTC)
    return None


# CSV


def _read_csv(path: Path, text: str) -> tuple[list[Annotation], list[tuple[int | None, str]]]:
    lines = io.StringIO(text, newline="").readlines()
    reader = csv.reader(lines)
    rows: list[list[str]] = []
    starts: list[int] = []  # the line (0-based) each record starts on
    consumed = 0  # the lines read so far
    try:
        for fields in reader:
            starts.append(consumed)
            consumed = reader.line_num
            rows.append(fields)
    except csv.Error as exc:
        raise AnnotationFileError(
            path, [(reader.line_num, f"not readable as CSV ({exc})")]
        ) from exc
    if rows and _quote_left_open(lines[starts[-1] :]):
        # a lenient reader reads a quoted field that never closes to the end of the file, so
        # every row after it would vanish into one path or label with newlines in it
        raise AnnotationFileError(
            path,
            [
                (
                    len(rows),
                    "malformed CSV: a quote opens in this row"
                    + (f" (line {starts[-1] + 1})" if starts[-1] + 1 != len(rows) else "")
                    + " and is never closed, so the rest of the file reads as one field; close "
                    "the quote or remove it",
                )
            ],
        )
    header = [name.strip().lower() for name in rows[0]] if rows else []
    missing = [name for name in ("path", "label") if name not in header]
    twice = sorted({name for name in header if name and header.count(name) > 1})
    if missing or twice:
        found = ", ".join(header) or "nothing"
        what = (
            f"no {' or '.join(missing)} column"
            if missing
            else f"columns given twice: {', '.join(twice)}"
        )
        raise AnnotationFileError(
            path,
            [(None, f"{what} in the header (found: {found}); {ACCEPTED_FORMATS}")],
        )
    column = {name: header.index(name) for name in ("path", "label", "status") if name in header}
    answers: list[Annotation] = []
    problems: list[tuple[int | None, str]] = []
    for row, fields in enumerate(rows[1:], start=2):
        if not any(field.strip() for field in fields):
            continue

        def get(name: str, fields: list[str] = fields) -> str:
            i = column.get(name)
            return fields[i].strip() if i is not None and i < len(fields) else ""

        try:
            answers.append(_csv_answer(get("path"), get("label"), get("status").lower(), row))
        except RowProblem as problem:
            problems.append((row, problem.text))
    return answers, problems


def _quote_left_open(lines: list[str]) -> bool:
    """Whether the record starting at ``lines[0]`` ends the file inside a quoted field (which
    the lenient reader accepts, reading the field to the end of the file)."""
    reader = csv.reader(lines, strict=True)
    try:
        for _ in reader:
            pass
    except csv.Error as exc:
        return "unexpected end of data" in str(exc)
    return False


def _csv_answer(path: str, label: str, status: str, row: int) -> Annotation:
    if not path:
        raise RowProblem("empty path")
    if status and status not in STATUSES:
        raise RowProblem(f"status {status!r} is not one of {', '.join(STATUSES)}")
    if status == SKIPPED:
        if label:
            raise RowProblem(f"status skipped with a label ({label!r})")
        return Annotation(path, None, SKIPPED, row)
    if not label:
        raise RowProblem("empty label" + ("" if status else " and no status skipped"))
    return Annotation(path, label, LABELED, row)


# Duplicates


def _collapse_duplicates(
    answers: list[Annotation], problems: list[tuple[int | None, str]]
) -> list[Annotation]:
    """The first answer per path; a later different answer for the same path is a problem."""
    first: dict[str, Annotation] = {}
    kept = []
    for answer in answers:
        earlier = first.get(answer.path)
        if earlier is None:
            first[answer.path] = answer
            kept.append(answer)
        elif (earlier.label, earlier.status) != (answer.label, answer.status):
            problems.append(
                (
                    answer.row,
                    f"{answer.path} is {_describe(answer)} here but {_describe(earlier)} in "
                    f"row {earlier.row}",
                )
            )
    return kept


def _describe(answer: Annotation) -> str:
    return SKIPPED if answer.status == SKIPPED else repr(answer.label)
