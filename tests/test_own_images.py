"""A user's own frames, end to end through the README's Make commands: Grad-CAM, refinement, predictions and a
gallery on the real frames of ../shared/data/vat-demo (two persons per frame), with tiny models built here."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import pandas as pd
import pytest
import torch

from gcdr.pseudolabels import PseudoLabelFolder

ROOT = Path(__file__).resolve().parent.parent
VAT_DEMO = ROOT.parent / "shared" / "data" / "vat-demo"
WORDS = "what is the person in green bounding box looking at ? cup ball book phone pan".split()
pytestmark = [pytest.mark.skipif(not (VAT_DEMO / "person1.txt").is_file(), reason="needs ../shared/data/vat-demo"),
              pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")]


def make(target: str, **variables: str) -> subprocess.CompletedProcess:
    """Run what `make <target> VAR=value ...` runs (its last command, with this interpreter)."""
    dry = subprocess.run(["make", "-n", "--no-print-directory", target,
                          *(f"{name}={value}" for name, value in variables.items())],
                         cwd=ROOT, capture_output=True, text=True)
    assert dry.returncode == 0, dry.stderr
    command = shlex.split(dry.stdout.strip().splitlines()[-1])
    assert command[1:3] == ["-m", f"pipelines.{target.replace('-', '_')}"], command
    env = {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, *command[1:]], cwd=ROOT, capture_output=True, text=True, env=env,
                          timeout=600)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """A tiny BLIP VQA, a tiny diffusion teacher and a tiny VAT student, saved as a user's would be."""
    from gcdr.config import load_config
    from gcdr.students.config import StudentConfig
    from gcdr.students.registry import student_from_config
    from gcdr.teacher.model import GazeDiffusionTeacher
    from gcdr.vqa.blip import build_blip_from_scratch

    root = tmp_path_factory.mktemp("own_models")
    blip, processor = build_blip_from_scratch(WORDS, image_size=32, patch_size=8, hidden_size=16, vision_layers=1,
                                              text_layers=2, heads=2, seed=0)
    blip.save_pretrained(root / "blip")
    processor.save_pretrained(root / "blip")
    tiny_teacher = load_config(None, ["teacher.encoder_width=4", "teacher.unet_channels=4",
                                      "teacher.channel_mult=[1,1,1]", "teacher.layers_per_block=1",
                                      "teacher.attention_levels=[]", "teacher.attention_head_dim=4",
                                      "teacher.norm_groups=2"]).teacher
    torch.manual_seed(0)
    GazeDiffusionTeacher(tiny_teacher.model_config()).save_pretrained(root / "teacher")
    torch.manual_seed(0)
    student_from_config(StudentConfig(model="vat", vat_width=4, vat_input_size=64), root).save_pretrained(
        root / "student")
    return {"blip": root / "blip", "teacher": root / "teacher", "student": root / "student"}


def test_own_frames_give_gradcam_refined_predictions_and_a_gallery(models, tmp_path):
    frames = VAT_DEMO / "frames"
    heads = f"{VAT_DEMO / 'person1.txt'} {VAT_DEMO / 'person2.txt'}"
    own = dict(IMAGES=str(frames), HEADS=heads, OUT=str(tmp_path))

    result = make("gradcam", **own, VQA=str(models["blip"]))
    assert result.returncode == 0, result.stderr[-3000:]
    gradcam = PseudoLabelFolder(tmp_path / "pseudo" / "gradcam-unlabeled")
    expected = {f"{frame.name}|{person}" for frame in frames.glob("*.jpg") for person in ("person1", "person2")}
    assert set(gradcam.sample_ids) == expected  # exactly the frames' persons, nothing of another dataset

    result = make("refine", **own, TEACHER=str(models["teacher"]), T="100")
    assert result.returncode == 0, result.stderr[-3000:]
    refined = PseudoLabelFolder(tmp_path / "pseudo" / "gcdr-T100-unlabeled")
    assert set(refined.sample_ids) == expected

    result = make("predict", CKPT=str(models["student"]), IMAGES=str(frames), HEADS=heads, OUT=str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    predictions = list(tmp_path.glob("**/predictions.csv"))
    assert len(predictions) == 1
    table = pd.read_csv(predictions[0])
    assert set(table["sample_id"]) == expected
    assert table["inout"].between(0, 1).all()  # a probability (VAT emits a logit: the sigmoid is applied)
    picture = cv2.imread(str(predictions[0].parent / "00002575.png"))
    assert picture.shape[1] == 1920 and picture.shape[0] > 1080  # two persons: a row of per-person panels below

    result = make("inspect", **own, PSEUDO=str(tmp_path / "pseudo" / "gradcam-unlabeled"),
                  VS=str(tmp_path / "pseudo" / "gcdr-T100-unlabeled"))
    assert result.returncode == 0, result.stderr[-3000:]
    page = (tmp_path / "pseudo" / "gradcam-unlabeled" / "inspect" / "index.html").read_text()
    assert "person1" in page and "person2" in page

    # the same folder, another request (another VQA question): refused in one line, nothing appended
    result = make("gradcam", **own, VQA=str(models["blip"]), SET="vqa.question=where?")
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 1 and len(errors) == 1 and "vqa.question" in errors[0]
    assert "Traceback" not in result.stderr
    assert len(PseudoLabelFolder(tmp_path / "pseudo" / "gradcam-unlabeled")) == len(expected)
