"""Gaze-following metrics: the one evaluation used by every stage and test (docs/protocols.md).

Per person, from a predicted heatmap P (64x64; GazeFollow also takes any h x w) and the ground-truth points:

- **argmax point** p = (col / w, row / h) of the first maximum of P in row-major order (no half-pixel offset).
- **min L2** = min_k |p - g_k|, **avg L2** = |p - mean_k g_k|, in normalised coordinates (x/W, y/H).
- **AUC**
  - GazeFollow: at the ORIGINAL image size H x W. Target = one pixel per annotator at
    (row int(g_y H), col int(g_x W)), clamped to the image; P is resized bilinearly to H x W and ranked
    against that target exactly as ``sklearn.metrics.roc_auc_score`` would.
  - VideoAttentionTarget: on the 64x64 grid against the binarised Gaussian (docs/official-code.md#gaussian-target), i.e. the 19x19 square
    [max(0, int(64g - 9)), min(int(64g + 10), end)) per axis. L2 on in-frame frames only; in/out AP over
    all frames with a known flag (label 1 = in frame) with ``sklearn.metrics.average_precision_score``.

- ChildPlay (``dataset="childplay"``): the VideoAttentionTarget metrics above, frame by frame (ChildPlay's
  reference evaluation uses the same 64x64 square target), plus **P.Head**, the precision of looking at heads:
  over in-frame persons whose predicted point falls in the head box of another annotated person of the same
  image, the fraction whose true point falls in one too (any head, not necessarily the same). Persons whose
  in/out is unknown (ChildPlay's occluded / uncertain / gaze-shift / eyes-closed classes) are in no metric.
- GOO (``dataset="goo"``): GOO's own evaluation (GOO-GAZE2021 ``evaluate_chong.py``): per person, P resized to
  5x5 with ``cv2.resize`` (bilinear, float), target = the one cell (int(5 g_y), int(5 g_x)), ROC AUC averaged over
  persons; L2 = |p - g| (one point); ``angular`` = the angle in degrees between p - e and g - e (e = the eye /
  head point, normalised coordinates), averaged over persons with an eye point. One protocol for all three
  ``protocol`` values (GOO has one). The GazeFollow-style AUC at the image size is ``dataset="gazefollow"`` on the
  same samples.

Protocols: how P becomes the ranked scores (they differ in ties, borders and rounding only):

- "gcdr" (default). GazeFollow: GCDR's eval loop (``train_gazefollow_semisup.py``): per-sample
  (P - min) / (max - min + 1e-11) in float32, then ``skimage.transform.resize(P, (H, W))`` with its
  defaults (order 1, mode "reflect" = ndimage "mirror", anti-aliasing only when down-sampling, clip to the
  input range); float result. Target pixels from float32 products (g * W.float()).
  VideoAttentionTarget (GCDR ships no script for it): VAT's square (index 63 can be inside) ranked on the
  float P, i.e. without VAT's uint8 re-quantisation -- a choice, in GCDR's float style.
- "vat". GazeFollow: ``scipy.misc.imresize(P, (H, W), interp="bilinear")`` = bytescale to uint8
  ((P - min) * 255 / (max - min) + 0.5, truncated), then PIL's bilinear resize of the 8-bit image (PIL is
  what imresize called); many ties. Target pixels from float32 products. VideoAttentionTarget: VAT's square,
  P bytescaled to uint8 (``imresize`` to the same 64x64 size).
- "gazelle". GazeFollow: ``torch.nn.functional.interpolate(P, (H, W), mode="bilinear")`` in float32
  (align_corners False, edge-clamped border), no normalisation; target pixels from float64 products.
  VideoAttentionTarget: gazelle's square, right/bottom end at 63 (index 63 never inside), raw float P.

Gaze points arrive as the float64 values of the annotation files (``PersonSample``); each protocol rounds
them only where its own code does: to float32 for "vat" and "gcdr" (VAT's and GCDR's gaze tensors; the
VideoAttentionTarget square is then computed in float32 too), never for "gazelle" (Python floats). Min/avg
L2 are computed in float64 for every protocol (VAT's float32 L2 differs by ~1e-8).

Why "gcdr" is the default: the project re-implements GCDR, and this is the protocol behind GCDR's
semi-supervised evaluation (docs/protocols.md#which-protocol-is-used-where), so our numbers compare with GCDR's own.

skimage is not a dependency: the "gcdr" resize calls scipy.ndimage exactly as
``skimage.transform.resize`` does (zoom with ``grid_mode=True``, mirror border, Gaussian pre-filter when a
side shrinks, clip to the input range), so it equals skimage's output bit for bit, ties included
(tests/test_metrics.py keeps skimage's values for a hand case). It costs ~6 ms per 640x480 person.

Speed: only the ~10 positive pixels' ranks matter, so the AUC is the Mann-Whitney statistic (fraction of
(positive, negative) pairs ordered correctly, ties counting 1/2) from counts of pixels strictly below /
equal to each positive value -- identical to ``roc_auc_score`` without sorting 300k pixels per person.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image
from scipy import ndimage
from sklearn.metrics import average_precision_score

from gcdr.data.sample import IN_FRAME, OUT_OF_FRAME, PersonSample
from gcdr.heatmaps import HEATMAP_SIZE, argmax_point_norm, as_numpy, normalize_heatmap

log = logging.getLogger(__name__)

PROTOCOLS = ("gcdr", "vat", "gazelle")
DATASETS = ("gazefollow", "videoattentiontarget", "childplay", "goo")
# datasets evaluated frame by frame on the 64x64 grid with in/out AP (VideoAttentionTarget's metrics)
_FRAME_DATASETS = ("videoattentiontarget", "childplay")
INOUT_DATASETS = _FRAME_DATASETS  # datasets whose protocol scores in/out (AP): frames with known in/out
GOO_AUC_GRID = 5  # GOO's AUC grid (evaluate_chong.py: cv2.resize to 5x5)
# Half-width of the Gaussian patch (docs/official-code.md#gaussian-target) (3 sigma, sigma = 3): the patch spans int(p - 9) .. int(p + 10) - 1.
_GAUSSIAN_RADIUS = 9
# Up to this many distinct positive values the AUC counts by comparison passes; beyond, it sorts.
_MAX_COMPARISON_PASSES = 16

__all__ = [
    "DATASETS", "INOUT_DATASETS", "PROTOCOLS", "auc_from_scores", "evaluate", "evaluate_points",
    "gazefollow_auc", "gazefollow_target_indices", "goo_angular_error", "goo_auc", "l2_distances",
    "looking_at_head_precision", "upsample_heatmap", "videoattention_auc", "videoattention_target_64",
]


# ---------------------------------------------------------------------------------------------------------
# points and distances


def l2_distances(point_norm: Sequence[float] | np.ndarray, gaze_points_norm: np.ndarray) -> tuple[float, float]:
    """(min L2, avg L2) of one predicted point to a person's annotator points, in normalised coordinates.

    point_norm: (x, y). gaze_points_norm: [K, 2], K >= 1. avg L2 is the distance to the MEAN annotator point
    (not the mean of the distances), as in VAT/GCDR/gazelle.
    """
    point = np.asarray(point_norm, np.float64).reshape(2)
    points = np.asarray(gaze_points_norm, np.float64).reshape(-1, 2)  # [K, 2]
    if len(points) == 0:
        raise ValueError("l2_distances needs at least one ground-truth point")
    min_l2 = float(np.sqrt(((points - point) ** 2).sum(axis=1)).min())
    avg_l2 = float(np.sqrt(((points.mean(axis=0) - point) ** 2).sum()))
    return min_l2, avg_l2


# ---------------------------------------------------------------------------------------------------------
# AUC


def auc_from_scores(scores: np.ndarray, positive: np.ndarray) -> float:
    """ROC AUC of ``scores`` for a binary target; equals ``sklearn.metrics.roc_auc_score(target, scores)``.

    scores:   any shape, finite (any real or integer dtype; ties are handled exactly).
    positive: a bool mask of the same shape, or flat integer indices of the positive entries (repeats count
              once, as when a target map sets the same pixel twice).
    Returns the fraction of (positive, negative) pairs with the positive scored higher, ties counting 1/2.
    Cost: a few passes over ``scores`` when the positives take few distinct values (GazeFollow: ~10 of
    ~300k pixels); a sort otherwise.
    """
    scores = np.asarray(scores).ravel()
    positive = np.asarray(positive)
    if positive.dtype == bool:
        if positive.size != scores.size:
            raise ValueError(f"positive mask has {positive.size} entries, scores {scores.size}")
        positive_index = np.flatnonzero(positive.ravel())
    else:
        positive_index = np.unique(positive.ravel().astype(np.int64))
        if positive_index.size and (positive_index[0] < 0 or positive_index[-1] >= scores.size):
            raise ValueError(f"positive indices out of range for {scores.size} scores")
    n_positive = int(positive_index.size)
    n_negative = scores.size - n_positive
    if n_positive == 0 or n_negative == 0:
        raise ValueError("AUC is undefined when the target has only one class "
                         f"({n_positive} positives, {n_negative} negatives)")
    if scores.dtype.kind == "f" and not np.isfinite(scores).all():
        raise ValueError("AUC scores contain NaN or infinity")

    positive_values = np.sort(scores[positive_index])  # [n_pos]
    distinct_values = np.unique(positive_values)  # [d], sorted
    below_all, equal_all = _count_below_and_equal(scores, distinct_values)  # [d], [d], over all entries
    # Remove the positives' own contributions, leaving counts of negatives.
    below_pos = np.searchsorted(positive_values, distinct_values, side="left")
    equal_pos = np.searchsorted(positive_values, distinct_values, side="right") - below_pos
    negatives_below = below_all - below_pos
    negatives_equal = equal_all - equal_pos
    # Each distinct value is held by equal_pos positives; integer arithmetic keeps the sum exact.
    twice_u = int(np.sum(equal_pos * (2 * negatives_below + negatives_equal)))
    return twice_u / (2.0 * n_positive * n_negative)


def _count_below_and_equal(scores: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each of the sorted ``values``: how many ``scores`` are strictly below it and equal to it."""
    if len(values) > _MAX_COMPARISON_PASSES or scores.size <= 8192:
        ordered = np.sort(scores)
        below = np.searchsorted(ordered, values, side="left")
        return below, np.searchsorted(ordered, values, side="right") - below
    # Only entries within [lowest, highest] positive value need per-value counting.
    lowest, highest = values[0], values[-1]
    in_range = scores >= lowest
    n_below_lowest = scores.size - int(np.count_nonzero(in_range))
    in_range &= scores <= highest
    middle = np.extract(in_range, scores)  # several times faster than scores[in_range] on scattered masks
    below = np.array([n_below_lowest + np.count_nonzero(middle < v) for v in values], np.int64)
    equal = np.array([np.count_nonzero(middle == v) for v in values], np.int64)
    return below, equal


