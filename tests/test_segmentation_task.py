"""Segmentation as a task of the loop: datasets with masks, the strategy contract, PAL's SimCLR
scoring, missing classes, and end-to-end runs on the digit scenes."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import pal
from pal.cli import main
from pal.config import ConfigError
from pal.data import DataError, ImageData, load_dataset, resize_masks
from pal.loop import Experiment
from pal.pretext import simclr
from pal.segmentation import IGNORE, confusion_matrix, iou
from pal.segnets import build_segnet
from pal.strategies import STRATEGIES, QueryContext, build_strategy
from pal.training import Normalizer, augment_with_masks, pixel_cross_entropy
from tests.conftest import REPO

SEG = dict(
    dataset="digit_scenes",
    task_backbone="segcnn",
    scoring_backbone="segcnn",
    pool_size=300,
    val_size=30,
    initial_size=40,
    query_size=20,
    rounds=1,
    epochs_task=2,
    epochs_scoring=2,
    batch_size=16,
    eval_batch_size=64,
    lambda1=0.5,
    lambda2=0.0,
    device="cpu",
)
SEG_STRATEGIES = [n for n in pal.list_strategies() if "segmentation" in STRATEGIES.get(n).tasks]


@pytest.fixture(scope="module")
def scenes() -> ImageData:
    return load_dataset("digit_scenes")


def background_only_miou(masks: torch.Tensor, num_classes: int) -> float:
    return iou(confusion_matrix(torch.zeros_like(masks), masks, num_classes))[0]


# ---------------------------------------------------------------------- datasets
def test_digit_scenes_dataset(scenes):
    assert scenes.task == "segmentation" and scenes.y_train is None
    assert scenes.x_train.shape == (1000, 1, 32, 32) and scenes.m_test.shape == (300, 32, 32)
    assert scenes.classes == ["background"] + [str(d) for d in range(10)]
    again = load_dataset("digit_scenes")
    assert torch.equal(again.x_train, scenes.x_train) and torch.equal(again.m_test, scenes.m_test)
    for masks in (scenes.m_train, scenes.m_test):  # every class in both splits
        assert set(masks.unique().tolist()) == set(range(11))
    baseline = background_only_miou(scenes.m_test, 11)
    assert 0.05 < baseline < 0.1  # background is most pixels: 1/11 of its share


def test_masks_are_validated(scenes):
    bad = scenes.m_train.clone()
    bad[0, 0, 0] = 11  # neither a class id (0..10) nor the ignore label
    with pytest.raises(DataError, match=r"m_train must hold class ids in \[0, 11\).* got \[11\]"):
        ImageData("s", scenes.x_train, None, scenes.x_test, None, scenes.classes, "crop",
                  bad, scenes.m_test)  # fmt: skip
    with pytest.raises(DataError, match=r"m_test must be uint8 \[N, H, W\]"):
        ImageData("s", scenes.x_train, None, scenes.x_test, None, scenes.classes, "crop",
                  scenes.m_train, scenes.m_test[:, :16])  # fmt: skip
    with pytest.raises(DataError, match="both splits or neither"):
        ImageData("s", scenes.x_train, None, scenes.x_test, None, scenes.classes, "crop",
                  scenes.m_train, None)  # fmt: skip


def test_npz_with_masks_and_resizing_by_nearest_neighbour(tmp_path, scenes):
    path = tmp_path / "seg.npz"
    m_train = scenes.m_train[:20].numpy().copy()
    m_train[:, :2] = IGNORE
    np.savez(
        path,
        x_train=scenes.x_train[:20, 0].numpy(),
        m_train=m_train,
        x_test=scenes.x_test[:10, 0].numpy(),
        m_test=scenes.m_test[:10].numpy(),
    )
    data = load_dataset(f"npz:{path}")
    assert data.task == "segmentation" and data.x_train.shape == (20, 1, 32, 32)
    assert torch.equal(data.m_train, torch.from_numpy(m_train))
    top = max(int(scenes.m_train[:20].max()), int(scenes.m_test[:10].max()))
    assert data.num_classes == top + 1
    small = load_dataset(f"npz:{path}", image_size=16)
    assert small.m_train.shape == (20, 16, 16)
    # nearest neighbour: every value of the small masks is one of the original values
    assert set(small.m_train.unique().tolist()) <= set(data.m_train.unique().tolist())
    assert torch.equal(resize_masks(data.m_train, (64, 64))[:, ::2, ::2], data.m_train)
    np.savez(path, x_train=scenes.x_train[:2, 0].numpy(), m_train=m_train[:2])
    with pytest.raises(DataError, match=r"lacks the arrays \['x_test', 'm_test'\]"):
        load_dataset(f"npz:{path}")


def _fake_cityscapes(root, n=2):
    from PIL import Image

    for split in ("train", "val"):
        for k in range(n):
            images = root / "leftImg8bit" / split / "aachen"
            targets = root / "gtFine" / split / "aachen"
            images.mkdir(parents=True, exist_ok=True)
            targets.mkdir(parents=True, exist_ok=True)
            name = f"aachen_{k:06d}_000019"
            rgb = np.random.default_rng(k).integers(0, 256, (64, 128, 3), dtype=np.uint8)
            Image.fromarray(rgb).save(images / f"{name}_leftImg8bit.png")
            label_ids = np.zeros((64, 128), np.uint8)  # 0: unlabeled -> ignore
            label_ids[:32] = 7  # road -> train id 0
            label_ids[32:, :64] = 28  # bus -> 15
            label_ids[32:, 64:] = 31  # train -> 16
            Image.fromarray(label_ids).save(targets / f"{name}_gtFine_labelIds.png")
            label_ids[:, :4] = 0
            Image.fromarray(label_ids).save(targets / f"{name}_gtFine_labelIds.png")


def test_cityscapes_loader_maps_label_ids_to_the_19_train_classes(tmp_path):
    _fake_cityscapes(tmp_path)
    data = load_dataset("cityscapes", str(tmp_path), image_size=16)
    assert data.x_train.shape == (2, 3, 16, 32)  # the height, the 1:2 aspect ratio kept
    assert len(data.classes) == 19 and data.classes[15] == "bus" and data.classes[16] == "train"
    values = set(data.m_train.unique().tolist())
    assert values == {0, 15, 16, IGNORE}
    assert (data.m_train[:, :8, 4:] == 0).all() and (data.m_train[:, 8:, 4:16] == 15).all()
    assert (data.m_train[:, :, 0] == IGNORE).all()  # columns 0..3 of 128: unlabeled
    assert (tmp_path / ".pal-cache" / "cityscapes-16" / "m_train.npy").is_file()
    with pytest.raises(DataError, match="data_dir: Cityscapes not found under .*leftImg8bit"):
        load_dataset("cityscapes", str(tmp_path / "elsewhere"))
    with pytest.raises(DataError, match="download: Cityscapes cannot be downloaded"):
        load_dataset("cityscapes", str(tmp_path / "elsewhere"), download=True)


# ---------------------------------------------------------------------- training parts
def test_augment_moves_masks_with_their_images_and_pads_with_ignore():
    masks = torch.randint(0, 11, (6, 16, 16), dtype=torch.uint8)
    masks[:, 0, 0] = IGNORE
    images = (masks * 20)[:, None].expand(6, 2, 16, 16).contiguous()  # image encodes its mask
    gen = torch.Generator().manual_seed(0)
    out_x, out_m = augment_with_masks(images, masks, "crop_flip", gen)
    assert out_x.shape == images.shape and out_m.shape == masks.shape
    assert out_m.dtype == torch.uint8
    padding = out_m == IGNORE
    inside = ~padding & (out_x[:, 0] != 0)  # pixels from the image, not the padding
    assert torch.equal(out_x[:, 0][inside], out_m[inside] * 20)
    assert torch.equal(out_x[:, 0], out_x[:, 1])
    assert padding.any() and not torch.equal(out_m, masks)  # crops moved them


def test_pixel_cross_entropy_ignores_unannotated_pixels():
    logits = torch.randn(2, 4, 5, 5)
    masks = torch.randint(0, 4, (2, 5, 5), dtype=torch.uint8)
    masks[0, :2] = IGNORE
    changed = logits.clone()
    changed[0, :, :2] = 100 * torch.randn(4, 2, 5)
    assert float(pixel_cross_entropy(logits, masks)) == pytest.approx(
        float(pixel_cross_entropy(changed, masks))
    )
    valid = masks != IGNORE
    expected = torch.nn.functional.cross_entropy(
        logits.permute(0, 2, 3, 1)[valid], masks[valid].long()
    )
    assert float(pixel_cross_entropy(logits, masks)) == pytest.approx(float(expected))


# ---------------------------------------------------------------------- strategies
def seg_context(scenes, config, labeled, unlabeled, seed=0) -> QueryContext:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        task = build_segnet("segcnn", 1, scenes.num_classes)
    return QueryContext(
        config=config,
        x=scenes.x_train,
        labels=scenes.m_train,
        labeled=torch.as_tensor(labeled),
        unlabeled=torch.as_tensor(unlabeled),
        num_classes=scenes.num_classes,
        task_model=task,
        normalize=Normalizer(scenes.x_train),
        augment_mode="crop",
        seed=seed,
        task="segmentation",
    )


def test_segmentation_strategies_are_random_entropy_and_pal():
    assert sorted(SEG_STRATEGIES) == ["entropy", "pal", "random"]


SEG_CONFIGS = {
    "random": {},
    "entropy": {},
    "pal": {},
    "pal-subqueries-head": {"lambda2": 1.0, "subqueries": 3, "finetune_scope": "head"},
    "pal-subqueries-all": {"lambda2": 1.0, "subqueries": 2, "finetune_scope": "all"},
}


@pytest.mark.parametrize("variant", SEG_CONFIGS)
def test_segmentation_strategy_contract(variant, scenes):
    config = pal.make_config(SEG, strategy=variant.split("-")[0], **SEG_CONFIGS[variant])
    labeled, unlabeled = range(0, 30), range(30, 130)
    ctx = seg_context(scenes, config, labeled, unlabeled, seed=5)
    query = build_strategy(config).query(ctx, 12)
    chosen = query.indices.tolist()
    assert len(chosen) == len(set(chosen)) == 12 and set(chosen) <= set(unlabeled)
    assert all(isinstance(v, float) and math.isfinite(v) for v in query.metrics.values())
    again = build_strategy(config).query(seg_context(scenes, config, labeled, unlabeled, 5), 12)
    assert torch.equal(query.indices, again.indices)  # the seed decides the query


@pytest.mark.parametrize("name", ["coreset", "dbal", "vaal"])
def test_classification_only_strategies_are_refused_before_training(name, monkeypatch):
    import pal.tasks
    import pal.training

    def forbidden(*args, **kwargs):
        pytest.fail("training started although the config is invalid")

    monkeypatch.setattr(pal.training.fitting, "fit", forbidden)
    monkeypatch.setattr(pal.tasks, "train_segmenter", forbidden)
    with pytest.raises(ConfigError, match=f"strategy: '{name}' does not run on segmentation"):
        Experiment(pal.make_config(SEG, strategy=name, dropout=0.5))


def test_segmentation_config_errors_name_the_field():
    with pytest.raises(ConfigError, match=r"task_backbone: .* one of \['mobilenetv2', 'segcnn'\]"):
        Experiment(pal.make_config(SEG, task_backbone="cnn"))
    with pytest.raises(ConfigError, match="label_noise: .* must be 0 for digit_scenes"):
        Experiment(pal.make_config(SEG, label_noise=0.1))
    with pytest.raises(ConfigError, match="missing_classes: no class 'bus' in digit_scenes"):
        Experiment(pal.make_config(SEG, missing_classes=["bus"]))


def test_pal_scores_of_an_image_do_not_depend_on_the_rest_of_the_pool(scenes):
    torch.manual_seed(0)
    net = simclr.SegScoringNet(build_segnet("segcnn", 1, scenes.num_classes))
    normalize = Normalizer(scenes.x_train)
    index = torch.arange(40, 100)
    whole = simclr.score_pool(net, scenes.x_train[index], index, normalize, 64, seed=9)
    part = index[[5, 17, 31]]
    some = simclr.score_pool(net, scenes.x_train[part], part, normalize, 64, seed=9)
    assert torch.allclose(whole.s_s[[5, 17, 31]], some.s_s, atol=1e-5)
    assert torch.allclose(whole.s_c[[5, 17, 31]], some.s_c, atol=1e-5)
    alone = simclr.score_pool(
        net, scenes.x_train[part], part, normalize, 64, seed=9, with_s_c=False
    )
    assert torch.allclose(alone.s_s, some.s_s, atol=1e-5)  # S_S without S_C's passes
    other = simclr.score_pool(net, scenes.x_train[part], part, normalize, 64, seed=10)
    assert not torch.allclose(other.s_s, some.s_s)  # the seed decides the views
    assert (whole.s_c <= 1e-6).all()  # -KL(U || p) <= 0


def test_pal_ranks_the_hybrid_score_of_s_s_and_s_c(scenes, monkeypatch):
    """With lambda1 = 0.5 and no fine-tune, the query is the top of S_S + 0.5 S_C."""
    seen = {}
    original = simclr.SimCLRPretext.score

    def spy(*args, **kwargs):
        seen["scores"] = original(*args, **kwargs)
        return seen["scores"]

    monkeypatch.setattr(simclr.SimCLRPretext, "score", spy)
    config = pal.make_config(SEG, strategy="pal")
    ctx = seg_context(scenes, config, range(30), range(30, 130))
    chosen = build_strategy(config).query(ctx, 10).indices
    s = seen["scores"]
    expected = ctx.unlabeled[torch.sort(s.s_s + 0.5 * s.s_c, descending=True, stable=True)[1][:10]]
    assert torch.equal(chosen, expected)


# ---------------------------------------------------------------------- the loop
def test_missing_classes_leave_no_pixel_in_the_initial_masks(scenes):
    exp = Experiment(pal.make_config(SEG, strategy="random", missing_classes=["3", "7"]))
    initial = exp.pool.labeled
    missing_ids = [4, 8]  # mask values of digits 3 and 7 (0 is background)
    masks = exp.task.labels[torch.as_tensor(initial)]
    assert not torch.isin(masks, torch.tensor(missing_ids, dtype=torch.uint8)).any()
    truth = scenes.m_train[initial]
    had = torch.isin(truth, torch.tensor(missing_ids, dtype=torch.uint8))
    assert had.any()  # the initial images held those digits: their pixels were dropped
    assert (masks[had] == IGNORE).all() and torch.equal(masks[~had], truth[~had])
    # images are kept (only annotations go), and other images keep their annotations
    assert len(initial) == SEG["initial_size"]
    rest = torch.as_tensor(exp.pool.unlabeled)
    assert torch.equal(exp.task.labels[rest], scenes.m_train[rest])
    record = exp.run_round()
    assert record.labeled_class_counts["3"] == record.labeled_class_counts["7"] == 0
    assert record.labeled_class_counts["background"] == len(initial)
    query = exp.run_round()
    shares = query.query_class_rates
    assert sum(shares.values()) == pytest.approx(1.0)
    assert query.missing_class_share == pytest.approx(shares["3"] + shares["7"])
    assert query.missing_class_share > 0


@pytest.mark.slow
def test_segmentation_run_reaches_above_the_all_background_mIoU(scenes):
    result = pal.run_experiment(
        **{**SEG, "epochs_task": 15, "epochs_scoring": 3, "initial_size": 60, "rounds": 1},
        tracking=False,
    )
    baseline = background_only_miou(scenes.m_test, scenes.num_classes)
    assert result.metric == "mIoU" and "test_mIoU" in result.table()
    final = result.rounds[-1]
    assert final.test_accuracy == pytest.approx(final.task_metrics["test_miou"])
    assert final.test_accuracy > 1.5 * baseline
    ious = [final.task_metrics[f"test_iou/{c}"] for c in scenes.classes]
    assert np.nanmean(ious) == pytest.approx(final.test_accuracy, rel=1e-5)
    assert final.val_accuracy == pytest.approx(final.task_metrics["val_miou"])
    assert 0.8 < final.task_metrics["test_pixel_accuracy"] <= 1.0
    assert final.n_noisy_labels == 0 and math.isfinite(final.query_metrics["ss_sc_pearson"])


@pytest.mark.slow
def test_same_seed_same_segmentation_queries_and_resume_continues_them():
    config = pal.make_config(
        SEG, strategy="pal", rounds=2, epochs_task=1, epochs_scoring=1, missing_classes=["8"]
    )
    straight = Experiment(config).run().rounds
    # round 0 and the query after it: the same seed's, another seed's not
    first, other = Experiment(config), Experiment(config.replace(seed=1))
    assert first.run_round().test_accuracy == straight[0].test_accuracy
    assert list(first.pool.pending.indices) == straight[1].selected
    other.run_round()
    assert list(other.pool.pending.indices) != straight[1].selected

    # the later rounds, resumed from the first one's checkpoint: the same queries and networks
    state = json.loads(json.dumps(first.state_dict()))  # what a checkpoint stores
    resumed = Experiment(config)
    resumed.load_state_dict(state)
    rest = list(resumed.rounds())
    assert [r.selected for r in rest] == [r.selected for r in straight[1:]]
    assert [r.test_accuracy for r in rest] == [r.test_accuracy for r in straight[1:]]
    assert rest[0].labeled_class_counts == straight[1].labeled_class_counts


# ---------------------------------------------------------------------- presets, CLI, MLflow
def test_cityscapes_preset_is_the_papers_protocol():
    config = pal.Config.from_yaml(REPO / "configs" / "cityscapes.yaml")
    assert config.dataset == "cityscapes" and config.task_backbone == "mobilenetv2"
    assert (config.initial_fraction, config.query_fraction) == (0.05, 0.01)
    assert (config.epochs_task, config.epochs_scoring, config.batch_size) == (50, 50, 8)
    assert (config.lr_task, config.lr_scoring, config.optimizer) == (0.01, 0.01, "sgd")
    assert (config.lambda1, config.lambda2) == (0.5, 0.0)


@pytest.mark.slow
def test_digit_scenes_preset_logs_miou_and_class_ious_to_mlflow(mlflow_server, capsys):
    from mlflow.tracking import MlflowClient

    preset = REPO / "configs" / "digit_scenes.yaml"
    argv = ["run", "--config", str(preset), "--quiet", "--set", "rounds=0"]
    argv += ["--set", "epochs_task=1"]
    assert main(argv) == 0
    assert "test_mIoU" in capsys.readouterr().out
    result = pal.run_experiment(
        preset, rounds=1, epochs_task=2, epochs_scoring=2, pool_size=300,
        tracking_uri=mlflow_server,
    )  # fmt: skip
    assert result.metric == "mIoU"
    client = MlflowClient(mlflow_server)
    run = client.get_run(result.run_id)
    metrics = run.data.metrics
    assert metrics["test_miou"] == pytest.approx(metrics["test_accuracy"])
    assert {f"test_iou/{c}" for c in ["background", *map(str, range(10))]} <= set(metrics)
    rates = [k for k in metrics if k.startswith("query_class_rate/")]
    assert len(rates) == 11 and sum(metrics[k] for k in rates) == pytest.approx(1.0, abs=1e-5)
    history = client.get_metric_history(run.info.run_id, "val_miou")
    assert sorted(m.step for m in history) == [0, 1]


@pytest.mark.slow
def test_cityscapes_preset_runs_end_to_end_on_a_cityscapes_tree(tmp_path):
    """The preset as a user with the data runs it (DeepLabv3 on MobileNetV2 for both networks,
    PAL's SimCLR scoring), on a tiny tree laid out as Cityscapes ships."""
    _fake_cityscapes(tmp_path, n=12)
    preset = pal.Config.from_yaml(REPO / "configs" / "cityscapes.yaml")
    small = dict(data_dir=str(tmp_path), image_size=32, val_size=2, initial_size=4, query_size=2)
    small.update(rounds=1, epochs_task=1, epochs_scoring=1, batch_size=4, device="cpu")
    result = pal.run_experiment(preset, tracking=False, **small)
    assert result.metric == "mIoU" and [r.n_labeled for r in result.rounds] == [4, 6]
    assert set(result.classes) >= {"road", "bus", "train"} and len(result.classes) == 19
    final = result.rounds[-1]
    assert 0.0 <= final.test_accuracy <= 1.0 and "test_iou/bus" in final.task_metrics
    assert math.isfinite(final.query_metrics["ss_sc_pearson"])
    assert sum(result.rounds[1].query_class_rates.values()) == pytest.approx(1.0)
