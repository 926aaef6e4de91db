"""What the round loop needs to know about the labels: one class per image (classification) or
one mask per image (semantic segmentation, Section 3.1 and Appendix A).

A :class:`Task` owns the oracle's annotations (on the device, handed to strategies as
``QueryContext.labels``), trains the task network from scratch on ``D_L``, evaluates it, and
measures what a query took from each class. The loop, the strategies' contract, tracking and
sweeps do not ask which task they run: the task's headline metric (accuracy, or mIoU for
segmentation) is what they record as ``val_accuracy`` / ``test_accuracy``.
"""

from __future__ import annotations

import abc
import dataclasses
import math

import numpy as np
import torch
from torch import nn

from pal.config import Config, ConfigError
from pal.data import ImageData
from pal.models import BACKBONES, TaskNet, build_backbone, dropout_generator
from pal.registry import Registry
from pal.rng import numpy_rng, seeded_init, torch_generator
from pal.segmentation import IGNORE, confusion_matrix, drop_classes, iou, pixel_shares
from pal.segnets import SEG_ENCODERS, SegNet, build_segnet
from pal.training import (
    FitReport,
    FitSpec,
    Normalizer,
    ProgressFn,
    Selection,
    accuracy,
    eval_chunk,
    predict_logits,
    predict_reduced,
    train_classifier,
    train_segmenter,
)


class Oracle:
    """The labeller, with simulated noise decided once per sample by the seed.

    With probability ``label_noise`` a sample's label is replaced by a uniformly drawn *different*
    class, so ``label_noise`` is the real flip rate. The answer for a sample is fixed for the whole
    experiment (asking twice gives the same label); the true labels are kept for logging.
    """

    def __init__(self, y_true: np.ndarray, num_classes: int, noise: float, seed: int):
        rng = numpy_rng(seed, "oracle")
        flip = rng.random(len(y_true)) < noise
        offset = rng.integers(1, max(num_classes, 2), len(y_true))
        self.labels = np.where(flip, (y_true + offset) % num_classes, y_true).astype(np.int64)

    def __call__(self, indices: np.ndarray) -> np.ndarray:
        return self.labels[indices]


@dataclasses.dataclass(frozen=True)
class TaskFit:
    """How a round's task network was trained (:meth:`Task.train`).

    Attributes:
        report: the :class:`~pal.training.FitReport` of the kept network's training.
        epochs: the epochs the kept network trained for (``epochs_task``, or with
            ``epochs_task_max`` the doubling that fit, or the cap).
        attempts: how many networks the round trained from scratch (1 with ``epochs_task_max``
            null).
        train_metric: the kept network's training-set metric (:meth:`Task.score` on ``D_L``) when
            the fit-until-fitted mode measured it; ``None`` when it did not (the mode off).
    """

    report: FitReport
    epochs: int
    attempts: int = 1
    train_metric: float | None = None


def epoch_schedule(epochs: int, epochs_max: int | None) -> list[int]:
    """The epochs of each training the fit-until-fitted mode may run: ``epochs``, then twice as
    many each time, capped at ``epochs_max`` (``[epochs]`` alone when ``epochs_max`` is null)."""
    schedule = [epochs]
    while epochs_max is not None and schedule[-1] < epochs_max:
        schedule.append(min(2 * schedule[-1], epochs_max))
    return schedule


