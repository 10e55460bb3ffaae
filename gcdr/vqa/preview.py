"""Inspection overlays: the image the VQA model saw (with the green box), its answer, and the Grad-CAM on top;
and a pseudo-label before and after refinement, side by side."""

from __future__ import annotations

import logging

import cv2
import numpy as np

from gcdr.data.images import ImageReadError, load_image_rgb
from gcdr.data.sample import PersonSample
from gcdr.heatmaps import normalize_heatmap

log = logging.getLogger(__name__)


def cam_overlay(image_rgb: np.ndarray, raw_map: np.ndarray | None, caption: str, max_side: int = 512,
                alpha: float = 0.45) -> np.ndarray:
    """An RGB uint8 preview [h', w', 3]: the image scaled to ``max_side``, the min-max normalised map upsampled
    (bilinear) and blended in JET colours, and ``caption`` (e.g. "answer: cup  [cup]") on a black strip.

    image_rgb: [H, W, 3] uint8 (typically the prompt image with the person's box drawn).
    raw_map:   [h, w] raw Grad-CAM on the patch grid, or None (then no heatmap is drawn).
    """
    height, width = image_rgb.shape[:2]
    scale = min(1.0, max_side / max(height, width))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    image = cv2.resize(image_rgb, size, interpolation=cv2.INTER_AREA)
    if raw_map is not None and np.all(np.isfinite(raw_map)):
        heat = cv2.resize(normalize_heatmap(raw_map), size, interpolation=cv2.INTER_LINEAR)  # [h', w'] in [0, 1]
        colored = cv2.applyColorMap(np.uint8(255 * heat), cv2.COLORMAP_JET)[..., ::-1]  # BGR -> RGB
        image = np.uint8((1 - alpha) * image + alpha * colored)
    strip = np.zeros((22, image.shape[1], 3), np.uint8)
    cv2.putText(strip, caption[:80], (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return np.ascontiguousarray(np.concatenate([strip, image], axis=0))


def before_after_preview(sample: PersonSample, source_64: np.ndarray, result_64: np.ndarray,
                         title: str, answer: str = "") -> np.ndarray | None:
    """[source overlay | result overlay] [h', 2 w', 3] of two 64x64 maps of one person (e.g. Grad-CAM and its
    refinement) with the head box (green, drawn thick enough to survive the downscale) and any ground-truth
    point (white), captioned with the person's id and the VQA answer, so that two persons of one frame are told
    apart; None when the image is unreadable."""
    try:
        image = load_image_rgb(sample.image_path)
    except ImageReadError as error:
        log.warning("no preview for %s: %s", sample.sample_id, error)
        return None
    image = image.copy()
    x1, y1, x2, y2 = (int(round(v)) for v in sample.head_box_xyxy_px)
    height, width = image.shape[:2]
    thickness = max(2, round(max(height, width) / 160))  # about 2 px once the preview is 320 px wide
    cv2.rectangle(image, (x1, y1), (x2, y2), (0, 255, 0), thickness)
    for gx, gy in np.asarray(sample.gaze_points_norm, np.float32).reshape(-1, 2):
        if gx >= 0 and gy >= 0 and sample.inout == 1:
            cv2.circle(image, (int(gx * width), int(gy * height)), 2 * thickness, (255, 255, 255), -1)
    person = sample.sample_id.rsplit("/", 1)[-1]
    source_caption = f"{person} | {answer}" if answer else f"{person} | source"
    panels = [cam_overlay(image, source_64, source_caption[:44], max_side=320),
              cam_overlay(image, result_64, title, max_side=320)]
    return np.concatenate(panels, axis=1)