def gazefollow_target_indices(gaze_points_norm: np.ndarray, size_wh: tuple[int, int],
                              protocol: str = "gcdr") -> np.ndarray:
    """Flat indices (row * W + col) of the GazeFollow AUC target pixels, one per annotator point.

    Pixel = (row int(g_y * H), col int(g_x * W)), each clamped to [0, H-1] / [0, W-1] (int truncates).
    VAT and GCDR multiply float32 tensors (g * W.float()); gazelle multiplies Python floats (float64). The
    two can differ by one pixel when g * W lies within float32 rounding of an integer.
    """
    _check_protocol(protocol)
    width, height = int(size_wh[0]), int(size_wh[1])
    dtype = np.float64 if protocol == "gazelle" else np.float32
    points = np.asarray(gaze_points_norm, np.float64).reshape(-1, 2).astype(dtype)  # [K, 2]
    cols = np.clip((points[:, 0] * dtype(width)).astype(np.int64), 0, width - 1)
    rows = np.clip((points[:, 1] * dtype(height)).astype(np.int64), 0, height - 1)
    return np.unique(rows * width + cols)


def gazefollow_auc(heatmap: np.ndarray | torch.Tensor, gaze_points_norm: np.ndarray, size_wh: tuple[int, int],
                   protocol: str = "gcdr") -> float:
    """AUC of one GazeFollow person at the original image size (W, H), see the module docstring."""
    width, height = int(size_wh[0]), int(size_wh[1])
    upsampled = upsample_heatmap(heatmap, (height, width), protocol)  # [H, W]
    return auc_from_scores(upsampled, gazefollow_target_indices(gaze_points_norm, (width, height), protocol))


