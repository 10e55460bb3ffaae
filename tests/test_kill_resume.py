"""Crash anywhere, lose nothing, get the same bytes: every long stage, on a tiny config.

For gradcam, refine, train_teacher, train_student and synth_vqa:

- same seed: two uninterrupted runs in two fresh folders write identical outputs (file contents, not times);
- kill: the stage's own command (``python -m pipelines.<stage> --set ...``) is killed with SIGKILL at a fixed
  point, found without timing: the test polls the output folder every 10 ms and kills the process as soon as a
  given file appears (a pseudo-label chunk, a checkpoint, ...). The same command is then rerun (killed again at
  the next point, or run to completion in this process) and the outputs must equal the uninterrupted run's, bit
  for bit. The kill points of one stage are chained: each rerun resumes what the previous kill left.

Points marked "may finish" (finalize, the teacher's last checkpoint, the VQA model directory's save) are followed
by only a few milliseconds of work: the kill lands there or a little after (even after the process ended); the
outputs must be the same either way. The student has one point (last.pt of epoch 1): after the last epoch's
last.pt only metrics.json is left to write, too short a window to kill in without timing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from gcdr_tools.synthgaze import SynthConfig, generate_synthgaze

REPO = Path(__file__).resolve().parents[1]
POLL_S = 0.01
TIMEOUT_S = 300  # generous: the machine is shared
SKIP = {"provenance.json", ".lock"}  # times, process ids, commands
WORDS = "what is the person in green bounding box looking at ? cup ball book phone".split()
PERSONS = 330  # gradcam writes chunks of 128 persons, refine of 256: 3 and 2 chunks


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the killed processes (OMP_NUM_THREADS=1): the same arithmetic
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------------------------------------ helpers
def sets(*overrides: str) -> list[str]:
    return [item for override in overrides for item in ("--set", override)]


def stage_env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    env.pop("WORLD_SIZE", None)
    return env


def kill_when(stage: str, argv: list[str], ready: Callable[[], bool], point: str, log: Path,
              may_finish: bool = False) -> None:
    """Run ``python -m pipelines.<stage> argv`` and SIGKILL it as soon as ``ready()`` (polled every 10 ms)."""
    with open(log, "ab") as out:
        out.write(f"\n=== {stage}: kill when {point}\n".encode())
        out.flush()
        process = subprocess.Popen([sys.executable, "-m", f"pipelines.{stage}", *argv], cwd=REPO, env=stage_env(),
                                   stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + TIMEOUT_S
            while not ready():
                if process.poll() is not None:
                    break
                if time.monotonic() > deadline:
                    break
                time.sleep(POLL_S)
            reached = ready()
            if reached:
                process.send_signal(signal.SIGKILL)
        finally:
            if process.poll() is None:
                process.kill()
            process.wait()
        out.write(f"=== exit code {process.returncode}\n".encode())
    tail = log.read_text(errors="replace")[-3000:]
    if may_finish and process.returncode == 0:
        return  # the few milliseconds after the point were over before the kill: nothing left to interrupt
    assert reached, f"{stage} never reached '{point}' (exit code {process.returncode}):\n{tail}"
    assert process.returncode == -signal.SIGKILL, f"{stage} ended before the kill at '{point}':\n{tail}"


def replaced(path: Path, times: int) -> Callable[[], bool]:
    """ready(): ``path`` (an existing file, replaced atomically, e.g. a checkpoint every epoch) has been replaced
    ``times`` times since this was called (each time another inode)."""
    last, changes = [path.stat().st_ino], [0]

    def ready() -> bool:
        inode = path.stat().st_ino
        if inode != last[0]:
            last[0] = inode
            changes[0] += 1
        return changes[0] >= times

    return ready


def folder_bytes(folder: Path) -> dict[str, bytes]:
    """Every file of ``folder`` (recursively) but provenance.json and .lock, by relative path."""
    return {path.relative_to(folder).as_posix(): path.read_bytes() for path in sorted(folder.rglob("*"))
            if path.is_file() and path.name not in SKIP}


def assert_same_files(expected: dict[str, bytes], found: dict[str, bytes], what: str) -> None:
    only_expected, only_found = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    assert not only_expected and not only_found, (f"{what}: files only in the uninterrupted run {only_expected}, "
                                                  f"only in the other {only_found}")
    differ = [name for name in expected if expected[name] != found[name]]
    assert not differ, f"{what}: these files differ: {differ}"


def tensors_of(state, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor of a nested state (dicts / lists), by path."""
    found: dict[str, torch.Tensor] = {}
    if isinstance(state, torch.Tensor):
        found[prefix] = state
    elif isinstance(state, dict):
        for key, value in state.items():
            found.update(tensors_of(value, f"{prefix}/{key}"))
    elif isinstance(state, (list, tuple)):
        for i, value in enumerate(state):
            found.update(tensors_of(value, f"{prefix}/{i}"))
    return found


