"""The one line of ``pal label next``: phases, epochs, an estimate, nothing silent for long."""

from __future__ import annotations

import io
import json
import time

import pal.progress as progress
from pal.progress import RoundDisplay


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_gets_a_line_per_phase_and_a_heartbeat_while_a_phase_is_silent(tmp_path, monkeypatch):
    monkeypatch.setattr(progress, "TICK", 0.05)
    monkeypatch.setattr(progress, "QUIET_LOG", 0.2)
    out, state = io.StringIO(), tmp_path / ".next.json"
    display = RoundDisplay("round 3", estimate=600.0, stream=out, state_file=state)
    display.stage("train")
    display.epoch("task", 1, 30)
    assert json.loads(state.read_text())["phase"] == "training the task network"
    display.stage("query")
    time.sleep(0.7)  # a phase without epochs (scoring the pool): the heartbeat still speaks
    display.close()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("round 3: training the task network")
    assert "about 10:00 left" in lines[0] or "about 9:59 left" in lines[0]
    assert any("choosing the batch" in line for line in lines)
    assert sum("choosing the batch" in line for line in lines) >= 3  # heartbeats, unprompted
    assert not state.exists()  # the state file goes when the command ends


def test_a_terminal_gets_one_line_rewritten_and_cleared_at_the_end():
    out = Terminal()
    display = RoundDisplay("round 2", stream=out)
    display.stage("train")
    display.epoch("task", 5, 30)
    assert "task network epoch 5/30" in display.line()
    display.close()
    text = out.getvalue()
    assert "\n" not in text and text.endswith("\r")  # no stray or unfinished bar left behind


def test_quiet_prints_nothing(tmp_path):
    out = io.StringIO()
    display = RoundDisplay("round 1", enabled=False, stream=out)
    display.stage("load")
    display.close()
    assert out.getvalue() == ""