def videoattention_target_64(gaze_points_norm: np.ndarray, protocol: str = "gcdr") -> np.ndarray:
    """[64, 64] bool AUC target of VideoAttentionTarget: the binarised Gaussian (docs/official-code.md#gaussian-target) per point (union).

    Rows/cols [max(0, int(64 g - 9)), min(int(64 g + 9 + 1), end)), end = 64 for "vat"/"gcdr" (VAT draws the
    Gaussian, whose support is this square, and thresholds it at > 0) and 63 for "gazelle". The arithmetic
    is each protocol's own: float32 for "vat"/"gcdr" (VAT's gaze tensors), float64 for "gazelle".
    """
    _check_protocol(protocol)
    end = HEATMAP_SIZE - 1 if protocol == "gazelle" else HEATMAP_SIZE
    # VAT: float32 tensors (g * 64, then - 9 and + 9 + 1 in float32); gazelle: Python floats (float64)
    dtype = np.float64 if protocol == "gazelle" else np.float32
    target = np.zeros((HEATMAP_SIZE, HEATMAP_SIZE), bool)
    for gaze_x, gaze_y in np.asarray(gaze_points_norm, np.float64).reshape(-1, 2).astype(dtype):
        x, y = gaze_x * dtype(HEATMAP_SIZE), gaze_y * dtype(HEATMAP_SIZE)
        left, top = max(0, int(x - _GAUSSIAN_RADIUS)), max(0, int(y - _GAUSSIAN_RADIUS))
        right, bottom = min(int(x + _GAUSSIAN_RADIUS + 1), end), min(int(y + _GAUSSIAN_RADIUS + 1), end)
        target[top:bottom, left:right] = True
    return target


