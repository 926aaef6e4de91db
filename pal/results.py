"""What a round records, JSON-ready, and its metrics, whoever labels.

:meth:`RoundRecord.metrics` (a round of an experiment, the oracle labeling) and
:meth:`LabelRound.metrics` (a round of ``pal label``, a person labeling) are the one place a
round's metrics are spelled, with one vocabulary: what both rounds measure has the same name
(``val_accuracy``, ``labeled_class_fraction/<class>``, ``train_seconds``, the strategy's query
metrics as it names them). MLflow logs them (``step`` = round), a Tune trial reports them,
:func:`format_table` (what ``pal run`` prints) reads its columns from them, and a labeling
round's ``round.json``, ``pal label status`` and the CLI read a :class:`LabelRound`. A new round
metric is a field of the record and a line of its ``metrics()``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from typing import Any

from pal.config import Config
from pal.vocabulary import LABELED_CLASS_FRACTION, QUERY_CLASS_RATE

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
        mean_confidence: the task network's mean top-class probability (segmentation: over
            pixels) on the images the next query scores (:mod:`pal.stopping`).
        val_change / val_plateau: the validation plateau signal after this round
            (:func:`pal.stopping.plateau`: 1 fired, 0 not, NaN too few rounds yet).
        kappa: Cohen's kappa between this round's task network's classes on the stop set and
            the last round's (:func:`pal.stopping.cohen_kappa`; NaN in the first round).
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
    mean_confidence: float = math.nan
    val_change: float = math.nan
    val_plateau: float = math.nan
    kappa: float = math.nan

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
            "mean_confidence": self.mean_confidence,
            "val_change": self.val_change,
            "val_plateau": self.val_plateau,
            "kappa": self.kappa,
        }
        if self.round >= 1:
            for name, rate in self.query_class_rates.items():
                out[f"{QUERY_CLASS_RATE}{metric_key(name)}"] = rate
        out.update(_labeled_fractions(self.labeled_class_counts, self.n_labeled))
        out.update(_nested(self.query_metrics))
        out.update(_nested(self.task_metrics))
        return {k: float(v) if v is not None else math.nan for k, v in out.items()}

    def to_dict(self) -> dict[str, Any]:
        return {k: json_safe(v) for k, v in dataclasses.asdict(self).items()}


@dataclasses.dataclass
class LabelRound:
    """One round of ``pal label next``: the task network trained on the ledger's labels and
    the batch chosen with it (``rounds/NNN/round.json``).

    Attributes:
        round: the batch's number, from 1.
        strategy: the strategy that chose the batch; ``label_free``: chosen with no label.
        n: images in the batch; ``n_offerable``: pool images it was chosen from (no batch
            offered them, nobody labeled or skipped them).
        n_labeled: labels the task network trained on.
        placement: where the images lived (resident or streamed, and the budget).
        labeled_class_counts: class -> labeled pool images.
        train_accuracy / val_accuracy / test_accuracy, task_epoch / task_epochs /
            task_fit_attempts, underfit, query_metrics: as in :class:`RoundRecord` (NaN and
            ``None`` in a label-free round, which trains no task network).
        mean_confidence, val_change, val_plateau, kappa: the stopping signals
            (:mod:`pal.stopping`) after this round's training (``kappa`` against the model the
            last round saved).
        predicted_class_shares: class -> share of the batch the task network predicts in it.
        seconds: phase -> seconds (``load``, ``train``, ``evaluate``, ``query``, ``predict``,
            ``total``).
        config: the round's config (``Config.to_dict``).
        ray_scoring: the Ray Data scoring run, when a cluster scored the pool.
        logged: whether the round is in MLflow.
    """

    round: int
    strategy: str
    label_free: bool
    n: int
    n_labeled: int
    n_offerable: int
    placement: str = ""
    labeled_class_counts: dict[str, int] = dataclasses.field(default_factory=dict)
    train_accuracy: float = math.nan
    val_accuracy: float = math.nan
    test_accuracy: float = math.nan
    task_epoch: int | None = None
    task_epochs: int | None = None
    task_fit_attempts: int | None = None
    mean_confidence: float = math.nan
    val_change: float = math.nan
    val_plateau: float = math.nan
    kappa: float = math.nan
    query_metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    underfit: list[str] = dataclasses.field(default_factory=list)
    predicted_class_shares: dict[str, float] = dataclasses.field(default_factory=dict)
    seconds: dict[str, float] = dataclasses.field(default_factory=dict)
    config: dict[str, Any] = dataclasses.field(default_factory=dict)
    ray_scoring: dict[str, Any] | None = None
    logged: bool = False

    _SECONDS = {"total": "round_seconds", "evaluate": "eval_seconds"}

    def metrics(self) -> dict[str, float]:
        """The round's finite metrics, keyed as :meth:`RoundRecord.metrics` keys what both
        measure, besides ``n_offerable``, ``batch_predicted_share/<class>`` and the seconds of
        each phase (``<phase>_seconds``, ``round_seconds`` in all)."""
        out: dict[str, Any] = {
            "round": self.round,
            "n_labeled": self.n_labeled,
            "n_offerable": self.n_offerable,
            "train_accuracy": self.train_accuracy,
            "val_accuracy": self.val_accuracy,
            "test_accuracy": self.test_accuracy,
            "task_epoch": self.task_epoch,
            "task_epochs": self.task_epochs,
            "task_fit_attempts": self.task_fit_attempts,
            "mean_confidence": self.mean_confidence,
            "val_change": self.val_change,
            "val_plateau": self.val_plateau,
            "kappa": self.kappa,
        }
        out.update(_labeled_fractions(self.labeled_class_counts, self.n_labeled))
        for name, share in self.predicted_class_shares.items():
            out[f"batch_predicted_share/{metric_key(name)}"] = share
        for phase, seconds in self.seconds.items():
            out[self._SECONDS.get(phase, f"{metric_key(phase)}_seconds")] = seconds
        out.update(_nested(self.query_metrics))
        out = {k: float(v) for k, v in out.items() if v is not None}
        return {k: v for k, v in out.items() if math.isfinite(v)}

    def to_dict(self) -> dict[str, Any]:
        """Plain data, strict JSON (NaN as ``null``)."""
        return json_safe(dataclasses.asdict(self))

    def to_json(self) -> str:
        """``round.json``'s text."""
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_dict(cls, info: dict[str, Any]) -> LabelRound:
        """The record :meth:`to_dict` wrote (``null`` read back as NaN; keys a project's older
        rounds lack take their defaults)."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        values = {k: v for k, v in info.items() if k in fields}
        for name, f in fields.items():
            if f.type == "float" and values.get(name, 0.0) is None:
                values[name] = math.nan
        return cls(**values)


def _labeled_fractions(counts: dict[str, int], n_labeled: int) -> dict[str, float]:
    """``labeled_class_fraction/<class>``: each class's share of ``D_L`` (none when empty)."""
    if n_labeled <= 0:
        return {}
    return {f"{LABELED_CLASS_FRACTION}{metric_key(c)}": k / n_labeled for c, k in counts.items()}


def _nested(metrics: dict[str, Any]) -> dict[str, Any]:
    """``metrics`` keyed so that their ``/`` levels stay (``sd_std/2``, ``test_iou/<class>``:
    MLflow nests on ``/``)."""
    return {_nested_key(k): v for k, v in metrics.items()}


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
    """``value`` with non-finite floats as ``None`` (strict JSON has no NaN), recursively;
    tuples as lists."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value
