"""`make bench`: how fast each stage runs on this machine, and where the time goes (pipelines/bench.py runs it).

Stages measured (medians of ``repeats`` runs):
  gradcam        persons/s, batched vs the per-person loop, on the same small BLIP (random weights)
  refine         refined persons/s for STEPS in {2, 10}, tiny teacher and official-size (ResNet-50) teacher
  teacher        samples/s of one supervised teacher training step (gcdr.teacher.training.training_step),
                 tiny and official size
  students       training samples/s: VAT, Gaze-LLE, Gaze-LLE with the feature cache; time per part
Every row also reports its peak memory: each row (each Grad-CAM loop, each teacher size and STEPS, each
student variant) runs in its own fresh process (gcdr_tools.bench.memory), whose peak resident set size (CPU)
or torch.cuda.max_memory_allocated (GPU) is that row's alone.
Results go to BENCHMARKS.md (machine, commands, date) and bench.json under <out_root>/bench/.
On a machine with a GPU, the blip-vqa-base-sized Grad-CAM row and GPU batch sizes are added automatically.
``quick`` runs tiny sizes once (the test suite uses it).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import platform
import statistics
from typing import Any

import torch

from gcdr import paths
from gcdr.atomic import write_json_atomic, write_text_atomic
from gcdr.errors import UserError
from gcdr.provenance import git_revision
from gcdr_tools.bench.memory import preload, run_in_fresh_process, start_method

log = logging.getLogger("gcdr.bench")


class BenchError(UserError, ValueError):
    """A bad bench request (an unknown stage); one line."""


# Salesforce/blip-vqa-base's sizes (ViT-B/16 at 384 px, 12-layer BERT-base text encoder and decoder)
BLIP_BASE_SIZE = dict(image_size=384, patch_size=16, hidden_size=768, vision_layers=12, text_layers=12, heads=12)
GRADCAM_LOOPS = ("per_person", "batched")  # gcdr_tools.bench.vqa.LOOPS (not imported: transformers is slow)
REFINE_STEPS = (2, 10)
STUDENT_VARIANTS = ("vat", "gazelle", "gazelle_cached")  # gcdr_tools.bench.students.VARIANTS
STAGE_MODULES = {"gradcam": "gcdr_tools.bench.vqa", "refine": "gcdr_tools.bench.teacher",
                 "teacher": "gcdr_tools.bench.teacher", "students": "gcdr_tools.bench.students"}


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Element-wise median of numeric leaves across repeated runs (other leaves from the first run)."""
    first = runs[0]
    if isinstance(first, dict):
        return {k: median_of([r[k] for r in runs]) for k in first}
    if isinstance(first, (int, float)) and not isinstance(first, bool):
        return statistics.median(runs)
    return first


def machine() -> str:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {gpu}, torch {torch.__version__}"