def videoattention_auc(heatmap_64: np.ndarray | torch.Tensor, gaze_points_norm: np.ndarray,
                       protocol: str = "gcdr") -> float:
    """AUC of one VideoAttentionTarget frame on the 64x64 grid, see the module docstring."""
    heatmap = as_numpy(heatmap_64)
    if heatmap.shape != (HEATMAP_SIZE, HEATMAP_SIZE):
        raise ValueError(f"VideoAttentionTarget AUC needs a 64x64 heatmap, got {heatmap.shape}")
    scores = _bytescale(heatmap) if protocol == "vat" else heatmap
    return auc_from_scores(scores, videoattention_target_64(gaze_points_norm, protocol))


# ---------------------------------------------------------------------------------------------------------
# upsampling per protocol


def upsample_heatmap(heatmap: np.ndarray | torch.Tensor, size_hw: tuple[int, int],
                     protocol: str = "gcdr") -> np.ndarray:
    """Bilinear resize of a [h, w] map to [H, W] exactly as the protocol's evaluation code does.

    "gcdr":    GCDR's min-max (a constant map becomes zeros), then skimage ``resize(order=1)``: half-pixel
               centres, mirror border, clipped to the input range; float32 (float64 input stays float64).
    "vat":     scipy ``imresize``: bytescale to uint8, PIL bilinear; uint8.
    "gazelle": ``torch.nn.functional.interpolate(mode="bilinear")`` in float32 on CPU, no normalisation.
    """
    _check_protocol(protocol)
    out_height, out_width = int(size_hw[0]), int(size_hw[1])
    if out_height < 1 or out_width < 1:
        raise ValueError(f"output size must be positive, got {size_hw}")
    heatmap = as_numpy(heatmap)
    if heatmap.ndim != 2:
        raise ValueError(f"upsample_heatmap expects a [h, w] map, got shape {heatmap.shape}")
    if protocol == "vat":
        image = Image.fromarray(_bytescale(heatmap))  # mode "L"
        return np.asarray(image.resize((out_width, out_height), Image.BILINEAR))  # [H, W] uint8
    if protocol == "gazelle":
        tensor = torch.from_numpy(np.ascontiguousarray(heatmap, np.float32))[None, None]  # [1, 1, h, w]
        resized = torch.nn.functional.interpolate(tensor, size=(out_height, out_width), mode="bilinear",
                                                  align_corners=False)
        return resized[0, 0].numpy()  # [H, W] float32
    # GCDR's per-sample min-max (torch, float32 in its eval loop), in the map's float dtype
    return _skimage_resize_linear(normalize_heatmap(heatmap, keep_float64=True), (out_height, out_width))


