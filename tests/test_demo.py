"""`make demo` smoke version: every stage connects, the same seed gives the same numbers, a rerun redoes nothing."""

import subprocess
import sys

import pandas as pd


def smoke(out):
    cmd = [sys.executable, "-m", "pipelines.demo", "--smoke", "--set", f"out_root={out}",
           "--set", f"dataset.root={out / 'data'}", "--set", f"split.dir={out / 'data' / 'splits'}",
           "--set", f"vqa.model={out / 'synth_vqa'}"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def test_demo_smoke_runs_every_stage_is_reproducible_and_resumes(tmp_path):
    first = smoke(tmp_path / "a")
    demo = tmp_path / "a" / "demo"
    for name in ("results.md", "students.csv", "quality.csv", "results.png", "demo.log", "provenance.json"):
        assert (demo / name).is_file(), name
    students = pd.read_csv(demo / "students.csv")
    assert sorted(students["source"]) == sorted(["labeled only", "+ Grad-CAM (raw)", "+ argmax", "+ GCDR T=250",
                                                 "full supervision"])
    assert students["auc"].between(0, 1).all() and (students["avg_l2"] > 0).all()
    quality = pd.read_csv(demo / "quality.csv")
    assert sorted(quality["source"]) == ["GCDR T=250", "Grad-CAM (raw)", "argmax"]
    assert "Pseudo-label quality" in first.stdout and "avg_l2 on the test split" in first.stdout

    # same seed, other folder: the same numbers to the last digit (nothing reads the clock)
    smoke(tmp_path / "b")
    assert pd.read_csv(tmp_path / "b" / "demo" / "students.csv").equals(students)
    assert pd.read_csv(tmp_path / "b" / "demo" / "quality.csv").equals(quality)

    # a second run reuses every finished stage: nothing that was written is written again
    out = tmp_path / "a"
    finished = [*out.glob("ablation/**/students/*/metrics.json"), *out.glob("**/pseudo/**/parts/*"),
                *out.glob("ablation/**/teacher/model/*"), out / "synth_vqa" / "model.safetensors"]
    assert len(finished) >= 5 + 4 * 2 + 1
    before = {path: path.stat().st_mtime_ns for path in finished}
    smoke(out)
    assert {path: path.stat().st_mtime_ns for path in finished} == before
