"""The model that comes out of a labeling project: each round's task network, saved, and its
predictions on the whole pool.

Every ``pal label next`` that trains a task network saves it in its round folder as
``model.pt`` (:data:`MODEL_FILE`): the weights, the config that rebuilds the network
(:func:`pal.tasks.classification_network`), the class names, the input's channels and size and
the normaliser's channel statistics, plain values and tensors that ``torch.load(...,
weights_only=True)`` reads. :func:`load_model` rebuilds it as a :class:`SavedModel`, whose
:meth:`SavedModel.predict` takes ``uint8 [N, C, H, W]`` images and gives class probabilities; it
needs nothing of the project, so the file can leave with the labels (``pal label export``).

:func:`predict` gives the class and probability of every pool image (labeled or not) with the
latest round's model, or round ``R``'s; ``pal label predict`` writes them as a CSV and as Label
Studio tasks with the predictions as pre-annotations (``--tasks``).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pal.config import Config
from pal.labeling.project import Project, ProjectError, csv_text, write_atomic

MODEL_FILE = "model.pt"
"""A round's saved task network, in its round folder."""

FORMAT = 1
"""The layout of :data:`MODEL_FILE`; a file of another layout is refused, not misread."""


class NoModelError(ProjectError):
    """No round of the project saved a task network yet (a label-free first round has none)."""


@dataclasses.dataclass(frozen=True)
class Prediction:
    """One pool image's prediction.

    Attributes:
        path: the image's manifest path.
        label: the predicted class name.
        probability: its softmax probability.
    """

    path: str
    label: str
    probability: float


@dataclasses.dataclass
class SavedModel:
    """A round's task network, rebuilt from :data:`MODEL_FILE`.

    Attributes:
        network: the task network, in eval mode on the CPU (``[B, C, H, W] -> logits [B, K]``).
        config: the config it was trained with.
        classes: the class names, index = the logit's position.
        mean / std: the normaliser's channel statistics, ``float [1, C, 1, 1]``.
        round: the round that trained it.
        version: its name in Label Studio's predictions (``pal-<strategy>-round-NNN``).
        precision / channels_last: how the round ran it (``bf16`` autocast and channels-last
            images where ``precision: auto`` chose them), so its predictions are the round's.
    """

    network: nn.Module
    config: Config
    classes: list[str]
    mean: torch.Tensor
    std: torch.Tensor
    round: int
    version: str
    precision: str = "fp32"
    channels_last: bool = False

    @torch.no_grad()
    def predict(self, images: torch.Tensor | np.ndarray, batch_size: int = 256) -> torch.Tensor:
        """Class probabilities ``float [N, K]`` of ``images`` (``uint8 [N, C, H, W]``, the
        channels and size the network was trained on)."""
        x = torch.as_tensor(images)
        want = tuple(self.mean.shape[1:2])
        if x.ndim != 4 or x.dtype != torch.uint8 or tuple(x.shape[1:2]) != want:
            raise ValueError(
                f"images: expected uint8 [N, {want[0]}, H, W], got {x.dtype} {list(x.shape)}"
            )
        self.network.eval()
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        out = []
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            for c in x.split(batch_size):
                images = ((c.float() / 255.0 - self.mean) / self.std).contiguous(memory_format=fmt)
                out.append(torch.softmax(self.network(images).float(), 1))
        return torch.cat(out) if out else torch.empty(0, len(self.classes))


