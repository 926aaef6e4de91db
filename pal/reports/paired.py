"""The report's tables of the paired-by-seed verdicts (:mod:`pal.verdicts`), in markdown.

Per variant against its reference: the AUC difference with its 95% paired t interval, p and its
family-wise adjusted value (Holm's step-down, or none), the verdict, the detectable effect and
the seeds an effect would need (:func:`family_sentence` describes the family and a
group-sequential design); the labels saved (:mod:`pal.labels_saved`); the per-round paired
differences.
"""

from __future__ import annotations

import math

from pal.labels_saved import DESCRIPTION as LABELS_SAVED_DESCRIPTION
from pal.labels_saved import saved_cell
from pal.reports.tables import _num
from pal.stats import SequentialDesign
from pal.verdicts import MIN_SEEDS, Verdict


def family_sentence(verdicts: list[Verdict], design: SequentialDesign | None = None) -> str:
    """What the verdicts are, as a family: how many comparisons, the correction, the design."""
    v = verdicts[0]
    m, total = v.family_size, len(verdicts)
    untested = (
        f" ({total - m} of the {total} without a verdict are not counted)" if m < total else ""
    )
    level = f"{100 * v.alpha:g}%"
    if v.correction == "holm":
        text = (
            f"The family is {m} comparison{'s' if m != 1 else ''}{untested}; its family-wise "
            f"error rate (the chance of any false `better` or `worse`) is held at {level} by "
            "Holm's step-down procedure: `p (Holm)` is each comparison's adjusted p-value and "
            f"the verdict is `better`/`worse` where it is at most {v.alpha:g}."
        )
    else:
        worst = 1 - (1 - v.alpha) ** max(m, 1)
        text = (
            f"The family is {m} comparison{'s' if m != 1 else ''}{untested}, each tested at "
            f"{level} on its own (correction `none`): with {m} comparisons the chance of at "
            f"least one false `better` or `worse` is up to {100 * worst:.0f}%."
        )
    if design is not None:
        crit = ", ".join(
            f"{n}: {c:.2f}"
            for n, c in zip(design.looks, design.critical_values(v.alpha), strict=True)
        )
        text += (
            f" The study was grown until decided with a group-sequential design: looks at "
            f"{', '.join(map(str, design.looks))} seeds, {design.boundary.replace('_', '-')} "
            "boundary on each comparison's paired t statistic (|t| to cross, for one comparison "
            f"at {level}, by seeds: {crit}); `p` is the repeated p-value over the looks reached, "
            "and a comparison short of its last look without a decision is `open`."
        )
    return text


def _verdict_table(
    verdicts: list[Verdict], metric: str, design: SequentialDesign | None = None
) -> list[str]:
    references = list(dict.fromkeys(v.reference for v in verdicts))
    one = len(references) == 1
    reference = f"`{references[0]}`" if one else "its reference"
    v0 = verdicts[0]
    effect = f"{100 * v0.effect:g}"
    lines = [
        f"## Verdicts (against {reference}, paired by seed)",
        "",
        f"Each run is paired with {f'the {reference} run' if one else 'its reference'} of the "
        "same seed (the same initial pool), over the seeds and rounds both finished. AUC: the "
        f"mean test {metric} over rounds 1..R; its difference in {metric} points with a 95% "
        "paired t interval for the comparison alone (not adjusted for the family). "
        + family_sentence(verdicts, design)
        + f" Fewer than {MIN_SEEDS} shared seeds, a non-finite {metric}, a round one side "
        "lacks, labeled counts that differ, or zero variance: no verdict, and the reason. "
        f"Detectable: the smallest AUC difference (points) the comparison detects with 80% "
        f"power at its seeds and their spread, at the strictest level the family holds it to "
        f"({_level_text(v0)}); seeds for {effect} point: what that would take for a "
        f"{effect}-point difference.",
        "",
        f"| variant | reference | seeds | AUC difference (points, 95% CI) | p | "
        f"p ({'Holm' if v0.correction == 'holm' else 'unadjusted'}) | verdict | detectable "
        f"(80% power) | seeds for {effect} point |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for v in verdicts:
        lines.append(
            f"| {v.variant} | {v.reference} | {v.n_seeds} | {_points(v.auc_diff, v.auc_ci)} | "
            f"{_p(v.p_value)} | {_p(v.p_adjusted)} | {v.verdict} | "
            f"{_num(100 * v.detectable_effect, 2) if v.detectable_effect else '-'} | "
            f"{v.seeds_needed if v.seeds_needed else '-'} |"
        )
    flagged = [v for v in verdicts if v.flags]
    if flagged:
        lines.append("")
        for v in flagged:
            text = "; ".join(v.flags)
            if v.underfit:
                text += ": " + "; ".join(v.underfit)
            lines.append(f"- **{v.variant}**: {text}.")
    return lines


def _labels_saved_table(verdicts: list[Verdict], metric: str) -> list[str]:
    shown = [v for v in verdicts if v.labels_saved.get("saved") is not None]
    if not shown:
        return []
    lines = [
        f"## Labels saved (to reach the reference's final {metric}, on the shared seeds)",
        "",
        LABELS_SAVED_DESCRIPTION.replace("accuracy", metric) + " The verdict remains the AUC's.",
        "",
        f"| variant | reference | seeds | target {metric} | labels saved (interval) "
        "| % of the reference's labels |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for v in shown:
        saved = v.labels_saved
        lines.append(
            f"| {v.variant} | {v.reference} | {saved['n_seeds']} | {saved['target']:.4f} | "
            f"{saved_cell(saved)} | {saved_cell(saved, percent=True)} |"
        )
    return lines


def _per_round_table(verdicts: list[Verdict], metric: str) -> list[str]:
    rounds = sorted({d.round for v in verdicts for d in v.rounds})
    if not rounds:
        return []
    lines = [
        f"Per round: the mean paired difference in test {metric} (points, 95% t interval).",
        "",
        "| variant | reference | " + " | ".join(f"round {r}" for r in rounds) + " |",
        "| --- | --- |" + " --- |" * len(rounds),
    ]
    for v in verdicts:
        by_round = {d.round: _points(d.diff, d.ci) for d in v.rounds}
        cells = " | ".join(by_round.get(r, "-") for r in rounds)
        lines.append(f"| {v.variant} | {v.reference} | {cells} |")
    return lines


def _level_text(v: Verdict) -> str:
    if v.correction == "holm" and v.family_size > 1:
        return f"{v.alpha:g} / {v.family_size} = {v.alpha / v.family_size:.4g}"
    return f"{v.alpha:g}"


def _p(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:.3g}" if value >= 1e-4 else f"{value:.1e}"


def _points(diff: float | None, ci: list[float] | None) -> str:
    if diff is None or not math.isfinite(diff):
        return "-"
    text = f"{100 * diff:+.2f}"
    if ci is not None:
        text += f" [{100 * ci[0]:+.2f}, {100 * ci[1]:+.2f}]"
    return text
