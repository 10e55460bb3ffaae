"""How fast the teacher refines and trains, with random weights (for `make bench`).

    benchmark_refine         refined persons / second (encoder + STEPS DDIM steps)
    benchmark_training_step  samples / second of one supervised training step
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch

from gcdr.teacher.config import TeacherConfig
from gcdr.teacher.diffusion import (
    make_ddim_scheduler,
    make_train_scheduler,
    noise_for_samples,
    refine_heatmaps,
)
from gcdr.teacher.model import GazeDiffusionTeacher, TeacherModelConfig


def default_benchmark_configs() -> dict[str, TeacherModelConfig]:
    """``tiny`` = ``TeacherConfig``'s defaults (0.9 M parameters, 224-px input, 2 ResBlocks per level: the SynthGaze
    teacher before 2026-12-04, kept so the rows stay comparable; configs/synthgaze.yaml now uses 128 px and one
    ResBlock, about half the time per step, README); ``resnet50`` = the official GCDR size."""
    return {"tiny": TeacherConfig().model_config(), "resnet50": TeacherModelConfig.official()}


def _named_configs(configs: dict[str, TeacherModelConfig] | Sequence[str] | None) -> dict[str, TeacherModelConfig]:
    """Configs as given, or picked by name from ``default_benchmark_configs`` (None = all of them)."""
    if isinstance(configs, dict):
        return configs
    defaults = default_benchmark_configs()
    unknown = set(configs or ()) - set(defaults)
    if unknown:
        raise ValueError(f"unknown benchmark teacher configs {sorted(unknown)}; choose from {sorted(defaults)}")
    return defaults if configs is None else {name: defaults[name] for name in configs}


@torch.no_grad()
def benchmark_refine(configs: dict[str, TeacherModelConfig] | Sequence[str] | None = None,
                     steps: tuple[int, ...] = (2, 10),
                     T: int = 250, batch_size: int = 16, batches: int = 2, device: str = "cpu",
                     threads: int | None = None, seed: int = 0) -> dict:
    """Refined persons / second (encoder + ``steps`` DDIM steps from T; no image decoding) per config.

    configs: {name: config}, or names from ``default_benchmark_configs`` ("tiny", "resnet50"; None = both).
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
        for name, config in _named_configs(configs).items():
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


def benchmark_training_step(config: TeacherModelConfig | str, batch_size: int = 16, steps: int = 3,
                            device: str = "cpu", seed: int = 0) -> dict:
    """Samples / second of one supervised teacher step (noising + encoder + U-Net + backward + Adam), the step
    training runs (gcdr.teacher.training.training_step).

    config: a teacher config or a name from ``default_benchmark_configs`` ("tiny", "resnet50").
    Random weights and inputs; one untimed warm-up step, then ``steps`` timed steps of ``batch_size``
    samples. Returns {"batch_size", "samples_per_s"}.
    """
    from gcdr.teacher.training import training_step

    if isinstance(config, str):
        config = _named_configs([config])[config]
    torch.manual_seed(seed)
    model = GazeDiffusionTeacher(config).to(device).train()
    scheduler = make_train_scheduler(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    scene, face = torch.randn(2, batch_size, 3, 224, 224, device=device)  # [B, 3, 224, 224] each
    head = torch.zeros(batch_size, 1, 224, 224, device=device)
    head[:, :, 40:90, 60:110] = 1.0
    batch = {"scene": scene, "head_channel": head, "face": face,
             "target_heatmap_64": torch.rand(batch_size, 64, 64, device=device),  # [B, 64, 64]
             "has_target": torch.ones(batch_size, dtype=torch.bool, device=device)}
    timings = []
    for _ in range(steps + 1):  # the first step warms up
        start = time.perf_counter()
        training_step(model, optimizer, batch, scheduler, config.scale)
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize()
        timings.append(time.perf_counter() - start)
    return {"batch_size": batch_size, "samples_per_s": batch_size * steps / sum(timings[1:])}