def assert_same_tensors(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor], what: str) -> None:
    assert sorted(expected) == sorted(found), f"{what}: other tensors"
    differ = [k for k in expected if expected[k].dtype != found[k].dtype or expected[k].shape != found[k].shape
              or not torch.equal(expected[k], found[k])]
    assert not differ, f"{what}: these tensors differ: {differ[:10]}"


def run_main(stage: str, argv: list[str]):
    import importlib

    return importlib.import_module(f"pipelines.{stage}").main(argv)


# ------------------------------------------------------------------------------------------------ data
@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    """330 SynthGaze persons (4 test persons) and a 5 % split, shared by every run (the same image paths)."""
    from gcdr.data.splits import make_split

    root = tmp_path_factory.mktemp("kill_data")
    generate_synthgaze(root / "data", SynthConfig(train_persons=PERSONS, test_persons=4, test_annotators=3,
                                                  image_size=(96, 96)), progress=False)
    make_split(root / "data" / "train_annotations_release_persondet.txt", 0.05, 0, root / "splits" / "seed0")
    base = [f"dataset.root={root / 'data'}", f"split.dir={root / 'splits'}", "split.ratio=0.05"]
    return {"root": root, "base": base}


# ------------------------------------------------------------------------------------------------ gradcam
@pytest.fixture(scope="module")
def gradcam(data, tmp_path_factory) -> dict:
    from gcdr.vqa.blip import build_blip_from_scratch

    root = tmp_path_factory.mktemp("kill_gradcam")
    model, processor = build_blip_from_scratch(WORDS, image_size=32, patch_size=8, hidden_size=16, vision_layers=1,
                                               text_layers=2, heads=2, seed=0)
    model.save_pretrained(root / "blip")
    processor.save_pretrained(root / "blip")

    def argv(out: Path) -> list[str]:
        return ["--no-progress", *sets(*data["base"], f"out_root={out}", f"vqa.model={root / 'blip'}",
                                        "vqa.device=cpu", "gradcam.split=train", "gradcam.batch_size=16",
                                        "gradcam.previews=4")]

    run_main("gradcam", argv(root / "once"))
    folder = root / "once" / "pseudo" / "gradcam-train"
    return {"root": root, "argv": argv, "bytes": folder_bytes(folder)}


def test_gradcam_same_seed_same_bytes(gradcam):
    reference = gradcam["bytes"]
    assert sum(name.startswith("parts/") and name.endswith(".csv") for name in reference) == 3
    assert "summary.json" in reference and sum(name.startswith("previews/") for name in reference) == 4
    run_main("gradcam", gradcam["argv"](gradcam["root"] / "again"))
    assert_same_files(reference, folder_bytes(gradcam["root"] / "again" / "pseudo" / "gradcam-train"), "gradcam")


def test_gradcam_killed_and_rerun_gives_the_same_bytes(gradcam):
    out = gradcam["root"] / "killed"
    folder, argv, log = out / "pseudo" / "gradcam-train", gradcam["argv"](out), gradcam["root"] / "killed.log"
    parts = folder / "parts"
    kill_when("gradcam", argv, lambda: (parts / "rank0-00000.csv").exists(), "the first chunk is written", log)
    assert not (folder / "summary.json").exists() and not (parts / "rank0-00001.csv").exists()
    kill_when("gradcam", argv, lambda: (parts / "rank0-00001.csv").exists(), "the second chunk is written", log)
    assert not (folder / "summary.json").exists() and not (parts / "rank0-00002.csv").exists()
    kill_when("gradcam", argv, lambda: (folder / "manifest.csv").exists(), "finalize writes manifest.csv", log,
              may_finish=True)
    summary = run_main("gradcam", argv)
    assert summary["persons"] == PERSONS and summary["missing"] == 0
    assert json.loads((folder / "provenance.json").read_text())["status"] == "done"
    assert_same_files(gradcam["bytes"], folder_bytes(folder), "gradcam killed + rerun")


