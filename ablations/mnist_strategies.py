"""The strategies compared on MNIST on CPU, 3 seeds: every verdict against random with its
confidence interval (``pal report mnist_strategies``).

    pal ablate ablations/mnist_strategies.py          # 18 trials, 2 at a time, on CPU cores
    pal ablate ablations/mnist_strategies.py --smoke  # 6 tiny trials on digits

The preset (``configs/mnist.yaml``): a seeded 10k pool of ``../shared/data/mnist.npz``, 2%
labeled at start; here two queries of 1% (the preset's five take about three times as long).
The ``cnn`` networks are trained until they fit their labeled sets (every round logs
``train_accuracy``). DBAL's task network carries dropout 0.5, which its MC-dropout passes
sample; the others train without it.
"""

from _study import STRATEGIES, cpu_study, strategy_variant


def get_job():
    variants = {name: strategy_variant(name) for name in STRATEGIES}
    return cpu_study("mnist_strategies", variants, base={"rounds": 2})
