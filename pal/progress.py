"""Progress bars of the command line: rounds, and the epochs of the current training phase.

Shared by ``pal run`` (:mod:`pal.cli`) and ``pal label next`` (:mod:`pal.labeling.cli`).
"""

from __future__ import annotations

from tqdm.auto import tqdm


class ProgressBars:
    """Two tqdm bars: rounds (outer) and the epochs of the current training phase (inner)."""

    def __init__(self, rounds: int, enabled: bool = True):
        self.enabled = enabled
        self.rounds = tqdm(total=rounds, desc="rounds", unit="round", disable=not enabled)
        self.epochs = tqdm(total=1, desc="epochs", unit="epoch", leave=False, disable=not enabled)
        self.phase = None

    def epoch(self, phase: str, epoch: int, epochs: int) -> None:
        if phase != self.phase or epoch == 1:
            self.phase = phase
            self.epochs.reset(total=epochs)
            self.epochs.set_description(f"{phase} epochs")
        self.epochs.update(1)

    def round_done(self, record, experiment) -> None:
        self.rounds.update(1)
        metric = "test_acc" if experiment.task.metric == "accuracy" else "test_miou"
        self.rounds.set_postfix(
            {"labeled": record.n_labeled, metric: f"{record.test_accuracy:.4f}"}, refresh=False
        )

    def close(self) -> None:
        self.epochs.close()
        self.rounds.close()
