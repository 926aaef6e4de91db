"""``pal label init``: a labeling project from a manifest and a configuration's source.

The method comes from one of: a sweep's best configuration (``--from-sweep NAME``: its
``best_config.json`` in MLflow), an MLflow run of ``pal run`` (``--from-run RUN_ID``: its
params, read back by :func:`pal.config.parse_param`), a YAML file (``--config``), or the
defaults. Only the method's keys are taken from a sweep or a run (:data:`METHOD_KEYS`, the
config's ``method`` group: strategy, lambdas, sub-queries, fine-tune and normalisation keys,
backbones, epochs, learning rates, optimizer, fitting and the baselines' knobs); the data, the
budget (the seed too) and the machine (the cluster settings and ``candidate_pool`` too) belong to
the user's pool and computer and keep their defaults. ``--set KEY=VALUE`` overrides last.

Presets (:mod:`pal.labeling.presets`): the method keys that fit the pool's kind of images,
chosen from the decoded pool (``preset="auto"``), named (``preset="photo-small"``) or none
(``preset="none"``). They sit under every key the user gives, key by key: preset < ``--config``
/ ``--from-sweep`` / ``--from-run`` < ``--set``. A key the YAML file names (or that the sweep's
best configuration or the run's params hold: every method key, as a rule) or that ``--set``
gives is the user's; the preset fills only the method keys nobody gave. The project's
``source`` records the preset (``source["preset"]``: its name, the keys it applied, those the
user's own keys overrode, and why it was chosen; ``None`` with ``preset="none"``).

The decode cache (``.pal-cache``) lives in the project folder: unless the user gives
``data_dir`` (in the YAML file or with ``--set``), the project's ``data_dir`` is its own folder
(an absolute path), so ``pal label next`` run from any directory finds the images decoded at
``init``. The pool is decoded before the project exists (a bad manifest writes nothing) into a
temporary folder beside it, whose cache is moved into the project once it is made.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from pal.config import Config, ConfigError, keys_in, load_yaml, make_config, parse_param
from pal.data import UNKNOWN_LABEL, ImageData, load_dataset
from pal.data.cache import CACHE_DIR
from pal.labeling import presets, studio
from pal.labeling.project import LedgerRow, Project, ProjectError

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
    preset: str | None = presets.AUTO,
) -> Project:
    """Make a labeling project in ``folder`` for the pool of ``manifest`` (see the module
    docstring). The manifest is decoded (and cached) now, so a bad manifest or config is an
    error before the project exists.

    Args:
        classes: the class names, in label order (default: the manifest's labels, sorted); every
            label of the manifest must be among them.
        preset: ``"auto"`` (the preset for the pool's images, :func:`presets.pick_preset`), a
            preset's name (:data:`presets.PRESETS`), or ``"none"`` / ``None`` (no preset).

    Raises:
        ConfigError: naming the field; nothing is written.
        ProjectError: ``folder`` exists and is not empty; nothing is written.
    """
    if sum(x is not None for x in (config, from_sweep, from_run)) > 1:
        raise ConfigError("config: give one of --config, --from-sweep and --from-run")
    preset = presets.check_name(presets.NONE if preset is None else preset)
    manifest = Path(manifest).expanduser().resolve()
    if not manifest.is_file():
        raise ConfigError(f"pool: no such manifest file {str(manifest)!r}")
    folder = Path(folder).expanduser().absolute()
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise ProjectError(
            f"project: {str(folder)!r} exists and is not an empty folder; give a new folder"
        )
    overrides = dict(overrides or {})
    source: dict[str, Any] = {"kind": "defaults"}
    method: dict[str, Any] = {}
    given = set(overrides)  # the keys the user gave: theirs, not the preset's
    base = make_config(config) if config is not None else Config()
    if config is not None:
        source = {"kind": "yaml", "path": str(Path(config).resolve())}
        given |= set(load_yaml(config))
    if from_sweep is not None or from_run is not None:
        from pal.tracking import check_tracking_store, resolve_tracking_uri

        tracking_uri = resolve_tracking_uri(tracking_uri)
        check_tracking_store(tracking_uri)
        if from_sweep is not None:
            method, source = method_from_sweep(from_sweep, tracking_uri)
        else:
            method, source = method_from_run(from_run, tracking_uri)
        given |= set(method)
    cfg = base.replace(**method).replace(**overrides)
    cfg = cfg.replace(dataset=f"manifest:{manifest}")
    own_cache = "data_dir" not in given
    # beside the project, so that its cache is renamed into it (else the system's temp folder)
    near = folder.parent if folder.parent.is_dir() else None
    scratch = Path(tempfile.mkdtemp(prefix=f".{folder.name}.decoding-", dir=near))
    try:
        data_dir = str(scratch) if own_cache else cfg.data_dir
        data = load_dataset(cfg.dataset, data_dir, False, cfg.image_size)
        classes = _classes(data, classes)
        if own_cache:
            cfg = cfg.replace(data_dir=str(folder))
        if preset == presets.NONE:
            source["preset"] = None
        else:
            if preset == presets.AUTO:
                choice = presets.pick_preset(data)
            else:
                choice = presets.preset_named(preset, data)
            entry = presets.source_entry(choice, data, given, preset)
            source["preset"] = entry
            cfg = cfg.replace(**entry["keys"])
        y = data.y_train.numpy()
        val = set() if data.val_indices is None else {int(i) for i in data.val_indices}
        initial = [
            LedgerRow(path, data.classes[label], 0, "manifest", "labeled")
            for i, (path, label) in enumerate(zip(data.ids_train, y, strict=True))
            if label != UNKNOWN_LABEL and i not in val
        ]
        project = Project.create(
            folder, manifest, cfg, classes, source, initial, studio.label_config(classes)
        )
        if own_cache and (scratch / CACHE_DIR).is_dir():
            shutil.move(scratch / CACHE_DIR, folder / CACHE_DIR)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return project


def _classes(data: ImageData, classes: list[str] | None) -> list[str]:
    """The project's classes: ``classes`` (checked against the manifest's labels) or the
    manifest's labels.

    Raises:
        ConfigError: not a classification pool, repeated or missing names, fewer than two.
    """
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
    return classes


def project_summary(project: Project) -> str:
    """Two lines on a project (its pool and classes, and where its config came from), and a
    third on its preset when it was made with one."""
    src = project.meta["source"]
    if src["kind"] == "sweep":
        where = f"sweep {src['name']!r} (run {src['run_id']})"
    elif src["kind"] == "run":
        where = f"run {src['run_id']}"
    elif src["kind"] == "yaml":
        where = src["path"]
    else:
        where = "the defaults"
    lines = [
        f"project {project.folder}: pool {project.manifest}, classes {project.classes}",
        f"config from {where}: strategy {project.config.strategy}",
    ]
    if "preset" in src:  # projects made before presets have none
        lines.append(presets.summary_line(src["preset"]))
    return "\n".join(lines)
