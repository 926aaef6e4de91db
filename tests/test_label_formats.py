"""Label Studio files: the labeling config and tasks pal writes, and the exports it reads back.

The export fixtures have the shapes Label Studio writes: the full JSON export (tasks with
``annotations``, ``was_cancelled``, ``cancelled_annotations``...) and JSON-MIN as its converter
writes it (one flat record per live annotation; a task without annotations as its data with
``annotation_id`` null; a task whose annotations are all cancelled left out).
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from pal.labeling.imports import Annotation, AnnotationFileError, read_annotations
from pal.labeling.studio import (
    FROM_NAME,
    PATH_KEY,
    TO_NAME,
    label_config,
    local_files_url,
    tasks_json,
)

URL = "/data/local-files/?d=pool/images/"


def choice_region(*choices: str, from_name: str = FROM_NAME) -> dict[str, Any]:
    return {
        "id": "Xy7Qa1bC",
        "from_name": from_name,
        "to_name": TO_NAME,
        "type": "choices",
        "origin": "manual",
        "value": {"choices": list(choices)},
    }


def annotation(
    ann_id: int,
    result: list[dict[str, Any]],
    *,
    cancelled: bool = False,
    created: str | None = "2024-05-02T10:00:00.000000Z",
    updated: str | None = "2024-05-02T10:00:00.000000Z",
) -> dict[str, Any]:
    return {
        "id": ann_id,
        "completed_by": 1,
        "result": result,
        "was_cancelled": cancelled,
        "ground_truth": False,
        "created_at": created,
        "updated_at": updated,
        "draft_created_at": None,
        "lead_time": 3.5,
        "prediction": {},
        "result_count": len(result),
        "unique_id": f"u-{ann_id}",
        "import_id": None,
        "last_action": None,
        "task": None,
        "project": 1,
        "updated_by": 1,
        "parent_prediction": None,
        "parent_annotation": None,
        "last_created_by": None,
    }


def task(
    task_id: int, path: str | None, annotations: list[dict[str, Any]], **extra
) -> dict[str, Any]:
    data: dict[str, Any] = {"image": URL + f"{task_id:05d}.png"}
    if path is not None:
        data[PATH_KEY] = path
    cancelled = sum(1 for a in annotations if a["was_cancelled"])
    return {
        "id": task_id,
        "annotations": annotations,
        "drafts": [],
        "predictions": [7],
        "data": data,
        "meta": {},
        "created_at": "2024-05-01T09:00:00.000000Z",
        "updated_at": "2024-05-02T10:00:00.000000Z",
        "inner_id": task_id,
        "total_annotations": len(annotations) - cancelled,
        "cancelled_annotations": cancelled,
        "total_predictions": 1,
        "comment_count": 0,
        "unresolved_comment_count": 0,
        "last_comment_updated_at": None,
        "project": 1,
        "updated_by": 1,
        "file_upload": None,
        "comment_authors": [],
        **extra,
    }


def min_record(
    task_id: int, path: str, choice: Any = None, ann_id: int | None = 1, **extra
) -> dict[str, Any]:
    """A JSON-MIN record as Label Studio's converter writes it (``choice`` left out when None)."""
    record: dict[str, Any] = {"image": URL + f"{task_id:05d}.png", PATH_KEY: path, "id": task_id}
    if choice is not None:
        record[FROM_NAME] = choice
    labeled = ann_id is not None
    record.update(
        annotator=1 if labeled else None,
        annotation_id=ann_id,
        created_at="2024-05-02T10:00:00.000000Z" if labeled else None,
        updated_at="2024-05-02T10:00:00.000000Z" if labeled else None,
        lead_time=2.0 if labeled else None,
    )
    record.update(extra)
    return record


def write_json(tmp_path: Path, data: Any, name: str = "export.json") -> Path:
    file = tmp_path / name
    file.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return file


