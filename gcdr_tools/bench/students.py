"""Training throughput of the students and where the time goes (for ``make bench``).

Each variant runs a few training steps one after the other in this process (no DataLoader workers, so
the parts add up): image decoding, the rest of the data item (augmentation, crops, resizing, targets),
the frozen backbone (Gaze-LLE), and the trainable model (forward + backward + Adam step). ``make bench``
calls ``benchmark_students`` once per variant, each in its own process, so that each variant's peak
memory is its own (gcdr_tools.bench.memory).

    vat             VAT on GazeDataset items
    gazelle         Gaze-LLE on GazeDataset items (backbone every step)
    gazelle_cached  Gaze-LLE on cached backbone features (gcdr.students.feature_cache); the one-time cost
                    of filling the cache is reported separately (``cache_build_s``)
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import default_collate

from gcdr.data import images, load_samples
from gcdr.data.dataset import GazeDataset
from gcdr.students.config import StudentConfig, student_config
from gcdr.students.feature_cache import CachedFeatureDataset, FeatureCache
from gcdr.students.recipe import student_loss
from gcdr.students.registry import STUDENTS, student_from_config

log = logging.getLogger(__name__)

CACHED = "_cached"  # variant suffix: the student on cached backbone features
# every registered student, and "<name>_cached" for those with a frozen backbone: vat, gazelle, gazelle_cached
VARIANTS = tuple(STUDENTS) + tuple(name + CACHED for name, cls in STUDENTS.items() if cls.feature_cache)


def _timed(fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - start


def _benchmark_variant(variant: str, samples: Sequence, student: StudentConfig, out_root: Path, steps: int,
                       warmup: int, device: torch.device) -> dict[str, Any]:
    cached = variant.endswith(CACHED)
    student = dataclasses.replace(student, model=variant.removesuffix(CACHED))
    torch.manual_seed(student.seed)
    model = student_from_config(student, out_root).to(device).train()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=student.learning_rate)
    n_needed = (steps + warmup) * student.batch_size
    samples = [samples[i % len(samples)] for i in range(n_needed)]
    dataset = GazeDataset(samples, train=not cached, style=model.style, labeled=True, scene_size=model.input_size)
    result: dict[str, Any] = {"batch_size": student.batch_size, "steps": steps, "model": model.model_config()}
    if cached:
        cache = FeatureCache(out_root / "cache" / "bench", result["model"]["backbone"], model.input_size)
        start = time.perf_counter()
        dataset = CachedFeatureDataset.build(dataset, model.backbone, cache, train=True, device=device,
                                             batch_size=student.batch_size, progress=False)
        result["cache_build_s"] = round(time.perf_counter() - start, 3)
    parts = {"decode": 0.0, "augment": 0.0, "backbone": 0.0, "model": 0.0}
    for step in range(steps + warmup):
        indices = range(step * student.batch_size, (step + 1) * student.batch_size)
        decode_time = 0.0
        if not cached:
            for i in indices:
                decode_time += _timed(images.load_image_rgb, samples[i].image_path)[1]
        items, item_time = _timed(lambda rows: [dataset[i] for i in rows], indices)
        batch = {k: v.to(device) for k, v in default_collate(items).items()}
        backbone_time = 0.0
        if model.feature_cache and not cached:  # time the frozen backbone apart, then feed its output as the cache does
            with torch.no_grad():
                batch["features"], backbone_time = _timed(model.backbone, batch.pop("scene"))
                _sync(device)
        start = time.perf_counter()
        loss, _ = student_loss(model, batch, student)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        _sync(device)
        model_time = time.perf_counter() - start
        if step >= warmup:
            parts["decode"] += decode_time
            parts["augment"] += max(item_time - decode_time, 0.0)  # the item time includes its own decode
            parts["backbone"] += backbone_time
            parts["model"] += model_time
    n_samples = steps * student.batch_size
    total = sum(parts.values())
    result["samples_per_s"] = round(n_samples / total, 2)
    result["ms_per_sample"] = {k: round(1000 * v / n_samples, 3) for k, v in parts.items()}
    result["share"] = {k: round(v / total, 3) for k, v in parts.items()}
    return result


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def benchmark_students(cfg: dict[str, Any], *, variants: Sequence[str] = VARIANTS, steps: int = 5, warmup: int = 1,
                       batch_size: int | None = None, samples: Sequence | None = None,
                       out_root: str | Path | None = None, device: str | None = None) -> dict[str, Any]:
    """Training samples / second of each student variant and the time per sample of each part.

    cfg: the whole config; the ``student:`` section sets the models (VAT backbone / width / input size,
    Gaze-LLE backbone / input size / decoder size). samples: persons to use (default: the train split).
    out_root: where the tiny DINOv2 and the benchmark's feature cache go (default: a temporary folder).
    Returns {variant: {"samples_per_s", "ms_per_sample": {decode, augment, backbone, model}, "share", ...},
    "cache_speedup": gazelle_cached / gazelle samples per second}.
    """
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        raise ValueError(f"unknown benchmark variants {sorted(unknown)}; choose from {VARIANTS}")
    student = student_config(cfg)
    if batch_size:
        # the step's cost does not depend on the batch's labeled share (no sampler here)
        student = dataclasses.replace(student, batch_size=batch_size, labeled_per_batch=None)
    samples = list(samples if samples is not None else load_samples(cfg, "train"))
    samples = [s for s in samples if s.inout == 1] or samples
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    results: dict[str, Any] = {"device": str(dev), "torch_threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(out_root) if out_root else Path(tmp)
        for variant in variants:
            log.info("benchmark %s ...", variant)
            results[variant] = _benchmark_variant(variant, samples, student, root, steps, warmup, dev)
            log.info("%s: %.1f samples/s, ms/sample %s", variant, results[variant]["samples_per_s"],
                     results[variant]["ms_per_sample"])
    for name in STUDENTS:
        if name in results and name + CACHED in results:
            results["cache_speedup"] = round(results[name + CACHED]["samples_per_s"]
                                             / results[name]["samples_per_s"], 2)
    return results
