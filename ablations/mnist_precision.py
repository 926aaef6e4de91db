"""bf16 autocast against fp32 on CPU: every strategy on MNIST, 3 seeds, each (strategy, seed)
run in both precisions (``pal report mnist_precision`` pairs each ``<strategy>-bf16`` with its
``<strategy>-fp32`` by seed, round by round).

    pal ablate ablations/mnist_precision.py          # 42 trials, 2 at a time, on CPU cores
    pal ablate ablations/mnist_precision.py --smoke  # 14 tiny trials on digits

The shape of ``mnist_strategies`` (the MNIST preset, an initial 2% and two queries of 1%). bf16
means autocast with channels-last images and convolutions; fp32 means neither. It decides where
``precision: auto`` turns bf16 on for CPUs (:func:`pal.training.resolve_speed`).
"""

from _study import STRATEGIES, cpu_study, strategy_variant

PRECISIONS = {
    "fp32": {"precision": "fp32", "memory_format": "contiguous"},
    "bf16": {"precision": "bf16", "memory_format": "channels_last"},
}
# cheapest first: on two cores the study takes hours, and a stopped study then holds complete
# pairs for as many strategies as it had time for (PAL's and VAAL's trials take 10x random's)
ORDER = ("random", "entropy", "coreset", "dbal", "pal", "vaal")


def get_job():
    names = sorted(STRATEGIES, key=lambda s: ORDER.index(s) if s in ORDER else len(ORDER))
    variants = {
        f"{name}-{precision}": {**strategy_variant(name), **settings}
        for name in names
        for precision, settings in PRECISIONS.items()
    }
    job = cpu_study("mnist_precision", variants, base={"rounds": 2})
    job["pairs"] = {f"{name}-bf16": f"{name}-fp32" for name in names}
    return job