def model_bytes(
    network: nn.Module,
    config: Config,
    classes: list[str],
    mean: torch.Tensor,
    std: torch.Tensor,
    image_shape: tuple[int, int, int],
    round: int,
    version: str,
    precision: str = "fp32",
    channels_last: bool = False,
) -> bytes:
    """The content of :data:`MODEL_FILE` for ``network`` (``image_shape``: ``(C, H, W)``;
    ``precision`` and ``channels_last``: how the round ran it)."""
    import io

    state = {
        k: v.detach().to("cpu", torch.float32) if v.is_floating_point() else v.cpu()
        for k, v in network.state_dict().items()
    }
    payload = {
        "format": FORMAT,
        "state_dict": state,
        "config": config.to_dict(),
        "classes": list(classes),
        "mean": mean.detach().float().cpu().reshape(-1).tolist(),
        "std": std.detach().float().cpu().reshape(-1).tolist(),
        "image_shape": [int(s) for s in image_shape],
        "round": int(round),
        "version": version,
        "precision": precision,
        "channels_last": bool(channels_last),
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    return buf.getvalue()


def load_model_file(path: str | os.PathLike) -> SavedModel:
    """Rebuild the task network saved at ``path`` (a round's :data:`MODEL_FILE`).

    Raises:
        ProjectError: not a file of this layout.
    """
    from pal.tasks import classification_network

    try:
        payload: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError) as err:
        raise ProjectError(f"model: cannot read {str(path)!r} ({err})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ProjectError(f"model: {str(path)!r} is not a pal task network (format {FORMAT})")
    config = Config.from_dict(payload["config"])
    channels, height, width = payload["image_shape"]
    classes = list(payload["classes"])
    network = classification_network(config, len(classes), channels, (height, width))
    network.load_state_dict(payload["state_dict"])
    network.eval()
    shape = (1, channels, 1, 1)
    return SavedModel(
        network,
        config,
        classes,
        torch.tensor(payload["mean"]).view(shape),
        torch.tensor(payload["std"]).view(shape),
        int(payload["round"]),
        str(payload["version"]),
        str(payload.get("precision", "fp32")),
        bool(payload.get("channels_last", False)),
    )


def model_round(project: Project, round: int | None = None) -> int | None:
    """The round whose model :func:`load_model` takes: ``round`` (checked), else the latest
    round that saved one; ``None`` with none saved."""
    if round is not None:
        if round not in project.rounds():
            raise ProjectError(f"round: no round {round} (rounds: {project.rounds()})")
        return round if (project.round_dir(round) / MODEL_FILE).is_file() else None
    saved = [r for r in project.rounds() if (project.round_dir(r) / MODEL_FILE).is_file()]
    return saved[-1] if saved else None


def model_version(project: Project, round: int | None = None) -> str | None:
    """The Label Studio ``model_version`` of the model :func:`load_model` takes (``None``:
    none saved yet)."""
    r = model_round(project, round)
    return None if r is None else version_of(project.round_record(r).strategy, r)


def version_of(strategy: str, round: int) -> str:
    """The Label Studio ``model_version`` of round ``round``'s predictions."""
    return f"pal-{strategy}-round-{round:03d}"


def load_model(project: Project, round: int | None = None) -> SavedModel:
    """Round ``round``'s task network (default: the latest round's that saved one).

    Raises:
        NoModelError: no round saved one (or round ``round`` did not: a label-free round).
    """
    r = model_round(project, round)
    if r is None:
        which = f"round {round} trained" if round is not None else "no round trained"
        raise NoModelError(
            f"model: {which} no task network yet (a label-free first batch has none); label the "
            "batch, import the labels and run pal label next"
        )
    return load_model_file(project.round_dir(r) / MODEL_FILE)


def predict(
    project: Project, paths: list[str] | None = None, round: int | None = None
) -> list[Prediction]:
    """The predicted class and probability of ``paths`` (manifest paths of pool images;
    default: every pool image, in manifest order) by :func:`load_model`'s network.

    Raises:
        NoModelError: no model saved yet.
        ProjectError: a path that is not a pool image of the project.
    """
    from pal.labeling.pool import load_pool

    model = load_model(project, round)
    data, pool = load_pool(project)
    ids = data.ids_train
    if paths is None:
        rows = np.sort(pool.indices)
    else:
        index = {ids[i]: int(i) for i in pool.indices}
        unknown = [p for p in paths if p not in index]
        if unknown:
            raise ProjectError(
                f"paths: {len(unknown)} are not pool images of the project, e.g. {unknown[:3]}"
            )
        rows = np.asarray([index[p] for p in paths], dtype=np.int64)
    probs = model.predict(data.x_train[torch.as_tensor(rows)]) if len(rows) else None
    if probs is None:
        return []
    p, label = probs.max(1)
    classes = model.classes
    return [
        Prediction(ids[i], classes[k], float(q))
        for i, k, q in zip(rows.tolist(), label.tolist(), p.tolist(), strict=True)
    ]


def write_predictions(
    project: Project,
    out: str | os.PathLike,
    round: int | None = None,
    tasks: str | os.PathLike | None = None,
    image_url=None,
) -> tuple[int, str]:
    """Write :func:`predict` of every pool image as a CSV at ``out`` (``path, predicted,
    probability, label``: the ledger's label where there is one) and, with ``tasks``, as Label
    Studio tasks with the predictions as pre-annotations. Returns ``(rows, model_version)``."""
    from pal.labeling import studio

    predictions = predict(project, round=round)  # the model and the pool, loaded once
    version = model_version(project, round)
    labels = project.labels()
    rows = [
        {
            "path": p.path,
            "predicted": p.label,
            "probability": round_(p.probability),
            "label": labels.get(p.path, ""),
        }
        for p in predictions
    ]
    write_atomic(Path(out), csv_text(("path", "predicted", "probability", "label"), rows))
    if tasks is not None:
        import json

        url = image_url or (lambda path: path)
        items = [
            {
                "path": p.path,
                "image": url(p.path),
                "predicted": p.label,
                "probability": round_(p.probability),
            }
            for p in predictions
        ]
        text = json.dumps(studio.tasks_json(items, version), indent=1) + "\n"
        write_atomic(Path(tasks), text)
    return len(rows), version


def round_(v: float) -> float:
    return round(float(v), 6)