def write_text(tmp_path: Path, text: str, name: str = "labels.csv") -> Path:
    file = tmp_path / name
    file.write_text(text, encoding="utf-8")
    return file


def error_rows(exc: pytest.ExceptionInfo[AnnotationFileError]) -> list[int]:
    return [int(n) for n in re.findall(r"row (\d+): ", str(exc.value))]


# label_config


def test_label_config_is_xml_listing_the_classes_escaped():
    classes = ["cat", 'a "b" & <c>', "it's"]
    config = label_config(classes)
    view = ET.fromstring(config)
    assert view.tag == "View"
    image = view.find("Image")
    assert image.attrib == {"name": TO_NAME, "value": "$image"}
    choices = view.find("Choices")
    assert choices.attrib["name"] == FROM_NAME
    assert choices.attrib["toName"] == TO_NAME
    assert choices.attrib["choice"] == "single"
    assert [c.attrib["value"] for c in choices.findall("Choice")] == classes
    assert "&quot;b&quot; &amp; &lt;c&gt;" in config


@pytest.mark.parametrize("classes", [[], ["cat", "cat"], ["cat", " "], ["cat", "dog "]])
def test_label_config_refuses_classes_that_cannot_be_chosen_back(classes):
    with pytest.raises(ValueError, match="label_config"):
        label_config(classes)


# local_files_url


def test_local_files_url_of_a_relative_manifest_path(tmp_path):
    root = tmp_path / "data"
    manifest_dir = root / "my pool"
    url = local_files_url("images/cat #1.png", root, manifest_dir)
    assert url == "/data/local-files/?d=my%20pool/images/cat%20%231.png"
    assert parse_qs(urlsplit(url).query)["d"] == ["my pool/images/cat #1.png"]


def test_local_files_url_of_an_absolute_path_and_a_prefix(tmp_path):
    root = tmp_path / "data"
    url = local_files_url(
        str(root / "a" / "b.png"),
        root,
        tmp_path / "elsewhere",
        prefix="http://h:8080/data/local-files/?d=",
    )
    assert url == "http://h:8080/data/local-files/?d=a/b.png"


def test_local_files_url_normalises_dots(tmp_path):
    root = tmp_path / "data"
    assert (
        local_files_url("../shared/x.png", root, root / "pool")
        == "/data/local-files/?d=shared/x.png"
    )


@pytest.mark.parametrize("path", ["../../outside.png", "/etc/outside.png"])
def test_local_files_url_outside_the_document_root(tmp_path, path):
    root = tmp_path / "data"
    with pytest.raises(ValueError, match=re.escape(repr(path))):
        local_files_url(path, root, root / "pool")


def test_local_files_url_through_a_symbolic_link(tmp_path):
    real = tmp_path / "real"
    (real / "pool").mkdir(parents=True)
    (real / "pool" / "a.png").write_bytes(b"")
    link = tmp_path / "link"
    link.symlink_to(real)
    assert local_files_url("a.png", link, real / "pool") == "/data/local-files/?d=pool/a.png"


# tasks_json


def test_tasks_json_structure():
    rows = [
        {
            "path": "images/2.png",
            "image": URL + "2.png",
            "predicted": "dog",
            "probability": 0.625,
            "data": {"rank": 1, "subquery": 0, "score": 0.9},
        },
        {"path": "images/1.png", "image": URL + "1.png", "predicted": None, "probability": None},
    ]
    tasks = tasks_json(rows, model_version="round-2")
    assert json.loads(json.dumps(tasks)) == tasks
    assert tasks[0] == {
        "data": {
            "image": URL + "2.png",
            PATH_KEY: "images/2.png",
            "rank": 1,
            "subquery": 0,
            "score": 0.9,
        },
        "predictions": [
            {
                "model_version": "round-2",
                "score": 0.625,
                "result": [
                    {
                        "from_name": FROM_NAME,
                        "to_name": TO_NAME,
                        "type": "choices",
                        "value": {"choices": ["dog"]},
                    }
                ],
            }
        ],
    }
    assert tasks[1] == {"data": {"image": URL + "1.png", PATH_KEY: "images/1.png"}}


