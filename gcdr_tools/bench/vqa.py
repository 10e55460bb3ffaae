"""Stage-1 throughput: persons per second of batched vs per-person Grad-CAM (used by `make bench`)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gcdr.vqa.blip import Vqa, VqaConfig, as_vqa, build_blip_from_scratch, load_vqa
from gcdr.vqa.gradcam import GradcamConfig, VqaGradcam
from gcdr.vqa.prompt import PersonPrompt, draw_box
from gcdr_tools.bench.memory import peak_rss_mb

SMALL_BLIP = dict(image_size=96, patch_size=8, hidden_size=128, vision_layers=4, text_layers=2, heads=4)
LOOPS = ("per_person", "batched")  # batch size 1 vs ``batch_size``


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
    """(seconds, peak memory in MiB: CUDA allocated during the loop on a GPU, else the process' peak RSS so far)."""
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
    memory = torch.cuda.max_memory_allocated() / 2**20 if cuda else peak_rss_mb()
    return seconds, memory


def benchmark_gradcam(model_dir_or_config: str | Path | dict | Vqa = SMALL_BLIP, n_persons: int = 32,
                      batch_size: int = 16, method: str = "cross_attention", layer: int = -2,
                      device: str = "auto", half_precision: bool = False,
                      loops: Sequence[str] = LOOPS) -> dict[str, Any]:
    """Persons/second of the batched path vs the per-person loop on the same model and prompts.

    model_dir_or_config: a model directory or hub id (``load_vqa``), a dict of ``build_blip_from_scratch``
        overrides (``{}`` = the SynthGaze-sized small BLIP, random weights: the cost does not depend on them),
        or a loaded ``Vqa``.
    loops: which of "per_person" (batch size 1) and "batched" to time, each warmed up with its own batch
        size first, so a process timing one loop never runs the other's batch size (``make bench`` times
        each loop in its own process for its peak memory, see gcdr_tools.bench.memory).
    Returns {"persons", "batch_size", "method", "device", "dtype", "grid_hw", "memory"} plus, per loop timed,
    "batched_persons_per_s" / "batched_peak_mb" and "per_person_persons_per_s" / "per_person_peak_mb", and
    "speedup" (per-person seconds / batched seconds) when both ran. "memory" says what the peaks measure:
    "cuda_max_memory_allocated" (during that loop) or "process_peak_rss" (this process' peak so far, which
    never decreases: the second loop's figure includes the first's).
    """
    unknown = set(loops) - set(LOOPS)
    if unknown or not loops:
        raise ValueError(f"loops must be a non-empty subset of {LOOPS}, got {list(loops)}")
    vqa = _load(model_dir_or_config, device, half_precision)
    explainer = VqaGradcam(vqa, GradcamConfig(method=method, layer=layer, batch_size=batch_size), VqaConfig())
    prompts = _bench_prompts(n_persons, VqaConfig().question)
    loop_batch = {"per_person": 1, "batched": batch_size}
    result: dict[str, Any] = {
        "persons": n_persons, "batch_size": batch_size, "method": method, "device": str(vqa.device),
        "dtype": str(vqa.dtype), "grid_hw": list(vqa.patch_grid_hw),
        "memory": "cuda_max_memory_allocated" if vqa.device.type == "cuda" else "process_peak_rss",
    }
    seconds = {}
    for loop in loops:
        explainer.explain(prompts[: min(loop_batch[loop], n_persons)])  # warm-up (allocator, lazy inits)
        seconds[loop], result[f"{loop}_peak_mb"] = _timed(explainer, prompts, loop_batch[loop])
        result[f"{loop}_persons_per_s"] = n_persons / seconds[loop]
    if len(seconds) == 2:
        result["speedup"] = seconds["per_person"] / seconds["batched"]
    return result
