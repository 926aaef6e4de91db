"""``pal label``: the labeling commands of the ``pal`` command line.

pal label demo DIR                                  # digits as PNG files + a manifest
pal label init PROJECT --pool MANIFEST [--from-sweep NAME | --from-run ID | --config YAML]
pal label add PROJECT MANIFEST                      # more pool images, offered from the next round
pal label next PROJECT --n 200                      # rounds/NNN/batch.csv and tasks.json
pal label import PROJECT EXPORT                     # Label Studio JSON / JSON-MIN, or CSV
pal label push PROJECT [--round R]                  # the batch into a Label Studio server
pal label pull PROJECT                              # its annotations into the ledger
pal label status PROJECT
pal label predict PROJECT OUT.csv [--tasks T.json]  # every pool image's class, by a round's model
pal label export PROJECT OUT.csv                    # the labeled set as a manifest
pal label answer PROJECT ANSWERS.csv OUT.json       # the demo's annotator: a Label Studio export
pal label serve PROJECT [--url URL --token T]       # a Label Studio ML backend, live labels

``push`` and ``pull`` talk to the Label Studio at ``--url`` (or ``$LABEL_STUDIO_URL``) with the
access token ``--token`` (or ``$LABEL_STUDIO_API_KEY``); see :mod:`pal.labeling.live`.

Every command but ``demo`` holds the project's lock while it runs.
"""

from __future__ import annotations

from pathlib import Path

from pal.config import parse_override
from pal.labeling.serve import add_serve_parser


def _open(args):
    from pal.labeling.project import Project

    return Project.open(args.project)


def _cmd_demo(args) -> int:
    from pal.labeling.demo import write_demo

    files = write_demo(args.folder)
    print(f"wrote the demo pool: {files.manifest} (answers: {files.answers})")
    return 0


def _cmd_init(args) -> int:
    from pal.labeling.setup import init_project, project_summary

    overrides = dict(parse_override(item) for item in args.set)
    classes = [c for c in args.classes.split(",")] if args.classes else None
    project = init_project(
        args.project,
        args.pool,
        config=args.config,
        from_sweep=args.from_sweep,
        from_run=args.from_run,
        classes=classes,
        overrides=overrides,
        tracking_uri=args.tracking_uri,
        preset=args.preset,
    )
    print(project_summary(project))
    return 0


def _cmd_add(args) -> int:
    from pal.labeling.growth import add_images

    project = _open(args)
    with project.lock():
        summary = add_images(project, args.manifest)
    print(summary.text())
    return 0


def _cmd_next(args) -> int:
    from pal.distributed import connect
    from pal.labeling.project import RUNNING_FILE
    from pal.labeling.rounds import next_batch
    from pal.labeling.runs import log_pending_rounds
    from pal.progress import RoundDisplay

    project = _open(args)
    connect(args.address)  # a pool of distributed_min_pool images or more is scored there
    with project.lock():
        if not args.no_tracking:
            log_pending_rounds(project, args.tracking_uri)
        image_url = _image_url(project, args.document_root, args.url_prefix)
        overrides = dict(parse_override(item) for item in args.set)
        rounds = project.rounds()
        r = (rounds[-1] if rounds else 0) + 1
        display = RoundDisplay(
            f"round {r}",
            _estimate(project),
            enabled=not args.quiet,
            state_file=project.folder / RUNNING_FILE,
        )
        try:
            record = next_batch(
                project,
                args.n,
                args.strategy,
                args.force,
                display.epoch,
                image_url,
                overrides,
                stage=display.stage,
            )
        finally:
            display.close()
        folder = project.round_dir(record.round)
        print(
            f"round {record.round}: {record.n} images chosen by {record.strategy}"
            f"{' (no label yet)' if record.label_free else ''} from {record.n_offerable}, "
            f"trained on {record.n_labeled} labels in {record.seconds['total']:.1f} s"
        )
        print(f"images: {record.placement}")
        if not record.label_free:
            print(f"validation accuracy {record.val_accuracy:.4f}")
        print(f"wrote {folder / 'batch.csv'} and {folder / 'tasks.json'}")
        if not args.no_tracking:
            run_id = log_pending_rounds(project, args.tracking_uri)
            print(f"MLflow run {run_id} (experiment 'pal-label') in {project.meta['tracking_uri']}")
    return 0


def _estimate(project) -> float | None:
    """Seconds the next round may take: the last round's that trained a task network (``None``
    before there was one)."""
    for r in reversed(project.rounds()):
        record = project.round_record(r)
        if not record.label_free:
            return float(record.seconds.get("total", 0.0)) or None
    return None