def _skimage_resize_linear(image: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """``skimage.transform.resize(image, size_hw, order=1)`` with its defaults (mode "reflect" = ndimage
    "mirror", anti-aliasing only when a side shrinks, clip=True), bit for bit, for a float32/float64 [h, w]
    image; same dtype out.

    scikit-image (>= 0.19) is a thin layer over scipy.ndimage: this runs the very calls it makes, with the
    same arguments (zoom factors 1 / (in / out), half-pixel ``grid_mode``, the Gaussian anti-aliasing sigma
    max(0, (in / out - 1) / 2)), so ties in the upsampled map fall exactly where GCDR's evaluation has them.
    """
    factors = np.divide(image.shape, size_hw)  # [2] input / output per axis
    filtered = image
    if (factors > 1).any():  # skimage's anti_aliasing=None default: on when any side shrinks
        filtered = ndimage.gaussian_filter(image, np.maximum(0, (factors - 1) / 2), mode="mirror")
    out = ndimage.zoom(filtered, [1 / factor for factor in factors], order=1, mode="mirror", grid_mode=True)
    if out.shape != tuple(size_hw):  # zoom rounds in * (1 / (in / out)); never seen to miss
        raise AssertionError(f"ndimage.zoom gave {out.shape}, expected {tuple(size_hw)}")
    np.clip(out, image.min(), image.max(), out=out)  # skimage's clip=True: the range of its input
    return out


def _bytescale(heatmap: np.ndarray) -> np.ndarray:
    """scipy's ``bytescale`` (inside ``imresize``): (P - min) * (255 / (max - min)), clipped to [0, 255],
    + 0.5, truncated to uint8; a constant map scales by 255 / 1. The scale is divided in float64 and
    multiplied in the map's dtype, as NumPy 1.x did for a float32 map (float16 -> float32 here)."""
    dtype = np.float64 if heatmap.dtype == np.float64 else np.float32
    heatmap = heatmap.astype(dtype, copy=False)
    low, high = heatmap.min(), heatmap.max()
    scale = dtype(255.0 / (float(high - low) or 1.0))
    return (np.clip((heatmap - low) * scale, 0, 255) + 0.5).astype(np.uint8)


# ---------------------------------------------------------------------------------------------------------
# GOO and ChildPlay additions


def goo_auc(heatmap: np.ndarray | torch.Tensor, gaze_point_norm: Sequence[float] | np.ndarray) -> float:
    """GOO's AUC of one person: P resized to 5x5 by ``cv2.resize`` (INTER_LINEAR, float32, no normalisation),
    target = the single cell (row int(5 g_y), col int(5 g_x)), clamped to 4 (GOO's code has no clamp and fails
    at g = 1.0)."""
    heatmap = np.ascontiguousarray(as_numpy(heatmap), np.float32)
    if heatmap.ndim != 2:
        raise ValueError(f"goo_auc expects a [h, w] map, got shape {heatmap.shape}")
    scores = cv2.resize(heatmap, (GOO_AUC_GRID, GOO_AUC_GRID), interpolation=cv2.INTER_LINEAR)  # [5, 5]
    x, y = (min(int(v * GOO_AUC_GRID), GOO_AUC_GRID - 1) for v in np.asarray(gaze_point_norm, np.float64).ravel()[:2])
    return auc_from_scores(scores, np.array([y * GOO_AUC_GRID + x]))


def goo_angular_error(point_norm: Sequence[float] | np.ndarray, gaze_point_norm: Sequence[float] | np.ndarray,
                      eye_point_norm: Sequence[float] | np.ndarray) -> float:
    """Angle in degrees between p - e and g - e in normalised coordinates, as GOO's evaluation: cosine with
    1e-6 added to the product of the norms, clipped to [-1, 1]."""
    eye = np.asarray(eye_point_norm, np.float64).ravel()[:2]
    predicted = np.asarray(point_norm, np.float64).ravel()[:2] - eye
    truth = np.asarray(gaze_point_norm, np.float64).ravel()[:2] - eye
    cosine = float(predicted @ truth) / (float(np.linalg.norm(predicted) * np.linalg.norm(truth)) + 1e-6)
    return float(np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0))))


def _in_any_box(point_px: np.ndarray, boxes_px: np.ndarray) -> bool:
    """Whether (x, y) lies in any of the [n, 4] boxes, borders included."""
    if len(boxes_px) == 0:
        return False
    x, y = point_px
    return bool(((boxes_px[:, 0] <= x) & (x <= boxes_px[:, 2]) & (boxes_px[:, 1] <= y) & (y <= boxes_px[:, 3])).any())


