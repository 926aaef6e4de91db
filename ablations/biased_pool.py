"""Biased initial pool (the paper's Section 4.3, Figure 3): two SVHN classes missing at start.

    pal ablate ablations/biased_pool.py           # 10 trials on the paper's protocol (GPUs)
    pal ablate ablations/biased_pool.py --smoke   # 2 tiny trials on digits

PAL should over-sample the missing classes for a few rounds, then return to balance; random
takes them at their share. Each round's query_class_rate/<class> in MLflow shows it.
"""

from _study import study


def get_job():
    return study(
        "biased_pool",
        "svhn",
        {"pal": {"strategy": "pal"}, "random": {"strategy": "random"}},
        base={"missing_classes": ["8", "9"]},
    )