def _cmd_import(args) -> int:
    from pal.labeling.importer import import_annotations

    project = _open(args)
    with project.lock():
        summary = import_annotations(project, args.file)
    print(
        f"imported {args.file}: {summary.read} rows, {summary.labeled} new labels, "
        f"{summary.skipped} skipped, {summary.unchanged} already in the ledger"
    )
    return 0


def _cmd_push(args) -> int:
    from pal.labeling import live

    project = _open(args)
    with project.lock():
        url = live.resolve_url(project, args.url)
        done = live.push(project, url, live.resolve_token(args.token), args.round)
    made = "made" if done["created"] else "found"
    print(f"Label Studio project {done['project_id']} ({made}): {done['project_url']}")
    print(
        f"round {done['round']}: {done['imported']} of {done['tasks']} tasks imported "
        f"({done['predictions']} predictions), {done['already']} there already"
    )
    if done["model_version"]:
        print(f"Label Studio pre-annotates with the predictions of {done['model_version']}")
    return 0


def _cmd_pull(args) -> int:
    from pal.labeling import live

    project = _open(args)
    with project.lock():
        url = live.resolve_url(project, args.url)
        summary = live.pull(project, url, live.resolve_token(args.token))
    print(
        f"pulled Label Studio project {project.meta['studio']['project_id']} at {url}: "
        f"{summary.read} answers, {summary.labeled} new labels, {summary.skipped} skipped, "
        f"{summary.unchanged} already in the ledger"
    )
    return 0


def _cmd_predict(args) -> int:
    from pal.labeling.predict import write_predictions

    project = _open(args)
    image_url = _image_url(project, args.document_root, args.url_prefix)
    rows, version = write_predictions(project, args.out, args.round, args.tasks, image_url)
    wrote = f"{args.out}" + (f" and {args.tasks}" if args.tasks else "")
    print(f"predicted {rows} pool images with {version}: wrote {wrote}")
    return 0


def _image_url(project, document_root: str | None, url_prefix: str):
    """``path -> URL`` of a manifest image in Label Studio (its local-files URL under
    ``document_root``, default the manifest's folder)."""
    from pal.labeling import studio

    root = Path(document_root or project.manifest.parent).resolve()

    def image_url(path: str) -> str:
        return studio.local_files_url(path, root, project.manifest.parent, url_prefix)

    return image_url


def _cmd_status(args) -> int:
    from pal.labeling.status import draw_curve, project_status

    project = _open(args)  # no lock: every file is replaced whole, so a running next is fine
    status = project_status(project)
    png = project.folder / "status.png"
    draw_curve(status, png, project.folder.name)
    print(status.text())
    if project.busy():
        print(_running(project))
    print(f"wrote {png}")
    return 0


def _running(project) -> str:
    """What the command holding the project's lock is doing, as far as it said."""
    import json
    import time

    from pal.labeling.project import RUNNING_FILE

    try:
        state = json.loads((project.folder / RUNNING_FILE).read_text())
    except (OSError, ValueError):
        return "a pal label command is running on this project"
    since = time.time() - float(state.get("started", time.time()))
    return (
        f"running now: pal label next, {state.get('title', '')}: {state.get('phase', '')} "
        f"(started {int(since // 60)} min {int(since % 60)} s ago)"
    )


def _cmd_export(args) -> int:
    from pal.labeling.status import export_labeled

    project = _open(args)
    with project.lock():
        project.check_manifest()
        n = export_labeled(project, args.out)
    print(f"wrote {n} rows to {args.out} (use it as dataset manifest:{args.out})")
    return 0


def _cmd_answer(args) -> int:
    from pal.labeling.demo import answer_batch

    project = _open(args)
    with project.lock():
        n = answer_batch(project, args.answers, args.out)
    print(f"wrote a Label Studio export of {n} annotations to {args.out}")
    return 0


def _add_studio_arguments(parser) -> None:
    parser.add_argument(
        "--url", help="Label Studio's URL (default: $LABEL_STUDIO_URL, else the last push's)"
    )
    parser.add_argument("--token", help="access token (default: $LABEL_STUDIO_API_KEY)")


def _add_url_arguments(parser) -> None:
    parser.add_argument(
        "--document-root",
        help="Label Studio's LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT (default: the manifest's "
        "folder); tasks.json gives each image's URL under it",
    )
    parser.add_argument("--url-prefix", default="/data/local-files/?d=", help="image URL prefix")


