"""PAL's hyperparameters on Cityscapes segmentation, on the paper's protocol
(configs/cityscapes.yaml: DeepLabv3 on MobileNetV2, 5% initial, 1% per query, 50 epochs).

    pal sweep tune_jobs/cityscapes_pal_hpo.py             # 32 trials, 1 GPU each, 8 at a time
    pal sweep tune_jobs/cityscapes_pal_hpo.py --resume    # continue an interrupted sweep
    pal sweep tune_jobs/cityscapes_pal_hpo.py --smoke     # 2 tiny trials on the digit scenes

Cityscapes must be downloaded by hand into data/cityscapes first (see configs/cityscapes.yaml).
The objective is the validation mIoU averaged over rounds (val_accuracy holds the mIoU).
"""

from _paper import paper_protocol_job


def get_job():
    job = paper_protocol_job("cityscapes", max_subqueries=5)
    job["smoke"]["base"].update(
        dataset="digit_scenes",
        image_size=None,
        pool_size=300,
        val_size=30,
        task_backbone="segcnn",
        scoring_backbone="segcnn",
        batch_size=16,
    )
    return job
