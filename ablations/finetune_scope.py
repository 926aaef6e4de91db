"""What the sub-query fine-tune moves: the rotation head only (the paper's text) or the whole
scoring network (the authors' code), on SVHN.

    pal ablate ablations/finetune_scope.py          # 10 trials on the paper's protocol (GPUs)
    pal ablate ablations/finetune_scope.py --smoke  # 2 tiny trials on digits
"""

from _study import study


def get_job():
    return study(
        "finetune_scope",
        "svhn",
        {"head": {"finetune_scope": "head"}, "all": {"finetune_scope": "all"}},
    )