def looking_at_head_precision(points_norm: Sequence[np.ndarray], samples: Sequence[PersonSample]
                              ) -> tuple[float, int]:
    """ChildPlay's P.Head: (precision, number of predictions on a head).

    points_norm: the predicted point (x, y) per sample, None for samples that are not scored. For every scored
    in-frame person, a prediction "looks at a head" when it falls in the head box of another sample of the same
    image (``image_path``; pixels via ``image_size_wh``, borders included; the person's own box excluded); the
    truth looks at a head when its point does. Precision = both / predicted; NaN when no prediction does.
    """
    boxes_by_image: dict[str, list[tuple[str, tuple[float, float, float, float]]]] = {}
    for sample in samples:
        boxes_by_image.setdefault(sample.image_path, []).append((sample.sample_id, sample.head_box_xyxy_px))
    predicted_on_head = true_positive = 0
    for point, sample in zip(points_norm, samples):
        if point is None:
            continue
        others = np.array([box for sample_id, box in boxes_by_image[sample.image_path]
                           if sample_id != sample.sample_id], np.float64).reshape(-1, 4)
        size = np.asarray(_image_size_wh(sample, None), np.float64)
        if _in_any_box(np.asarray(point, np.float64) * size, others):
            predicted_on_head += 1
            truth = _valid_gaze_points(sample)
            true_positive += int(any(_in_any_box(g * size, others) for g in truth))
    if predicted_on_head == 0:
        return float("nan"), 0
    return true_positive / predicted_on_head, predicted_on_head


# ---------------------------------------------------------------------------------------------------------
# datasets