def test_tasks_json_prediction_reads_back_as_a_label(tmp_path):
    """A prediction the annotator accepts becomes the annotation's result as is."""
    rows = [{"path": "p.png", "image": URL + "p.png", "predicted": "cat", "probability": 0.5}]
    (made,) = tasks_json(rows, model_version="m")
    exported = dict(made, id=1, annotations=[annotation(1, made["predictions"][0]["result"])])
    assert read_annotations(write_json(tmp_path, [exported])) == [
        Annotation("p.png", "cat", "labeled", 1)
    ]


@pytest.mark.parametrize("key", ["image", PATH_KEY, FROM_NAME, "id", "annotation_id"])
def test_tasks_json_refuses_extra_data_keys_the_exports_use(key):
    rows = [
        {"path": "p.png", "image": "u", "predicted": None, "probability": None, "data": {key: 1}}
    ]
    with pytest.raises(ValueError, match=key):
        tasks_json(rows, model_version="m")


# Label Studio JSON


def test_full_json_labels(tmp_path):
    export = [
        task(1, "images/a.png", [annotation(11, [choice_region(" cat ")])]),
        task(2, "images/b.png", [annotation(12, [choice_region("dog")])]),
    ]
    assert read_annotations(write_json(tmp_path, export)) == [
        Annotation("images/a.png", "cat", "labeled", 1),
        Annotation("images/b.png", "dog", "labeled", 2),
    ]


def test_full_json_cancelled_only_is_skipped(tmp_path):
    export = [
        task(1, "a.png", [annotation(11, [], cancelled=True)]),
        # An export with the skipped annotations filtered out still counts them.
        task(2, "b.png", [], cancelled_annotations=1),
        task(
            3, "c.png", [annotation(13, [], cancelled=True), annotation(14, [choice_region("cat")])]
        ),
    ]
    assert read_annotations(write_json(tmp_path, export)) == [
        Annotation("a.png", None, "skipped", 1),
        Annotation("b.png", None, "skipped", 2),
        Annotation("c.png", "cat", "labeled", 3),
    ]


def test_full_json_takes_the_annotation_updated_last(tmp_path):
    export = [
        task(
            1,
            "a.png",
            [
                annotation(11, [choice_region("new")], updated="2024-05-03T08:00:00.000000Z"),
                annotation(12, [choice_region("old")], updated="2024-05-02T23:00:00+02:00"),
            ],
        ),
        # No updated_at: by created_at.
        task(
            2,
            "b.png",
            [
                annotation(
                    21, [choice_region("new")], created="2024-05-03T08:00:00Z", updated=None
                ),
                annotation(
                    22, [choice_region("old")], created="2024-05-01T08:00:00Z", updated=None
                ),
            ],
        ),
        # No times at all: the last in the list.
        task(
            3,
            "c.png",
            [
                annotation(31, [choice_region("old")], created=None, updated=None),
                annotation(32, [choice_region("new")], created=None, updated=None),
            ],
        ),
        # A later cancelled annotation does not replace the live one.
        task(
            4,
            "d.png",
            [
                annotation(41, [choice_region("new")], updated="2024-05-01T08:00:00Z"),
                annotation(42, [], cancelled=True, updated="2024-05-09T08:00:00Z"),
            ],
        ),
    ]
    answers = read_annotations(write_json(tmp_path, export))
    assert [a.label for a in answers] == ["new"] * 4


def test_full_json_task_without_annotations_is_left_out(tmp_path):
    export = [task(1, "a.png", []), task(2, "b.png", [annotation(12, [choice_region("dog")])])]
    assert read_annotations(write_json(tmp_path, export)) == [
        Annotation("b.png", "dog", "labeled", 2)
    ]


