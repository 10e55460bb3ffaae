"""gcdr.stage_output: one folder, one request; the same request resumes, another is refused in one line."""

from __future__ import annotations

import argparse
import json

import pytest

from gcdr.stage_output import (
    REQUEST_FILE,
    StageOutput,
    StageOutputError,
    add_restart_arg,
    request_differences,
)

REQUEST = {"refine": {"T": 250, "steps": 2}, "persons": "abc"}


def claim(folder, request=REQUEST, restart=False) -> StageOutput:
    return StageOutput(folder, "refine", request, config={"name": "t"}, restart=restart)


def test_first_run_claims_the_folder_and_the_same_request_resumes(tmp_path):
    folder = tmp_path / "out"
    with claim(folder) as output:
        assert not output.done()
        (folder / "part-0.npz").write_bytes(b"partial")
    record = json.loads((folder / REQUEST_FILE).read_text())
    assert record == {"stage": "refine", "request": REQUEST}
    with claim(folder, {"persons": "abc", "refine": {"steps": 2, "T": 250}}) as output:  # key order is no difference
        assert (folder / "part-0.npz").read_bytes() == b"partial"  # resumed, not emptied
        assert not output.done()


def test_done_after_finish_and_provenance_records_the_request(tmp_path):
    folder = tmp_path / "out"
    with claim(folder) as output:
        output.start(persons=3)
        assert not output.done() and output.provenance()["status"] == "running"
        output.finish(summary={"n": 3})
        assert output.done()
    with claim(folder) as output:
        assert output.done() and output.provenance()["summary"] == {"n": 3}
        assert output.provenance()["request"] == REQUEST and output.provenance()["config"] == {"name": "t"}


def test_another_request_is_refused_in_one_line_naming_what_differs(tmp_path):
    folder = tmp_path / "out"
    with claim(folder) as output:
        output.finish()
    with pytest.raises(StageOutputError) as refused:
        with claim(folder, {"refine": {"T": 100, "steps": 2}, "persons": "abc"}):
            pass
    message = str(refused.value)
    assert "\n" not in message and str(folder) in message and "refine.T: 250 -> 100" in message, message
    assert "steps" not in message and "persons" not in message and "--restart" in message
    assert json.loads((folder / REQUEST_FILE).read_text())["request"] == REQUEST  # the folder is untouched


def test_restart_empties_the_folder_and_claims_it_for_the_new_request(tmp_path):
    folder = tmp_path / "out"
    with claim(folder) as output:
        (folder / "sub").mkdir()
        (folder / "sub" / "x.txt").write_text("old")
        output.finish()
    new = {"refine": {"T": 100, "steps": 2}, "persons": "abc"}
    with claim(folder, new, restart=True) as output:
        assert not output.done()
        assert sorted(p.name for p in folder.iterdir()) == [".lock", REQUEST_FILE]
    assert json.loads((folder / REQUEST_FILE).read_text())["request"] == new


def test_a_folder_with_unclaimed_files_is_refused_and_restart_takes_it(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "stranger.txt").write_text("not gcdr's")
    with pytest.raises(StageOutputError, match="holds files that no refine request of gcdr claims.*--restart"):
        with claim(folder):
            pass
    assert (folder / "stranger.txt").is_file()
    with claim(folder, restart=True):
        assert not (folder / "stranger.txt").exists()


def test_a_second_job_on_the_folder_is_refused_and_other_processes_do_not_claim(tmp_path):
    from gcdr.locking import FolderInUseError

    folder = tmp_path / "out"
    with claim(folder):
        with pytest.raises(FolderInUseError):
            with claim(folder):
                pass
    with StageOutput(tmp_path / "other", "refine", REQUEST, main_process=False) as output:
        output.start()
        assert output.finish() == {}
    assert not (tmp_path / "other").exists()


def test_differences_and_the_restart_option():
    assert request_differences({"a": {"b": 1}, "c": 2}, {"a": {"b": 2}, "d": [1]}) == [
        "a.b: 1 -> 2", "c: 2 -> (absent)", "d: (absent) -> [1]"]
    parser = argparse.ArgumentParser()
    add_restart_arg(parser)
    assert parser.parse_args(["--restart"]).restart and not parser.parse_args([]).restart


def test_a_setting_added_later_matches_older_requests_only_at_its_old_behaviour():
    recorded = {"dataset": {"format": "gazefollow"}}
    assert request_differences(recorded, {"dataset": {"format": "gazefollow", "childplay_subset": "all"}}) == []
    assert request_differences(recorded, {"dataset": {"format": "gazefollow", "childplay_subset": "child"}}) == [
        'dataset.childplay_subset: (absent) -> "child"']
    # recorded with the key: compared as any other key
    assert request_differences({"dataset": {"childplay_subset": "child"}}, {"dataset": {"childplay_subset": "all"}}) \
        == ['dataset.childplay_subset: "child" -> "all"']


def test_output_of_an_older_request_is_still_done_when_only_a_later_setting_at_its_old_value_was_added(tmp_path):
    older = {"dataset": {"format": "gazefollow"}}
    with StageOutput(tmp_path / "out", "synth_vqa", older) as output:
        output.start()
        (tmp_path / "out" / "model.bin").write_text("weights")
        output.finish()
    newer = {"dataset": {"format": "gazefollow", "childplay_subset": "all"}}
    with StageOutput(tmp_path / "out", "synth_vqa", newer) as output:
        assert output.done()
    with pytest.raises(StageOutputError, match="childplay_subset"):
        with StageOutput(tmp_path / "out", "synth_vqa", {"dataset": {"format": "gazefollow",
                                                                      "childplay_subset": "child"}}):
            pass
