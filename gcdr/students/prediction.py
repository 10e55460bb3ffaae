"""Gaze heatmaps and points for any images with head boxes, drawn (``make predict``).

Head-box files: one per person, rows ``<frame file>,<left>,<top>,<right>,<bottom>`` in pixels
(gcdr.data.headboxes). All persons of an image are predicted together (Gaze-LLE: one backbone pass per image).
Writes one PNG per image (heatmap overlay of every person, head boxes, a line from each head to its predicted
gaze point, a legend with each person's name and in-frame probability, and per-person panels when an image has
several persons) and ``predictions.csv``: sample_id, image, person, x_norm, y_norm (the heatmap's argmax,
normalised), inout (the probability that the gaze target is inside the frame, sigmoid applied for every student;
empty when the student has no in/out head, e.g. a Gaze-LLE trained on GazeFollow).
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


def _overlay(image_rgb: np.ndarray, heatmap_64: np.ndarray, alpha: float) -> np.ndarray:
    """A min-max normalised 64x64 heatmap (JET) blended over the image. [H, W, 3] uint8."""
    height, width = image_rgb.shape[:2]
    heat = cv2.resize(normalize_heatmap(heatmap_64), (width, height), interpolation=cv2.INTER_LINEAR)
    heat_rgb = cv2.cvtColor(cv2.applyColorMap((heat * 255).astype(np.uint8), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    return (image_rgb.astype(np.float32) * (1 - alpha) + heat_rgb.astype(np.float32) * alpha).astype(np.uint8)


def _label(canvas: np.ndarray, text: str, origin: tuple[int, int], colour, scale: float) -> None:
    """Text on a dark box (readable on any image), top-left at ``origin``."""
    thickness = max(1, round(scale * 2))
    (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    x, y = origin
    cv2.rectangle(canvas, (x, y), (x + w + 8, y + h + base + 8), (20, 20, 20), -1)
    cv2.putText(canvas, text, (x + 4, y + h + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thickness, cv2.LINE_AA)


def draw_predictions(image_rgb: np.ndarray, heatmaps_64: list[np.ndarray], head_boxes_px: list, points_norm: list,
                     names: list[str] | None = None, inout_probs: list[float] | None = None,
                     alpha: float = 0.45) -> np.ndarray:
    """The picture of one image's predictions. [H', W, 3] uint8.

    Top: every person's heatmap (per-pixel max of the normalised maps) over the image, each head box and a line
    from the head to the predicted gaze point in the person's colour, and a legend: the person's name and, when
    the student has an in/out head, the probability that the target is in the frame. With several persons a row
    of per-person panels follows (each person's own heatmap, titled with the name), so maps that overlap in the
    combined view can still be told apart.
    """
    height, width = image_rgb.shape[:2]
    names = names or [f"person {i + 1}" for i in range(len(heatmaps_64))]
    canvas = _overlay(image_rgb, np.max([normalize_heatmap(h) for h in heatmaps_64], axis=0), alpha)
    thickness = max(2, round(min(width, height) / 300))
    scale = max(0.4, min(width, height) / 900)
    colours = [PERSON_COLOURS_RGB[i % len(PERSON_COLOURS_RGB)] for i in range(len(heatmaps_64))]
    for box, point, colour in zip(head_boxes_px, points_norm, colours):
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), colour, thickness)
        gaze = (int(point[0] * width), int(point[1] * height))
        cv2.line(canvas, ((x1 + x2) // 2, (y1 + y2) // 2), gaze, colour, thickness)
        cv2.circle(canvas, gaze, 3 * thickness, colour, -1)
    line_height = int(40 * scale) + 12
    for i, (name, colour) in enumerate(zip(names, colours)):
        text = name if inout_probs is None or np.isnan(inout_probs[i]) else f"{name}  in frame p={inout_probs[i]:.2f}"
        _label(canvas, text, (8, 8 + i * line_height), colour, scale)
    if len(heatmaps_64) < 2:
        return canvas
    panel_width = width // len(heatmaps_64)
    panel_height = round(height * panel_width / width)
    row = np.zeros((panel_height, width, 3), np.uint8)
    small = cv2.resize(image_rgb, (panel_width, panel_height), interpolation=cv2.INTER_AREA)
    for i, (heatmap, name, colour) in enumerate(zip(heatmaps_64, names, colours)):
        panel = _overlay(small, heatmap, alpha)
        cv2.rectangle(panel, (0, 0), (panel_width - 1, panel_height - 1), colour, thickness)
        _label(panel, name, (6, 6), colour, scale * 0.8)
        row[:, i * panel_width:(i + 1) * panel_width] = panel
    return np.concatenate([canvas, row], axis=0)


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
    if student.reads_input_maps:
        raise UserError(f"{ckpt} is a {student.name} student, which reads each person's Grad-CAM map, and make "
                        "predict computes none: use it through make refine METHOD=student (with a Grad-CAM "
                        "folder) or make eval (student.gradcam_folders)")
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
                                  [(rows[i]["x_norm"], rows[i]["y_norm"]) for i in indices],
                                  names=[rows[i]["person"] for i in indices],
                                  inout_probs=[rows[i]["inout"] for i in indices])
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
    student was trained; GazeFollow's for a head-box dataset) and Gaze-LLE backbone; ``out_dir`` default
    ``<out_root>/predict/<images folder>-<ckpt parent>-<stem>`` (another image folder never overwrites it);
    writes provenance.json there."""
    cfg = RunConfig(cfg)
    ckpt = Path(ckpt)
    out_dir = Path(out_dir) if out_dir else (paths.out_root(cfg) / "predict"
                                             / f"{Path(images_dir).resolve().name}-{ckpt.parent.name}-{ckpt.stem}")
    # own images (IMAGES=, a head-box dataset) say nothing of how the student was trained: GazeFollow's convention
    convention = "gazefollow" if cfg.dataset.format == "headboxes" else cfg.dataset.format
    table = predict_folder(ckpt, images_dir, heads, out_dir, batch_size, device, on_error, convention,
                           backbone=configured_gazelle_backbone(cfg))
    write_provenance(out_dir, "predict", cfg, checkpoint=str(ckpt), images=str(images_dir), heads=heads)
    return table
