"""Optuna as the searcher of a Ray Tune sweep that resumes after its driver died at any moment.

Tune saves its experiment state (the trials, their checkpoints, and this searcher's state) on a
timer, while the Optuna study in its RDB storage records each trial's start (``ask``) and end
(``tell``) at once. A driver killed between the two leaves a study ahead of the state that
``pal sweep --resume`` restores:

- a trial the study has finished, which Tune runs again from its last saved checkpoint and
  reports again (rounds after that checkpoint, or past its last round only its end);
- a trial the study has ``RUNNING`` that Tune's saved state never knew (asked for, then killed).

:class:`ResumableOptunaSearch` reconciles the two when Tune restores it: a trial the study has
finished takes no new report and no second end (the study keeps what it recorded first), and a
running trial that no Tune trial knows is closed ``FAIL`` (it never ran). Its sampler comes back
with Tune's saved state, random state included, so it asks for that trial's parameters again
(a trial that reused the closed one's parameters would leave the next draw repeating them). So
each Tune trial has one study trial, finished once with the value Tune reported first. Every
study trial carries its Tune trial id in the user attribute :data:`TRIAL_ID_ATTR` (the
``ray.trial_id`` tag of its MLflow run, :data:`pal.vocabulary.TRIAL_ID_TAG`).

Part of :mod:`pal.sweeps`, the only package of ``pal`` that imports Ray Tune; this module imports
it (and Optuna) on import: :func:`pal.sweeps.tuning.searcher_for` imports the module when a sweep
runs, and Tune when it unpickles a sweep's searcher.

Test hook: with :data:`HANG_ENV` set in the driver's environment, the driver stops at the moments
a kill leaves the study ahead of Tune (see :func:`_hang_at`). Tests only; never set in a sweep.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

logger = logging.getLogger(__name__)

TRIAL_ID_ATTR = "ray_trial_id"
"""The user attribute of a study trial that names its Ray Tune trial."""

HANG_ENV = "PAL_TEST_HANG_AT_TRIAL_EDGES"
"""Test hook: a folder for :func:`_hang_at`'s markers; the driver stops at every trial's edges."""


class ResumableOptunaSearch(OptunaSearch):
    """Ray Tune's ``OptunaSearch`` whose study may be ahead of Tune's restored state (see the
    module): reports and ends of trials the study has finished are ignored, and running study
    trials that no Tune trial knows are closed ``FAIL``.

    Takes ``OptunaSearch``'s arguments.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._recorded: dict[str, Any] = {}  # Tune trial id -> values the study finished it with

    # ------------------------------------------------------------------ Tune's searcher API
    def suggest(self, trial_id: str) -> dict | None:
        """A new trial's parameters from Optuna, its Tune trial id kept in the study trial."""
        new = trial_id not in self._ot_trials
        params = super().suggest(trial_id)
        if new:
            ot_trial = self._ot_trials[trial_id]
            ot_trial.set_user_attr(TRIAL_ID_ATTR, trial_id)
            _hang_at("asked", ot_trial.number)
        return params

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        """A round's result, unless the study has the trial finished already."""
        if not self._known(trial_id) or trial_id in self._completed_trials:
            logger.debug("trial %s: result not recorded (finished, or unknown)", trial_id)
            return
        super().on_trial_result(trial_id, result)

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        """A trial's end, told to Optuna once: a trial finished before a resume keeps its value."""
        if not self._known(trial_id):
            return
        if trial_id in self._completed_trials:
            value = (result or {}).get(self.metric) if isinstance(self.metric, str) else None
            before = self._recorded.get(trial_id)
            if value is not None and before is not None and [value] != before:
                logger.warning(
                    "trial %s ended again with %s=%s; the study keeps %s",
                    trial_id,
                    self.metric,
                    value,
                    before,
                )
            return
        super().on_trial_complete(trial_id, result=result, error=error)
        _hang_at("ended", self._ot_trials[trial_id].number)

    def restore(self, checkpoint_path: str) -> None:
        """Tune's saved state of this searcher, then :meth:`reconcile` with the study."""
        super().restore(checkpoint_path)
        self.reconcile()

    # ------------------------------------------------------------------ the study
    def reconcile(self) -> None:
        """Bring the restored state up to the study's: the trials it has finished count as
        complete, and its running trials that no Tune trial has are closed ``FAIL``."""
        trials = self._ot_study.get_trials(deepcopy=False)
        by_number = {t.number: t for t in trials}
        claimed = set()
        for trial_id, ot_trial in self._ot_trials.items():
            claimed.add(ot_trial.number)
            frozen = by_number.get(ot_trial.number)
            if frozen is not None and frozen.state.is_finished():
                self._completed_trials.add(trial_id)
                self._recorded[trial_id] = frozen.values
        for frozen in trials:
            if frozen.state == TrialState.RUNNING and frozen.number not in claimed:
                self._ot_study.tell(frozen.number, state=TrialState.FAIL)
                logger.info(
                    "Optuna trial %d (Tune trial %s) closed FAIL: asked for, never run",
                    frozen.number,
                    frozen.user_attrs.get(TRIAL_ID_ATTR),
                )

    def _known(self, trial_id: str) -> bool:
        """Whether ``trial_id`` has a study trial; looked up by :data:`TRIAL_ID_ATTR` when this
        searcher's saved state is older than Tune's."""
        if trial_id in self._ot_trials:
            return True
        for frozen in self._ot_study.get_trials(deepcopy=False):
            if frozen.user_attrs.get(TRIAL_ID_ATTR) == trial_id:
                self._ot_trials[trial_id] = optuna.trial.Trial(self._ot_study, frozen._trial_id)
                if frozen.state.is_finished():
                    self._completed_trials.add(trial_id)
                    self._recorded[trial_id] = frozen.values
                return True
        logger.warning(
            "trial %s has no trial in the Optuna study; its results are not told", trial_id
        )
        return False


def _hang_at(edge: str, number: int) -> None:
    """Test hook: with :data:`HANG_ENV` naming a folder, the driver stops (sleeps ten minutes) at
    a trial's edge, when the study has recorded it and Tune has not saved its state since, so
    that a test can kill the driver there. Edges: ``"ended"``, right after the study recorded a
    trial's end, and ``"asked"``, right after Optuna gave out a new trial (not the first, which
    comes before Tune's first saved state). Once per trial and edge: the marker file
    ``<edge>-<trial number>`` in the folder (holding the driver's pid) says the driver stopped
    there, and a driver resumed in the same environment goes on to the next edge."""
    folder = os.environ.get(HANG_ENV)
    if not folder or (edge == "asked" and number == 0):
        return
    try:
        fd = os.open(os.path.join(folder, f"{edge}-{number}"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.write(fd, f"{os.getpid()}\n".encode())
    os.close(fd)
    time.sleep(600)
