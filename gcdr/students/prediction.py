"""Gaze heatmaps and points for any images with head boxes, drawn (``make predict``).

Head-box files: one per person, rows ``<frame file>,<left>,<top>,<right>,<bottom>`` in pixels
(gcdr.data.headboxes). All persons of an image are predicted together (Gaze-LLE: one backbone pass per image).
Writes one PNG per image (heatmap overlay of every person, head boxes, a line from each head to its predicted
gaze point) and ``predictions.csv`` (sample_id, image, person, x_norm, y_norm, inout score).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import torch

from gcdr import paths
from gcdr.atomic import atomic_path
from gcdr.config import RunConfig
from gcdr.data.headboxes import read_headbox_folder
from gcdr.data.images import load_image_rgb
from gcdr.errors import UserError
from gcdr.heatmaps import argmax_point_norm, normalize_heatmap
from gcdr.provenance import write_provenance
from gcdr.students.evaluation import dataset_for_student, predict_dataset
from gcdr.students.export import load_student
from gcdr.students.gazelle import configured_gazelle_backbone

log = logging.getLogger(__name__)


class NoPersonsError(UserError, ValueError):
    """The head-box files name no person of the images."""


PERSON_COLOURS_RGB = [(255, 64, 64), (64, 200, 255), (255, 220, 0), (120, 255, 120), (255, 120, 255)]


def draw_predictions(image_rgb: np.ndarray, heatmaps_64: list[np.ndarray], head_boxes_px: list, points_norm: list,
                     alpha: float = 0.45) -> np.ndarray:
    """Overlay the persons' heatmaps (per-pixel max of the min-max normalised maps, JET) on the image, with
    each head box and a line from the head centre to the gaze point in the person's colour. [H, W, 3] uint8."""
    height, width = image_rgb.shape[:2]
    combined = np.max([normalize_heatmap(h) for h in heatmaps_64], axis=0)  # [64, 64]
    heat = cv2.resize(combined, (width, height), interpolation=cv2.INTER_LINEAR)
    heat_rgb = cv2.cvtColor(cv2.applyColorMap((heat * 255).astype(np.uint8), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    canvas = (image_rgb.astype(np.float32) * (1 - alpha) + heat_rgb.astype(np.float32) * alpha).astype(np.uint8)
    thickness = max(2, round(min(width, height) / 300))
    for person, (box, point) in enumerate(zip(head_boxes_px, points_norm)):
        colour = PERSON_COLOURS_RGB[person % len(PERSON_COLOURS_RGB)]
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), colour, thickness)
        head_centre = ((x1 + x2) // 2, (y1 + y2) // 2)
        gaze = (int(point[0] * width), int(point[1] * height))
        cv2.line(canvas, head_centre, gaze, colour, thickness)
        cv2.circle(canvas, gaze, 3 * thickness, colour, -1)
    return canvas


def predict_folder(ckpt: str | Path, images_dir: str | Path, heads: list[str], out_dir: str | Path,
                   batch_size: int = 32, device: str | None = None, on_error: str = "raise",
                   box_convention: str = "gazefollow", backbone: str | None = None) -> pd.DataFrame:
    """Predict every person of every image that a head-box file names with the student file ``ckpt`` (any format
    of gcdr.students.export.load_student); draw and tabulate. Returns the table.

    box_convention: the head-box convention the student was trained with ("gazefollow": VAT enlarges boxes
    by 10 %; "videoattentiontarget": as given). Gaze-LLE never enlarges.
    """
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    student, _ = load_student(ckpt, backbone=backbone)
    samples = read_headbox_folder(images_dir, heads, on_error)
    if not samples:
        raise NoPersonsError(f"no persons found in {heads} for images in {images_dir}")
    dataset = dataset_for_student(samples, student, on_error, box_convention)
    heatmaps, inout = predict_dataset(student, dataset, batch_size, device)
    out_dir = Path(out_dir)
    rows, by_image = [], {}
    for index, sample in enumerate(dataset.samples):
        x, y = argmax_point_norm(heatmaps[index])
        person = sample.sample_id.rsplit("|", 1)[-1]
        rows.append({"sample_id": sample.sample_id, "image": sample.image_path, "person": person,
                     "x_norm": x, "y_norm": y, "inout": float(inout[index]) if inout is not None else np.nan})
        by_image.setdefault(sample.image_path, []).append(index)
    for image_path, indices in by_image.items():
        image = load_image_rgb(image_path)
        canvas = draw_predictions(image, [heatmaps[i] for i in indices],
                                  [dataset.samples[i].head_box_xyxy_px for i in indices],
                                  [(rows[i]["x_norm"], rows[i]["y_norm"]) for i in indices])
        with atomic_path(out_dir / f"{Path(image_path).stem}.png") as tmp:
            cv2.imwrite(str(tmp), cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
    table = pd.DataFrame(rows)
    with atomic_path(out_dir / "predictions.csv") as tmp:
        table.to_csv(tmp, index=False)
    log.info("%d persons in %d images -> %s", len(rows), len(by_image), out_dir)
    return table


def predict_stage(cfg: dict[str, Any], ckpt: str | Path, images_dir: str | Path, heads: list[str],
                  out_dir: str | Path | None = None, batch_size: int = 32, device: str | None = None,
                  on_error: str = "raise") -> pd.DataFrame:
    """``make predict``: :func:`predict_folder` with the config's head-box convention (``dataset.format``, as the
    student was trained) and Gaze-LLE backbone; ``out_dir`` default ``<out_root>/predict/<ckpt parent>-<stem>``;
    writes provenance.json there."""
    cfg = RunConfig(cfg)
    ckpt = Path(ckpt)
    out_dir = Path(out_dir) if out_dir else paths.out_root(cfg) / "predict" / f"{ckpt.parent.name}-{ckpt.stem}"
    table = predict_folder(ckpt, images_dir, heads, out_dir, batch_size, device, on_error, cfg.dataset.format,
                           backbone=configured_gazelle_backbone(cfg))
    write_provenance(out_dir, "predict", cfg, checkpoint=str(ckpt), images=str(images_dir), heads=heads)
    return table
