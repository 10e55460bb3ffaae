"""The Make targets: a variable a target does not use is refused; IMAGES / HEADS become a head-box dataset."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
VAT_DEMO = ROOT.parent / "shared" / "data" / "vat-demo"
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def make_dry(*args):
    return subprocess.run(["make", "-n", "--no-print-directory", *args], cwd=ROOT, capture_output=True, text=True)


def test_a_variable_the_target_does_not_use_is_an_error_naming_it():
    result = make_dry("gradcam", "T=100")
    assert result.returncode != 0
    assert "make gradcam does not use T; it takes" in result.stderr
    result = make_dry("refine", "T=100", "STEPS=2")
    assert result.returncode == 0 and "--set refine.T=100" in result.stdout and "--set refine.steps=2" in result.stdout


def test_own_images_become_a_head_box_dataset_with_its_own_output_folder():
    heads = [VAT_DEMO / "person1.txt", VAT_DEMO / "person2.txt"]
    result = make_dry("gradcam", f"IMAGES={VAT_DEMO / 'frames'}", "HEADS=" + " ".join(map(str, heads)))
    assert result.returncode == 0, result.stderr
    command = result.stdout.strip().splitlines()[-1]
    assert "--set dataset.format=headboxes" in command
    assert f"--set dataset.heads=[{heads[0]},{heads[1]}]" in command
    assert "--set out_root=outputs/images/frames" in command
    elsewhere = make_dry("gradcam", f"IMAGES={VAT_DEMO / 'frames'}", f"HEADS={heads[0]}", "OUT=elsewhere").stdout
    assert "--set out_root=elsewhere" in elsewhere and "outputs/images" not in elsewhere