def run_row(fn: str, args: tuple = (), repeats: int = 1, **kwargs: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """One table row: ``fn`` run ``repeats`` times in a fresh process -> (median result, that process' memory)."""
    label = [a for a in args if isinstance(a, str)] + [f"{k}={v}" for k, v in kwargs.items()
                                                        if k in ("loops", "configs", "steps", "variants")]
    log.info("%s %s x%d in a fresh process", fn.rpartition(":")[2], " ".join(label), repeats)
    runs, memory = run_in_fresh_process(fn, args, kwargs, repeats=repeats, threads=torch.get_num_threads())
    log.info("  peak %.0f MiB (%s), %.0f MiB over the process' start", memory["peak_mb"], memory["measures"],
             memory["stage_mb"])
    return median_of(runs), memory


def bench_gradcam(quick: bool, repeats: int, device: str) -> dict[str, Any]:
    """Batched vs per-person Grad-CAM; each loop in its own process (its peak memory is its own)."""
    persons, batch = (8, 8) if quick else (32, 16)
    models = {"small": ({}, persons, batch, repeats, False)}
    if device == "cuda":  # blip-vqa-base sized, random weights
        models["blip-vqa-base"] = (BLIP_BASE_SIZE, 256, 64, 1, True)
    result = {}
    for name, (size, n_persons, batch_size, runs, half) in models.items():
        row: dict[str, Any] = {"memory": {}}
        for loop in GRADCAM_LOOPS:
            timed, row["memory"][loop] = run_row("gcdr_tools.bench.vqa:benchmark_gradcam", (size,), runs,
                                                 n_persons=n_persons, batch_size=batch_size, device=device,
                                                 half_precision=half, loops=(loop,))
            for in_process_figure in (f"{loop}_peak_mb", "memory"):  # replaced by the fresh process' "memory"
                timed.pop(in_process_figure)
            row.update(timed)
        row["speedup"] = row["batched_persons_per_s"] / row["per_person_persons_per_s"]
        result[name] = row
    return result


def bench_refine(quick: bool, repeats: int, device: str) -> dict[str, Any]:
    """Refined persons/s per teacher size and STEPS; each (size, STEPS) in its own process."""
    gpu = device == "cuda"
    settings = {"tiny": dict(batch_size=4, batches=1, runs=1) if quick else
                dict(batch_size=256 if gpu else 16, batches=2, runs=repeats)}
    if not quick:  # the official size takes minutes per run on a CPU: one small run there, medians on a GPU
        settings["resnet50"] = dict(batch_size=256 if gpu else 4, batches=2 if gpu else 1, runs=repeats if gpu else 1)
    result: dict[str, Any] = {"configs": {}}
    for name, setting in settings.items():
        row: dict[str, Any] = {"persons_per_s": {}, "memory": {}}
        for steps in REFINE_STEPS:
            timed, row["memory"][f"steps={steps}"] = run_row(
                "gcdr_tools.bench.teacher:benchmark_refine", (), setting["runs"], configs=[name], steps=(steps,),
                batch_size=setting["batch_size"], batches=setting["batches"], device=device)
            row["parameters"] = timed["configs"][name]["parameters"]
            row["persons_per_s"].update(timed["configs"][name]["persons_per_s"])
            result.update({k: timed[k] for k in ("device", "threads", "T")})
        result["configs"][name] = row
    batch_sizes = {name: setting["batch_size"] for name, setting in settings.items()}
    result["batch_size"] = batch_sizes["tiny"] if len(batch_sizes) == 1 else \
        f"{batch_sizes['tiny']} (resnet50: {batch_sizes['resnet50']})"
    return result


def bench_teacher_training(quick: bool, repeats: int, device: str) -> dict[str, Any]:
    """Samples/s of one supervised teacher step per teacher size, each in its own process."""
    gpu = device == "cuda"
    settings = {"tiny": dict(batch_size=4 if quick else 16, steps=1 if quick else 3, runs=repeats)}
    if not quick:  # official size: one short run on a CPU, medians on a GPU
        settings["resnet50"] = dict(batch_size=48 if gpu else 4, steps=3 if gpu else 1, runs=repeats if gpu else 1)
    result = {}
    for name, setting in settings.items():
        timed, memory = run_row("gcdr_tools.bench.teacher:benchmark_training_step", (name,), setting["runs"],
                                batch_size=setting["batch_size"], steps=setting["steps"], device=device)
        result[name] = {**timed, "memory": memory}
    return result


def bench_students(cfg: dict[str, Any], quick: bool, repeats: int, device: str) -> dict[str, Any]:
    """Training samples/s and time per part of each student variant, each variant in its own process."""
    result: dict[str, Any] = {}
    for variant in STUDENT_VARIANTS:
        timed, memory = run_row("gcdr_tools.bench.students:benchmark_students", (cfg,), repeats,
                                variants=(variant,), steps=1 if quick else 5, batch_size=4 if quick else None,
                                device=device)
        result.update(device=timed["device"], torch_threads=timed["torch_threads"])
        result[variant] = {**timed[variant], "memory": memory}
    result["cache_speedup"] = round(result["gazelle_cached"]["samples_per_s"] / result["gazelle"]["samples_per_s"], 2)
    return result


def memory_cell(memory: dict[str, Any]) -> str:
    """"peak (+growth over the process' start)" on a CPU; the CUDA peak on a GPU (its start is 0)."""
    if memory["measures"] == "cuda_max_memory_allocated":
        return f"{memory['peak_mb']:.0f}"
    return f"{memory['peak_mb']:.0f} (+{memory['stage_mb']:.0f})"


def all_row_memories(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The "memory" of every measured row, in report order."""
    memories = [m for r in results.get("gradcam", {}).values() for m in r["memory"].values()]
    memories += [m for r in results.get("refine", {}).get("configs", {}).values() for m in r["memory"].values()]
    memories += [r["memory"] for r in results.get("teacher_training", {}).values()]
    memories += [results["students"][v]["memory"] for v in STUDENT_VARIANTS if v in results.get("students", {})]
    return memories


def memory_note(results: dict[str, Any]) -> list[str]:
    """What the peak-memory figures measure, for the report."""
    memories = all_row_memories(results)
    if not memories:
        return []
    how = (f"each row (and each Grad-CAM loop, each STEPS value) runs in its own fresh process "
           f"({results['start_method']}), so no row's memory leaks into another's.")
    if memories[0]["measures"] == "cuda_max_memory_allocated":
        return [f"Peak memory: {how} `peak MB` = `torch.cuda.max_memory_allocated()` of that process, in MiB: "
                "the GPU tensors of the row (weights, inputs, activations, gradients, optimizer state), not the "
                "CUDA context or the allocator's cached blocks. Host peak RSS per row is in bench.json.", ""]
    low, high = min(m["start_mb"] for m in memories), max(m["start_mb"] for m in memories)
    start = f"{low:.0f}" if round(low) == round(high) else f"{low:.0f}-{high:.0f}"
    imported = "once, in the fork server" if results["start_method"] == "forkserver" else "by that process"
    return [f"Peak memory: {how} `peak MB` = that process' peak resident set size in MiB (Linux `VmHWM`, "
            f"else `ru_maxrss`) over the row's runs, including the {start} MiB it held when the row began "
            f"(Python, torch and the stage modules, imported {imported}); `(+N)` = peak minus that start: the "
            "row's own model, inputs, activations, gradients, optimizer state and the library pages it touched.",
            ""]


def markdown(results: dict[str, Any], command: str) -> str:
    lines = [
        "# Benchmarks", "",
        f"Measured {results['date']} on {results['machine']} (git {results['git_revision']}).",
        f"Command: `{command}`. Medians of {results['repeats']} runs; random weights (speed does not depend on them).",
        "",
        *memory_note(results),
    ]
    gradcam = results.get("gradcam", {})
    if gradcam:
        lines += ["## Stage 1: Grad-CAM", "",
                  "| model | device | batch | persons/s batched | persons/s per-person loop | speed-up "
                  "| peak MB batched | peak MB per-person loop |", "|---|---|---|---|---|---|---|---|"]
        for name, r in gradcam.items():
            lines.append(f"| {name} | {r['device']} | {r['batch_size']} | {r['batched_persons_per_s']:.1f} | "
                         f"{r['per_person_persons_per_s']:.1f} | {r['speedup']:.1f}x | "
                         f"{memory_cell(r['memory']['batched'])} | {memory_cell(r['memory']['per_person'])} |")
        lines.append("")
    refine = results.get("refine", {})
    if refine:
        lines += ["## Stage 2: refine", "", f"T={refine['T']}, batch {refine['batch_size']}, device {refine['device']}.", "",
                  "| teacher | parameters | persons/s STEPS=2 | persons/s STEPS=10 | peak MB STEPS=2 | peak MB STEPS=10 |",
                  "|---|---|---|---|---|---|"]
        for name, r in refine["configs"].items():
            params = r["parameters"].get("total", sum(v for v in r["parameters"].values() if isinstance(v, (int, float))))
            lines.append(f"| {name} | {params / 1e6:.2f} M | {r['persons_per_s']['steps=2']:.1f} | "
                         f"{r['persons_per_s']['steps=10']:.1f} | {memory_cell(r['memory']['steps=2'])} | "
                         f"{memory_cell(r['memory']['steps=10'])} |")
        lines.append("")
    teacher = results.get("teacher_training", {})
    if teacher:
        lines += ["## Stage 2: teacher training step", "", "| teacher | batch | samples/s | peak MB |", "|---|---|---|---|"]
        lines += [f"| {name} | {r['batch_size']} | {r['samples_per_s']:.1f} | {memory_cell(r['memory'])} |"
                  for name, r in teacher.items()]
        lines.append("")
    students = results.get("students", {})
    if students:
        lines += ["## Stage 3: student training", "", f"Device {students.get('device')}, torch threads {students.get('torch_threads')}.", "",
                  "| variant | samples/s | ms/sample decode | augment | backbone | model | peak MB |",
                  "|---|---|---|---|---|---|---|"]
        for name in STUDENT_VARIANTS:
            if name in students:
                r = students[name]
                ms = r["ms_per_sample"]
                lines.append(f"| {name} | {r['samples_per_s']:.1f} | " + " | ".join(
                    f"{ms.get(k, 0):.1f}" for k in ("decode", "augment", "backbone", "model"))
                    + f" | {memory_cell(r['memory'])} |")
        if "cache_speedup" in students:
            lines += ["", f"Gaze-LLE feature cache speed-up: {students['cache_speedup']:.1f}x."]
        lines.append("")
    return "\n".join(lines) + "\n"


def run_bench(cfg: dict[str, Any], stages: list[str], quick: bool = False, repeats: int = 3,
              report: str | None = "BENCHMARKS.md") -> dict[str, Any]:
    """Measure ``stages`` (names of ``STAGE_MODULES``), write bench.json and BENCHMARKS.md under
    <out_root>/bench/ (and the report to ``report`` unless empty); returns the results."""
    unknown = set(stages) - set(STAGE_MODULES)
    if unknown:
        raise BenchError(f"unknown --stages {sorted(unknown)}; choose from {sorted(STAGE_MODULES)}")
    repeats = 1 if quick else repeats
    device = "cuda" if torch.cuda.is_available() else "cpu"
    results: dict[str, Any] = {"date": dt.date.today().isoformat(), "machine": machine(),
                               "git_revision": git_revision(), "repeats": repeats, "quick": quick,
                               "start_method": start_method()}
    preload(sorted({STAGE_MODULES[stage] for stage in stages}))  # imported once, in the fork server
    if "gradcam" in stages:
        results["gradcam"] = bench_gradcam(quick, repeats, device)
    if "refine" in stages:
        results["refine"] = bench_refine(quick, repeats, device)
    if "teacher" in stages:
        results["teacher_training"] = bench_teacher_training(quick, repeats, device)
    if "students" in stages:
        results["students"] = bench_students(cfg, quick, repeats, device)
    out_dir = paths.out_root(cfg) / "bench"
    write_json_atomic(out_dir / "bench.json", results)
    text = markdown(results, "make bench" + (" QUICK=1" if quick else ""))
    write_text_atomic(out_dir / "BENCHMARKS.md", text)
    if report:
        write_text_atomic(report, text)
    print(text)
    return results
