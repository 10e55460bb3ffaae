"""Heatmap building blocks, one function each, used by every stage (pseudo-labels, refinement, students,
metrics, gallery).

Conventions: a heatmap is [h, w] (64 x 64 unless said), rows = y, columns = x, and covers the whole
current frame; cell (col, row) spans [col / w, (col + 1) / w) x [row / h, (row + 1) / h) in normalised
coordinates. Points are normalised (x, y) = (x / W, y / H); boxes are normalised xyxy = (xmin, ymin, xmax,
ymax).

  normalize_heatmap    min-max to [0, 1], one numpy map: (h - min) / (max - min + 1e-11) in float32 (GCDR)
  normalize_heatmaps   the same per map over the last two dims of a torch batch
  gaussian_heatmap_64  the training target: a sigma-3 Gaussian at a point (VAT / GCDR / Gaze-LLE)
  add_gaussian         add one Gaussian patch to a map, then divide the map by its maximum
  head_box_grid_mask   Gaze-LLE's head map: 0/1 cells of a token grid covered by a box (torch)
  argmax_point_norm    the predicted point: the first maximum, (col / w, row / h)
  argmax_spread        mean distance between the argmax points of several maps and that of a reference map
  as_numpy             an array or a torch tensor as a numpy array

Where a pseudo-label map is min-max normalised on its way to a student's loss, and why each stays:
Grad-CAM (gcdr.vqa.annotate) -> refinement (``none``: the source map again; ``gcdr``: its prior and its
output) -> the dataset's crop (gcdr.data.transforms.crop_heatmap, only when the image is cropped) -> the
student's targets (gcdr.students.recipe.batch_targets). A repeat is the identity only for a map whose
minimum is exactly 0 and maximum exactly 1; a normalised map whose range r was below 2^-12 (about 2.4e-4)
has maximum r / (r + 1e-11) < 1 in float32 (a crop of a flat region has such ranges, and a folder may hold
any map), so renormalising can change the last bits: every step is kept (tests/test_heatmaps.py).

Importing this module does not import torch (the gallery and pseudo-label folders work without it); the
torch functions take tensors.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

HEATMAP_SIZE = 64        # output_resolution of VAT / GCDR / Gaze-LLE
GAUSSIAN_SIGMA = 3.0     # of the training target, in 64-grid cells
NORMALIZE_EPS = 1e-11    # GCDR's min-max epsilon

__all__ = [
    "GAUSSIAN_SIGMA", "HEATMAP_SIZE", "NORMALIZE_EPS", "add_gaussian", "argmax_point_norm", "argmax_spread",
    "as_numpy", "gaussian_heatmap_64", "head_box_grid_mask", "normalize_heatmap", "normalize_heatmaps",
]


# ---------------------------------------------------------------------------------------------------
# min-max normalisation

def normalize_heatmap(heatmap: np.ndarray, eps: float = NORMALIZE_EPS, keep_float64: bool = False) -> np.ndarray:
    """Min-max normalise one map (any shape, usually [h, w]) to [0, 1] as GCDR does:
    (h - min) / (max - min + eps), computed and returned in float32; with ``keep_float64`` a float64 map
    stays float64 (GCDR's evaluation keeps the map's float dtype). A constant map becomes zeros."""
    heatmap = np.asarray(heatmap)
    dtype = np.float64 if keep_float64 and heatmap.dtype == np.float64 else np.float32
    heatmap = heatmap.astype(dtype, copy=False)
    low, high = heatmap.min(), heatmap.max()
    return (heatmap - low) / (high - low + dtype(eps))


def normalize_heatmaps(heatmaps: torch.Tensor, eps: float = NORMALIZE_EPS,
                       return_range: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-map min-max of a torch batch [..., h, w] over its last two dims, (h - min) / (max - min + eps)
    in the tensor's dtype (GCDR). Returns the normalised [..., h, w]; with ``return_range`` also each map's
    (min, max) before normalisation, [...] each (max > min: the map is not constant)."""
    flat = heatmaps.flatten(-2)
    low, high = flat.min(-1, keepdim=True).values, flat.max(-1, keepdim=True).values
    normalised = ((flat - low) / (high - low + eps)).view_as(heatmaps)
    if return_range:
        return normalised, low.squeeze(-1), high.squeeze(-1)
    return normalised


# ---------------------------------------------------------------------------------------------------
# Gaussian target (docs/official-code.md#gaussian-target)

def gaussian_heatmap_64(point_norm: Sequence[float] | np.ndarray, sigma: float = GAUSSIAN_SIGMA,
                        size: int = HEATMAP_SIZE, integer_center: bool = False) -> np.ndarray:
    """The training target: a Gaussian of ``sigma`` cells at ``point_norm`` (x, y in [0, 1]), peak 1.

    VAT / GCDR "draw label map" as coded: the patch is placed by truncating toward zero, so its centre
    cell is floor(p) for p >= 9 but ceil(p) for 0 < p < 9 (p = point * size); it has a hard square
    support of 6 sigma + 1 cells (19 x 19), is clipped at the border, and the map is divided by its
    maximum afterwards (peak 1 even when clipped). A point whose patch lies completely outside gives an
    all-zero map. ``integer_center=True`` is Gaze-LLE's variant: the point is first truncated to a cell,
    so the centre is floor(p) everywhere.

    Returns [size, size] float32.
    """
    center = np.asarray(point_norm, np.float64).reshape(2) * size
    if integer_center:
        center = np.trunc(center)
    return add_gaussian(np.zeros((size, size), np.float32), center, sigma)


