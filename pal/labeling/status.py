"""``pal label status`` and ``pal label export``: where a project stands, and its labeled set.

The status is read from the ledger and the rounds' records (``round.json``,
:class:`pal.results.LabelRound`): labels per class, each round's batch and how much of it is
labeled, skipped or waiting, the validation curve (written as ``status.png``), and the stopping
signals of :mod:`pal.stopping` (the ones an experiment logs every round), each from the first
round it can be computed: the task network's mean confidence on the images still unlabeled
(from the first trained round), the validation change and plateau (against the noise of the
validation set), and the agreement (kappa) of successive rounds' predictions.
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
from pathlib import Path
from typing import Any

from pal.data.manifest import read_manifest
from pal.labeling.project import Project, csv_text, write_atomic
from pal.stopping import (
    KAPPA,
    KAPPA_WINDOW,
    PATIENCE,
    KappaAverage,
    Plateau,
    kappa_average,
    plateau,
)


@dataclasses.dataclass
class Status:
    """Where a project stands.

    Attributes:
        class_counts: class -> labeled pool images.
        skipped: images skipped for good.
        rounds: per round ``{"round", "batch", "labeled", "skipped", "waiting", "n_labeled",
            "val_accuracy", "mean_confidence", "strategy"}`` (``n_labeled`` and the metrics are
            those of the training the round's batch was chosen with).
        plateau: the validation plateau signal (:class:`pal.stopping.Plateau`).
        kappa: the stabilizing-predictions signal (:class:`pal.stopping.KappaAverage`).
        mean_confidence: at the last trained round (NaN before one).
        n_val: the manifest's validation images.
    """

    class_counts: dict[str, int]
    skipped: int
    rounds: list[dict[str, Any]]
    plateau: Plateau
    kappa: KappaAverage
    mean_confidence: float
    n_val: int

    def text(self) -> str:
        """The status as the command prints it."""
        total = sum(self.class_counts.values())
        lines = [f"labeled: {total} images, {self.skipped} skipped"]
        width = max((len(c) for c in self.class_counts), default=5)
        lines += [f"  {c:<{width}} {n}" for c, n in self.class_counts.items()]
        lines.append(
            "round  batch  labeled  skipped  waiting  trained-on  val_acc  confidence  kappa"
        )
        for r in self.rounds:
            lines.append(
                f"{r['round']:>5}  {r['batch']:>5}  {r['labeled']:>7}  {r['skipped']:>7}  "
                f"{r['waiting']:>7}  {r['n_labeled']:>10}  {_fmt(r['val_accuracy']):>7}  "
                f"{_fmt(r['mean_confidence']):>10}  {_fmt(r['kappa']):>6}"
            )
        lines += self.signals()
        return "\n".join(lines)

    def signals(self) -> list[str]:
        """The stopping signals, one line each, from the first round each can be computed."""
        if math.isnan(self.mean_confidence):
            return ["stopping signals: none before a round trains a task network"]
        out = [
            f"stopping signals: mean confidence on the unlabeled pool {_fmt(self.mean_confidence)}"
        ]
        p = self.plateau
        noise = f"{p.threshold:.4f}, the noise of {self.n_val} validation images"
        if p.known:
            verdict = "plateau: consider stopping" if p.fired else "still improving"
            out.append(
                f"  validation accuracy changed {p.change:+.4f} over the last {PATIENCE} rounds "
                f"({verdict}; threshold {noise})"
            )
        elif p.measured >= 2:
            out.append(
                f"  validation accuracy changed {p.change:+.4f} over {p.measured - 1} round(s); "
                f"the plateau check needs {PATIENCE + 1 - p.measured} more (threshold {noise})"
            )
        else:
            out.append(f"  validation plateau: from the round after next ({PATIENCE + 1} needed)")
        k = self.kappa
        if math.isnan(k.mean):
            out.append("  predictions' agreement (kappa): from the next round on")
        else:
            verdict = (
                "stabilized: consider stopping"
                if k.fired == 1.0
                else "not stabilized"
                if k.fired == 0.0
                else f"the check needs {KAPPA_WINDOW} rounds with a kappa"
            )
            out.append(
                f"  predictions' agreement with the last round's (kappa): mean {k.mean:.4f} "
                f"over the last {KAPPA_WINDOW} at most ({verdict}; threshold {KAPPA})"
            )
        return out


def project_status(project: Project) -> Status:
    """The :class:`Status` of ``project`` (reads the ledger and the rounds' files)."""
    labels, skipped = project.labels(), project.skipped()
    counts = {c: 0 for c in project.classes}
    for label in labels.values():
        counts[label] += 1
    rounds = []
    for r in project.rounds():
        paths = [row["path"] for row in project.batch(r)]
        record = project.round_record(r)
        done = sum(p in labels for p in paths)
        gone = sum(p in skipped for p in paths)
        rounds.append(
            {
                "round": r,
                "batch": len(paths),
                "labeled": done,
                "skipped": gone,
                "waiting": len(paths) - done - gone,
                "n_labeled": record.n_labeled,
                "val_accuracy": record.val_accuracy,
                "mean_confidence": record.mean_confidence,
                "kappa": record.kappa,
                "strategy": record.strategy,
            }
        )
    n_val = sum(row.split == "val" for row in read_manifest(project.manifest))
    signal = plateau([r["val_accuracy"] for r in rounds], n_val)
    kappa = kappa_average([r["kappa"] for r in rounds])
    trained = [r["mean_confidence"] for r in rounds if not math.isnan(r["mean_confidence"])]
    confidence = trained[-1] if trained else math.nan
    return Status(counts, len(skipped), rounds, signal, kappa, confidence, n_val)


def draw_curve(status: Status, path: Path, title: str) -> None:
    """The validation curve (accuracy against labeled images) as a PNG at ``path``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    points = [
        (r["n_labeled"], r["val_accuracy"])
        for r in status.rounds
        if not math.isnan(r["val_accuracy"])
    ]
    fig = Figure(figsize=(6, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if points:
        ax.plot(*zip(*points, strict=True), marker="o")
    ax.set_xlabel("labeled images the task network trained on")
    ax.set_ylabel("validation accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    write_atomic(path, buf.getvalue())


def export_labeled(project: Project, out: str | os.PathLike) -> int:
    """Write the labeled set as a manifest CSV at ``out`` (``path,label,split``): the labeled
    pool images (split ``pool``) and the manifest's ``val`` and ``test`` rows, so that
    ``pal run``, ``sweep`` and ``ablate`` take it as ``manifest:OUT``. Paths are written
    relative to ``out``'s folder (absolute where they cannot be). Returns the rows written."""
    out = Path(out).expanduser().absolute()
    labels = project.labels()
    root = project.manifest.parent
    rows = []
    for row in read_manifest(project.manifest):
        if row.split == "pool":
            if row.path not in labels:
                continue
            label = labels[row.path]
        else:
            label = row.label
        file = Path(row.path) if Path(row.path).is_absolute() else root / row.path
        try:
            shown = Path(os.path.relpath(file, out.parent)).as_posix()
        except ValueError:  # another drive (Windows)
            shown = file.as_posix()
        rows.append({"path": shown, "label": label, "split": row.split})
    write_atomic(out, csv_text(("path", "label", "split"), rows))
    return len(rows)


def _fmt(v: float) -> str:
    return "-" if v is None or math.isnan(v) else f"{v:.4f}"
