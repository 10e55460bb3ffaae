"""`make bench`: how fast each stage runs on this machine, and where the time goes.

Stages measured (medians of --repeats runs):
  gradcam        persons/s, batched vs the per-person loop, on the same small BLIP (random weights)
  refine         refined persons/s for STEPS in {2, 10}, tiny teacher and official-size (ResNet-50) teacher
  teacher        samples/s of one supervised teacher training step, tiny and official size
  students       training samples/s: VAT, Gaze-LLE, Gaze-LLE with the feature cache; time per part
Results go to BENCHMARKS.md (machine, commands, date) and bench.json under <out_root>/bench/.
On a machine with a GPU, the real model sizes run there with random weights (--gpu-sizes).
`--quick` runs tiny sizes once (the test suite uses it).
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import platform
import statistics
from typing import Any

import torch

from gcdr import paths
from gcdr.atomic import write_json_atomic, write_text_atomic
from gcdr.config import add_config_args, config_from_args
from gcdr.provenance import git_revision

log = logging.getLogger("gcdr.bench")

# Salesforce/blip-vqa-base's sizes (ViT-B/16 at 384 px, 12-layer BERT-base text encoder and decoder)
BLIP_BASE_SIZE = dict(image_size=384, patch_size=16, hidden_size=768, vision_layers=12, text_layers=12, heads=12)


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


def bench_gradcam(quick: bool, repeats: int, device: str) -> dict[str, Any]:
    from gcdr.vqa.benchmark import benchmark_gradcam

    persons, batch = (8, 8) if quick else (32, 16)
    runs = [benchmark_gradcam({}, n_persons=persons, batch_size=batch, device=device) for _ in range(repeats)]
    result = {"small": median_of(runs)}
    if device == "cuda":  # blip-vqa-base sized, random weights
        result["blip-vqa-base"] = benchmark_gradcam(BLIP_BASE_SIZE, n_persons=256, batch_size=64,
                                                   device=device, half_precision=True)
    return result


def bench_refine(quick: bool, repeats: int, device: str) -> dict[str, Any]:
    from gcdr.teacher.benchmark import benchmark_refine, default_benchmark_configs

    configs = default_benchmark_configs()
    if quick:
        return benchmark_refine({"tiny": configs["tiny"]}, steps=(2, 10), batch_size=4, batches=1, device=device)
    gpu = device == "cuda"
    tiny = median_of([benchmark_refine({"tiny": configs["tiny"]}, steps=(2, 10), batch_size=256 if gpu else 16,
                                       batches=2, device=device) for _ in range(repeats)])
    # the official size takes minutes per run on a CPU: one small run there, medians on a GPU
    official = median_of([benchmark_refine({"resnet50": configs["resnet50"]}, steps=(2, 10),
                                           batch_size=256 if gpu else 4, batches=2 if gpu else 1, device=device)
                          for _ in range(repeats if gpu else 1)])
    tiny["configs"].update(official["configs"])
    tiny["batch_size"] = f"{tiny['batch_size']} (resnet50: {official['batch_size']})"
    return tiny


def teacher_training_step(config, batch_size: int, steps: int, device: str) -> dict[str, Any]:
    """Samples/s of one supervised teacher step (noising + encoder + U-Net + backward + Adam) on random inputs."""
    import time

    from gcdr.students.vat import heatmap_mse_loss
    from gcdr.teacher.diffusion import make_train_scheduler, training_inputs
    from gcdr.teacher.model import GazeDiffusionTeacher

    torch.manual_seed(0)
    model = GazeDiffusionTeacher(config).to(device).train()
    scheduler = make_train_scheduler(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    scene, face = torch.randn(2, batch_size, 3, 224, 224, device=device)
    head = torch.zeros(batch_size, 1, 224, 224, device=device)
    head[:, :, 40:90, 60:110] = 1.0
    target = torch.rand(batch_size, 64, 64, device=device)
    timings = []
    for _ in range(steps + 1):  # the first step warms up
        start = time.perf_counter()
        x_in, timesteps = training_inputs(scheduler, target, config.scale)
        loss = heatmap_mse_loss(model(x_in, timesteps, scene, head, face).squeeze(1), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if device == "cuda":
            torch.cuda.synchronize()
        timings.append(time.perf_counter() - start)
    return {"batch_size": batch_size, "samples_per_s": batch_size * steps / sum(timings[1:])}


def bench_teacher_training(quick: bool, repeats: int, device: str) -> dict[str, Any]:
    from gcdr.teacher.benchmark import default_benchmark_configs

    configs = default_benchmark_configs()
    gpu = device == "cuda"
    result = {"tiny": median_of([teacher_training_step(configs["tiny"], 4 if quick else 16, 1 if quick else 3, device)
                                 for _ in range(repeats)])}
    if not quick:  # official size: one short run on a CPU, medians on a GPU
        result["resnet50"] = median_of([teacher_training_step(configs["resnet50"], 48 if gpu else 4, 3 if gpu else 1,
                                                              device) for _ in range(repeats if gpu else 1)])
    return result


def bench_students(cfg: dict[str, Any], quick: bool, repeats: int, device: str) -> dict[str, Any]:
    from gcdr.students.benchmark import benchmark_students

    steps = 1 if quick else 5
    runs = [benchmark_students(cfg, steps=steps, batch_size=4 if quick else None, device=device)
            for _ in range(repeats)]
    return median_of(runs)


def markdown(results: dict[str, Any], command: str) -> str:
    lines = [
        "# Benchmarks", "",
        f"Measured {results['date']} on {results['machine']} (git {results['git_revision']}).",
        f"Command: `{command}`. Medians of {results['repeats']} runs; random weights (speed does not depend on them).",
        "",
    ]
    gradcam = results.get("gradcam", {})
    if gradcam:
        lines += ["## Stage 1: Grad-CAM", "", "| model | device | batch | persons/s batched | persons/s per-person loop | speed-up | peak MB batched |",
                  "|---|---|---|---|---|---|---|"]
        for name, r in gradcam.items():
            lines.append(f"| {name} | {r['device']} | {r['batch_size']} | {r['batched_persons_per_s']:.1f} | "
                         f"{r['per_person_persons_per_s']:.1f} | {r['speedup']:.1f}x | {r['batched_peak_mb']:.0f} |")
        lines.append("")
    refine = results.get("refine", {})
    if refine:
        lines += ["## Stage 2: refine", "", f"T={refine['T']}, batch {refine['batch_size']}, device {refine['device']}.", "",
                  "| teacher | parameters | persons/s STEPS=2 | persons/s STEPS=10 |", "|---|---|---|---|"]
        for name, r in refine["configs"].items():
            params = r["parameters"].get("total", sum(v for v in r["parameters"].values() if isinstance(v, (int, float))))
            lines.append(f"| {name} | {params / 1e6:.2f} M | {r['persons_per_s']['steps=2']:.1f} | "
                         f"{r['persons_per_s']['steps=10']:.1f} |")
        lines.append("")
    teacher = results.get("teacher_training", {})
    if teacher:
        lines += ["## Stage 2: teacher training step", "", "| teacher | batch | samples/s |", "|---|---|---|"]
        lines += [f"| {name} | {r['batch_size']} | {r['samples_per_s']:.1f} |" for name, r in teacher.items()]
        lines.append("")
    students = results.get("students", {})
    if students:
        lines += ["## Stage 3: student training", "", f"Device {students.get('device')}, torch threads {students.get('torch_threads')}.", "",
                  "| variant | samples/s | ms/sample decode | augment | backbone | model |", "|---|---|---|---|---|---|"]
        for name in ("vat", "gazelle", "gazelle_cached"):
            if name in students:
                r = students[name]
                ms = r["ms_per_sample"]
                lines.append(f"| {name} | {r['samples_per_s']:.1f} | " + " | ".join(
                    f"{ms.get(k, 0):.1f}" for k in ("decode", "augment", "backbone", "model")) + " |")
        if "cache_speedup" in students:
            lines += ["", f"Gaze-LLE feature cache speed-up: {students['cache_speedup']:.1f}x."]
        lines.append("")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one run (for the test suite)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--stages", default="gradcam,refine,teacher,students")
    parser.add_argument("--report", default="BENCHMARKS.md", help="markdown report path ('' = none)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = config_from_args(args)
    repeats = 1 if args.quick else args.repeats
    device = "cuda" if torch.cuda.is_available() else "cpu"
    results: dict[str, Any] = {"date": dt.date.today().isoformat(), "machine": machine(),
                               "git_revision": git_revision(), "repeats": repeats, "quick": args.quick}
    stages = args.stages.split(",")
    if "gradcam" in stages:
        results["gradcam"] = bench_gradcam(args.quick, repeats, device)
    if "refine" in stages:
        results["refine"] = bench_refine(args.quick, repeats, device)
    if "teacher" in stages:
        results["teacher_training"] = bench_teacher_training(args.quick, repeats, device)
    if "students" in stages:
        results["students"] = bench_students(cfg, args.quick, repeats, device)
    out_dir = paths.out_root(cfg) / "bench"
    write_json_atomic(out_dir / "bench.json", results)
    command = "make bench" + (" QUICK=1" if args.quick else "")
    text = markdown(results, command)
    write_text_atomic(out_dir / "BENCHMARKS.md", text)
    if args.report:
        write_text_atomic(args.report, text)
    print(text)
    return results


if __name__ == "__main__":
    main()
