"""What an experiment returns: one record per round, JSON-ready, and the round's metrics.

:meth:`RoundRecord.metrics` is the one place a round's metrics are spelled: MLflow logs it
(``step`` = round), a Tune trial reports it, and :func:`format_table` (what ``pal run`` prints)
reads its columns from it. A new round metric is a field of :class:`RoundRecord` and a line of
:meth:`RoundRecord.metrics`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from typing import Any

from pal.config import Config

# Metric keys allow word characters, ``.``, ``-``, `` `` and ``/`` (MLflow nests on the last).
_UNSAFE_KEY_CHARS = re.compile(r"[^\w.\- ]")


@dataclasses.dataclass
class RoundRecord:
    """One round: the query that grew ``D_L`` (none in round 0) and the task network trained then.

    Attributes:
        round: 0 is the initial pool; round ``r`` follows the ``r``-th query.
        n_labeled: ``|D_L|`` after this round's query.
        test_accuracy: the task's metric on the clean test set: the task network's accuracy
            (classification) or mIoU (segmentation; see ``ExperimentResult.metric``).
        val_accuracy: the same metric on the held-out validation set, against the oracle's
            labels (NaN when ``val_size`` is 0). Hyperparameter searches optimise this, never
            the test.
        query_class_rates: class name -> share of this round's query, by true class (sums to 1);
            for segmentation, the class's share of the query's labeled pixels.
        labeled_class_counts: class name -> samples of that true class in ``D_L``; for
            segmentation, images of ``D_L`` with an annotated pixel of the class.
        n_noisy_labels: samples of ``D_L`` whose oracle label differs from the true class.
        selected: dataset indices (training split) this round's query added, in the order chosen.
        seconds: wall time of the round: its query, the task training and the evaluation.
        query_seconds / train_seconds / eval_seconds: the parts of ``seconds``: the query that
            opened the round, training the task network, and its test and validation accuracy.
        query_metrics: strategy-specific numbers, e.g. PAL's ``ss_sc_pearson``, ``ss_sc_spearman``
            (the Table 1 correlations of ``S_S`` and ``S_C`` on the unlabeled pool).
        n_pool: the active-learning pool ``|D_L| + |D_U|`` (the training split's pool less the
            validation set); ``100 * n_labeled / n_pool`` is the percent labeled.
        missing_class_share: share of this round's query from the classes missing from the
            initial pool (``missing_classes``; Figure 3 right); NaN when none are missing or in
            round 0. For segmentation, the missing classes' share of the query's pixels.
        task_metrics: further metrics of the task network; segmentation logs ``test_miou``,
            ``val_miou``, ``test_pixel_accuracy`` and ``test_iou/<class>`` (NaN for a class
            absent from both the test masks and the predictions).
        val_auc: the mean validation metric over rounds ``0..round`` (the area under the
            validation learning curve so far, NaN rounds left out): a sweep's objective.
        train_accuracy: the task's metric of the task network on ``D_L`` against the oracle's
            labels (eval mode, no augmentation): below ``fit_threshold`` it underfits.
        task_epoch: the epoch whose weights the task network kept (``model_selection``; 0: the
            SWA average), out of its ``task_epochs``.
        task_epochs: the epochs the kept task network trained for: ``epochs_task``, or with
            ``epochs_task_max`` the first doubling whose network reached ``fit_threshold`` on
            ``D_L``, else ``epochs_task_max`` (0: not recorded).
        task_fit_attempts: how many task networks the round trained from scratch to keep one
            (1 unless ``epochs_task_max`` retrained an underfit network).
        underfit: the training-set metrics below ``fit_threshold`` this round:
            ``train_accuracy`` (the task network) and the strategy's fit metrics (PAL's scoring
            network: ``scoring/rotation_train_accuracy``, ``scoring/class_train_accuracy``).
    """

    round: int
    n_labeled: int
    test_accuracy: float
    val_accuracy: float
    query_class_rates: dict[str, float]
    labeled_class_counts: dict[str, int]
    n_noisy_labels: int
    selected: list[int]
    seconds: float
    query_seconds: float = 0.0
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    query_metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    n_pool: int = 0
    missing_class_share: float = math.nan
    task_metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    val_auc: float = math.nan
    train_accuracy: float = math.nan
    task_epoch: int = 0
    task_epochs: int = 0
    task_fit_attempts: int = 1
    underfit: list[str] = dataclasses.field(default_factory=list)

    @property
    def percent_labeled(self) -> float:
        return 100.0 * self.n_labeled / self.n_pool if self.n_pool else math.nan

    def metrics(self) -> dict[str, float]:
        """The round's metrics as one flat dict of floats (NaN kept), keyed as MLflow logs them
        and Tune reports them: scalars, ``query_class_rate/<class>`` (rounds >= 1),
        ``labeled_class_fraction/<class>``, the strategy's query metrics and the task's
        further metrics (``test_iou/<class>``)."""
        out = {
            "round": self.round,
            "val_accuracy": self.val_accuracy,
            "test_accuracy": self.test_accuracy,
            "train_accuracy": self.train_accuracy,
            "task_epoch": self.task_epoch,
            "task_epochs": self.task_epochs,
            "task_fit_attempts": self.task_fit_attempts,
            "val_auc": self.val_auc,
            "n_labeled": self.n_labeled,
            "n_pool": self.n_pool,
            "percent_labeled": self.percent_labeled,
            "missing_class_share": self.missing_class_share,
            "n_noisy_labels": self.n_noisy_labels,
            "round_seconds": self.seconds,
            "query_seconds": self.query_seconds,
            "train_seconds": self.train_seconds,
            "eval_seconds": self.eval_seconds,
        }
        if self.round >= 1:
            for name, rate in self.query_class_rates.items():
                out[f"query_class_rate/{metric_key(name)}"] = rate
        if self.n_labeled > 0:
            for name, count in self.labeled_class_counts.items():
                out[f"labeled_class_fraction/{metric_key(name)}"] = count / self.n_labeled
        for name, value in {**self.query_metrics, **self.task_metrics}.items():
            out[_nested_key(name)] = value  # "sd_std/2", "test_iou/<class>": MLflow nests on "/"
        return {k: float(v) if v is not None else math.nan for k, v in out.items()}

    def to_dict(self) -> dict[str, Any]:
        return {k: json_safe(v) for k, v in dataclasses.asdict(self).items()}


def _nested_key(name: str) -> str:
    """``name`` as a metric key that keeps its ``/`` levels, each level made safe."""
    return "/".join(metric_key(part) for part in str(name).split("/"))


def metric_key(name: str) -> str:
    """``name`` with the characters a metric key cannot hold replaced by ``_``."""
    return _UNSAFE_KEY_CHARS.sub("_", str(name))


@dataclasses.dataclass
class ExperimentResult:
    """``rounds`` (``R + 1`` records for ``rounds=R``), the ``config`` and the dataset's classes.

    ``run_id`` is the MLflow run the experiment was logged to (``None`` when not tracked);
    ``metric`` names what the records' ``val_accuracy`` / ``test_accuracy`` hold (``accuracy``
    or ``mIoU``).
    """

    config: Config
    rounds: list[RoundRecord]
    classes: list[str]
    device: str = "cpu"
    run_id: str | None = None
    metric: str = "accuracy"

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "classes": list(self.classes),
            "device": self.device,
            "run_id": self.run_id,
            "metric": self.metric,
            "rounds": [r.to_dict() for r in self.rounds],
        }

    def to_json(self, **kwargs) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    def table(self) -> str:
        """The rounds as a plain-text table (what ``pal run`` prints at the end)."""
        return format_table(self.rounds, self.metric)


def format_table(rounds: list[RoundRecord], metric: str = "accuracy") -> str:
    """The rounds as a plain-text table; every number comes from :meth:`RoundRecord.metrics`
    (query metrics with a ``/`` in their key, per sub-query or per network, are left to
    MLflow). When a round trained its task network more than once (``epochs_task_max``), a
    column ``epochs (trainings)`` holds each round's ``task_epochs`` and ``task_fit_attempts``."""
    extra = sorted({metric_key(k) for r in rounds for k in r.query_metrics if "/" not in k})
    refit = any(r.task_fit_attempts > 1 for r in rounds)
    name = "acc" if metric == "accuracy" else metric
    head = ["round", "labeled", f"train_{name}", f"val_{name}", f"test_{name}", "noisy", "seconds"]
    head.append("top query classes")
    head[7:7] = extra
    if refit:
        head.insert(3, "epochs (trainings)")
    rows = []
    for r in rounds:
        m = r.metrics()
        top = sorted(r.query_class_rates.items(), key=lambda kv: -kv[1])[:3]
        row = [
            f"{m['round']:.0f}",
            f"{m['n_labeled']:.0f}",
            _fmt(m["train_accuracy"]) + ("*" if r.underfit else ""),
            _fmt(m["val_accuracy"]),
            _fmt(m["test_accuracy"]),
            f"{m['n_noisy_labels']:.0f}",
            f"{m['round_seconds']:.1f}",
            ", ".join(f"{k}:{v:.2f}" for k, v in top) or "-",
        ]
        row[7:7] = [_fmt(m.get(k, math.nan)) for k in extra]
        if refit:
            row.insert(3, f"{m['task_epochs']:.0f} ({m['task_fit_attempts']:.0f})")
        rows.append(row)
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    if any(r.underfit for r in rounds):
        lines.append("* a network underfit its training set this round (see fit_threshold)")
    return "\n".join(lines)


def _fmt(value: float) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.4f}"


def json_safe(value: Any) -> Any:
    """``value`` with non-finite floats as ``None`` (strict JSON has no NaN), recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return value
