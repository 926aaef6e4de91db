"""The names ``pal`` writes into MLflow and reads back: run tags and shared metric names.

Plain string constants, spelled here once; every module that sets, searches or reads a tag or a
shared metric name imports it from here. This module imports nothing (no MLflow, no Ray), so
code that only names a tag does not pull the tracking store in. Changing a value here changes
what new runs are tagged with and what old runs are found by: the values are part of the store's
format, never renamed.

Run tags set by ``pal`` (``pal.*``), by constant:

- ``KIND_TAG`` = ``pal.kind``: on parent runs, ``sweep`` (:data:`KIND_SWEEP`: a sweep's or an
  ablation study's) or ``label`` (:data:`KIND_LABEL`: a labeling project's run).
- ``SWEEP_TAG`` = ``pal.sweep``: on a sweep's parent run and its trials, the job's name.
- ``VARIANT_TAG`` = ``pal.variant``: on an ablation study's trial, its variant.
- ``PLACEMENT_TAG`` = ``pal.placement``: on an experiment's run, where its images live
  (:meth:`pal.placement.Placement.describe`).
- ``RESUMED_AT_ROUND_TAG`` = ``pal.resumed_at_round``: on a trial resumed from a checkpoint, the
  rounds it had done.
- ``UNDERFIT_TAG`` = ``pal.underfit_rounds``: the rounds whose networks underfit their training
  set, as ``<round>:<metric>`` words (``3:train_accuracy 4:scoring/rotation_train_accuracy``);
  absent when none did.
- ``SEQUENTIAL_TAG`` = ``pal.sequential``: on a study grown until decided, its group-sequential
  design (JSON of :meth:`pal.stats.SequentialDesign.to_dict`).
- ``PROJECT_TAG`` = ``pal.project``: on a labeling project's run, the project's folder.
- ``VERSION_TAG`` = ``pal.version``: on every run, the package version.
- ``COMMIT_TAG`` = ``pal.git_commit``: on every run made from a git checkout, its HEAD.
- ``DIRTY_TAG`` = ``pal.git_dirty``: beside ``pal.git_commit``, ``true`` when the tree differed
  from HEAD, else ``false``.
- ``CODE_VERSION_TAG`` = ``pal.code_version``: on every run, one comparable word per code
  version (:func:`pal.provenance.code_version`; space-separated on a run resumed by other code).

Tags of other namespaces that ``pal`` sets or searches: :data:`PARENT_RUN_TAG`
(``mlflow.parentRunId``: a trial's sweep run), :data:`EXPERIMENT_KIND_TAG`
(``mlflow.experimentKind`` = :data:`EXPERIMENT_KIND` on every experiment ``pal`` creates), and
on a sweep's trials the Ray node and trial they ran on (:data:`TRIAL_ID_TAG`,
:data:`NODE_ID_TAG`, :data:`NODE_TAG`, :data:`NODE_IP_TAG`).

Metrics: the names of a round's scalars (:meth:`pal.results.RoundRecord.metrics`, ``step`` =
round) and of a sweep's parent run that more than one module spells, and the prefixes of the
per-class families (``<prefix><class>``) that more than one module builds or reads.
"""

from __future__ import annotations

# ---------------------------------------------------------------------- pal's run tags
KIND_TAG = "pal.kind"
KIND_SWEEP = "sweep"  # KIND_TAG of a sweep's or an ablation study's parent run
KIND_LABEL = "label"  # KIND_TAG of a labeling project's run
SWEEP_TAG = "pal.sweep"
VARIANT_TAG = "pal.variant"
PLACEMENT_TAG = "pal.placement"
RESUMED_AT_ROUND_TAG = "pal.resumed_at_round"
UNDERFIT_TAG = "pal.underfit_rounds"
SEQUENTIAL_TAG = "pal.sequential"
PROJECT_TAG = "pal.project"
VERSION_TAG = "pal.version"
COMMIT_TAG = "pal.git_commit"
DIRTY_TAG = "pal.git_dirty"
CODE_VERSION_TAG = "pal.code_version"

# ---------------------------------------------------------------------- other tags
PARENT_RUN_TAG = "mlflow.parentRunId"
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
# MLflow 3 opens an experiment on its GenAI overview unless the experiment says it holds model
# training; every experiment pal creates says so.
EXPERIMENT_KIND = "custom_model_development"
TRIAL_ID_TAG = "ray.trial_id"
NODE_ID_TAG = "ray.node_id"
NODE_TAG = "ray.node"
NODE_IP_TAG = "ray.node_ip"

# ---------------------------------------------------------------------- metrics
N_LABELED = "n_labeled"
TRAIN_ACCURACY = "train_accuracy"
VAL_ACCURACY = "val_accuracy"
TEST_ACCURACY = "test_accuracy"
VAL_AUC = "val_auc"  # the mean validation metric over the rounds so far: every sweep's objective
ROUND_SECONDS = "round_seconds"
BEST_VAL_AUC = "best_val_auc"  # a sweep's parent run: its best trial's val_auc
TRIALS = "trials"  # a sweep's parent run: how many trials it ran

# prefixes of per-class metric families: <prefix><class>
QUERY_CLASS_RATE = "query_class_rate/"  # share of a round's query by true class
LABELED_CLASS_FRACTION = "labeled_class_fraction/"  # share of the labeled set by class
