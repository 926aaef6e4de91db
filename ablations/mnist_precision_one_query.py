"""bf16 against fp32 for the strategies whose trials are long, cut to one query: PAL, VAAL and
TypiClust on MNIST, 3 seeds (``pal report mnist_precision_one_query``).

    pal ablate ablations/mnist_precision_one_query.py          # 21 trials, 2 at a time
    pal ablate ablations/mnist_precision_one_query.py --smoke  # 7 tiny trials on digits

:mod:`mnist_precision`'s variants and pairs for these three strategies, with ``rounds: 1``: the
initial 2% and one query of 1%: 27 minutes on two cores, where two queries of PAL and VAAL in
both precisions take about an hour. Round 0 is the same task training for every
strategy (the other four's study measured it), so the comparison that is new is round 1: the
network trained on what each strategy chose, in each precision.

A control, ``pal-fp32-channels_last``, paired with ``pal-fp32``: PAL in fp32 with channels-last
images. The arithmetic is fp32 on both sides; only the memory layout, and with it the order of
the convolutions' sums, differs. Its gaps are what any change to the low bits does to one
seed's PAL run: the scale a precision's gap is read against.
"""

from mnist_precision import get_job as full_study

STRATEGIES = ("pal", "vaal", "typiclust")
CONTROL = "pal-fp32-channels_last"


def get_job():
    job = full_study()
    job["name"] = "mnist_precision_one_query"
    job["base"]["rounds"] = 1
    job["variants"] = {
        name: overrides
        for name, overrides in job["variants"].items()
        if name.rsplit("-", 1)[0] in STRATEGIES
    }
    job["pairs"] = {a: b for a, b in job["pairs"].items() if a in job["variants"]}
    job["variants"][CONTROL] = {
        "strategy": "pal",
        "precision": "fp32",
        "memory_format": "channels_last",
    }
    job["pairs"][CONTROL] = "pal-fp32"
    return job
