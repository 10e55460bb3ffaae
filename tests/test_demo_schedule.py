"""The demo's stage scheduler: dependencies respected, stages overlap, a failure stops what depends on it."""

import threading
import time

import pytest

from gcdr_tools.stages import Stage, run_stages


class Recorder:
    def __init__(self, fail: str | None = None, seconds: float = 0.05):
        self.events: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.active = self.max_active = 0
        self.fail, self.seconds = fail, seconds

    def __call__(self, stage: Stage) -> None:
        with self.lock:
            self.events.append(("start", stage.name))
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        time.sleep(self.seconds)
        with self.lock:
            self.active -= 1
            self.events.append(("end", stage.name))
        if stage.name == self.fail:
            raise RuntimeError("boom")

    def index(self, kind: str, name: str) -> int:
        return self.events.index((kind, name))


STAGES = [Stage("a", "m"), Stage("slow", "m", ("a",)), Stage("b", "m", ("a",)), Stage("c", "m", ("b",)),
          Stage("d", "m", ("slow", "c"))]


def test_every_stage_starts_after_the_stages_it_waits_for_and_two_run_at_once():
    recorder = Recorder()
    timings = run_stages(STAGES, recorder, jobs=2)
    assert set(timings) == {"a", "slow", "b", "c", "d"}
    for stage in STAGES:
        for before in stage.after:
            assert recorder.index("end", before) < recorder.index("start", stage.name)
    assert recorder.max_active == 2
    # "slow" and "b" were both ready after "a" and ran side by side
    assert recorder.index("start", "b") < recorder.index("end", "slow")


def test_one_job_runs_the_stages_one_by_one_in_list_order():
    recorder = Recorder(seconds=0.0)
    run_stages(STAGES, recorder, jobs=1)
    assert recorder.max_active == 1
    assert [name for kind, name in recorder.events if kind == "start"] == ["a", "slow", "b", "c", "d"]


def test_a_failed_stage_is_named_and_nothing_that_waits_for_it_starts():
    recorder = Recorder(fail="b")
    with pytest.raises(RuntimeError, match="'b' failed"):
        run_stages(STAGES, recorder, jobs=2)
    started = {name for kind, name in recorder.events if kind == "start"}
    assert "c" not in started and "d" not in started
    assert ("end", "slow") in recorder.events  # the stage already running was allowed to finish


def test_waiting_for_a_later_or_unknown_stage_is_an_error():
    with pytest.raises(ValueError, match="'x' waits for"):
        run_stages([Stage("x", "m", ("y",)), Stage("y", "m")], Recorder(), jobs=2)
