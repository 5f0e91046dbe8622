"""mrl.eval.stages: stage times, and plain lines instead of bars off a terminal."""

import logging

from mrl.eval.stages import StageClock


def test_stages_are_timed_and_steps_logged_off_a_terminal(caplog):
    clock = StageClock(interactive=False)
    with caplog.at_level(logging.INFO, logger="mrl.eval"):
        with clock.stage("heads"):
            pass
        seen = list(clock.steps([2, 4], "retrieval", unit="dim"))
    assert seen == [2, 4]
    assert set(clock.seconds) == {"heads", "retrieval"}
    assert set(clock.rounded()) == {"heads", "retrieval", "retrieval/2", "retrieval/4"}
    lines = [r.getMessage() for r in caplog.records]
    assert "retrieval ..." in lines
    assert any(line.startswith("retrieval: dim 4 (2/2) in ") for line in lines)
    assert any(line.startswith("retrieval done in ") for line in lines)


def test_a_terminal_gets_a_bar_and_the_same_times():
    clock = StageClock(interactive=True)
    assert list(clock.steps(["a", "b"], "robustness", unit="set")) == ["a", "b"]
    assert set(clock.step_seconds["robustness"]) == {"a", "b"}
