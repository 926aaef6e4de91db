"""``pal label serve``: a Label Studio ML backend for a labeling project, both ways.

It speaks Label Studio's ML backend protocol (``label_studio/ml/api_connector.py`` and
``ml/models.py`` in Label Studio 1.23) on the standard library's ``ThreadingHTTPServer``:

- ``GET /health`` (and ``GET /``): ``{"status": "UP"}``; Label Studio asks it before each
  ``/setup`` (1 s timeout).
- ``POST /setup``: ``{"model_version": ...}``, the current model's (``null`` before any round
  trained one); asked when the backend is added, listed or opened and before each prediction
  request, which then skips the tasks that hold a prediction of that version (3 s timeout).
- ``POST /predict`` ``{"tasks": [...], "label_config": ...}``: ``{"results": [...]}``, one list
  of predictions per task, in order (empty for an image it does not know, and for every task
  while no model exists). Label Studio asks it when a task without predictions is opened
  (``GET /api/tasks/ID``), for the labeling stream when the project's prelabeling model is this
  backend, and for the Data Manager's *Retrieve Predictions* action (100 s timeout). A task's
  image is its ``data.pal_path``, else its ``data.image`` read back to a manifest path.
- ``POST /webhook``: Label Studio makes a webhook to ``<backend>/webhook`` for every project
  event when the backend is added (``create_ml_webhook``), and calls it inside the request that
  saved an annotation (1 s timeout). ``ANNOTATION_CREATED``, ``ANNOTATION_UPDATED`` and
  ``ANNOTATIONS_CREATED`` go to the ledger at once through
  :func:`pal.labeling.importer.record_annotations` (source ``label-studio``): the rules of
  ``pal label import``, all or nothing, a repeated event adding nothing; a cancelled annotation
  is ``skipped``; an image outside the pool or of ``val``/``test`` is refused (HTTP 422, logged,
  the ledger unchanged). ``START_TRAINING`` (and ``POST /train``) ask for the next round.
- ``GET /versions``, ``GET /metrics``, ``POST /validate``: small answers for the calls Label
  Studio makes around them.

Design: every write (a ledger write, a round) runs under one in-process lock and the project's
``flock`` (:meth:`Project.lock`, retried while a ``pal label`` command holds it). When the last
round's batch is all labeled or skipped, one background thread trains the next round
(:func:`pal.labeling.rounds.next_batch`, ``n`` = ``--n`` or the last batch's size), logs it to
MLflow and pushes it to the linked Label Studio project (:func:`pal.labeling.live.push`); a flag
set under the lock keeps a second ``next`` for the same batch from starting, and webhooks that
arrive meanwhile wait for the lock. ``/predict`` takes no lock: it answers with the model it has
cached (one per round, reloaded when a newer round saved one), the previous one while a round
trains. Errors go to stderr and ``serve.log`` in the project folder, never stop the server.
On start, with ``--url``/``--token``, the backend is registered in the Label Studio project
``push`` made (``POST /api/ml``, once: an existing backend of the same URL is kept), with its
webhook; a round not pushed yet is pushed, and a batch already complete is trained.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import threading
import time
import xml.etree.ElementTree as ElementTree
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from pal.labeling import studio
from pal.labeling.imports import Annotation, RowProblem, answer_of
from pal.labeling.project import Project, ProjectBusyError, ProjectError

log = logging.getLogger(__name__)
TITLE = "pal label serve"  # the ML backend's title in Label Studio
EVENTS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_CREATED")
LOCK_WAIT = 60.0  # seconds to wait for a pal label command that holds the project's lock


class Backend:
    """The ML backend of one project: :meth:`start` serves it in a thread, :meth:`stop` ends it.

    Args mirror ``pal label serve``'s flags; with ``tracking`` every round is logged to MLflow
    (:func:`pal.labeling.runs.log_pending_rounds`).
    """

    # fmt: off
    def __init__(self, project_folder, host="127.0.0.1", port=9090, url=None, token=None,
                 n=None, tracking=True, tracking_uri=None, overrides=None, document_root=None,
                 url_prefix="/data/local-files/?d=", backend_url=None):
        # fmt: on
        self.project = Project.open(project_folder)
        self.host, self.port, self.url, self.token, self.n = host, port, url, token, n
        self.tracking, self.tracking_uri = tracking, tracking_uri
        self.overrides = dict(overrides or {})
        self.root = Path(document_root or self.project.manifest.parent).resolve()
        self.url_prefix, self.backend_url = url_prefix, backend_url
        self._write = threading.Lock()  # ledger writes and rounds, one at a time
        self._training: threading.Thread | None = None
        self._model_lock = threading.Lock()
        self._model = None  # the SavedModel of the latest round that saved one
        self._images = None  # (manifest path -> row of x, x, relative URL -> path)
        self._httpd: ThreadingHTTPServer | None = None
        self._handlers: list[logging.Handler] = []

    def start(self) -> str:
        """Serve in a background thread, connect Label Studio; returns the backend's URL."""
        self._log_to(
            logging.StreamHandler(), logging.FileHandler(self.project.folder / "serve.log")
        )
        self._httpd = ThreadingHTTPServer((self.host, self.port), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.backend = self  # type: ignore[attr-defined]
        self.port = self._httpd.server_address[1]
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        self.backend_url = (self.backend_url or f"http://{host}:{self.port}").rstrip("/")
        threading.Thread(target=self._httpd.serve_forever, name="pal-serve", daemon=True).start()
        log.info("serve: ML backend of %s at %s", self.project.folder, self.backend_url)
        if self.url and self.token:
            self._register()
        else:
            log.info(
                "serve: no --url/--token: add %s in Label Studio (Settings > Model) "
                "and push new rounds yourself (pal label push)",
                self.backend_url,
            )
        self._start_round(catch_up=True)
        return self.backend_url

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        for handler in self._handlers:
            log.removeHandler(handler)
            handler.close()

    def wait_idle(self, timeout: float) -> bool:
        """Wait for a round in training to end; False when it still runs after ``timeout``."""
        thread = self._training
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True

    def _log_to(self, *handlers: logging.Handler) -> None:
        for handler in handlers:
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
            log.addHandler(handler)
        log.setLevel(logging.INFO)
        self._handlers = list(handlers)

    def _register(self) -> None:
        """Add this backend to the linked Label Studio project, once (Label Studio adds the
        webhook to ``/webhook`` with it; one that was removed is made again)."""
        from pal.labeling import live

        studio_meta = self.project.meta.get(live.META_KEY) or {}
        project_id = studio_meta.get("project_id") if studio_meta.get("url") == self.url else None
        if project_id is None:
            log.error(
                "serve: the project was never pushed to %s (pal label push makes its "
                "Label Studio project); the backend is not registered",
                self.url,
            )
            return
        try:
            client = live.connect(self.url, self.token)
            with live.api_call(self.url, f"list project {project_id}'s ML backends"):
                known = [b for b in client.ml.list(project=project_id) if b.url == self.backend_url]
            if not known:
                with live.api_call(self.url, f"add the ML backend to project {project_id}"):
                    client.ml.create(url=self.backend_url, project=project_id, title=TITLE)
                log.info("serve: added to Label Studio project %s", project_id)
            hook = f"{self.backend_url}/webhook"
            with live.api_call(self.url, f"list project {project_id}'s webhooks"):
                hooks = [w for w in client.webhooks.list(project=str(project_id)) if w.url == hook]
            if not hooks:
                with live.api_call(self.url, f"add a webhook to project {project_id}"):
                    client.webhooks.create(
                        url=hook, project=project_id, send_payload=True, send_for_all_actions=True
                    )
        except ProjectError as err:
            log.error("serve: %s", err)

    def setup(self) -> dict[str, Any]:
        from pal.labeling.predict import model_version

        return {"model_version": model_version(self.project)}

    def versions(self) -> list[str]:
        return [v for v in [self.setup()["model_version"]] if v]

    def predict(self, tasks: list[Any], label_config: str | None) -> dict[str, Any]:
        import torch

        model = self._current_model()
        if model is None or not tasks:
            return {"results": [[] for _ in tasks]}
        from_name, to_name = _tag_names(label_config)
        index, x, _ = self._image_index()
        paths = [self._task_path(t) for t in tasks]
        rows = [index[p] for p in paths if p in index]
        probs = model.predict(x[torch.as_tensor(rows)]) if rows else None
        best = iter(zip(*probs.max(1), strict=True)) if rows else iter(())
        results = []
        for path in paths:
            if path not in index:
                results.append([])
                continue
            p, c = next(best)
            label = model.classes[int(c)]
            results.append(
                [studio.prediction(label, float(p), model.version, from_name, to_name)]
            )
        return {"results": results}

    def _current_model(self):
        from pal.labeling.predict import load_model, model_round

        r = model_round(self.project)
        with self._model_lock:
            if r is not None and (self._model is None or self._model.round != r):
                self._model = load_model(self.project, r)
                log.info("serve: predicting with %s", self._model.version)
            return self._model

    def _image_index(self):
        """``(pool path -> row of x, x, relative image URL -> path)``, built once."""
        from pal.labeling.pool import load_pool

        with self._model_lock:
            if self._images is None:
                data, pool = load_pool(self.project)
                ids = data.ids_train
                index = {ids[i]: int(i) for i in pool.indices}
                urls = {}
                folder = self.project.manifest.parent
                for path in index:
                    with contextlib.suppress(ValueError):  # an image outside the document root
                        urls[studio.local_files_url(path, self.root, folder, "")] = path
                self._images = (index, data.x_train, urls)
            return self._images

    def _task_path(self, task: Any) -> str | None:
        """A task's manifest path: ``data.pal_path``, else its image URL read back."""
        data = task.get("data") if isinstance(task, dict) else None
        if not isinstance(data, dict):
            return None
        path = data.get(studio.PATH_KEY)
        if isinstance(path, str) and path.strip():
            return path.strip()
        image = data.get(studio.IMAGE_KEY)
        if not isinstance(image, str) or not image.strip():
            return None
        image = image.strip()
        index, _, urls = self._image_index()
        if image in index:
            return image
        d = parse_qs(urlsplit(image).query).get("d")
        return urls.get(unquote(d[0]) if d else "", image)

    def webhook(self, event: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        action = event.get("action")
        if action in ("START_TRAINING",):
            return 201, self.train()
        if action not in EVENTS:
            if action == "ANNOTATIONS_DELETED":
                log.info("serve: annotations deleted in Label Studio; the ledger keeps its rows")
            return 200, {"status": "ignored", "action": action}
        many = isinstance(event.get("annotation"), list)
        annotations = event["annotation"] if many else [event.get("annotation")]
        tasks = event.get("task") if many else [event.get("task")]
        by_id = {t.get("id"): t for t in tasks or [] if isinstance(t, dict)}
        answers, problems = [], []
        for row, a in enumerate(annotations, start=1):
            try:
                answers.append(self._answer(a, by_id, row))
            except RowProblem as problem:
                problems.append(f"annotation {row}: {problem.text}")
        try:
            if problems:
                raise ProjectError("; ".join(problems))
            summary = self._record(answers)
        except ProjectError as err:
            log.error(f"serve: {action}: refused, the ledger is unchanged: {err}")
            return 422, {"status": "refused", "error": str(err)}
        log.info(f"serve: {action}: {summary}")
        self._start_round()
        return 201, {"status": "ok", **dataclasses.asdict(summary)}

    def _answer(self, annotation: Any, tasks: dict[Any, Any], row: int) -> Annotation:
        if not isinstance(annotation, dict):
            raise RowProblem("no annotation object in the event")
        task = annotation.get("task")
        task = task if isinstance(task, dict) else tasks.get(task)
        path = self._task_path(task) if task is not None else None
        if path is None:
            raise RowProblem("no task with a pal_path or an image in the event")
        return answer_of(annotation, path, row)

    def _record(self, answers: list[Annotation]):
        from pal.labeling.importer import record_annotations

        with self._write, self._locked():
            return record_annotations(self.project, answers, "label-studio")

    @contextlib.contextmanager
    def _locked(self):
        """The project's lock, waited for while a ``pal label`` command holds it."""
        deadline = time.monotonic() + LOCK_WAIT
        while True:
            try:
                with self.project.lock():
                    yield
                return
            except ProjectBusyError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def train(self) -> dict[str, Any]:
        """``START_TRAINING``: the next round if the last batch is complete."""
        from pal.labeling.pool import unlabeled_in_batch

        rounds = self.project.rounds()
        waiting = unlabeled_in_batch(self.project, rounds[-1]) if rounds else []
        if waiting:
            return {"status": "waiting", "unlabeled": len(waiting)}
        return {"status": "training" if self._start_round() else "busy"}

    def _start_round(self, catch_up: bool = False) -> bool:
        """Start the background round when the last batch is complete and none runs."""
        from pal.labeling.pool import unlabeled_in_batch

        if self._training is not None and self._training.is_alive():
            return False  # without waiting for the lock it holds
        with self._write:
            if self._training is not None and self._training.is_alive():
                return False
            rounds = self.project.rounds()
            complete = bool(rounds) and not unlabeled_in_batch(self.project, rounds[-1])
            if not (complete or catch_up):
                return False
            self._training = threading.Thread(
                target=self._round, args=(complete,), name="pal-serve-round", daemon=True
            )
            self._training.start()
            return True

    def _round(self, train: bool) -> None:
        from pal.labeling import live
        from pal.labeling.pool import unlabeled_in_batch
        from pal.labeling.rounds import next_batch
        from pal.labeling.runs import log_pending_rounds

        try:
            with self._write, self._locked():
                project = self.project
                if self.tracking:
                    log_pending_rounds(project, self.tracking_uri)
                rounds = project.rounds()
                if train and rounds and not unlabeled_in_batch(project, rounds[-1]):
                    n = self.n or len(project.batch(rounds[-1]))
                    log.info(f"serve: round {rounds[-1]} is complete: training the next")
                    record = next_batch(
                        project, n, image_url=self._image_url, overrides=self.overrides
                    )
                    log.info(
                        f"serve: round {record.round}: {record.n} images chosen by "
                        f"{record.strategy}, validation accuracy {record.val_accuracy}"
                    )
                    if self.tracking:
                        log_pending_rounds(project, self.tracking_uri)
                pushed = (project.meta.get(live.META_KEY) or {}).get("rounds", [])
                last = project.rounds()[-1] if project.rounds() else None
                if self.url and self.token and last is not None and last not in pushed:
                    done = live.push(project, self.url, self.token)
                    log.info(f"serve: pushed round {done['round']} to {done['project_url']}")
        except Exception:
            log.exception("serve: the background round failed (the server goes on)")

    def _image_url(self, path: str) -> str:
        return studio.local_files_url(
            path, self.root, self.project.manifest.parent, self.url_prefix
        )


def _tag_names(label_config: str | None) -> tuple[str, str]:
    """``(from_name, to_name)`` of the labeling config's ``<Choices>`` tag (pal's by default)."""
    with contextlib.suppress(ElementTree.ParseError, TypeError):
        for tag in ElementTree.fromstring(label_config or "").iter("Choices"):
            if tag.get("name") and tag.get("toName"):
                return tag.get("name"), tag.get("toName")
    return studio.FROM_NAME, studio.TO_NAME


class _Handler(BaseHTTPRequestHandler):
    """Label Studio's ML backend routes on :class:`Backend` (``self.server.backend``)."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._route("GET", {})

    def do_POST(self) -> None:
        try:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or "{}")
        except ValueError as err:
            return self._reply(400, {"error": f"not JSON: {err}"})
        self._route("POST", body if isinstance(body, dict) else {})

    def _route(self, method: str, body: dict[str, Any]) -> None:
        backend: Backend = self.server.backend  # type: ignore[attr-defined]
        routes = {
            ("GET", ""): lambda: (200, {"status": "UP", "model_class": "pal"}),
            ("GET", "/health"): lambda: (200, {"status": "UP", "model_class": "pal"}),
            ("GET", "/metrics"): lambda: (200, {}),
            ("GET", "/versions"): lambda: (200, {"versions": backend.versions()}),
            ("POST", "/setup"): lambda: (200, backend.setup()),
            ("POST", "/predict"): lambda: (
                200,
                backend.predict(body.get("tasks") or [], body.get("label_config")),
            ),
            ("POST", "/webhook"): lambda: backend.webhook(body),
            ("POST", "/train"): lambda: (201, backend.train()),
            ("POST", "/validate"): lambda: (200, {}),
        }
        route = urlsplit(self.path).path.rstrip("/")
        answer = routes.get((method, route), lambda: (404, {"error": f"no route {route}"}))
        try:
            status, payload = answer()
        except Exception as err:
            log.exception("serve: %s %s failed", method, route)
            status, payload = 500, {"error": str(err)}
        self._reply(status, payload)

    def _reply(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except OSError:  # Label Studio waits 1 s for a webhook: done, but nobody listens
            log.info("serve: %s: the caller left before the answer (it was done)", self.path)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("serve: %s %s", self.address_string(), format % args)


def serve(
    project_folder,
    host="127.0.0.1",
    port=9090,
    url=None,
    token=None,
    n=None,
    tracking=True,
    **options,
) -> None:
    """Run the backend of ``project_folder`` until interrupted (see the module docstring);
    ``options`` are :class:`Backend`'s keyword arguments."""
    backend = Backend(project_folder, host, port, url, token, n, tracking, **options)
    backend.start()
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        log.info("serve: stopped")
    finally:
        backend.stop()


def _cmd_serve(args) -> int:
    from pal.config import parse_override
    from pal.labeling import live

    project = Project.open(args.project)
    url = token = None
    with contextlib.suppress(ProjectError):  # no Label Studio: serve without it
        url, token = live.resolve_url(project, args.url), live.resolve_token(args.token)
    options = {k: getattr(args, k) for k in ("document_root", "url_prefix", "backend_url")}
    overrides = dict(parse_override(item) for item in args.set)
    serve(
        args.project,
        args.host,
        args.port,
        url,
        token,
        args.n,
        not args.no_tracking,
        tracking_uri=args.tracking_uri,
        overrides=overrides,
        **options,
    )
    return 0


_ARGUMENTS = [
    (["project"], {}),
    (["--host"], {"default": "127.0.0.1", "help": "address to listen on"}),
    (["--port"], {"type": int, "default": 9090, "help": "port to listen on"}),
    (["--backend-url"], {"help": "this backend's URL for Label Studio (default http://HOST:PORT)"}),
    (["--url"], {"help": "Label Studio's URL (default: $LABEL_STUDIO_URL, else the last push's)"}),
    (["--token"], {"help": "access token (default: $LABEL_STUDIO_API_KEY)"}),
    (["--n"], {"type": int, "help": "images per new batch (default: the last batch's)"}),
    (
        ["--set"],
        {
            "action": "append",
            "default": [],
            "metavar": "KEY=VALUE",
            "help": "override a config key for the rounds it trains",
        },
    ),
    (
        ["--document-root"],
        {
            "help": "Label Studio's LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT "
            "(default: the manifest's folder)"
        },
    ),
    (["--url-prefix"], {"default": "/data/local-files/?d=", "help": "image URL prefix"}),
    (["--tracking-uri"], {"help": "MLflow store (default as for pal run)"}),
    (["--no-tracking"], {"action": "store_true", "help": "log no MLflow run"}),
]


def add_serve_parser(cmds) -> None:
    """Add ``pal label serve`` to the ``pal label`` subparsers ``cmds``."""
    srv = cmds.add_parser("serve", help="a Label Studio ML backend: predictions, live labels")
    for flags, options in _ARGUMENTS:
        srv.add_argument(*flags, **options)
    srv.set_defaults(func=_cmd_serve)
