"""``pal label push`` and ``pal label pull`` against a real Label Studio server on 127.0.0.1.

The server runs from a virtual environment of its own, built once and cached (see
:func:`tests.servers.label_studio_command`); the tests skip where ``label-studio-sdk`` (the
``studio`` extra) is missing or that environment cannot be built. Annotations are posted through
Label Studio's API, as its labeling page does when an annotator submits or skips a task.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from pal.cli import main
from pal.labeling.demo import write_demo
from pal.labeling.project import Project, ProjectError
from pal.labeling.studio import FROM_NAME, PATH_KEY, TO_NAME
from tests.fast import FAST_LABEL
from tests.helpers import read_csv


def studio_tasks(client, project_id: int) -> list:
    return list(client.tasks.list(project=project_id, fields="all"))


@pytest.mark.slow
def test_push_annotate_pull_round_trip(label_studio, tmp_path, monkeypatch, capsys):
    import httpx
    from label_studio_sdk import LabelStudio

    url, token, root = label_studio
    for name in ("LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    demo = write_demo(tmp_path / "demo")
    folder = tmp_path / "digits-project"
    assert main(["label", "init", str(folder), "--pool", str(demo.manifest), *FAST_LABEL,
                 "--set", f"data_dir={tmp_path / 'data'}"]) == 0  # fmt: skip
    next_batch = ["label", "next", str(folder), "--n", "10", "--quiet", "--no-tracking",
                  "--document-root", str(root)]  # fmt: skip
    assert main(next_batch) == 0
    batch = [row["path"] for row in read_csv(folder / "rounds" / "001" / "batch.csv")]

    # push round 1: a new Label Studio project with its ten tasks
    assert main(["label", "push", str(folder), "--url", url, "--token", token]) == 0
    out = capsys.readouterr().out
    assert "(made)" in out and "10 of 10 tasks imported" in out, out
    studio = Project.open(folder).meta["studio"]
    assert studio["url"] == url and studio["rounds"] == [1]
    client = LabelStudio(base_url=url, api_key=token)
    project_id = studio["project_id"]
    remote = client.projects.get(project_id)
    assert remote.title == folder.name
    assert remote.label_config.strip() == (folder / "label_config.xml").read_text().strip()
    tasks = studio_tasks(client, project_id)
    assert sorted(t.data[PATH_KEY] for t in tasks) == sorted(batch)

    # the tasks' image URLs work once a Local Files storage holds the images
    client.import_storage.local.create(project=project_id, path=str(demo.images), title="pool")
    image = httpx.get(url + tasks[0].data["image"], headers={"Authorization": f"Token {token}"})
    assert image.status_code == 200, (tasks[0].data["image"], image.text[:200])
    assert image.content == (demo.folder / tasks[0].data[PATH_KEY]).read_bytes()

    # the annotator: nine answers from answers.csv, one skip
    truth = {row["path"]: row["label"] for row in read_csv(demo.answers)}
    skipped = tasks[3].data[PATH_KEY]
    for task in tasks:
        path = task.data[PATH_KEY]
        if path == skipped:
            client.annotations.create(id=task.id, result=[], was_cancelled=True)
            continue
        region = {"from_name": FROM_NAME, "to_name": TO_NAME, "type": "choices",
                  "value": {"choices": [truth[path]]}}  # fmt: skip
        client.annotations.create(id=task.id, result=[region], was_cancelled=False)

    # pull, with the URL and token from the environment
    monkeypatch.setenv("LABEL_STUDIO_URL", url)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", token)
    before = read_csv(folder / "labels.csv")
    assert main(["label", "pull", str(folder)]) == 0
    assert "9 new labels, 1 skipped" in capsys.readouterr().out
    ledger = read_csv(folder / "labels.csv")
    assert ledger[: len(before)] == before
    added = ledger[len(before) :]
    source = f"label-studio-{project_id}.json"
    expected = [
        {"path": p, "label": "" if p == skipped else truth[p], "round": "1", "source": source,
         "status": "skipped" if p == skipped else "labeled"}
        for p in batch
    ]  # fmt: skip
    key = lambda row: row["path"]  # noqa: E731
    assert sorted(added, key=key) == sorted(expected, key=key)

    # pulling again adds nothing
    ledger_bytes = (folder / "labels.csv").read_bytes()
    assert main(["label", "pull", str(folder)]) == 0
    assert "0 new labels, 0 skipped, 10 already in the ledger" in capsys.readouterr().out
    assert (folder / "labels.csv").read_bytes() == ledger_bytes

    # a personal access token (a JWT: what Label Studio hands out unless legacy tokens are
    # enabled) works as well; the SDK trades it for short-lived access tokens
    personal = client.tokens.create().token
    assert main(["label", "pull", str(folder), "--token", personal]) == 0
    assert "10 already in the ledger" in capsys.readouterr().out

    # a refused token fails the pull with Label Studio's answer, and writes nothing
    assert main(["label", "pull", str(folder), "--token", "not-a-token"]) == 2
    err = capsys.readouterr().err
    assert "HTTP 401" in err and "check the access token" in err, err
    assert (folder / "labels.csv").read_bytes() == ledger_bytes

    # pushing round 1 again adds no task
    assert main(["label", "push", str(folder), "--round", "1"]) == 0
    assert "0 of 10 tasks imported" in capsys.readouterr().out
    paths = [t.data[PATH_KEY] for t in studio_tasks(client, project_id)]
    assert sorted(paths) == sorted(batch)

    # round 2, trained on the pulled labels, comes with predictions that Label Studio shows
    assert main(next_batch) == 0
    assert main(["label", "push", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "(found)" in out and "10 of 10 tasks imported (10 predictions)" in out, out
    round_2 = json.loads((folder / "rounds" / "002" / "tasks.json").read_text())
    version = round_2[0]["predictions"][0]["model_version"]
    assert client.projects.get(project_id).model_version == version
    paths = [t.data[PATH_KEY] for t in studio_tasks(client, project_id)]
    assert len(paths) == len(set(paths)) == 20
    predictions = client.predictions.list(project=project_id)
    assert len(predictions) == 10 and {p.model_version for p in predictions} == {version}
    assert Project.open(folder).meta["studio"]["rounds"] == [1, 2]


def test_without_the_sdk_the_error_names_the_extra(monkeypatch):
    from pal.labeling import live

    monkeypatch.setitem(sys.modules, "label_studio_sdk", None)  # import fails
    with pytest.raises(ProjectError, match=r"pip install -e '\.\[studio\]' in a clone") as err:
        live.connect("http://127.0.0.1:9", "token")
    assert "pip install 'label-studio-sdk>=2.0,<2.1'" in str(err.value)  # from a package


def test_url_and_token_come_from_flags_environment_or_last_push(monkeypatch):
    from pal.labeling import live

    monkeypatch.delenv("LABEL_STUDIO_URL", raising=False)
    monkeypatch.delenv("LABEL_STUDIO_API_KEY", raising=False)
    project = Project(Path("p"), {"classes": ["a"]}, None)
    with pytest.raises(ProjectError, match="--url or set LABEL_STUDIO_URL"):
        live.resolve_url(project, None)
    with pytest.raises(ProjectError, match="--token or set LABEL_STUDIO_API_KEY"):
        live.resolve_token(None)
    project.meta["studio"] = {"url": "http://pushed:8080", "project_id": 1}
    assert live.resolve_url(project, None) == "http://pushed:8080"
    monkeypatch.setenv("LABEL_STUDIO_URL", "http://env:8080/")
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "env-token")
    assert live.resolve_url(project, None) == "http://env:8080"
    assert live.resolve_url(project, "http://flag:8080") == "http://flag:8080"
    assert live.resolve_token(None) == "env-token"
    assert live.resolve_token("flag-token") == "flag-token"


def test_a_server_that_does_not_answer_is_named(tmp_path):
    pytest.importorskip("label_studio_sdk", reason="label-studio-sdk (pal[studio]) is missing")
    from pal.labeling import live
    from tests.servers import free_port

    (tmp_path / "rounds" / "001").mkdir(parents=True)
    (tmp_path / "rounds" / "001" / "tasks.json").write_text("[]")
    (tmp_path / "label_config.xml").write_text("<View/>")
    project = Project(tmp_path, {"classes": ["a"]}, None)
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(ProjectError, match=f"create a project: Label Studio at {url} does not"):
        live.push(project, url, "token")
    with pytest.raises(ProjectError, match="no Label Studio project at .*pal label push makes"):
        live.pull(project, url, "token")
