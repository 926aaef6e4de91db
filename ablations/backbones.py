"""Scoring-network backbone: ResNet-18 vs VGG-16 (the paper's Section 4.4, Figure 4), SVHN.

    pal ablate ablations/backbones.py             # 10 trials on the paper's protocol (GPUs)
    pal ablate ablations/backbones.py --smoke     # 2 tiny trials on digits

The paper finds no significant difference.
"""

from _study import study


def get_job():
    return study(
        "backbones",
        "svhn",
        {"resnet18": {"scoring_backbone": "resnet18"}, "vgg16": {"scoring_backbone": "vgg16"}},
    )
