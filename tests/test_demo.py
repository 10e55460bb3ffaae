"""`make demo` smoke version: every stage connects, on a few SynthGaze persons with one epoch each."""

import subprocess
import sys

import pandas as pd


def test_demo_smoke_runs_every_stage_and_writes_the_results(tmp_path):
    out = tmp_path / "smoke"
    cmd = [sys.executable, "-m", "pipelines.demo", "--smoke", "--set", f"out_root={out}",
           "--set", f"dataset.root={out / 'data'}", "--set", f"split.dir={out / 'data' / 'splits'}",
           "--set", f"vqa.model={out / 'synth_vqa'}"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    demo = out / "demo"
    for name in ("results.md", "results.csv", "results.png", "demo.log", "provenance.json"):
        assert (demo / name).is_file(), name
    table = pd.read_csv(demo / "results.csv")
    quality = table[table["table"].str.startswith("pseudo-label quality")]
    students = table[table["table"].str.startswith("student")]
    assert list(quality["pseudo-labels"]) == ["Grad-CAM (raw)", "argmax Gaussian", "GCDR T=100", "GCDR T=250",
                                              "GCDR T=400"]
    assert len(students) == 5 and students["auc"].between(0, 1).all()
    moved = dict(zip(quality["pseudo-labels"], quality["moved"]))
    assert moved["Grad-CAM (raw)"] == 0 and all(0 <= v <= 1.5 for v in moved.values())
    assert "Pseudo-label quality" in result.stdout and "Students on the test split" in result.stdout

    assert len(list((demo / "logs").glob("*.log"))) == 16  # one log per stage

    # a second run reuses every finished stage: nothing that was written is written again
    finished = [*out.glob("students/*/metrics.json"), *out.glob("pseudo/*/parts/*"),
                *out.glob("teacher/*/model/*"), out / "synth_vqa" / "model.safetensors"]
    assert len(finished) >= 5 + 6 * 2 + 1
    before = {path: path.stat().st_mtime_ns for path in finished}
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert {path: path.stat().st_mtime_ns for path in finished} == before
