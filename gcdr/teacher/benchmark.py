"""How fast the teacher refines: persons per second with random weights (for `make bench`)."""

from __future__ import annotations

import time

import torch

from gcdr.teacher.config import TeacherConfig
from gcdr.teacher.diffusion import make_ddim_scheduler, noise_for_samples, refine_heatmaps
from gcdr.teacher.model import GazeDiffusionTeacher, TeacherModelConfig


def default_benchmark_configs() -> dict[str, TeacherModelConfig]:
    """``tiny`` = the SynthGaze default of the ``teacher:`` section; ``resnet50`` = the official GCDR size."""
    return {"tiny": TeacherConfig().model_config(), "resnet50": TeacherModelConfig.official()}


@torch.no_grad()
def benchmark_refine(configs: dict[str, TeacherModelConfig] | None = None, steps: tuple[int, ...] = (2, 10),
                     T: int = 250, batch_size: int = 16, batches: int = 2, device: str = "cpu",
                     threads: int | None = None, seed: int = 0) -> dict:
    """Refined persons / second (encoder + ``steps`` DDIM steps from T; no image decoding) per config.

    Random weights (the speed does not depend on them); one untimed warm-up batch per setting, then
    ``batches`` timed batches of ``batch_size`` persons. Returns
    {"device", "threads", "T", "batch_size",
     "configs": {name: {"parameters": {...}, "persons_per_s": {"steps=2": ..., "steps=10": ...}}}}.
    """
    previous_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        results = {}
        for name, config in (configs or default_benchmark_configs()).items():
            torch.manual_seed(seed)
            model = GazeDiffusionTeacher(config).to(device).eval()
            scheduler = make_ddim_scheduler(config)
            generator = torch.Generator().manual_seed(seed)
            scene = torch.randn(batch_size, 3, 224, 224, generator=generator).to(device)
            face = torch.randn(batch_size, 3, 224, 224, generator=generator).to(device)
            head = torch.zeros(batch_size, 1, 224, 224, device=device)
            head[:, :, 40:90, 60:110] = 1.0
            prior = torch.rand(batch_size, 64, 64, generator=generator).to(device)
            ids = [f"bench-{i}" for i in range(batch_size)]
            speeds = {}
            for n_steps in steps:
                noises = noise_for_samples(ids, seed, draws=1, steps=n_steps)
                timings = []
                for _ in range(batches + 1):
                    start = time.perf_counter()
                    context = model.encode(scene, head, face)
                    refine_heatmaps(model, scheduler, context, prior, T, n_steps, noises)
                    if torch.device(device).type == "cuda":
                        torch.cuda.synchronize()
                    timings.append(time.perf_counter() - start)
                speeds[f"steps={n_steps}"] = batch_size * batches / sum(timings[1:])
            results[name] = {"parameters": model.parameter_counts(), "persons_per_s": speeds}
        return {"device": device, "threads": torch.get_num_threads(), "T": T, "batch_size": batch_size,
                "configs": results}
    finally:
        torch.set_num_threads(previous_threads)