def test_full_json_path_falls_back_to_image_and_choices_to_the_only_region(tmp_path):
    export = [
        task(
            5,
            None,
            [
                annotation(
                    1,
                    [
                        {"type": "textarea", "value": {"text": ["x"]}},
                        choice_region("cat", from_name="label"),
                    ],
                )
            ],
        )
    ]
    assert read_annotations(write_json(tmp_path, export)) == [
        Annotation(URL + "00005.png", "cat", "labeled", 1)
    ]


def test_full_json_two_choices_is_an_error(tmp_path):
    export = [
        task(1, "a.png", [annotation(11, [choice_region("cat")])]),
        task(2, "b.png", [annotation(12, [choice_region("cat", "dog")])]),
    ]
    with pytest.raises(AnnotationFileError) as exc:
        read_annotations(write_json(tmp_path, export))
    assert error_rows(exc) == [2]
    assert "annotation 12: more than one choice (cat, dog)" in str(exc.value)
    assert str(exc.value).startswith(f"{tmp_path / 'export.json'}: ")


def test_full_json_every_bad_row_is_named(tmp_path):
    export = [
        task(1, "ok.png", [annotation(1, [choice_region("cat")])]),
        {"id": 2, "annotations": []},  # no data
        task(3, None, [annotation(3, [choice_region("cat")])], data={"text": "no image"}),
        task(4, "d.png", [annotation(4, [])]),  # submitted with nothing chosen
        task(5, "e.png", [annotation(5, [choice_region()])]),
        task(6, "f.png", [annotation(6, [choice_region("cat"), choice_region("dog")])]),
        task(7, "g.png", [annotation(7, [choice_region("cat")], updated="yesterday")]),
        "not a task",
        task(9, "h.png", [annotation(9, [choice_region(3)])]),
        task(10, "ok.png", [annotation(10, [choice_region("dog")])]),  # ok.png was cat in row 1
        task(11, "ok.png", [annotation(11, [choice_region("cat")])]),  # the same answer: collapses
    ]
    with pytest.raises(AnnotationFileError) as exc:
        read_annotations(write_json(tmp_path, export))
    assert error_rows(exc) == [2, 3, 4, 5, 6, 7, 8, 9, 10]
    message = str(exc.value)
    assert "row 2: no data object" in message
    assert f"row 3: no {PATH_KEY} or image in the task's data" in message
    assert "row 4: annotation 4: no choices result" in message
    assert "row 5: annotation 5: no choice" in message
    assert "row 6: annotation 6: 2 choices results" in message
    assert "row 7: updated_at 'yesterday'" in message
    assert "row 10: ok.png is 'dog' here but 'cat' in row 1" in message
    assert [p[0] for p in exc.value.problems] == [2, 3, 4, 5, 6, 7, 8, 9, 10]


def test_identical_duplicates_collapse(tmp_path):
    export = [
        task(1, "a.png", [annotation(1, [choice_region("cat")])]),
        task(2, "a.png", [annotation(2, [choice_region("cat")])]),
        task(3, "b.png", [annotation(3, [], cancelled=True)]),
        task(4, "b.png", [annotation(4, [], cancelled=True)]),
    ]
    assert read_annotations(write_json(tmp_path, export)) == [
        Annotation("a.png", "cat", "labeled", 1),
        Annotation("b.png", None, "skipped", 3),
    ]


def test_skipped_and_labeled_for_one_path_is_an_error(tmp_path):
    export = [
        task(1, "a.png", [annotation(1, [], cancelled=True)]),
        task(2, "a.png", [annotation(2, [choice_region("cat")])]),
    ]
    with pytest.raises(
        AnnotationFileError, match=r"row 2: a\.png is 'cat' here but skipped in row 1"
    ):
        read_annotations(write_json(tmp_path, export))


# Label Studio JSON-MIN