def add_label_parser(sub) -> None:
    """Add ``pal label`` and its subcommands to the ``pal`` parser's subparsers ``sub``."""
    label = sub.add_parser("label", help="choose the next images to label from your own pool")
    cmds = label.add_subparsers(dest="label_command", required=True)

    demo = cmds.add_parser("demo", help="write scikit-learn's digits as a pool of PNG files")
    demo.add_argument("folder")
    demo.set_defaults(func=_cmd_demo)

    init = cmds.add_parser("init", help="make a labeling project for a manifest's pool")
    init.add_argument("project", help="the project folder (new or empty)")
    init.add_argument("--pool", required=True, help="manifest CSV: path,label,split")
    source = init.add_mutually_exclusive_group()
    source.add_argument("--from-sweep", help="take the method from this sweep's best config")
    source.add_argument("--from-run", help="take the method from this MLflow run's params")
    source.add_argument("--config", help="YAML config (e.g. configs/digits.yaml)")
    init.add_argument("--classes", help="class names, comma-separated, in label order")
    init.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    init.add_argument(
        "--preset",
        default="auto",
        metavar="NAME",
        help="method keys for the pool's kind of images: auto (picked from the images), none, "
        "or grey-tiny, grey-small, photo-small, photo-large",
    )
    init.add_argument("--tracking-uri", help="MLflow store of the sweep or run")
    init.set_defaults(func=_cmd_init)

    add = cmds.add_parser("add", help="add pool images from another manifest (path,label,split)")
    add.add_argument("project")
    add.add_argument("manifest", help="manifest CSV: path,label,split (new pool images)")
    add.set_defaults(func=_cmd_add)

    nxt = cmds.add_parser("next", help="choose the next batch to label")
    nxt.add_argument("project")
    nxt.add_argument("--n", type=int, required=True, help="images in the batch")
    nxt.add_argument(
        "--strategy",
        help="instead of the project's (no label yet: typiclust, the default; random; coreset; "
        "pal)",
    )
    nxt.add_argument("--force", action="store_true", help="even if the last batch is unlabeled")
    nxt.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key for this round (recorded in its round.json)",
    )
    _add_url_arguments(nxt)
    nxt.add_argument(
        "--address",
        help="Ray cluster whose actors score a pool of distributed_min_pool images or more "
        "(default: $RAY_ADDRESS; none: this process scores it)",
    )
    nxt.add_argument(
        "--tracking-uri",
        help="MLflow store (default: the project's last, else $MLFLOW_TRACKING_URI, else "
        "PROJECT/mlflow.db)",
    )
    nxt.add_argument("--no-tracking", action="store_true", help="log no MLflow run")
    nxt.add_argument("--quiet", action="store_true", help="no progress bars")
    nxt.set_defaults(func=_cmd_next)

    imp = cmds.add_parser("import", help="import labels: Label Studio JSON / JSON-MIN, or CSV")
    imp.add_argument("project")
    imp.add_argument("file")
    imp.set_defaults(func=_cmd_import)

    push = cmds.add_parser("push", help="send a round's tasks to a Label Studio server")
    push.add_argument("project")
    push.add_argument("--round", type=int, help="the round to send (default: the last)")
    _add_studio_arguments(push)
    push.set_defaults(func=_cmd_push)

    pull = cmds.add_parser("pull", help="import the annotations of the project's Label Studio")
    pull.add_argument("project")
    _add_studio_arguments(pull)
    pull.set_defaults(func=_cmd_pull)

    pred = cmds.add_parser(
        "predict", help="the class and probability of every pool image, by a round's model"
    )
    pred.add_argument("project")
    pred.add_argument("out", help="the CSV to write: path,predicted,probability,label")
    pred.add_argument("--round", type=int, help="the round whose model (default: the latest)")
    pred.add_argument("--tasks", help="also write Label Studio tasks with the predictions")
    _add_url_arguments(pred)
    pred.set_defaults(func=_cmd_predict)

    st = cmds.add_parser("status", help="labels per class, rounds, validation curve, stopping")
    st.add_argument("project")
    st.set_defaults(func=_cmd_status)

    ex = cmds.add_parser("export", help="write the labeled set as a manifest CSV")
    ex.add_argument("project")
    ex.add_argument("out")
    ex.set_defaults(func=_cmd_export)

    ans = cmds.add_parser(
        "answer", help="the demo's annotator: answer the last batch as a Label Studio export"
    )
    ans.add_argument("project")
    ans.add_argument("answers", help="the demo's answers.csv")
    ans.add_argument("out", help="the Label Studio JSON export to write")
    ans.set_defaults(func=_cmd_answer)

    add_serve_parser(cmds)
