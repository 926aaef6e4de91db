"""Ablation of PAL's score terms (the paper's Section 4.5, Figure 5) on SVHN, 5 seeds.

    pal ablate ablations/components.py            # 15 trials on the paper's protocol (GPUs)
    pal ablate ablations/components.py --smoke    # 3 tiny trials on digits: seconds

S_S alone (lambda1 = lambda2 = 0) < S_S + S_C (lambda2 = 0) < S_S + S_C + S_D, in the paper.
"""

from _study import study


def get_job():
    return study(
        "components",
        "svhn",
        {
            "S_S": {"lambda1": 0.0, "lambda2": 0.0},
            "S_S+S_C": {"lambda1": 1.0, "lambda2": 0.0},
            "S_S+S_C+S_D": {"lambda1": 1.0, "lambda2": 1.0},
        },
    )