def test_json_min(tmp_path):
    export = [
        min_record(1, "a.png", "cat", rank=1),
        min_record(2, "b.png", {"choices": ["dog"]}),
        min_record(3, "c.png", ann_id=None),  # a task without annotations ("all tasks" export)
        min_record(4, "d.png", " bird "),
    ]
    for name in ("export.json", "export.min.json"):
        assert read_annotations(write_json(tmp_path, export, name)) == [
            Annotation("a.png", "cat", "labeled", 1),
            Annotation("b.png", "dog", "labeled", 2),
            Annotation("d.png", "bird", "labeled", 4),
        ]


def test_json_min_several_annotations_of_a_task_take_the_latest(tmp_path):
    # Label Studio writes one record per annotation, newest created first.
    export = [
        min_record(1, "a.png", "new", ann_id=12, updated_at="2024-05-03T08:00:00Z"),
        min_record(1, "a.png", "old", ann_id=11, updated_at="2024-05-02T08:00:00Z"),
        min_record(2, "b.png", "cat", ann_id=21),
    ]
    assert read_annotations(write_json(tmp_path, export)) == [
        Annotation("a.png", "new", "labeled", 1),
        Annotation("b.png", "cat", "labeled", 3),
    ]


def test_json_min_path_falls_back_to_image(tmp_path):
    record = min_record(1, "x", "cat")
    del record[PATH_KEY]
    assert read_annotations(write_json(tmp_path, [record])) == [
        Annotation(URL + "00001.png", "cat", "labeled", 1)
    ]


def test_json_min_every_bad_row_is_named(tmp_path):
    no_path = min_record(2, "x", "cat")
    del no_path[PATH_KEY], no_path["image"]
    export = [
        min_record(1, "a.png", "cat"),
        no_path,
        min_record(3, "c.png", {"choices": ["cat", "dog"]}),
        min_record(4, "d.png"),  # an annotation with nothing chosen
        min_record(5, "e.png", ["cat", "dog"]),
        min_record(6, "a.png", "dog"),
        42,
        min_record(8, "h.png", ""),
    ]
    with pytest.raises(AnnotationFileError) as exc:
        read_annotations(write_json(tmp_path, export))
    assert error_rows(exc) == [2, 3, 4, 5, 6, 7, 8]
    message = str(exc.value)
    assert "row 2: no pal_path or image in the record" in message
    assert "row 3: more than one choice (cat, dog)" in message
    assert "row 4: no 'choice' key" in message
    assert "row 6: a.png is 'dog' here but 'cat' in row 1" in message
    assert "row 7: a int, not a record object" in message


# CSV


def test_csv_without_status(tmp_path):
    file = write_text(tmp_path, 'path,label,notes\nimages/a.png, cat ,x\n\n"images/b,c.png",dog,\n')
    assert read_annotations(file) == [
        Annotation("images/a.png", "cat", "labeled", 2),
        Annotation("images/b,c.png", "dog", "labeled", 4),
    ]


def test_csv_with_status(tmp_path):
    file = write_text(
        tmp_path,
        "\ufeffLabel,Path,Status\ncat,a.png,labeled\n,b.png,skipped\ndog,c.png,\n,d.png,SKIPPED\n",
    )
    assert read_annotations(file) == [
        Annotation("a.png", "cat", "labeled", 2),
        Annotation("b.png", None, "skipped", 3),
        Annotation("c.png", "dog", "labeled", 4),
        Annotation("d.png", None, "skipped", 5),
    ]


