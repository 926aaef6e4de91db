"""The ``pal`` command line.

pal run --config configs/digits.yaml --set lambda2=0 --set seed=3 [--output result.json]
        [--tracking-uri URI | --no-tracking]
pal sweep tune_jobs/quickstart.py | pal ablate ablations/components.py --smoke
pal ablate ablations/mnist_strategies.py --seeds 5 | --until-decided --max-seeds 10
pal report components
pal label next shoes/ --n 200   (pal label --help: the labeling commands)
pal list
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pal.config import ConfigError, make_config, parse_override
from pal.labeling.cli import add_label_parser
from pal.progress import ProgressBars
from pal.stats import ALPHA, BOUNDARIES, CORRECTIONS
from pal.studies import DEFAULT_BATCH
from pal.verdicts import DEFAULT_EFFECT


def _cmd_run(args: argparse.Namespace) -> int:
    from pal import run_tracked
    from pal.distributed import connect
    from pal.loop import Experiment

    overrides = dict(parse_override(item) for item in args.set)
    config = make_config(args.config, **overrides)
    connect(args.address)  # a pool of distributed_min_pool images or more is scored there
    experiment = Experiment(config)  # validates everything before a bar is drawn
    if args.no_tracking:
        uri = None
    else:
        from pal.tracking.store import resolve_tracking_uri

        uri = resolve_tracking_uri(args.tracking_uri)  # run_tracked checks it before training
    bars = ProgressBars(config.rounds + 1, enabled=not args.quiet)
    experiment.progress = bars.epoch
    try:
        if uri is None:
            result = experiment.run(callbacks=(bars.round_done,))
        else:
            result = run_tracked(experiment, (bars.round_done,), uri)
    finally:
        bars.close()
    print(
        f"pal run: dataset={config.dataset} strategy={config.strategy} seed={config.seed} "
        f"device={experiment.device}"
    )
    print(f"images: {experiment.placement.describe()}")
    if result.run_id:
        print(f"MLflow run {result.run_id} (experiment 'pal') in {uri}")
    print(result.table())
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(result.to_json(indent=2))
        print(f"wrote {args.output}")
    return 0


def _cmd_sweep(
    args: argparse.Namespace, seeds: int | None = None, variants: list[str] | None = None
) -> int:
    from pal.sweeps.launch import sweep

    sweep(
        args.job,
        smoke=args.smoke,
        resume=args.resume,
        num_samples=args.num_samples,
        tracking_uri=args.tracking_uri,
        address=args.address,
        storage_path=args.storage_path,
        seeds=seeds,
        variants=variants,
    )
    return 0


def _cmd_ablate(args: argparse.Namespace) -> int:
    variants = [v.strip() for v in args.variants.split(",")] if args.variants else None
    if args.until_decided:
        from pal.studies import until_decided

        if args.max_seeds is None:
            raise ConfigError("--max-seeds: --until-decided needs the most seeds a comparison gets")
        if args.seeds is not None or variants is not None or args.resume:
            raise ConfigError(
                "--until-decided: chooses its own trials; drop --seeds, --variants and --resume "
                "(run the same command again to continue an interrupted study)"
            )
        until_decided(
            args.job,
            max_seeds=args.max_seeds,
            batch=args.batch,
            boundary=args.boundary,
            correction=args.correction,
            smoke=args.smoke,
            tracking_uri=args.tracking_uri,
            address=args.address,
            storage_path=args.storage_path,
        )
        print(f"verdicts: pal report {args.job}")
        return 0
    for flag in ("max_seeds", "correction"):
        if getattr(args, flag) is not None:
            raise ConfigError(f"--{flag.replace('_', '-')}: only with --until-decided")
    return _cmd_sweep(args, seeds=args.seeds, variants=variants)


def _cmd_report(args: argparse.Namespace) -> int:
    from pal.reports import report

    result = report(
        args.study,
        tracking_uri=args.tracking_uri,
        out_dir=args.out,
        log=not args.no_log,
        correction=args.correction,
        alpha=args.alpha,
        effect=args.effect / 100.0,
    )
    print(result.markdown)
    for note in result.warnings:
        print(f"pal report: warning: {note}", file=sys.stderr)
    print(f"wrote {', '.join(sorted(result.files))} to {result.folder}")
    if not args.no_log:
        print(f"and as artifacts report/* of the study's run {result.parent_run_id}")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    from pal import list_backbones, list_datasets, list_strategies
    from pal.config import field_names
    from pal.segnets import SEG_ENCODERS
    from pal.strategies import STRATEGIES

    segmentation = [n for n in list_strategies() if "segmentation" in STRATEGIES.get(n).tasks]
    listing = {
        "datasets": list_datasets(),
        "strategies": list_strategies(),
        "backbones": list_backbones(),
        "segmentation backbones": SEG_ENCODERS.names(),
        "segmentation strategies": segmentation,
        "config keys": field_names(),
    }
    for what, names in listing.items():
        print(f"{what}: {', '.join(names)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pal", description=__doc__.split("\n")[1].strip())
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run one active-learning experiment")
    run.add_argument("--config", help="YAML preset (e.g. configs/digits.yaml); default: built-in")
    run.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key (repeatable), e.g. --set lambda2=0 --set seed=3",
    )
    run.add_argument("--output", help="write the result as JSON to this path")
    run.add_argument(
        "--address",
        help="Ray cluster whose actors score a pool of distributed_min_pool images or more "
        "(default: $RAY_ADDRESS; none: this process scores it)",
    )
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    run.add_argument(
        "--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI or mlflow/mlflow.db)"
    )
    run.add_argument("--no-tracking", action="store_true", help="log no MLflow run")
    run.set_defaults(func=_cmd_run)

    sw = sub.add_parser("sweep", help="run a Ray Tune sweep described by a job file")
    sw.add_argument("job", help="job file, e.g. tune_jobs/quickstart.py")
    sw.add_argument("--smoke", action="store_true", help="the job's smoke size (seconds)")
    sw.add_argument("--resume", action="store_true", help="continue the job's last sweep")
    sw.add_argument("--num-samples", type=int, help="override the job's number of trials")
    sw.add_argument(
        "--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI or mlflow/mlflow.db)"
    )
    sw.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS or local)")
    sw.add_argument(
        "--storage-path",
        help="trial checkpoints and Tune state; on a cluster s3://... or a shared file system "
        "(default: $PAL_STORAGE_PATH, else the job's storage_path)",
    )
    sw.set_defaults(func=_cmd_sweep)

    ab = sub.add_parser(
        "ablate", help="run an ablation study (a grid of variants x seeds) from ablations/"
    )
    ab.add_argument("job", help="ablation file, e.g. ablations/components.py")
    ab.add_argument("--smoke", action="store_true", help="the study's smoke size (seconds)")
    ab.add_argument("--resume", action="store_true", help="continue the study's last run")
    ab.add_argument("--tracking-uri", help="MLflow store (default as for pal sweep)")
    ab.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS or local)")
    ab.add_argument("--storage-path", help="as for pal sweep")
    ab.add_argument(
        "--seeds",
        type=int,
        metavar="N",
        help="run the study's first N seeds; grows the job's last study, running only the "
        "(variant, seed) trials it has not finished",
    )
    ab.add_argument(
        "--variants",
        metavar="A,B",
        help="run only these variants (comma-separated); grows the job's last study as --seeds",
    )
    ab.add_argument(
        "--until-decided",
        action="store_true",
        help="add seeds in batches to the comparisons whose verdict is open, decided by a "
        "group-sequential design with Holm's correction, up to --max-seeds",
    )
    ab.add_argument("--max-seeds", type=int, metavar="M", help="with --until-decided")
    ab.add_argument(
        "--batch",
        type=int,
        default=DEFAULT_BATCH,
        help=f"with --until-decided: seeds added per look (default {DEFAULT_BATCH})",
    )
    ab.add_argument(
        "--boundary",
        choices=BOUNDARIES,
        default="obrien_fleming",
        help="with --until-decided: the group-sequential boundary (default obrien_fleming)",
    )
    ab.add_argument(
        "--correction",
        choices=CORRECTIONS,
        help="with --until-decided: the family-wise correction (default: the job's, else holm)",
    )
    ab.set_defaults(func=_cmd_ablate, num_samples=None)

    rep = sub.add_parser(
        "report", help="figures and tables of a study from its MLflow runs (PNG, CSV, Markdown)"
    )
    rep.add_argument("study", help="study name (e.g. components), parent run id, or job file")
    rep.add_argument("--out", help="folder to write (default reports/<study>-<run id>)")
    rep.add_argument("--tracking-uri", help="MLflow store (default as for pal sweep)")
    rep.add_argument("--no-log", action="store_true", help="do not attach to the study's run")
    rep.add_argument(
        "--correction",
        choices=CORRECTIONS,
        help="family-wise correction of the verdicts (default: the job's, else holm)",
    )
    rep.add_argument(
        "--alpha", type=float, default=ALPHA, help="the family's error rate (default 0.05)"
    )
    rep.add_argument(
        "--effect",
        type=float,
        default=100 * DEFAULT_EFFECT,
        metavar="POINTS",
        help="the AUC difference, in points, the seeds-needed column is for (default 1)",
    )
    rep.set_defaults(func=_cmd_report)

    add_label_parser(sub)

    lister = sub.add_parser("list", help="list datasets, strategies, backbones and config keys")
    lister.set_defaults(func=_cmd_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from pal.training import console_warnings  # after parsing: --help loads no torch

    try:
        with console_warnings():  # pal's warnings as one line each, no source line
            return args.func(args)
    except ConfigError as err:
        print(f"pal: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
