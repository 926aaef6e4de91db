"""PAL's score terms on MNIST with two classes missing from the initial pool, on CPU, 3 seeds:
S_S alone, + S_C, + S_D, beside random (the paper's Section 4.5 on a biased pool, Figure 3).

    pal ablate ablations/mnist_components.py          # 12 trials, 2 at a time, on CPU cores
    pal ablate ablations/mnist_components.py --smoke  # 4 tiny trials on digits

One query, the one where the missing classes are found or not: its ``missing_class_share`` says
how much of it came from the missing classes 8 and 9 (random takes about their share of the
pool, 0.2).
"""

from _study import cpu_study

VARIANTS = {
    "random": {"strategy": "random"},
    "S_S": {"strategy": "pal", "lambda1": 0.0, "lambda2": 0.0},
    "S_S+S_C": {"strategy": "pal", "lambda1": 1.0, "lambda2": 0.0},
    "S_S+S_C+S_D": {"strategy": "pal", "lambda1": 1.0, "lambda2": 1.0},
}


def get_job():
    return cpu_study(
        "mnist_components", VARIANTS, base={"missing_classes": ["8", "9"], "rounds": 1}
    )
