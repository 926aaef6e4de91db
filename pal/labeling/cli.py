"""``pal label``: the labeling commands of the ``pal`` command line.

pal label demo DIR                                  # digits as PNG files + a manifest
pal label init PROJECT --pool MANIFEST [--from-sweep NAME | --from-run ID | --config YAML]
pal label next PROJECT --n 200                      # rounds/NNN/batch.csv and tasks.json
pal label import PROJECT EXPORT                     # Label Studio JSON / JSON-MIN, or CSV
pal label push PROJECT [--round R]                  # the batch into a Label Studio server
pal label pull PROJECT                              # its annotations into the ledger
pal label status PROJECT
pal label export PROJECT OUT.csv                    # the labeled set as a manifest
pal label answer PROJECT ANSWERS.csv OUT.json       # the demo's annotator: a Label Studio export

``push`` and ``pull`` talk to the Label Studio at ``--url`` (or ``$LABEL_STUDIO_URL``) with the
access token ``--token`` (or ``$LABEL_STUDIO_API_KEY``); see :mod:`pal.labeling.live`.

Every command but ``demo`` holds the project's lock while it runs.
"""

from __future__ import annotations

from pathlib import Path

from pal.config import parse_override


def _open(args):
    from pal.labeling.project import Project

    return Project.open(args.project)


def log_pending_rounds(project, tracking_uri: str | None) -> str | None:
    """Log to MLflow every round whose ``round.json`` says it is not logged yet (a command
    stopped between writing a round and logging it); returns the project's run id."""
    from pal.labeling.project import write_atomic
    from pal.tracking import check_tracking_store, log_label_round, resolve_tracking_uri
    from pal.vocabulary import PROJECT_TAG

    pending = [r for r in project.rounds() if not project.round_record(r).logged]
    if not pending:
        return project.meta.get("mlflow_run_id")
    uri = resolve_tracking_uri(tracking_uri or project.meta.get("tracking_uri"))
    check_tracking_store(uri)
    run_id = project.meta.get("mlflow_run_id")
    for r in pending:
        folder = project.round_dir(r)
        record = project.round_record(r)
        files = {name: folder / name for name in ("batch.csv", "tasks.json", "round.json")}
        tags = {PROJECT_TAG: str(project.folder)}
        params = project.config.to_params()  # the project's method, as pal label init took it
        run_id = log_label_round(uri, run_id, project.folder.name, record, files, tags, params)
        if project.meta.get("mlflow_run_id") != run_id:
            project.meta.update(mlflow_run_id=run_id, tracking_uri=uri)
            project.save_meta()
        record.logged = True
        write_atomic(folder / "round.json", record.to_json())
    return run_id


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
    )
    print(project_summary(project))
    return 0


def _cmd_next(args) -> int:
    from pal.distributed import connect
    from pal.labeling import studio
    from pal.labeling.rounds import next_batch
    from pal.progress import ProgressBars

    project = _open(args)
    connect(args.address)  # a pool of distributed_min_pool images or more is scored there
    with project.lock():
        if not args.no_tracking:
            log_pending_rounds(project, args.tracking_uri)
        root = Path(args.document_root or project.manifest.parent).resolve()

        def image_url(path: str) -> str:
            return studio.local_files_url(path, root, project.manifest.parent, args.url_prefix)

        bars = ProgressBars(1, enabled=not args.quiet)
        try:
            overrides = dict(parse_override(item) for item in args.set)
            record = next_batch(
                project, args.n, args.strategy, args.force, bars.epoch, image_url, overrides
            )
        finally:
            bars.close()
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


def _cmd_status(args) -> int:
    from pal.labeling.status import draw_curve, project_status

    project = _open(args)
    with project.lock():
        status = project_status(project)
        png = project.folder / "status.png"
        draw_curve(status, png, project.folder.name)
    print(status.text())
    print(f"wrote {png}")
    return 0


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
    init.add_argument("--tracking-uri", help="MLflow store of the sweep or run")
    init.set_defaults(func=_cmd_init)

    nxt = cmds.add_parser("next", help="choose the next batch to label")
    nxt.add_argument("project")
    nxt.add_argument("--n", type=int, required=True, help="images in the batch")
    nxt.add_argument(
        "--strategy",
        help="instead of the project's (no label yet: coreset, the default; pal; random)",
    )
    nxt.add_argument("--force", action="store_true", help="even if the last batch is unlabeled")
    nxt.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key for this round (recorded in its round.json)",
    )
    nxt.add_argument(
        "--document-root",
        help="Label Studio's LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT (default: the manifest's "
        "folder); tasks.json gives each image's URL under it",
    )
    nxt.add_argument("--url-prefix", default="/data/local-files/?d=", help="image URL prefix")
    nxt.add_argument(
        "--address",
        help="Ray cluster whose actors score a pool of distributed_min_pool images or more "
        "(default: $RAY_ADDRESS; none: this process scores it)",
    )
    nxt.add_argument("--tracking-uri", help="MLflow store (default as for pal run)")
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