# ------------------------------------------------------------------------------------------------ refine
@pytest.fixture(scope="module")
def refine(data, tmp_path_factory) -> dict:
    """A final Grad-CAM-like folder for the 330 train persons (one map all zero) and a small random teacher."""
    from gcdr.config import load_config
    from gcdr.data import load_samples
    from gcdr.provenance import write_provenance
    from gcdr.pseudolabels import PseudoLabel, PseudoLabelWriter, finalize
    from gcdr.teacher.model import GazeDiffusionTeacher, TeacherModelConfig

    root = tmp_path_factory.mktemp("kill_refine")
    samples = load_samples(load_config(None, data["base"]), "train")
    assert len(samples) == PERSONS
    source = root / "gradcam"
    rng = np.random.default_rng(0)
    write_provenance(source, "gradcam", {}, status="running", split="train")
    with PseudoLabelWriter(source, chunk_size=100) as writer:
        for i, sample in enumerate(samples):
            raw = np.zeros((4, 4), np.float32) if i == 1 else rng.random((4, 4)).astype(np.float32)
            heatmap = np.kron(raw, np.ones((16, 16), np.float32))
            heatmap = (heatmap - heatmap.min()) / max(float(heatmap.max() - heatmap.min()), 1e-12)
            writer.add(PseudoLabel(sample.sample_id, heatmap, valid=i != 1, invalid_reason="all_zero" if i == 1 else "",
                                   raw_map=raw, answer="cup", key_noun="cup", image_path=sample.image_path,
                                   head_box_xyxy_px=sample.head_box_xyxy_px))
    summary = finalize(source, expected_ids=[s.sample_id for s in samples])
    write_provenance(source, "gradcam", {}, status="done", split="train", summary=summary)

    torch.manual_seed(0)
    teacher = GazeDiffusionTeacher(TeacherModelConfig(encoder_width=4, unet_channels=4, channel_mult=(1, 1, 1),
                                                      layers_per_block=1, attention_levels=(), attention_head_dim=4,
                                                      norm_groups=2))
    with torch.no_grad():
        for parameter in teacher.parameters():  # the zero-initialised layers get values: the output depends on all
            if not parameter.any():
                parameter.normal_(0.0, 0.05)
    teacher.save_pretrained(root / "teacher")

    def argv(out: Path) -> list[str]:
        return ["--no-progress", "--src", str(source), "--out", str(out),
                *sets(*data["base"], f"out_root={root / 'unused'}", f"refine.teacher={root / 'teacher'}",
                      "refine.split=train", "refine.method=gcdr", "refine.T=250", "refine.steps=2",
                      "refine.batch_size=16", "refine.previews=3", "refine.cpu_threads=1")]

    run_main("refine", argv(root / "once"))
    return {"root": root, "argv": argv, "bytes": folder_bytes(root / "once")}


def test_refine_same_seed_same_bytes(refine):
    reference = refine["bytes"]
    assert sum(name.startswith("parts/") and name.endswith(".csv") for name in reference) == 2
    assert sum(name.startswith("previews/") for name in reference) == 3
    run_main("refine", refine["argv"](refine["root"] / "again"))
    assert_same_files(reference, folder_bytes(refine["root"] / "again"), "refine")


def test_refine_killed_and_rerun_gives_the_same_bytes(refine):
    folder, log = refine["root"] / "killed", refine["root"] / "killed.log"
    argv = refine["argv"](folder)
    kill_when("refine", argv, lambda: (folder / "parts" / "rank0-00000.csv").exists(), "the first chunk is written",
              log)
    assert not (folder / "summary.json").exists() and not (folder / "parts" / "rank0-00001.csv").exists()
    kill_when("refine", argv, lambda: (folder / "manifest.csv").exists(), "finalize writes manifest.csv", log,
              may_finish=True)
    summary = run_main("refine", argv)
    assert summary["persons"] == PERSONS and summary["invalid_reasons"] == {"all_zero": 1}
    assert_same_files(refine["bytes"], folder_bytes(folder), "refine killed + rerun")