def evaluate(heatmaps_64: np.ndarray | torch.Tensor | Sequence[np.ndarray], samples: Sequence[PersonSample], *,
             inout_scores: np.ndarray | torch.Tensor | Sequence[float] | None = None,
             dataset: str = "gazefollow", protocol: str = "gcdr",
             image_sizes_wh: Sequence[tuple[int, int] | None] | None = None,
             per_sample: bool = False, unreadable: int = 0) -> dict[str, Any]:
    """Average metrics of predicted heatmaps over persons (GazeFollow) or frames (VideoAttentionTarget).

    heatmaps_64:    [N, 64, 64] (or [N, 1, 64, 64]) array/tensor, raw model output (no normalisation needed);
                    GazeFollow also accepts any [N, h, w] or a list of [h_i, w_i] maps (e.g. raw Grad-CAMs).
    samples:        the N persons, in the same order. Persons without an in-frame gaze (``has_gaze`` false,
                    or no point with non-negative coordinates) are left out of AUC/L2 and counted.
    inout_scores:   [N] in/out scores (logits or probabilities, higher = in frame) -> "ap" over the samples
                    whose in/out flag is known (1 or 0).
    dataset:        "gazefollow" (AUC at the original image size) | "videoattentiontarget" (AUC on 64x64) |
                    "childplay" (videoattentiontarget's metrics + P.Head) | "goo" (GOO's 5x5 AUC, L2, angle).
    protocol:       "gcdr" (default) | "vat" | "gazelle", see the module docstring.
    image_sizes_wh: optional [N] (W, H) overriding ``sample.image_size_wh`` (GazeFollow AUC needs one).
    per_sample:     also return "per_sample": a list of {sample_id, auc, min_l2, avg_l2} (NaN when skipped).
    unreadable:     persons of the test set left out before prediction because their image could not be read
                    (gcdr.data.dataset.GazeDataset.skipped); they are not in ``samples`` and count as skipped.

    Returns {"auc", "min_l2", "avg_l2", "n" (persons scored), "n_skipped" (persons not scored: no in-frame
    gaze, or ``unreadable``), "n_unreadable", "n_total" (= n + n_skipped)}; for
    videoattentiontarget also "l2" (= avg_l2; one point per frame), "n_in" (= n, in-frame frames scored),
    and "ap" with "n_ap" (NaN / 0 without in/out scores); childplay also "p_head" with "n_p_head" (predictions
    on another person's head); goo also "l2" (= avg_l2) and "angular" (degrees) with "n_angular". Means are
    NaN when nothing was scored.
    """
    _check_protocol(protocol)
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")
    heatmaps = _heatmap_list(heatmaps_64)
    if len(heatmaps) != len(samples):
        raise ValueError(f"{len(heatmaps)} heatmaps for {len(samples)} samples")
    if image_sizes_wh is not None and len(image_sizes_wh) != len(samples):
        raise ValueError(f"{len(image_sizes_wh)} image sizes for {len(samples)} samples")

    rows = []
    points: list[np.ndarray | None] = []  # argmax point of every scored sample (P.Head)
    angles: list[float] = []  # GOO angular errors
    for index, (heatmap, sample) in enumerate(zip(heatmaps, samples)):
        gaze_points = _valid_gaze_points(sample)  # [K, 2]
        if len(gaze_points) == 0:
            rows.append((sample.sample_id, np.nan, np.nan, np.nan))
            points.append(None)
            continue
        if heatmap.ndim != 2 or not np.isfinite(heatmap).all():
            raise ValueError(f"sample {sample.sample_id} ({sample.source}): heatmap of shape {heatmap.shape} "
                             "must be 2-D and finite")
        point = np.asarray(argmax_point_norm(heatmap), np.float64)
        points.append(point)
        min_l2, avg_l2 = l2_distances(point, gaze_points)
        if dataset == "gazefollow":
            size_wh = _image_size_wh(sample, None if image_sizes_wh is None else image_sizes_wh[index])
            auc = gazefollow_auc(heatmap, gaze_points, size_wh, protocol)
        elif dataset == "goo":
            auc = goo_auc(heatmap, gaze_points.mean(axis=0))
            if sample.eye_point_norm is not None:
                angles.append(goo_angular_error(point, gaze_points.mean(axis=0), sample.eye_point_norm))
        else:
            auc = _videoattention_auc_of(sample, heatmap, gaze_points, protocol)
        rows.append((sample.sample_id, auc, min_l2, avg_l2))

    scored = [row for row in rows if not np.isnan(row[1])]
    n_skipped = len(rows) - len(scored)
    if n_skipped:
        log.info("evaluate: %d of %d samples have no in-frame gaze and are left out of AUC/L2",
                 n_skipped, len(rows))
    unreadable = int(unreadable)
    if unreadable < 0:
        raise ValueError(f"unreadable must be >= 0, got {unreadable}")
    if unreadable:
        log.warning("evaluate: %d persons whose image could not be read are left out (counted in n_skipped)",
                    unreadable)
    result: dict[str, Any] = {
        "auc": _mean([row[1] for row in scored]),
        "min_l2": _mean([row[2] for row in scored]),
        "avg_l2": _mean([row[3] for row in scored]),
        "n": len(scored), "n_skipped": n_skipped + unreadable, "n_unreadable": unreadable,
        "n_total": len(rows) + unreadable,
    }
    if dataset in _FRAME_DATASETS:
        result["l2"] = result["avg_l2"]
        result["n_in"] = len(scored)
        result["ap"], result["n_ap"] = float("nan"), 0
    if dataset == "childplay":
        result["p_head"], result["n_p_head"] = looking_at_head_precision(points, samples)
    if dataset == "goo":
        result["l2"] = result["avg_l2"]
        result["angular"], result["n_angular"] = _mean(angles), len(angles)
    if inout_scores is not None:
        result["ap"], result["n_ap"] = _inout_average_precision(inout_scores, samples)
    if per_sample:
        result["per_sample"] = [dict(zip(("sample_id", "auc", "min_l2", "avg_l2"), row)) for row in rows]
    return result


def evaluate_points(points_norm: np.ndarray | torch.Tensor, samples: Sequence[PersonSample]) -> dict[str, Any]:
    """Min / avg L2 of point predictions (e.g. a Grad-CAM argmax), [N, 2] normalised (x, y), one per sample.

    Persons without an in-frame gaze are skipped and counted as in ``evaluate``; a non-finite point of a
    scored person is an error naming the sample. Returns {"min_l2", "avg_l2", "n", "n_skipped", "n_total"}.
    """
    points = as_numpy(points_norm).astype(np.float64).reshape(-1, 2)  # [N, 2]
    if len(points) != len(samples):
        raise ValueError(f"{len(points)} points for {len(samples)} samples")
    min_l2s, avg_l2s = [], []
    for point, sample in zip(points, samples):
        gaze_points = _valid_gaze_points(sample)
        if len(gaze_points) == 0:
            continue
        if not np.isfinite(point).all():
            raise ValueError(f"sample {sample.sample_id} ({sample.source}): predicted point {point} is not finite")
        min_l2, avg_l2 = l2_distances(point, gaze_points)
        min_l2s.append(min_l2)
        avg_l2s.append(avg_l2)
    return {"min_l2": _mean(min_l2s), "avg_l2": _mean(avg_l2s), "n": len(min_l2s),
            "n_skipped": len(samples) - len(min_l2s), "n_total": len(samples)}


