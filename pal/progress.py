"""Progress on the command line: bars of rounds and epochs, and the one line of a labeling round.

``pal run`` (:mod:`pal.cli`) draws :class:`ProgressBars`; ``pal label next``
(:mod:`pal.labeling.cli`) one line, :class:`RoundDisplay`.
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


PHASES = {
    "load": "reading the pool",
    "train": "training the task network",
    "task": "task network",
    "query": "choosing the batch",
    "scoring": "scoring network",
    "finetune": "fine-tune",
    "vaal": "VAAL",
    "predict": "predicting the pool",
    "write": "writing the round",
}
"""What a phase of ``pal label next`` is called on the console (unknown phases: their name)."""

TICK = 1.0
"""Seconds between two refreshes of the line on a terminal."""

QUIET_LOG = 10.0
"""Seconds between two lines when the output is not a terminal (a log file, CI)."""


class RoundDisplay:
    """One line for a whole ``pal label next``: the phase, its epochs, the time so far and an
    estimate of the whole (the last round's seconds, when there was one), refreshed every
    :data:`TICK` seconds by a thread, so nothing is silent while a phase computes without
    epochs (scoring the pool, fine-tunes, predictions). On a terminal the line is rewritten
    in place; elsewhere a line is printed per phase and every :data:`QUIET_LOG` seconds.

    ``stage(name)`` starts a phase; ``epoch(phase, epoch, epochs)`` is the training loops'
    :data:`pal.training.ProgressFn`. With ``state_file`` each change of phase is also written
    there (JSON: round, phase, started, estimate), which ``pal label status`` shows while the
    command runs.
    """

    def __init__(
        self,
        title: str,
        estimate: float | None = None,
        enabled: bool = True,
        stream=None,
        state_file=None,
    ):
        import sys
        import threading
        import time

        self.title, self.estimate, self.enabled = title, estimate, enabled
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.state_file = state_file
        self.start = time.monotonic()
        self.phase, self.detail = "", ""
        self._clock = time.monotonic
        self._last_line = 0.0
        self._width = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None
        if enabled:
            self._thread = threading.Thread(target=self._tick, name="pal-progress", daemon=True)
            self._thread.start()

    def stage(self, name: str) -> None:
        with self._lock:
            self.phase, self.detail = PHASES.get(name, name), ""
            self._render(force=True)
        self._write_state()

    def epoch(self, phase: str, epoch: int, epochs: int) -> None:
        with self._lock:
            self.detail = f"{PHASES.get(phase, phase)} epoch {epoch}/{epochs}"
            self._render()

    def line(self) -> str:
        """The current line: ``title: phase, detail, elapsed (of about estimate)``."""
        elapsed = self._clock() - self.start
        parts = [p for p in (self.phase, self.detail) if p]
        clock = _clock(elapsed)
        if self.estimate:
            left = self.estimate - elapsed
            clock += f" (about {_clock(left)} left)" if left > 0 else " (longer than the last)"
        return f"{self.title}: {', '.join(parts) or 'starting'} · {clock}"

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.enabled and self.tty and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
        if self.state_file is not None:
            from pathlib import Path

            Path(self.state_file).unlink(missing_ok=True)

    def _tick(self) -> None:
        while not self._stop.wait(TICK):
            with self._lock:
                self._render()

    def _render(self, force: bool = False) -> None:
        if not self.enabled:
            return
        now = self._clock()
        text = self.line()
        if self.tty:
            pad = max(self._width - len(text), 0)
            self.stream.write("\r" + text + " " * pad)
            self._width = len(text)
        elif force or now - self._last_line >= QUIET_LOG:
            self.stream.write(text + "\n")
        else:
            return
        self._last_line = now
        self.stream.flush()

    def _write_state(self) -> None:
        if self.state_file is None:
            return
        import json
        import time

        from pal.labeling.project import write_atomic

        state = {
            "title": self.title,
            "phase": self.phase,
            "started": time.time() - (self._clock() - self.start),
            "estimate": self.estimate,
        }
        write_atomic(self.state_file, json.dumps(state) + "\n")


def _clock(seconds: float) -> str:
    seconds = max(int(seconds), 0)
    return f"{seconds // 60}:{seconds % 60:02d}"
