"""`make bench QUICK=1`: every stage's benchmark runs and the report names each figure."""

import json

from pipelines import bench, data_synth


def test_quick_bench_measures_every_stage(tmp_path):
    overrides = ["--set", f"dataset.root={tmp_path / 'data'}", "--set", "synth.train_persons=24",
                 "--set", "synth.test_persons=4", "--set", f"out_root={tmp_path / 'out'}"]
    data_synth.main(["--no-progress", *overrides])
    report = tmp_path / "BENCHMARKS.md"
    results = bench.main(["--quick", "--report", str(report), *overrides])

    gradcam = results["gradcam"]["small"]
    assert gradcam["batched_persons_per_s"] > 0 and gradcam["per_person_persons_per_s"] > 0
    assert set(results["refine"]["configs"]["tiny"]["persons_per_s"]) == {"steps=2", "steps=10"}
    assert results["teacher_training"]["tiny"]["samples_per_s"] > 0
    for variant in ("vat", "gazelle", "gazelle_cached"):
        assert results["students"][variant]["samples_per_s"] > 0
    text = report.read_text()
    for heading in ("Stage 1: Grad-CAM", "Stage 2: refine", "Stage 2: teacher training step", "Stage 3: student training", "feature cache"):
        assert heading in text
    assert json.loads((tmp_path / "out" / "bench" / "bench.json").read_text())["quick"] is True