def add_gaussian(heatmap: np.ndarray, center_cells: Sequence[float] | np.ndarray,
                 sigma: float = GAUSSIAN_SIGMA) -> np.ndarray:
    """ADD a Gaussian patch centred at ``center_cells`` (x, y in cell units) to ``heatmap`` [h, w], then
    divide the whole map by its maximum (docs/official-code.md#gaussian-target, step 3). Returns a new
    [h, w] float32 map; ``heatmap`` is returned unchanged when the patch misses it entirely (this also
    avoids the original's 0/0 when the patch touches the map with zero width)."""
    radius = int(3 * sigma)                   # 9 for sigma = 3: a 19 x 19 patch
    left, top = int(center_cells[0] - radius), int(center_cells[1] - radius)  # int(): toward zero
    right, bottom = int(center_cells[0] + radius + 1), int(center_cells[1] + radius + 1)
    height, width = heatmap.shape
    x0, y0, x1, y1 = max(left, 0), max(top, 0), min(right, width), min(bottom, height)
    if x0 >= x1 or y0 >= y1:
        return heatmap
    patch = _gaussian_patch(radius, sigma)  # [2r+1, 2r+1], 1 at its centre
    heatmap = heatmap.astype(np.float32, copy=True)
    heatmap[y0:y1, x0:x1] += patch[y0 - top:y1 - top, x0 - left:x1 - left]
    return heatmap / heatmap.max()


def _gaussian_patch(radius: int, sigma: float) -> np.ndarray:
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    squared = offsets[None, :] ** 2 + offsets[:, None] ** 2
    return np.exp(-squared / (2 * sigma**2)).astype(np.float32)


# ---------------------------------------------------------------------------------------------------
# head-box grid mask (Gaze-LLE)

def head_box_grid_mask(boxes_xyxy_norm: torch.Tensor | np.ndarray | Sequence, rows: int,
                       cols: int | None = None) -> torch.Tensor:
    """Gaze-LLE's head map: boxes [..., 4] normalised xyxy -> 0/1 masks [..., rows, cols] float32 (cols =
    rows unless given), on the boxes' device (a tensor's; else CPU).

    Exactly the official ``head_map[round(ymin * rows):round(ymax * rows), round(xmin * cols):round(xmax *
    cols)] = 1``: the products in float64, rounded half to even (Python's round), end exclusive, and each
    edge read as a Python slice index (clipped to the grid; a negative one counts from the end, as in the
    official code). Boxes are expected finite.
    """
    import torch

    if isinstance(boxes_xyxy_norm, torch.Tensor):
        boxes = boxes_xyxy_norm.double()
    else:
        boxes = torch.as_tensor(np.asarray(boxes_xyxy_norm, np.float64))
    cols = rows if cols is None else cols
    sizes = torch.tensor([cols, rows, cols, rows], dtype=torch.float64, device=boxes.device)
    edges = torch.round(boxes * sizes)  # [..., 4] integers in float64
    edges = torch.minimum(torch.where(edges < 0, edges + sizes, edges).clamp(min=0), sizes)  # slice semantics
    cells_x = torch.arange(cols, dtype=torch.float64, device=boxes.device)
    cells_y = torch.arange(rows, dtype=torch.float64, device=boxes.device)
    in_cols = (cells_x >= edges[..., 0:1]) & (cells_x < edges[..., 2:3])  # [..., cols]
    in_rows = (cells_y >= edges[..., 1:2]) & (cells_y < edges[..., 3:4])  # [..., rows]
    return (in_rows[..., :, None] & in_cols[..., None, :]).float()


# ---------------------------------------------------------------------------------------------------
# points

def argmax_point_norm(heatmap: np.ndarray | torch.Tensor) -> tuple[float, float]:
    """(x, y) = (col / w, row / h) of the first maximum (row-major) of a [h, w] map (64x64 in the protocols):
    the cell's top-left corner, no half-pixel offset, as in VAT, GCDR and Gaze-LLE. NaN entries are an error
    of the caller (np.argmax would return the first NaN)."""
    heatmap = as_numpy(heatmap)
    if heatmap.ndim != 2:
        raise ValueError(f"argmax_point_norm expects a [h, w] map, got shape {heatmap.shape}")
    height, width = heatmap.shape
    row, col = divmod(int(np.argmax(heatmap)), width)
    return col / width, row / height


def argmax_spread(maps: np.ndarray | torch.Tensor, reference: np.ndarray | torch.Tensor) -> float:
    """Mean over ``maps`` [K, h, w] of the Euclidean distance between each map's :func:`argmax_point_norm` and
    that of ``reference`` [h, w], in normalised coordinates (e.g. how far K refined draws of a person scatter
    around their mean map: 0 when every draw peaks where the mean does)."""
    maps = as_numpy(maps)
    if maps.ndim != 3 or len(maps) == 0:
        raise ValueError(f"argmax_spread expects [K, h, w] maps with K >= 1, got shape {maps.shape}")
    centre = np.array(argmax_point_norm(reference))
    points = np.array([argmax_point_norm(m) for m in maps])  # [K, 2]
    return float(np.linalg.norm(points - centre, axis=1).mean())


def as_numpy(array: np.ndarray | torch.Tensor | Sequence[float]) -> np.ndarray:
    """A numpy view / copy of an array, a sequence or a torch tensor (detached, on the CPU; bfloat16 as
    float32)."""
    torch = sys.modules.get("torch")  # a tensor can only exist when torch is imported
    if torch is not None and isinstance(array, torch.Tensor):
        array = array.detach().cpu()
        if array.dtype == torch.bfloat16:
            array = array.float()
        return array.numpy()
    return np.asarray(array)