# ------------------------------------------------------------------------------------------------ train_teacher
TINY_TEACHER = ["teacher.encoder_width=4", "teacher.unet_channels=4", "teacher.channel_mult=[1,1,1]",
                "teacher.layers_per_block=1", "teacher.attention_levels=[]", "teacher.attention_head_dim=4",
                "teacher.norm_groups=2", "teacher.batch_size=4", "teacher.epochs=3", "teacher.train_steps=null",
                "teacher.val_split='none'",
                "teacher.lr=0.001", "teacher.cpu_threads=1"]


def teacher_state(out: Path) -> tuple[dict[str, bytes], dict[str, torch.Tensor], tuple]:
    """(model/ files, checkpoint tensors: model + optimiser, (epoch, step))."""
    checkpoint = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)
    tensors = tensors_of({"model": checkpoint["model"], "optimizer": checkpoint["optimizer"]["state"]})
    return folder_bytes(out / "model"), tensors, (checkpoint["epoch"], checkpoint["global_step"])


@pytest.fixture(scope="module")
def teacher(data, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("kill_teacher")

    def argv(out: Path) -> list[str]:
        return ["--no-progress", "--out", str(out), *sets(*data["base"], f"out_root={root / 'unused'}",
                                                          *TINY_TEACHER)]

    run_main("train_teacher", argv(root / "once"))
    return {"root": root, "argv": argv, "state": teacher_state(root / "once")}


def test_train_teacher_same_seed_same_weights(teacher):
    files, tensors, progress = teacher["state"]
    assert "model.safetensors" in files and progress[0] == 3
    run_main("train_teacher", teacher["argv"](teacher["root"] / "again"))
    again = teacher_state(teacher["root"] / "again")
    assert_same_files(files, again[0], "teacher model/")
    assert_same_tensors(tensors, again[1], "teacher checkpoint")
    assert again[2] == progress


def test_train_teacher_killed_and_rerun_gives_the_same_weights(teacher):
    out, log = teacher["root"] / "killed", teacher["root"] / "killed.log"
    argv = teacher["argv"](out)
    checkpoint = out / "checkpoint.pt"
    kill_when("train_teacher", argv, checkpoint.exists, "the epoch-1 checkpoint is written", log)
    assert torch.load(checkpoint, map_location="cpu", weights_only=True)["epoch"] == 1
    kill_when("train_teacher", argv, replaced(checkpoint, 2), "the last (epoch-3) checkpoint is written", log,
              may_finish=True)
    run_main("train_teacher", argv)
    assert json.loads((out / "provenance.json").read_text())["status"] == "done"
    files, tensors, progress = teacher["state"]
    resumed = teacher_state(out)
    assert_same_files(files, resumed[0], "teacher model/ killed + rerun")
    assert_same_tensors(tensors, resumed[1], "teacher checkpoint killed + rerun")
    assert resumed[2] == progress


# ------------------------------------------------------------------------------------------------ train_student
TINY_STUDENT = ["student.model=vat", "student.vat_width=4", "student.vat_input_size=64",
                "student.vat_zero_init_output=false", "student.epochs=4", "student.steps_per_epoch=2",
                "student.batch_size=8", "student.labeled_per_batch=2", "student.num_workers=0",
                "student.cpu_threads=1", "student.seed=0"]


def student_state(out: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(last.pt tensors: state dict + optimiser, metrics.json's final row without its times)."""
    checkpoint = torch.load(out / "last.pt", map_location="cpu", weights_only=False)
    tensors = tensors_of({"state_dict": checkpoint["state_dict"], "optimizer": checkpoint["optimizer"]["state"]})
    final = json.loads((out / "metrics.json").read_text())["final"]
    return tensors, {k: v for k, v in final.items() if not k.endswith("_time_s")}


@pytest.fixture(scope="module")
def student(data, tmp_path_factory) -> dict:
    """Pseudo-labels (a Gaussian near the ground truth) for every unlabeled person, in a final folder."""
    from gcdr.config import load_config
    from gcdr.data import load_samples
    from gcdr.data.transforms import gaussian_heatmap_64
    from gcdr.pseudolabels import PseudoLabel, PseudoLabelWriter, finalize

    root = tmp_path_factory.mktemp("kill_student")
    unlabeled = load_samples(load_config(None, data["base"]), "unlabeled")
    pseudo = root / "pseudo"
    with PseudoLabelWriter(pseudo) as writer:
        for sample in unlabeled:
            point = sample.gaze_points_norm.mean(0) if len(sample.gaze_points_norm) else (0.5, 0.5)
            writer.add(PseudoLabel(sample.sample_id, gaussian_heatmap_64(np.clip(np.add(point, 0.03), 0, 1))))
    finalize(pseudo, expected_ids=[s.sample_id for s in unlabeled])

    def argv(out: Path) -> list[str]:
        return ["--pseudo", str(pseudo), "--out", str(out),
                *sets(*data["base"], f"out_root={root / 'unused'}", *TINY_STUDENT)]

    run_main("train_student", argv(root / "once"))
    return {"root": root, "argv": argv, "state": student_state(root / "once")}


def test_train_student_same_seed_same_weights(student):
    tensors, final = student["state"]
    assert final["epoch"] == 4 and np.isfinite(final["auc"])
    run_main("train_student", student["argv"](student["root"] / "again"))
    again = student_state(student["root"] / "again")
    assert_same_tensors(tensors, again[0], "student last.pt")
    assert again[1] == final


def test_train_student_killed_and_rerun_gives_the_same_weights(student):
    out, log = student["root"] / "killed", student["root"] / "killed.log"
    argv = student["argv"](out)
    last = out / "last.pt"
    kill_when("train_student", argv, last.exists, "last.pt of epoch 1 is written", log)
    assert torch.load(last, map_location="cpu", weights_only=False)["epoch"] == 1
    assert not (out / "metrics.json").exists()
    run_main("train_student", argv)
    tensors, final = student["state"]
    resumed = student_state(out)
    assert_same_tensors(tensors, resumed[0], "student last.pt killed + rerun")
    assert resumed[1] == final


# ------------------------------------------------------------------------------------------------ synth_vqa
TINY_VQA = ["vqa.device=cpu", "synth.image_size=[96,96]", "synth_vqa.persons=24", "synth_vqa.epochs=4",
            "synth_vqa.batch_size=8", "synth_vqa.image_size=32", "synth_vqa.hidden_size=16",
            "synth_vqa.vision_layers=1", "synth_vqa.heads=2"]


def vqa_files(model_dir: Path) -> dict[str, bytes]:
    return {name: (model_dir / name).read_bytes() for name in ("model.safetensors", "config.json")}


@pytest.fixture(scope="module")
def synth_vqa(data, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("kill_synth_vqa")

    def argv(run: Path) -> list[str]:
        return ["--no-progress", *sets(*data["base"], f"out_root={run}", f"vqa.model={run / 'model'}", *TINY_VQA)]

    run_main("synth_vqa", argv(root / "once"))
    return {"root": root, "argv": argv, "files": vqa_files(root / "once" / "model")}


def test_synth_vqa_same_seed_same_bytes(synth_vqa):
    run_main("synth_vqa", synth_vqa["argv"](synth_vqa["root"] / "again"))
    assert_same_files(synth_vqa["files"], vqa_files(synth_vqa["root"] / "again" / "model"), "synth_vqa model")


def test_synth_vqa_killed_and_rerun_gives_the_same_bytes(synth_vqa):
    run, log = synth_vqa["root"] / "killed", synth_vqa["root"] / "killed.log"
    argv = synth_vqa["argv"](run)
    kill_when("synth_vqa", argv, (run / "synth_vqa_data").exists, "its SynthGaze draw is written (training)", log)
    assert not (run / "model" / "model.safetensors").exists()  # model/ is claimed (request.json), not written
    kill_when("synth_vqa", argv, (run / ".model.tmp").exists, "the model directory is being saved", log,
              may_finish=True)
    run_main("synth_vqa", argv)
    assert_same_files(synth_vqa["files"], vqa_files(run / "model"), "synth_vqa model killed + rerun")
    assert not (run / ".model.tmp").exists() and not (run / ".model.old").exists()
