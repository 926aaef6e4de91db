"""Biased initial pool for segmentation (the paper's Appendix A, Figure 7): Cityscapes with the
annotations of bus and train removed from the initial pool's masks (set to the ignore label);
every later query is annotated in full.

    pal ablate ablations/segmentation_biased_pool.py           # 10 trials (GPUs, Cityscapes)
    pal ablate ablations/segmentation_biased_pool.py --smoke   # 2 tiny trials on digit scenes

PAL should pick images with more pixels of the missing classes than random does: each round's
missing_class_share in MLflow is their share of the query's labeled pixels, and `pal report`
draws it (missing_classes.png) beside the mIoU curve.
"""

from _study import study


def get_job():
    return study(
        "segmentation_biased_pool",
        "cityscapes",
        {"pal": {"strategy": "pal"}, "random": {"strategy": "random"}},
        base={"missing_classes": ["bus", "train"]},
        smoke={
            "dataset": "digit_scenes",
            "image_size": None,
            "task_backbone": "segcnn",
            "scoring_backbone": "segcnn",
            "missing_classes": ["8", "9"],
            "lambda1": 0.5,
            "lambda2": 0.0,
        },
    )
