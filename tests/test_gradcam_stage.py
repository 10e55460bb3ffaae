"""`make gradcam` owns its folder (gcdr.stage_output): one request per folder, refusals in one line, --restart,
nothing redone once done, and a run without a single valid map is an error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gcdr.locking import run_stage
from gcdr.pseudolabels import PseudoLabelFolder
from gcdr.vqa.blip import build_blip_from_scratch
from gcdr_tools.synthgaze import SynthConfig, generate_synthgaze
from pipelines import gradcam

WORDS = "what is the person in green bounding box looking at ? cup ball book phone".split()


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    """A tiny BLIP, two SynthGaze datasets (5 and 3 train persons) and one output root."""
    root = tmp_path_factory.mktemp("gradcam_stage")
    model, processor = build_blip_from_scratch(WORDS, image_size=48, patch_size=8, hidden_size=32,
                                               vision_layers=2, text_layers=2, heads=2, seed=0)
    model.save_pretrained(root / "vqa")
    processor.save_pretrained(root / "vqa")
    for name, persons in (("data_a", 5), ("data_b", 3)):
        generate_synthgaze(root / name, SynthConfig(train_persons=persons, test_persons=1, image_size=(96, 128)),
                           progress=False)
    return {"root": root, "folder": root / "out" / "pseudo" / "gradcam-train"}


def argv(setup: dict, data: str = "data_a", *extra: str) -> list[str]:
    root = setup["root"]
    overrides = [f"dataset.root={root / data}", f"out_root={root / 'out'}", f"vqa.model={root / 'vqa'}",
                 "vqa.device=cpu", "gradcam.split=train", "gradcam.batch_size=4", "gradcam.previews=1"]
    return ["--no-progress", *(item for o in overrides for item in ("--set", o)), *extra]


def written(folder: Path) -> dict:
    """path -> (mtime, bytes) of every file of ``folder`` but the lock (which records its latest holder)."""
    return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".lock"}


def refused(args: list[str], capsys) -> str:
    """Run the stage as `python -m pipelines.gradcam` does; it must exit 1 with one line; returns that line."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run_stage(gradcam.main, args)
    assert exit_info.value.code == 1
    lines = capsys.readouterr().err.strip().splitlines()  # (transformers may print its loading bar first)
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], lines
    return errors[0]


def test_a_done_folder_is_left_alone_and_another_request_refused(setup, capsys):
    folder = setup["folder"]
    summary = gradcam.main(argv(setup))
    assert summary["persons"] == 5 and summary["missing"] == 0
    request = json.loads((folder / "request.json").read_text())
    assert request["stage"] == "gradcam" and request["request"]["persons"] == 5
    assert len(request["request"]["vqa"]["model_sha256"]) == 64
    before = written(folder)

    assert gradcam.main(argv(setup)) == summary  # the same request, done: nothing to do
    assert gradcam.main(argv(setup, "data_a", "--set", "gradcam.previews=3")) == summary  # previews: bookkeeping
    assert written(folder) == before

    line = refused(argv(setup, "data_b"), capsys)  # another dataset's persons into the same folder
    assert str(folder) in line and "persons: 5 -> 3" in line and "--restart" in line
    line = refused(argv(setup, "data_a", "--set", "vqa.question=what is the person looking at?"), capsys)
    assert "vqa.question" in line
    line = refused(argv(setup, "data_a", "--set", "gradcam.layer=-1"), capsys)
    assert "gradcam.layer: -2 -> -1" in line
    assert written(folder) == before and len(PseudoLabelFolder(folder)) == 5


def test_restart_replaces_the_folder(setup):
    folder = setup["folder"]
    gradcam.main(argv(setup))
    summary = gradcam.main(argv(setup, "data_b", "--restart"))
    assert summary["persons"] == 3 and summary["missing"] == 0
    assert len(PseudoLabelFolder(folder)) == 3
    assert json.loads((folder / "request.json").read_text())["request"]["persons"] == 3
    assert json.loads((folder / "provenance.json").read_text())["status"] == "done"


def test_a_retrained_model_is_another_request(setup, capsys):
    root = setup["root"]
    for seed in (0, 1):  # a stand-in VQA retrained into the same directory
        model, processor = build_blip_from_scratch(WORDS, image_size=48, patch_size=8, hidden_size=32,
                                                   vision_layers=2, text_layers=2, heads=2, seed=seed)
        model.save_pretrained(root / "vqa_retrained")
        processor.save_pretrained(root / "vqa_retrained")
        args = argv(setup, "data_b", "--set", f"out_root={root / 'retrained_out'}",
                    "--set", f"vqa.model={root / 'vqa_retrained'}")
        if seed == 0:
            gradcam.main(args)
    assert "vqa.model_sha256" in refused(args, capsys)


def test_no_valid_person_is_an_error(setup, capsys):
    root = setup["root"]
    generate_synthgaze(root / "data_broken", SynthConfig(train_persons=3, test_persons=1, image_size=(96, 128)),
                       progress=False)
    for image in (root / "data_broken").rglob("*.jpg"):
        image.write_bytes(b"not an image")
    args = argv(setup, "data_broken", "--set", f"out_root={root / 'broken_out'}", "--set", "dataset.on_error=skip")
    line = refused(args, capsys)
    assert "none of the 3 persons" in line and "image_error" in line
    folder = root / "broken_out" / "pseudo" / "gradcam-train"
    assert json.loads((folder / "provenance.json").read_text())["status"] == "running"  # never taken as done
    assert "none of the 3 persons" in refused(args, capsys)  # and a rerun says so again
