"""Inspection overlays: the image the VQA model saw (with the green box), its answer, and the Grad-CAM on top."""

from __future__ import annotations

import cv2
import numpy as np

from gcdr.heatmaps import normalize_heatmap


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
