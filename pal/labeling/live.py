"""Label Studio live: ``push`` a round's tasks to a Label Studio server, ``pull`` its answers back.

Both talk to Label Studio's REST API through its Python SDK, ``label-studio-sdk`` (the ``studio``
extra: ``pip install -e '.[studio]'`` in a clone of pal; beside an installed pal,
``pip install 'label-studio-sdk>=2.0,<2.1'``), with an access token from Label Studio's Account &
Settings page: a personal access token, or a legacy token where the organization allows them
(the SDK tells them apart and sends each the way the server expects).

A pal project is linked to one Label Studio project, recorded in ``project.json``::

    "studio": {"url": "http://localhost:8080", "project_id": 3, "rounds": [1, 2]}

- :func:`push` makes the Label Studio project on the first push (titled with the project
  folder's name, labeling config from ``label_config.xml``) and imports a round's ``tasks.json``
  with pal's predictions. Tasks whose ``pal_path`` the Label Studio project holds already are
  left out, so pushing a round again, or after a push that was interrupted, adds nothing. Label
  Studio pre-annotates tasks with the predictions of the project's ``model_version`` only, which
  it sets on the first import and never again, so a push of the project's last round makes that
  round's predictions the project's ``model_version``.
- :func:`pull` downloads the project's full JSON export (every task with its annotations, the
  cancelled ones, i.e. skips, included) into a temporary file and hands it to
  :func:`pal.labeling.importer.import_annotations`: the same checks as ``pal label import``,
  all or nothing, and pulling twice adds nothing.

Pushing to another server than the recorded one makes a new Label Studio project there and
records that one instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pal.labeling.importer import ImportSummary, import_annotations
from pal.labeling.project import LABEL_CONFIG_FILE, Project, ProjectError
from pal.labeling.studio import PATH_KEY

URL_ENV = "LABEL_STUDIO_URL"
TOKEN_ENV = "LABEL_STUDIO_API_KEY"
META_KEY = "studio"
PAGE_SIZE = 500  # tasks per request when listing a Label Studio project's tasks
EXPORT_TIMEOUT = 600  # seconds to wait for an export job (Label Studio Enterprise)


def resolve_url(project: Project, url: str | None) -> str:
    """The Label Studio URL: ``url``, else ``$LABEL_STUDIO_URL``, else the one the project was
    pushed to; without a trailing ``/``.

    Raises:
        ProjectError: none of them is set.
    """
    url = url or os.environ.get(URL_ENV) or (project.meta.get(META_KEY) or {}).get("url")
    if not url:
        raise ProjectError(
            f"studio: no Label Studio URL; give --url or set {URL_ENV} (e.g. http://localhost:8080)"
        )
    return url.rstrip("/")


def resolve_token(token: str | None) -> str:
    """The access token: ``token``, else ``$LABEL_STUDIO_API_KEY``.

    Raises:
        ProjectError: neither is set.
    """
    token = token or os.environ.get(TOKEN_ENV)
    if not token:
        raise ProjectError(
            f"studio: no Label Studio access token; give --token or set {TOKEN_ENV} "
            "(Label Studio: Account & Settings > Personal Access Token)"
        )
    return token


def connect(url: str, token: str):
    """A ``label_studio_sdk.LabelStudio`` client of the server at ``url``.

    Raises:
        ProjectError: ``label-studio-sdk`` is not installed, or the token is refused as it is
            read (an expired personal access token).
    """
    try:
        from label_studio_sdk import LabelStudio
    except ImportError:
        raise ProjectError(
            "studio: pal label push and pull need the Label Studio SDK (pal's studio extra): "
            "pip install -e '.[studio]' in a clone of pal, or "
            "pip install 'label-studio-sdk>=2.0,<2.1' beside an installed pal"
        ) from None
    with api_call(url, "read the access token"):
        return LabelStudio(base_url=url, api_key=token)


@contextlib.contextmanager
def api_call(url: str, what: str) -> Iterator[None]:
    """Turn the SDK's errors (an HTTP error status, a server that cannot be reached) into a
    :class:`ProjectError` that says which call failed and what the server said."""
    import httpx
    from label_studio_sdk.core.api_error import ApiError

    try:
        yield
    except ApiError as err:
        hint = " (check the access token)" if err.status_code in (401, 403) else ""
        raise ProjectError(
            f"studio: Label Studio at {url} refused to {what}: HTTP {err.status_code} "
            f"{_detail(err.body)}{hint}"
        ) from None
    except httpx.HTTPError as err:
        raise ProjectError(
            f"studio: cannot {what}: Label Studio at {url} does not answer ({err})"
        ) from None


def _detail(body: Any) -> str:
    if isinstance(body, dict):
        return str(body.get("detail") or body.get("validation_errors") or body)
    return str(body)[:500]


def _linked_project_id(project: Project, url: str) -> int | None:
    """The id of the Label Studio project at ``url`` recorded in ``project.json``, or None."""
    studio = project.meta.get(META_KEY) or {}
    return studio.get("project_id") if studio.get("url") == url else None


def _exists(client, url: str, project_id: int) -> bool:
    """Whether the Label Studio project ``project_id`` exists (and the token may see it)."""
    from label_studio_sdk.core.api_error import ApiError

    with api_call(url, f"find project {project_id}"):
        try:
            client.projects.get(project_id)
        except ApiError as err:
            if err.status_code == 404:
                return False
            raise
    return True


def _task_paths(client, url: str, project_id: int) -> set[str]:
    """The ``pal_path`` of every task of the Label Studio project."""
    with api_call(url, f"list the tasks of project {project_id}"):
        tasks = client.tasks.list(project=project_id, fields="task_only", page_size=PAGE_SIZE)
        return {(task.data or {}).get(PATH_KEY) for task in tasks} - {None}


def push(project: Project, url: str, token: str, round: int | None = None) -> dict[str, Any]:
    """Import round ``round``'s tasks (default: the last round) into the Label Studio project
    linked to ``project``, making that project first where there is none (see the module
    docstring). The caller holds the project's lock.

    Returns:
        What happened: ``url``, ``project_id``, ``project_url`` (the project's Data Manager),
        ``round``, ``created`` (a new Label Studio project was made), ``tasks`` (the round's),
        ``imported`` (tasks added), ``already`` (tasks Label Studio held already),
        ``predictions`` (predictions added) and ``model_version`` (the project's, if set).

    Raises:
        ProjectError: no such round, the SDK missing, or Label Studio refusing a call.
    """
    rounds = project.rounds()
    if not rounds:
        raise ProjectError("push: the project has no batch yet (pal label next makes one)")
    r = rounds[-1] if round is None else round
    if r not in rounds:
        raise ProjectError(f"push: no round {r}; the project's rounds: {rounds}")
    tasks = json.loads((project.round_dir(r) / "tasks.json").read_text())
    client = connect(url, token)

    project_id = _linked_project_id(project, url)
    if project_id is not None and not _exists(client, url, project_id):
        project_id = None  # deleted in Label Studio: make a new one
    created = project_id is None
    if created:
        with api_call(url, "create a project"):
            made = client.projects.create(
                title=project.folder.name,
                description=f"pal labeling project {project.folder}",
                label_config=(project.folder / LABEL_CONFIG_FILE).read_text(),
            )
        project_id = made.id
        # recorded at once, so that a push stopped before the import finds this project again
        project.meta[META_KEY] = {"url": url, "project_id": project_id, "rounds": []}
        project.save_meta()

    held = set() if created else _task_paths(client, url, project_id)
    new = [t for t in tasks if t["data"][PATH_KEY] not in held]
    predictions = 0
    if new:
        with api_call(url, f"import round {r}'s tasks into project {project_id}"):
            response = client.projects.import_tasks(project_id, request=new)
        # the SDK's schema says predictions_count, Label Studio 1.23 answers prediction_count
        # (the response model keeps unknown fields as attributes)
        count = getattr(response, "prediction_count", None)
        predictions = count or getattr(response, "predictions_count", None) or 0
    model_version = None
    versions = [p["model_version"] for t in tasks for p in t.get("predictions", [])]
    if versions and r == rounds[-1]:
        model_version = versions[0]
        with api_call(url, f"set project {project_id}'s model version"):
            client.projects.update(project_id, model_version=model_version)

    studio = project.meta[META_KEY]
    studio["rounds"] = sorted({*studio.get("rounds", []), r})
    project.save_meta()
    return {
        "url": url,
        "project_id": project_id,
        "project_url": f"{url}/projects/{project_id}/data",
        "round": r,
        "created": created,
        "tasks": len(tasks),
        "imported": len(new),
        "already": len(tasks) - len(new),
        "predictions": predictions,
        "model_version": model_version,
    }


def pull(project: Project, url: str, token: str) -> ImportSummary:
    """Import the annotations of the Label Studio project linked to ``project`` into its ledger
    (see the module docstring). The caller holds the project's lock.

    Raises:
        ProjectError: the project was never pushed to ``url``, the SDK missing, Label Studio
            refusing the export, or annotations that do not fit the project (the ledger is
            unchanged).
    """
    project_id = _linked_project_id(project, url)
    if project_id is None:
        studio = project.meta.get(META_KEY)
        where = f" (it was pushed to {studio['url']})" if studio else ""
        raise ProjectError(
            f"pull: the project has no Label Studio project at {url}{where}; "
            "pal label push makes one"
        )
    client = connect(url, token)
    with tempfile.TemporaryDirectory(prefix="pal-pull-") as tmp:
        # the file's name is the ledger rows' source
        file = Path(tmp) / f"label-studio-{project_id}.json"
        # as_binary: Community exports at once, Enterprise through an export job it waits for
        with api_call(url, f"export project {project_id}"):
            data = client.projects.exports.as_binary(
                project_id, export_type="JSON", timeout=EXPORT_TIMEOUT
            )
        file.write_bytes(data)
        return import_annotations(project, file)
