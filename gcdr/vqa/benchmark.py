"""Stage-1 throughput: persons per second of batched vs per-person Grad-CAM, and peak memory (used by `make bench`)."""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gcdr.vqa.blip import Vqa, VqaConfig, as_vqa, build_blip_from_scratch, load_vqa
from gcdr.vqa.gradcam import GradcamConfig, VqaGradcam
from gcdr.vqa.prompt import PersonPrompt, draw_box

SMALL_BLIP = dict(image_size=96, patch_size=8, hidden_size=128, vision_layers=4, text_layers=2, heads=4)


def _bench_prompts(n_persons: int, question: str, seed: int = 0) -> list[PersonPrompt]:
    """Random 160x120 scenes, one green box each (the content does not change the cost)."""
    rng = np.random.default_rng(seed)
    prompts = []
    for _ in range(n_persons):
        image = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
        x, y = int(rng.integers(0, 100)), int(rng.integers(0, 60))
        box = (x, y, x + 50, y + 55)
        prompts.append(PersonPrompt(draw_box(image, box), question, box))
    return prompts


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def _load(model: str | Path | dict | Vqa, device: str, half_precision: bool) -> Vqa:
    if isinstance(model, Vqa):
        return model
    if isinstance(model, dict):
        words = "what is the person in green bounding box looking at ? cup ball book".split()
        net, processor = build_blip_from_scratch(words, **{**SMALL_BLIP, **model})
        vqa = as_vqa(net, processor, device)
        if half_precision and vqa.device.type == "cuda":
            vqa.model.half()
            vqa.dtype = torch.float16
        return vqa
    return load_vqa(str(model), device, half_precision)


def _timed(explainer: VqaGradcam, prompts: list[PersonPrompt], batch_size: int) -> tuple[float, float]:
    """(seconds, peak memory in MB: CUDA allocated on a GPU, else the process' peak RSS)."""
    cuda = explainer.vqa.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for first in range(0, len(prompts), batch_size):
        explainer.explain(prompts[first:first + batch_size])
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    memory = torch.cuda.max_memory_allocated() / 2**20 if cuda else _peak_rss_mb()
    return seconds, memory


def benchmark_gradcam(model_dir_or_config: str | Path | dict | Vqa = SMALL_BLIP, n_persons: int = 32,
                      batch_size: int = 16, method: str = "cross_attention", layer: int = -2,
                      device: str = "auto", half_precision: bool = False) -> dict[str, Any]:
    """Persons/second of the batched path vs the per-person loop on the same model and prompts.

    model_dir_or_config: a model directory or hub id (``load_vqa``), a dict of ``build_blip_from_scratch``
        overrides (``{}`` = the SynthGaze-sized small BLIP, random weights: the cost does not depend on them),
        or a loaded ``Vqa``.
    Returns {"persons", "batch_size", "method", "device", "dtype", "grid_hw", "batched_persons_per_s",
    "per_person_persons_per_s", "speedup", "batched_peak_mb", "per_person_peak_mb", "memory"} where "memory"
    says what the peaks measure ("cuda_max_memory_allocated" or "process_peak_rss", which never decreases).
    """
    vqa = _load(model_dir_or_config, device, half_precision)
    explainer = VqaGradcam(vqa, GradcamConfig(method=method, layer=layer, batch_size=batch_size), VqaConfig())
    prompts = _bench_prompts(n_persons, VqaConfig().question)
    explainer.explain(prompts[: min(batch_size, n_persons)])  # warm-up (allocator, lazy inits)
    per_person_s, per_person_mb = _timed(explainer, prompts, 1)
    batched_s, batched_mb = _timed(explainer, prompts, batch_size)
    return {
        "persons": n_persons, "batch_size": batch_size, "method": method, "device": str(vqa.device),
        "dtype": str(vqa.dtype), "grid_hw": list(vqa.patch_grid_hw),
        "batched_persons_per_s": n_persons / batched_s, "per_person_persons_per_s": n_persons / per_person_s,
        "speedup": per_person_s / batched_s, "batched_peak_mb": batched_mb, "per_person_peak_mb": per_person_mb,
        "memory": "cuda_max_memory_allocated" if vqa.device.type == "cuda" else "process_peak_rss",
    }