def _videoattention_auc_of(sample: PersonSample, heatmap: np.ndarray, gaze_points: np.ndarray,
                           protocol: str) -> float:
    if heatmap.shape != (HEATMAP_SIZE, HEATMAP_SIZE):
        raise ValueError(f"sample {sample.sample_id} ({sample.source}): VideoAttentionTarget AUC needs a "
                         f"64x64 heatmap, got {heatmap.shape}")
    if not videoattention_target_64(gaze_points, protocol).any():
        raise ValueError(f"sample {sample.sample_id} ({sample.source}): gaze {gaze_points.tolist()} puts no "
                         "target pixel on the 64x64 grid")
    return videoattention_auc(heatmap, gaze_points, protocol)


def _inout_average_precision(inout_scores: np.ndarray | torch.Tensor | Sequence[float],
                             samples: Sequence[PersonSample]) -> tuple[float, int]:
    """sklearn average precision of in/out scores (label 1 = in frame) over samples with a known flag."""
    scores = as_numpy(inout_scores).astype(np.float64).ravel()  # [N]
    if len(scores) != len(samples):
        raise ValueError(f"{len(scores)} in/out scores for {len(samples)} samples")
    known = np.array([s.inout in (IN_FRAME, OUT_OF_FRAME) for s in samples], bool)
    labels = np.array([s.inout == IN_FRAME for s in samples], np.int64)[known]
    scores = scores[known]
    if not np.isfinite(scores).all():
        bad = [s.sample_id for s, ok in zip(np.array(samples, object)[known], np.isfinite(scores)) if not ok]
        raise ValueError(f"in/out scores are not finite for samples {bad[:5]}")
    if labels.size == 0 or labels.min() == labels.max():
        log.warning("in/out AP undefined: %d samples with a known flag, all of one class", labels.size)
        return float("nan"), int(labels.size)
    return float(average_precision_score(labels, scores)), int(labels.size)


def _valid_gaze_points(sample: PersonSample) -> np.ndarray:
    """The in-frame person's annotator points with non-negative coordinates, [K, 2] float64 (K may be 0)."""
    if sample.inout != IN_FRAME:
        return np.zeros((0, 2))
    points = np.asarray(sample.gaze_points_norm, np.float64).reshape(-1, 2)
    return points[np.isfinite(points).all(axis=1) & (points >= 0).all(axis=1)]


def _image_size_wh(sample: PersonSample, override: tuple[int, int] | None) -> tuple[int, int]:
    size = override if override is not None else sample.image_size_wh
    if size is None:
        raise ValueError(f"sample {sample.sample_id} ({sample.source}): image size unknown; GazeFollow AUC is "
                         "computed at the original image size: set PersonSample.image_size_wh or pass "
                         "image_sizes_wh to evaluate")
    width, height = int(size[0]), int(size[1])
    if width < 1 or height < 1:
        raise ValueError(f"sample {sample.sample_id} ({sample.source}): invalid image size {size}")
    return width, height


def _heatmap_list(heatmaps: np.ndarray | torch.Tensor | Sequence[np.ndarray]) -> list[np.ndarray]:
    if isinstance(heatmaps, (np.ndarray, torch.Tensor)):
        array = as_numpy(heatmaps)
        if array.ndim == 4 and array.shape[1] == 1:
            array = array[:, 0]  # [N, 1, h, w] -> [N, h, w]
        if array.ndim != 3:
            raise ValueError(f"heatmaps must be [N, h, w] or [N, 1, h, w], got shape {array.shape}")
        return list(array)
    return [as_numpy(heatmap) for heatmap in heatmaps]


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


def _check_protocol(protocol: str) -> None:
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
