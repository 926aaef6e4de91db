"""PAL's hyperparameters on SVHN, on the paper's protocol (configs/svhn.yaml).

    pal sweep tune_jobs/svhn_pal_hpo.py             # 32 trials, 1 GPU each, 8 at a time
    pal sweep tune_jobs/svhn_pal_hpo.py --resume    # continue an interrupted sweep
    pal sweep tune_jobs/svhn_pal_hpo.py --smoke     # 2 tiny trials on 2,000 images

10% initial pool, 5% per query to 40%, VGG-16 task network, ResNet-18 scoring network, 100 epochs:
hours per trial on one GPU; ASHA stops the weakest trials after two rounds. The paper's
sub-queries of 256 images are K of about 13 at 5% of SVHN; K is searched up to 16.
"""

from _paper import paper_protocol_job


def get_job():
    return paper_protocol_job("svhn", max_subqueries=16)
