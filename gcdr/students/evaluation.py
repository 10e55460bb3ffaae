"""Students on the test split: predict every person, score with gcdr.metrics.evaluate (``make eval``), and the
training loop's evaluation (several processes, Accelerate).

Unreadable test images (missing, empty, undecodable): ``dataset.on_error: raise`` stops with an ImageReadError
naming the file; ``skip`` leaves their persons out before prediction (no person is ever scored on another
person's image) and counts them in ``n_skipped`` / ``n_unreadable``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from gcdr.config import RunConfig
from gcdr.data import load_samples
from gcdr.data.sample import PersonSample
from gcdr.metrics import INOUT_DATASETS, evaluate
from gcdr.students.config import student_config
from gcdr.students.export import load_student
from gcdr.students.gazelle import configured_gazelle_backbone
from gcdr.students.student import Student

METRIC_KEYS = ("auc", "avg_l2", "min_l2", "ap")


def dataset_for_student(samples: Sequence[PersonSample], student: Student, on_error: str = "raise",
                        dataset_format: str = "gazefollow", input_maps=None):
    """An evaluation GazeDataset (no augmentation) in the input style and size of ``student``.

    VAT-style head boxes are enlarged by 10 % for GazeFollow-format data only (docs/official-code.md#head-box-enlargement-and-head-channel).
    ``input_maps``: the student's per-person input maps (Student.input_maps: VAT-GC's Grad-CAM), or None.
    """
    from gcdr.data.dataset import GazeDataset

    return GazeDataset(samples, train=False, style=student.style, labeled=True, scene_size=student.input_size,
                       on_error=on_error, enlarge_head_box=dataset_format == "gazefollow", pseudo=input_maps)


def image_grouped_batches(dataset, max_persons: int) -> list[list[int]]:
    """Batches of dataset indices holding whole images (all persons of an image in one batch)."""
    by_image: dict[str, list[int]] = {}
    for index, sample in enumerate(dataset.samples):
        by_image.setdefault(sample.image_path, []).append(index)
    batches, current = [], []
    for indices in by_image.values():
        if current and len(current) + len(indices) > max_persons:
            batches.append(current)
            current = []
        current = current + indices
    if current:
        batches.append(current)
    return batches


@torch.no_grad()
def predict_dataset(student: Student, dataset, batch_size: int = 32, device: str | torch.device = "cpu",
                    num_workers: int = 0, progress: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """Heatmaps [N, 64, 64] (as the student emits them) and in/out probabilities [N] (sigmoid applied where the
    student emits a logit; None without an in/out head) for every dataset item.

    The persons of an image share a batch (:meth:`Student.predict_images`: Gaze-LLE runs its backbone once per
    image, as the official multi-person forward), unless the student batches its own way (clip students:
    :meth:`Student.own_batches`).
    """
    from torch.utils.data import DataLoader

    student = student.to(device).eval()
    heatmaps = np.zeros((len(dataset), 64, 64), np.float32)
    inouts = np.zeros(len(dataset), np.float32)
    has_inout = False
    own = student.own_batches(dataset, batch_size)  # clip students: chunks of whole tracks
    items, batches = own if own is not None else (dataset, image_grouped_batches(dataset, batch_size))
    loader = DataLoader(items, batch_sampler=batches, num_workers=num_workers)
    for batch in tqdm(loader, desc="predict", disable=not progress):
        batch = {k: v.to(device) for k, v in batch.items()}
        paths = [dataset.samples[i].image_path for i in batch["index"].tolist()]
        heatmap, inout = student.predict_images(batch, paths)
        index = batch["index"].cpu().numpy()
        heatmaps[index] = heatmap.float().cpu().numpy()
        if inout is not None:
            inout = torch.sigmoid(inout.float()) if student.inout_is_logit else inout.float()
            inouts[index] = inout.cpu().numpy()
            has_inout = True
    return heatmaps, (inouts if has_inout else None)


@torch.no_grad()
def evaluate_student(model, loader, dataset, accelerator, protocol: str, dataset_format: str) -> dict[str, Any]:
    """Test metrics (gcdr.metrics.evaluate) of the (prepared) student ``model`` on ``loader``; every process
    returns them.

    Each person is scored once, on its own image: an item a skip-mode dataset replaced by another (its image
    became unreadable) is left out and counted in ``n_skipped``, with the persons dropped before."""
    model.eval()
    indices, heatmaps, inouts = [], [], []
    for batch in tqdm(loader, desc="eval", leave=False, disable=not accelerator.is_local_main_process):
        with accelerator.autocast():
            heatmap, inout = model(batch, return_logits=False)
            heatmap, inout = heatmap.float(), (inout.float() if inout is not None else None)
        if inout is None:
            inout = torch.zeros(len(heatmap), device=heatmap.device)
        index, heatmap, inout = accelerator.gather_for_metrics((batch["index"], heatmap, inout))
        indices.append(index.cpu())
        heatmaps.append(heatmap.float().cpu())
        inouts.append(inout.float().cpu())
    order = torch.cat(indices).tolist()
    first = sorted({i: row for row, i in reversed(list(enumerate(order)))}.values())  # rows of distinct items
    samples = [dataset.sample(order[row]) for row in first]
    inout_scores = torch.cat(inouts).numpy()[first] if dataset_format in INOUT_DATASETS else None
    base = getattr(dataset, "base", dataset)  # a CachedFeatureDataset's GazeDataset
    unreadable = len(getattr(base, "skipped", [])) + len(dataset) - len(first)
    metrics = evaluate(torch.cat(heatmaps).numpy()[first], samples, inout_scores=inout_scores,
                       dataset=dataset_format, protocol=protocol, unreadable=unreadable)
    return {k: (float(v) if isinstance(v, (float, np.floating)) else v) for k, v in metrics.items()}


def evaluate_checkpoint(cfg: dict[str, Any], ckpt: str | Path, protocol: str = "auto", batch_size: int = 32,
                        device: str | None = None, num_workers: int = 0) -> dict[str, Any]:
    """Metrics of the student file ``ckpt`` (any format of gcdr.students.export.load_student) on
    ``load_samples(cfg, "test")``; ``protocol`` auto = the student's own."""
    cfg = RunConfig(cfg)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    student, checkpoint = load_student(ckpt, backbone=configured_gazelle_backbone(cfg))
    dataset_format, on_error = cfg.dataset.format, cfg.dataset.on_error
    protocol = student.protocol if protocol == "auto" else protocol
    maps = student.input_maps(student_config(cfg))  # VAT-GC: the test persons' Grad-CAM (student.gradcam_folders)
    dataset = dataset_for_student(load_samples(cfg, "test"), student, on_error, dataset_format, maps)
    if on_error == "skip":
        dataset.drop_unreadable()  # else the dataset would put another person's image in their place
    heatmaps, inout = predict_dataset(student, dataset, batch_size, device, num_workers)
    # an image that became unreadable since (seen only with num_workers=0) is left out too, never scored
    read = [i for i in range(len(dataset)) if i not in dataset.unreadable]
    samples = [dataset.sample(i) for i in read]
    scores = inout[read] if inout is not None and dataset_format in INOUT_DATASETS else None
    metrics = evaluate(heatmaps[read], samples, inout_scores=scores, dataset=dataset_format, protocol=protocol,
                       unreadable=len(dataset.skipped) + len(dataset) - len(read))
    return {"metrics": metrics, "protocol": protocol, "dataset": dataset_format, "checkpoint": str(ckpt),
            "model_config": checkpoint["model_config"], "checkpoint_epoch": checkpoint.get("epoch")}


def format_table(metrics: dict[str, Any]) -> str:
    """One markdown table row of the metrics that are there."""
    keys = [k for k in (*METRIC_KEYS, "n", "n_skipped", "n_unreadable") if k in metrics]
    header = "| " + " | ".join(keys) + " |"
    rule = "|" + "|".join("---" for _ in keys) + "|"
    values = "| " + " | ".join(f"{metrics[k]:.4f}" if isinstance(metrics[k], float) else str(metrics[k])
                               for k in keys) + " |"
    return "\n".join([header, rule, values])
