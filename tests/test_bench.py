"""`make bench QUICK=1`: every stage's benchmark runs, the report names each figure, and every row's peak
memory is its own (measured in a fresh process, with nothing leaking in from the parent or earlier rows)."""

import json

import numpy as np
import pytest

from gcdr_tools.bench.memory import peak_rss_mb, run_in_fresh_process
from gcdr_tools.bench.run import all_row_memories

MIB = 2**20


def _hold_mib(mib: int) -> int:
    """Runs in a child: allocate and touch ``mib`` MiB (so it is resident), then free it."""
    buffer = np.ones(mib * MIB, dtype=np.uint8)
    return int(buffer.sum() // MIB)


def _fail(message: str) -> None:
    raise ValueError(message)


def peak_cells(report: str) -> dict[str, list[str]]:
    """{table header line: the cells of its "peak MB ..." columns, row by row} for every table in a report."""
    tables: dict[str, list[str]] = {}
    lines = report.splitlines()
    for i, line in enumerate(lines[:-1]):
        if line.startswith("|") and lines[i + 1].startswith("|---"):
            header = [cell.strip() for cell in line.strip("|").split("|")]
            peak_columns = [k for k, name in enumerate(header) if name.startswith("peak MB")]
            tables[line] = []
            for row in lines[i + 2:]:
                if not row.startswith("|"):
                    break
                cells = [cell.strip() for cell in row.strip("|").split("|")]
                tables[line] += [cells[k] for k in peak_columns]
    return tables


def test_quick_bench_measures_every_stage(tmp_path):
    from pipelines import bench, data_synth

    overrides = ["--set", f"dataset.root={tmp_path / 'data'}", "--set", "synth.train_persons=24",
                 "--set", "synth.test_persons=4", "--set", f"out_root={tmp_path / 'out'}",
                 # no stand-in VQA is trained here: the Gaze-LLE rows run on a random tiny DINOv2
                 "--set", "student.gazelle_backbone=tiny-dinov2", "--set", "student.gazelle_input_size=224"]
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
    assert "Peak memory:" in text and "fresh process" in text
    assert json.loads((tmp_path / "out" / "bench" / "bench.json").read_text())["quick"] is True

    # every stage table has peak-memory columns, and every row a positive figure in each:
    # Grad-CAM batched + per-person, refine STEPS=2 + STEPS=10, teacher step, 3 student variants
    tables = peak_cells(text)
    assert len(tables) == 4 and all(tables.values()), tables
    cells = [cell for column in tables.values() for cell in column]
    assert len(cells) == 8
    assert all(float(cell.split()[0]) > 0 for cell in cells), cells

    memories = all_row_memories(results)
    assert len(memories) == 8
    for memory in memories:
        assert memory["measures"] in ("process_peak_rss", "cuda_max_memory_allocated")
        assert memory["peak_mb"] > memory["start_mb"] >= 0 and memory["stage_mb"] > 0
    if results["start_method"] == "forkserver":  # every row starts from the same fresh fork, not after another
        starts = [m["start_mb"] for m in memories]
        assert max(starts) - min(starts) < 32, starts


def test_peak_memory_is_measured_per_fresh_process():
    parent_buffer = np.ones(512 * MIB, dtype=np.uint8)  # the parent's memory must not show up in the children
    assert peak_rss_mb() > 512

    big_results, big = run_in_fresh_process(_hold_mib, (256,))
    small_results, small = run_in_fresh_process(_hold_mib, (8,), repeats=2)

    assert big_results == [256] and small_results == [8, 8]
    assert big["measures"] == small["measures"] == "process_peak_rss"
    # the child's own 256 MiB are seen over its start (a child that inherits the parent's peak sees nothing) ...
    assert 240 < big["stage_mb"] < 256 + 96, big
    # ... and do not leak into the next measurement (one process for both would report the big peak again)
    assert small["stage_mb"] < 64, small
    assert small["peak_mb"] < big["peak_mb"] - 200, (small, big)
    assert parent_buffer[-1] == 1


def test_fresh_process_raises_the_child_error():
    with pytest.raises(ValueError, match="boom"):
        run_in_fresh_process(_fail, ("boom",))


def test_unknown_stage_is_one_line_and_the_teacher_row_times_the_training_step(monkeypatch):
    from gcdr.teacher import training
    from gcdr_tools.bench.run import BenchError, run_bench
    from gcdr_tools.bench.teacher import benchmark_training_step

    with pytest.raises(BenchError, match="unknown --stages.*choose from"):
        run_bench({}, ["teacher", "nope"])
    calls = []
    step = training.training_step
    monkeypatch.setattr(training, "training_step", lambda *args, **kwargs: calls.append(1) or step(*args, **kwargs))
    assert benchmark_training_step("tiny", batch_size=2, steps=1)["samples_per_s"] > 0
    assert len(calls) == 2  # warm-up + one timed step: the step training runs
