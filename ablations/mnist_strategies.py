"""The strategies compared on MNIST on CPU, 3 seeds: every verdict against random with its
confidence interval (``pal report mnist_strategies``).

    pal ablate ablations/mnist_strategies.py          # 21 trials, 2 at a time, on CPU cores
    pal ablate ablations/mnist_strategies.py --smoke  # 7 tiny trials on digits

The preset (``configs/mnist.yaml``): a seeded 10k pool of ``../shared/data/mnist.npz``, 2%
labeled at start; here two queries of 1% (the preset's five take about three times as long).
The ``cnn`` networks are trained until they fit their labeled sets (every round logs
``train_accuracy``). DBAL's task network carries dropout 0.5, which its MC-dropout passes
sample; the others train without it.
"""

from _study import STRATEGIES, cpu_study, strategy_variant

# the costliest first (VAAL's and PAL's trials take several times random's on one core), so
# the last trials to start are short ones and both cores stay busy to the end
COST_ORDER = ("vaal", "pal", "dbal", "coreset", "typiclust", "entropy", "random")


def get_job():
    order = sorted(STRATEGIES, key=lambda s: COST_ORDER.index(s) if s in COST_ORDER else -1)
    variants = {name: strategy_variant(name) for name in order}
    return cpu_study("mnist_strategies", variants, base={"rounds": 2})
