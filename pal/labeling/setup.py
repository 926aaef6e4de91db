"""``pal label init``: a labeling project from a manifest and a configuration's source.

The method comes from one of: a sweep's best configuration (``--from-sweep NAME``: its
``best_config.json`` in MLflow), an MLflow run of ``pal run`` (``--from-run RUN_ID``: its
params, read back by :func:`pal.config.parse_param`), a YAML file (``--config``), or the
defaults. Only the method's keys are taken from a sweep or a run (:data:`METHOD_KEYS`, the
config's ``method`` group: strategy, lambdas, sub-queries, fine-tune and normalisation keys,
backbones, epochs, learning rates, optimizer, fitting and the baselines' knobs); the data, the
budget (the seed too) and the machine (the cluster settings and ``candidate_pool`` too) belong to
the user's pool and computer and keep their defaults. ``--set KEY=VALUE`` overrides last.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pal.config import Config, ConfigError, keys_in, make_config, parse_param
from pal.data import UNKNOWN_LABEL, load_dataset
from pal.labeling import studio
from pal.labeling.project import LedgerRow, Project

METHOD_KEYS = keys_in("method")
"""Config keys taken from a sweep's best configuration or a run's params: the ``method`` group
(:class:`pal.config.Config` says which key is in which group and why)."""


def method_from_sweep(name: str, tracking_uri: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The method keys of sweep ``name``'s best configuration (its ``best_config.json``) and
    the project's record of where they came from.

    Raises:
        ConfigError: no such sweep, or one without a best configuration (not finished).
    """
    from pal.tracking import sweep_best_config

    run_id, best = sweep_best_config(tracking_uri, name, "from_sweep")
    method = {k: v for k, v in best.items() if k in METHOD_KEYS}
    source = {"kind": "sweep", "name": name, "run_id": run_id, "tracking_uri": tracking_uri}
    return method, source


def method_from_run(run_id: str, tracking_uri: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The method keys of the MLflow run ``run_id``'s params (a ``pal run``)."""
    from pal.tracking import run_params

    params = run_params(tracking_uri, run_id, "from_run")
    method = {k: parse_param(k, v) for k, v in params.items() if k in METHOD_KEYS}
    return method, {"kind": "run", "run_id": run_id, "tracking_uri": tracking_uri}


def init_project(
    folder: str | os.PathLike,
    manifest: str | os.PathLike,
    *,
    config: str | os.PathLike | None = None,
    from_sweep: str | None = None,
    from_run: str | None = None,
    classes: list[str] | None = None,
    overrides: dict[str, Any] | None = None,
    tracking_uri: str | None = None,
) -> Project:
    """Make a labeling project in ``folder`` for the pool of ``manifest`` (see the module
    docstring). The manifest is decoded (and cached) now, so a bad manifest or config is an
    error before the project exists.

    Args:
        classes: the class names, in label order (default: the manifest's labels, sorted); every
            label of the manifest must be among them.

    Raises:
        ConfigError: naming the field; nothing is written.
    """
    if sum(x is not None for x in (config, from_sweep, from_run)) > 1:
        raise ConfigError("config: give one of --config, --from-sweep and --from-run")
    manifest = Path(manifest).expanduser().resolve()
    if not manifest.is_file():
        raise ConfigError(f"pool: no such manifest file {str(manifest)!r}")
    source: dict[str, Any] = {"kind": "defaults"}
    method: dict[str, Any] = {}
    base = make_config(config) if config is not None else Config()
    if config is not None:
        source = {"kind": "yaml", "path": str(Path(config).resolve())}
    if from_sweep is not None or from_run is not None:
        from pal.tracking import check_tracking_store, resolve_tracking_uri

        tracking_uri = resolve_tracking_uri(tracking_uri)
        check_tracking_store(tracking_uri)
        if from_sweep is not None:
            method, source = method_from_sweep(from_sweep, tracking_uri)
        else:
            method, source = method_from_run(from_run, tracking_uri)
    cfg = base.replace(**method).replace(**(overrides or {}))
    cfg = cfg.replace(dataset=f"manifest:{manifest}")
    data = load_dataset(cfg.dataset, cfg.data_dir, False, cfg.image_size)
    if data.task != "classification":
        raise ConfigError("pool: pal label labels classes (one per image)")
    found = list(data.classes)
    if classes:
        classes = [str(c).strip() for c in classes]
        if len(set(classes)) != len(classes) or "" in classes:
            raise ConfigError(f"classes: give distinct non-empty names, got {classes}")
        extra = sorted(set(found) - set(classes))
        if extra:
            raise ConfigError(
                f"classes: the manifest labels images with {extra}, which --classes lacks"
            )
    else:
        classes = found
    if len(classes) < 2:
        raise ConfigError(
            f"classes: a classification project needs two or more classes, got {classes}; the "
            "manifest's labels name them, or give them with --classes a,b,c"
        )
    y = data.y_train.numpy()
    val = set() if data.val_indices is None else {int(i) for i in data.val_indices}
    initial = [
        LedgerRow(path, data.classes[label], 0, "manifest", "labeled")
        for i, (path, label) in enumerate(zip(data.ids_train, y, strict=True))
        if label != UNKNOWN_LABEL and i not in val
    ]
    return Project.create(
        folder, manifest, cfg, classes, source, initial, studio.label_config(classes)
    )


def project_summary(project: Project) -> str:
    """Two lines on a project: its pool and classes, and where its config came from."""
    src = project.meta["source"]
    if src["kind"] == "sweep":
        where = f"sweep {src['name']!r} (run {src['run_id']})"
    elif src["kind"] == "run":
        where = f"run {src['run_id']}"
    elif src["kind"] == "yaml":
        where = src["path"]
    else:
        where = "the defaults"
    return (
        f"project {project.folder}: pool {project.manifest}, classes {project.classes}\n"
        f"config from {where}: strategy {project.config.strategy}"
    )