def test_csv_every_bad_row_is_named(tmp_path):
    file = write_text(
        tmp_path,
        "path,label,status\n"
        "a.png,cat,\n"  # 2 ok
        "b.png,,\n"  # 3 empty label, no status
        ",cat,\n"  # 4 empty path
        "c.png,cat,done\n"  # 5 unknown status
        "d.png,cat,skipped\n"  # 6 skipped with a label
        "e.png,,labeled\n"  # 7 labeled without a label
        "a.png,dog,\n"  # 8 a.png was cat
        "a.png,cat,labeled\n",  # 9 the same answer: collapses
    )
    with pytest.raises(AnnotationFileError) as exc:
        read_annotations(file)
    assert error_rows(exc) == [3, 4, 5, 6, 7, 8]
    message = str(exc.value)
    assert "row 3: empty label and no status skipped" in message
    assert "row 4: empty path" in message
    assert "row 5: status 'done' is not one of labeled, skipped" in message
    assert "row 8: a.png is 'dog' here but 'cat' in row 2" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "no path or label column"),
        (
            "image,choice\na.png,cat\n",
            "no path or label column in the header (found: image, choice)",
        ),
        ("path,label,label\na.png,cat,dog\n", "columns given twice: label"),
    ],
)
def test_csv_header_errors(tmp_path, text, expected):
    with pytest.raises(AnnotationFileError, match=re.escape(expected)):
        read_annotations(write_text(tmp_path, text))


@pytest.mark.parametrize(
    ("text", "row", "line"),
    [
        ('path,label\na.png,cat\n"b.png,dog\nc.png,cat\n', 3, None),  # an unlabeled path before
        ('path,label\na.png,cat\nb.png,"dog\nc.png,cat\n', 3, None),  # a long label before
        ('path,label\n"a\nb.png",cat\nc.png,"dog\nd.png,cat\n', 3, 4),  # after a two-line field
        ('"path,label\na.png,cat\n', 1, None),  # in the header
    ],
)
def test_csv_with_an_unclosed_quote_is_malformed_at_the_row_it_opens(tmp_path, text, row, line):
    with pytest.raises(AnnotationFileError) as exc:
        read_annotations(write_text(tmp_path, text))
    assert error_rows(exc) == [row]
    message = str(exc.value)
    assert f"row {row}: malformed CSV: a quote opens in this row" in message
    assert "never closed" in message and "empty label" not in message
    assert (f"(line {line})" in message) if line else "(line" not in message


def test_csv_quotes_that_close_are_not_malformed(tmp_path):
    text = 'path,label\n"a,1.png",cat\n"b\nc.png",""\nd.png,ca"t\n'
    with pytest.raises(AnnotationFileError) as exc:  # the one problem: an empty label, row 3
        read_annotations(write_text(tmp_path, text))
    assert error_rows(exc) == [3] and "empty label" in str(exc.value)
    answers = read_annotations(write_text(tmp_path, 'path,label\n"a,1.png",cat\nd.png,ca"t\n'))
    assert [(a.path, a.label) for a in answers] == [("a,1.png", "cat"), ("d.png", 'ca"t')]


# Files that are not an export


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("export.txt", "[]", "unknown file type '.txt'"),
        ("export", "[]", "unknown file type ''"),
        ("export.json", "[{", "not valid JSON"),
        ("export.json", '{"id": 1, "data": {}}', "a JSON dict, not a list"),
        ("export.json", b"\xff\xfe[]", "not UTF-8"),
    ],
)
def test_unreadable_files_name_the_file_and_the_formats(tmp_path, name, content, expected):
    file = tmp_path / name
    if isinstance(content, bytes):
        file.write_bytes(content)
    else:
        file.write_text(content, encoding="utf-8")
    with pytest.raises(AnnotationFileError) as exc:
        read_annotations(file)
    message = str(exc.value)
    assert message.startswith(f"{file}: ")
    assert expected in message
    if "UTF-8" not in expected:
        assert "JSON-MIN" in message and ".csv" in message


def test_an_empty_export_has_no_answers(tmp_path):
    assert read_annotations(write_json(tmp_path, [])) == []
    assert read_annotations(write_text(tmp_path, "path,label\n")) == []


def test_annotation_file_error_is_a_value_error():
    error = AnnotationFileError("x.json", [(None, "bad file"), (3, "bad row")])
    assert isinstance(error, ValueError)
    assert str(error) == "x.json: bad file; row 3: bad row"
    assert error.problems == [(None, "bad file"), (3, "bad row")]
