"""PAL's hyperparameters on CIFAR-10, on the paper's protocol (configs/cifar10.yaml).

    pal sweep tune_jobs/cifar10_pal_hpo.py             # 32 trials, 1 GPU each, 8 at a time
    pal sweep tune_jobs/cifar10_pal_hpo.py --resume    # continue an interrupted sweep
    pal sweep tune_jobs/cifar10_pal_hpo.py --smoke     # 2 tiny trials on 2,000 images

10% initial pool, 5% per query to 40%, VGG-16 task network, ResNet-18 scoring network, 100 epochs:
hours per trial on one GPU; ASHA stops the weakest trials after two rounds.
"""

from _paper import paper_protocol_job


def get_job():
    return paper_protocol_job("cifar10", max_subqueries=10)
