"""The Markdown table of a segmentation round (Section 3.1, Eq. 2), timed by
:func:`benchmarks.phases.run_phases` through the SimCLR pretext: task training (DeepLabv3, pixel
cross-entropy), scoring-network training (pixel cross-entropy + NT-Xent on two views), scoring the
pool (``S_S`` from the two seeded views, ``S_C`` pixel-wise) beside the bare forward passes
scoring needs, and the sub-query fine-tunes when the config takes sub-queries (the paper's
Cityscapes setting, ``lambda2 = 0``, takes none).
"""

from __future__ import annotations


def markdown(r: dict) -> str:
    """The phases of ``r["pal"]`` (a :func:`benchmarks.phases.run_phases` result) as a table."""
    m, p = r["machine"], r["pal"]
    where = m.get("gpu") or f"{m['cpus']} CPU cores ({m['cpu']})"
    s = r["settings"]
    lines = [
        f"### {r['config']} (segmentation) on {r['device']}: {where}",
        "",
        f"{r['date']}; torch {m['torch']}, {m['torch_threads']} threads; "
        f"|D_L| = {p['n_labeled']}, |D_U| = {p['n_unlabeled']}; "
        f"encoders {s['task_backbone']} / {s['scoring_backbone']}, "
        f"{s['epochs_task']} + {s['epochs_scoring']} epochs, {r['precision']}, "
        f"{r['memory_format']}.",
        "",
        "| phase | s | images/s | model TFLOP/s | MFU |",
        "| --- | --- | --- | --- | --- |",
    ]
    phases = ("task_training", "scoring_training", "scoring", "bare_forward")
    for phase in (phase for phase in phases if phase in p):
        a = p[phase]
        tflops = f"{a['flop_per_s'] / 1e12:.3f}" if "flop_per_s" in a else "-"
        mfu = f"{100 * a['mfu']:.1f}%" if a.get("mfu") else "-"
        lines.append(
            f"| {phase.replace('_', ' ')} | {a['seconds']:.2f} | {a['images_per_s']:.0f} | "
            f"{tflops} | {mfu} |"
        )
    sub = p.get("subquery_finetune", {})
    if sub.get("steps"):
        lines.append(
            f"| sub-query fine-tunes ({sub['steps']}, scope {sub['scope']}) | "
            f"{sub['seconds']:.2f} | - | - | - |"
        )
    lines += ["", f"- Round: {p['round_seconds']:.2f} s."]
    if "scoring_vs_bare_forward" in p:
        lines.append(
            f"- Scoring (S_S + S_C) at **{100 * p['scoring_vs_bare_forward']:.1f}%** of the "
            "throughput of its bare forward passes."
        )
    return "\n".join(lines) + "\n"