class Task(abc.ABC):
    """The labels of one experiment.

    Built on the host from the dataset; :meth:`to` moves the annotations to the device once the
    initial pool is known (``missing_classes`` may change what the oracle annotates there).

    Attributes:
        kind: ``"classification"`` or ``"segmentation"``.
        labels: after :meth:`to`, the oracle's annotations of every training image on the
            device: ``int64 [N]`` class ids, or ``uint8 [N, H, W]`` masks.
    """

    kind: str = ""
    metric: str = ""  # what val_accuracy / test_accuracy hold
    default_fit_threshold: float = 0.0  # the fit check is off unless the task says otherwise

    def __init__(self, config: Config, data: ImageData):
        self.config = config
        self.data = data
        self.classes = list(data.classes)
        self.num_classes = len(self.classes)
        self.n_train = len(data.x_train)
        self.labels: torch.Tensor | None = None

    @abc.abstractmethod
    def eligible_initial(self, candidates: np.ndarray, missing: np.ndarray) -> np.ndarray:
        """The ``candidates`` (dataset indices) the initial pool may be drawn from."""

    @abc.abstractmethod
    def to(self, device: torch.device, initial: np.ndarray, missing: np.ndarray) -> None:
        """Put the oracle's annotations (and the test labels) on ``device``."""

    @abc.abstractmethod
    def build_model(self, channels: int, hw: tuple[int, int]) -> nn.Module:
        """An untrained task network for ``channels``-channel ``hw`` images."""

    @abc.abstractmethod
    def fit(
        self,
        model: nn.Module,
        x: torch.Tensor,
        idx: torch.Tensor,
        normalize: Normalizer,
        augment_mode: str,
        r: int,
        progress: ProgressFn | None,
        select: Selection | None,
        epochs: int,
    ) -> FitReport:
        """Train ``model`` for ``epochs`` epochs on the images ``x[idx]`` with the oracle's
        annotations in round ``r`` (every random draw from ``(seed, "task", r)``), keeping the
        weights ``select`` picks."""

    @abc.abstractmethod
    def score(self, model: nn.Module, x: torch.Tensor, idx: np.ndarray, normalize: Normalizer):
        """The task's metric (accuracy or mIoU) of ``model`` on the images ``x[idx]`` against
        the oracle's annotations: eval mode, no augmentation; NaN for no images."""

    @abc.abstractmethod
    def confidence(
        self, model: nn.Module, x: torch.Tensor, idx: torch.Tensor, normalize: Normalizer
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``model``'s confidence on the images ``x[idx]``: per image its top-class
        probability, ``float [U]`` (segmentation: the mean over pixels), and its predicted class
        ``int64 [U]`` (``None`` where an image has no one class)."""

    @property
    def fit_threshold(self) -> float:
        """The training-set metric below which the task network counts as underfit:
        ``config.fit_threshold``, else the task's :attr:`default_fit_threshold`."""
        if self.config.fit_threshold is not None:
            return self.config.fit_threshold
        return self.default_fit_threshold

    @abc.abstractmethod
    def evaluate(
        self,
        model: nn.Module,
        x_train: torch.Tensor,
        val: np.ndarray,
        x_test: torch.Tensor,
        normalize: Normalizer,
    ) -> tuple[float, float, dict[str, float]]:
        """``(validation metric, test metric, further metrics)``; validation against the oracle's
        annotations of ``x_train[val]`` (NaN when ``val`` is empty), test against the truth."""

    @abc.abstractmethod
    def class_counts(self, indices: np.ndarray) -> dict[str, int]:
        """Class name -> how many of ``indices`` hold the class."""

    @abc.abstractmethod
    def class_rates(self, indices: np.ndarray) -> dict[str, float]:
        """Class name -> share of the query ``indices`` in the class (sums to 1; ``{}`` for
        none)."""

    @abc.abstractmethod
    def missing_share(self, indices: np.ndarray, missing: np.ndarray) -> float:
        """Share of the query ``indices`` in the ``missing`` classes (NaN when either is empty)."""

    def n_noisy(self, indices: np.ndarray) -> int:
        """How many of ``indices`` the oracle labelled wrongly."""
        return 0

    def class_ids(self, names: list[str], field: str) -> np.ndarray:
        """Sorted unique class ids of ``names`` (class names, or their indices as strings).

        Raises:
            ConfigError: ``<field>: ...`` for a name that is neither.
        """
        ids = []
        for name in names:
            if name in self.classes:
                ids.append(self.classes.index(name))
            elif name.lstrip("-").isdigit() and 0 <= int(name) < self.num_classes:
                ids.append(int(name))
            else:
                raise ConfigError(
                    f"{field}: no class {name!r} in {self.config.dataset}; classes are "
                    f"{self.classes} (or their indices 0..{self.num_classes - 1})"
                )
        return np.array(sorted(set(ids)), dtype=np.int64)

    def oracle_labels(self, indices: np.ndarray) -> list[int] | None:
        """What a checkpoint stores to detect a changed oracle (``None``: nothing)."""
        return None

    def train(
        self,
        x: torch.Tensor,
        labeled: np.ndarray,
        val: np.ndarray,
        r: int,
        normalize: Normalizer,
        augment_mode: str,
        progress: ProgressFn | None,
    ) -> tuple[nn.Module, TaskFit]:
        """Train a fresh task network on ``D_L = x[labeled]`` for round ``r``; with
        ``model_selection=best_val`` and a validation set ``x[val]``, keep the checked epoch
        with the best validation metric.

        With ``epochs_task_max`` set (the fit-until-fitted mode), a network whose training-set
        metric (:meth:`score` on ``D_L``) is below :attr:`fit_threshold` is trained again from
        scratch with twice the epochs, up to ``epochs_task_max``; the round keeps the first
        network that fits, else the one trained for ``epochs_task_max`` epochs. Every training
        draws from ``(seed, round)`` alone, so the kept network is the one a round with
        ``epochs_task`` set to its epochs trains.
        """
        cfg = self.config
        args = (x, labeled, val, r, normalize, augment_mode, progress)
        if cfg.epochs_task_max is None:
            model, report = self._train_once(*args, cfg.epochs_task)
            return model, TaskFit(report, cfg.epochs_task)
        attempts = 0
        for epochs in epoch_schedule(cfg.epochs_task, cfg.epochs_task_max):
            model, report = self._train_once(*args, epochs)
            attempts += 1
            metric = self.score(model, x, labeled, normalize)
            if not metric < self.fit_threshold:  # it fits (NaN, no labeled image: nothing to judge)
                break
        return model, TaskFit(report, epochs, attempts, metric)

    def _train_once(
        self,
        x: torch.Tensor,
        labeled: np.ndarray,
        val: np.ndarray,
        r: int,
        normalize: Normalizer,
        augment_mode: str,
        progress: ProgressFn | None,
        epochs: int,
    ) -> tuple[nn.Module, FitReport]:
        """A fresh task network for round ``r``, trained for ``epochs`` epochs."""
        cfg = self.config
        with seeded_init(cfg.seed, "task-init", r):
            model = self.build_model(x.shape[1], tuple(x.shape[2:]))
        model.to(x.device, memory_format=normalize.memory_format)
        idx = torch.as_tensor(labeled, device=x.device)
        select = None
        if cfg.model_selection == "best_val" and len(val):
            select = Selection(lambda: -self.score(model, x, val, normalize), cfg.val_checks)
        report = self.fit(model, x, idx, normalize, augment_mode, r, progress, select, epochs)
        return model, report


TASKS: Registry[type[Task]] = Registry("task", "dataset")


def classification_network(
    config: Config, num_classes: int, channels: int, hw: tuple[int, int]
) -> TaskNet:
    """The task network of ``config`` for ``num_classes`` classes of ``channels x hw`` images
    (``config.task_backbone``, ``config.dropout``), freshly initialised."""
    backbone = build_backbone(config.task_backbone, channels, hw)
    return TaskNet(backbone, num_classes, dropout=config.dropout)


@TASKS.register("classification")
class ClassificationTask(Task):
    """One class per image; the metric is accuracy; ``label_noise`` flips labels (the oracle)."""

    kind = "classification"
    metric = "accuracy"
    default_fit_threshold = 0.99

    def __init__(self, config: Config, data: ImageData):
        super().__init__(config, data)
        for field in ("task_backbone", "scoring_backbone"):
            BACKBONES.get(getattr(config, field), field)
        self.y_true = data.y_train.numpy().astype(np.int64)
        self.oracle = Oracle(self.y_true, self.num_classes, config.label_noise, config.seed)

    def eligible_initial(self, candidates: np.ndarray, missing: np.ndarray) -> np.ndarray:
        return candidates[~np.isin(self.y_true[candidates], missing)]

    def to(self, device: torch.device, initial: np.ndarray, missing: np.ndarray) -> None:
        self.labels = torch.as_tensor(self.oracle.labels, device=device)
        self.y_test = self.data.y_test.to(device)

    def build_model(self, channels: int, hw: tuple[int, int]) -> nn.Module:
        return classification_network(self.config, self.num_classes, channels, hw)

    def fit(self, model, x, idx, normalize, augment_mode, r, progress, select, epochs) -> FitReport:
        cfg = self.config
        spec = dataclasses.replace(FitSpec.from_config(cfg, "task"), epochs=epochs)
        gen = torch_generator(x.device, cfg.seed, "task", r)
        randaugment = (cfg.randaugment_ops, cfg.randaugment_magnitude)
        with dropout_generator(model, torch_generator(x.device, cfg.seed, "task-dropout", r)):
            return train_classifier(
                model,
                x[idx],
                self.labels[idx],
                normalize,
                spec,
                augment_mode,
                gen,
                progress,
                select,
                randaugment,
            )

    def score(self, model, x, idx, normalize) -> float:
        idx = torch.as_tensor(idx, device=x.device)
        logits = predict_logits(model, x[idx], normalize, self.config.eval_batch_size)
        return accuracy(logits, self.labels[idx])

    def confidence(self, model, x, idx, normalize):
        logits = predict_logits(model, x[idx], normalize, self.config.eval_batch_size)
        return torch.softmax(logits.float(), 1).max(1)

    def evaluate(self, model, x_train, val, x_test, normalize):
        bs = self.config.eval_batch_size
        test = math.nan
        if len(x_test):
            test = accuracy(predict_logits(model, x_test, normalize, bs), self.y_test)
        if len(val) == 0:
            return math.nan, test, {}
        return self.score(model, x_train, val, normalize), test, {}

    def class_counts(self, indices: np.ndarray) -> dict[str, int]:
        counts = np.bincount(self.y_true[indices], minlength=self.num_classes)
        return {name: int(c) for name, c in zip(self.classes, counts, strict=True)}

    def class_rates(self, indices: np.ndarray) -> dict[str, float]:
        if len(indices) == 0:
            return {}
        return {name: c / len(indices) for name, c in self.class_counts(indices).items()}

    def missing_share(self, indices: np.ndarray, missing: np.ndarray) -> float:
        if len(indices) == 0 or len(missing) == 0:
            return math.nan
        return float(np.isin(self.y_true[indices], missing).mean())

    def n_noisy(self, indices: np.ndarray) -> int:
        return int((self.oracle(indices) != self.y_true[indices]).sum())

    def oracle_labels(self, indices: np.ndarray) -> list[int] | None:
        return self.oracle(indices).tolist()


@TASKS.register("segmentation")
class SegmentationTask(Task):
    """A mask per image; the metric is mIoU over the dataset's classes (the ignore label 255
    left out), with per-class IoU and pixel accuracy beside it.

    ``missing_classes`` removes those classes' annotations from the initial pool's masks (set to
    the ignore label; Appendix A), not whole images; later queries are annotated in full. Class
    rates are shares of a query's labeled pixels. The oracle is exact: ``label_noise`` is refused.
    """

    kind = "segmentation"
    metric = "mIoU"

    def __init__(self, config: Config, data: ImageData):
        super().__init__(config, data)
        for field in ("task_backbone", "scoring_backbone"):
            name = getattr(config, field)
            if name not in SEG_ENCODERS:
                raise ConfigError(
                    f"{field}: {data.name} is a segmentation dataset; its networks need a "
                    f"segmentation encoder, one of {SEG_ENCODERS.names()}, got {name!r}"
                )
        if config.label_noise > 0:
            raise ConfigError(
                "label_noise: simulated label noise is for classification; segmentation masks "
                f"are annotated exactly, so it must be 0 for {data.name}, got {config.label_noise}"
            )
        if config.randaugment_ops > 0:
            raise ConfigError(
                "randaugment_ops: RandAugment moves images without their masks; it is for "
                f"classification, so it must be 0 for {data.name}, got {config.randaugment_ops}"
            )

    def eligible_initial(self, candidates: np.ndarray, missing: np.ndarray) -> np.ndarray:
        return candidates  # missing classes lose their pixels, not their images

    def to(self, device: torch.device, initial: np.ndarray, missing: np.ndarray) -> None:
        labels = self.data.m_train.to(device)
        if len(missing):
            idx = torch.as_tensor(initial, device=device)
            labels[idx] = drop_classes(labels[idx], torch.as_tensor(missing, device=device))
        self.labels = labels
        self.m_test = self.data.m_test.to(device)

    def build_model(self, channels: int, hw: tuple[int, int]) -> nn.Module:
        return build_segnet(self.config.task_backbone, channels, self.num_classes)

    def fit(self, model, x, idx, normalize, augment_mode, r, progress, select, epochs) -> FitReport:
        spec = dataclasses.replace(FitSpec.from_config(self.config, "task"), epochs=epochs)
        seed = self.config.seed
        gen = torch_generator(x.device, seed, "task", r)
        masks = self.labels[idx]
        with dropout_generator(model, torch_generator(x.device, seed, "task-dropout", r)):
            return train_segmenter(
                model, x[idx], masks, normalize, spec, augment_mode, gen, progress, select
            )

    def score(self, model, x, idx, normalize) -> float:
        if len(idx) == 0:
            return math.nan
        idx = torch.as_tensor(idx, device=x.device)
        conf = segmentation_confusion(
            model,
            x[idx],
            self.labels[idx],
            normalize,
            self.config.eval_batch_size,
            self.num_classes,
        )
        return iou(conf)[0]

    def confidence(self, model, x, idx, normalize):
        def reduce(logits: torch.Tensor) -> torch.Tensor:
            return torch.softmax(logits, 1).amax(1).flatten(1).mean(1)

        bs = self.config.eval_batch_size
        return predict_reduced(model, x[idx], normalize, bs, reduce), None

    def evaluate(self, model, x_train, val, x_test, normalize):
        bs = self.config.eval_batch_size
        test = segmentation_confusion(model, x_test, self.m_test, normalize, bs, self.num_classes)
        test_miou, per_class = iou(test)
        extras = {
            "test_miou": test_miou,
            "test_pixel_accuracy": float(test.diag().sum() / test.sum().clamp_min(1)),
            **{f"test_iou/{c}": float(v) for c, v in zip(self.classes, per_class, strict=True)},
        }
        if len(val) == 0:
            return math.nan, test_miou, extras
        extras["val_miou"] = self.score(model, x_train, val, normalize)
        return extras["val_miou"], test_miou, extras

    def _masks(self, indices: np.ndarray) -> torch.Tensor:
        return self.labels[torch.as_tensor(indices, device=self.labels.device)]

    def class_counts(self, indices: np.ndarray) -> dict[str, int]:
        """Class name -> images of ``indices`` with at least one annotated pixel of the class."""
        present = torch.zeros(self.num_classes, dtype=torch.long, device=self.labels.device)
        for masks in self._masks(indices).split(256):  # bounded [256, 256] one-hots
            onehot = torch.zeros(len(masks), 256, dtype=torch.bool, device=masks.device)
            onehot.scatter_(1, masks.flatten(1).long(), True)
            present += onehot[:, : self.num_classes].sum(0)
        return {name: int(c) for name, c in zip(self.classes, present.tolist(), strict=True)}

    def class_rates(self, indices: np.ndarray) -> dict[str, float]:
        if len(indices) == 0:
            return {}
        shares = pixel_shares(self._masks(indices), self.num_classes).tolist()
        return dict(zip(self.classes, shares, strict=True))

    def missing_share(self, indices: np.ndarray, missing: np.ndarray) -> float:
        if len(indices) == 0 or len(missing) == 0:
            return math.nan
        return float(pixel_shares(self._masks(indices), self.num_classes)[missing].sum())


@torch.inference_mode()
def segmentation_confusion(
    model: SegNet,
    x: torch.Tensor,
    masks: torch.Tensor,
    normalize: Normalizer,
    batch_size: int,
    num_classes: int,
) -> torch.Tensor:
    """``[C, C]`` pixel confusion of ``model`` on ``x uint8 [N, C, H, W]`` against ``masks
    uint8 [N, H, W]`` (ignore label left out), accumulated chunk by chunk."""
    model.eval()
    total = torch.zeros(num_classes, num_classes, dtype=torch.long, device=x.device)
    n = eval_chunk(model, x, batch_size)
    for xs, ms in zip(x.split(n), masks.split(n), strict=True):
        total += confusion_matrix(model(normalize(xs)).argmax(1), ms, num_classes, IGNORE)
    return total


def build_task(config: Config, data: ImageData) -> Task:
    """The :class:`Task` for ``data`` (segmentation when it has masks)."""
    return TASKS.get(data.task)(config, data)
