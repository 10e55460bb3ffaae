"""gcdr.heatmaps: every building block equals, bit for bit, the formula it replaced (written out here as the
oracle) on many random inputs."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from gcdr.heatmaps import (
    add_gaussian,
    argmax_point_norm,
    argmax_spread,
    as_numpy,
    gaussian_heatmap_64,
    head_box_grid_mask,
    normalize_heatmap,
    normalize_heatmaps,
)


def bits_equal(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a.view(np.uint8), b.view(np.uint8))


def random_map(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """float64 maps of every range GCDR meets: tiny (eps matters) to large, constant, with ties and zeros."""
    kind = int(rng.integers(5))
    offset = rng.normal() * 10.0 ** rng.uniform(-3, 4)
    heatmap = rng.standard_normal(shape) * 10.0 ** rng.uniform(-14, 4) + offset
    if kind == 1:
        heatmap = np.full(shape, offset)
    elif kind == 2:
        heatmap = np.round(heatmap * 3) / 3
    elif kind == 3:
        heatmap[rng.random(shape) < 0.5] = 0.0
    return heatmap


# ------------------------------------------------------------------------------------------- normalise

def test_normalize_heatmap_is_gcdrs_min_max_bit_for_bit():
    rng = np.random.default_rng(0)
    for trial in range(1500):
        heatmap = random_map(rng, (64, 64) if trial % 2 else tuple(rng.integers(1, 40, size=2)))
        for dtype in (np.float64, np.float32, np.float16):
            x = heatmap.astype(dtype)
            if not np.isfinite(x).all():
                continue
            with np.errstate(all="ignore"):
                as_float32 = np.asarray(x, np.float32)  # the former gcdr.pseudolabels.normalize_heatmap
                expected = (as_float32 - as_float32.min()) / (as_float32.max() - as_float32.min() + 1e-11)
                assert bits_equal(normalize_heatmap(x), expected), (trial, dtype)
                kept = x.astype(np.float64 if dtype == np.float64 else np.float32)  # the former metrics._min_max
                low, high = kept.min(), kept.max()
                expected = (kept - low) / (high - low + kept.dtype.type(1e-11))
                assert bits_equal(normalize_heatmap(x, keep_float64=True), expected), (trial, dtype)
    assert bits_equal(normalize_heatmap([[2.0, 4.0], [6.0, 10.0]]), np.array([[0, 0.25], [0.5, 1]], np.float32))
    assert not normalize_heatmap(np.full((3, 3), 7.0)).any()  # constant -> zeros


def test_normalize_heatmaps_equals_numpy_per_map_and_reports_the_range():
    rng = np.random.default_rng(1)
    for trial in range(300):
        maps = np.stack([random_map(rng, (64, 64)) for _ in range(5)]).astype(np.float32)
        if not np.isfinite(maps).all():
            continue
        tensor = torch.from_numpy(maps)
        with np.errstate(all="ignore"):
            expected = np.stack([normalize_heatmap(m) for m in maps])
        out, low, high = normalize_heatmaps(tensor, return_range=True)
        # equal values (the min of a map of 0.0 and -0.0 is either zero: numpy and torch may pick another)
        assert np.array_equal(out.numpy(), expected), trial
        assert torch.equal(normalize_heatmaps(tensor), out)
        assert torch.equal(normalize_heatmaps(tensor[:, None])[:, 0], out)  # [B, 1, h, w]
        # the former students.training.batch_targets, inline
        flat_low = tensor.flatten(1).min(1).values[:, None, None]
        flat_high = tensor.flatten(1).max(1).values[:, None, None]
        assert bits_equal(out.numpy(), ((tensor - flat_low) / (flat_high - flat_low + 1e-11)).numpy())
        assert torch.equal(high > low, flat_high.view(-1) > flat_low.view(-1))
        assert low.shape == high.shape == (5,)


def test_renormalising_is_the_identity_only_for_ranges_the_epsilon_does_not_touch():
    """Why every repeated normalisation on a pseudo-label's way to the loss is kept (module docstring)."""
    rng = np.random.default_rng(2)
    for scale, identity in ((1.0, True), (1e-3, True), (1e-4, False), (1e-7, False)):
        for _ in range(20):
            once = normalize_heatmap(rng.random((64, 64)) * scale + rng.normal())
            assert once.min() == 0.0
            assert (once.max() == 1.0) == identity and bits_equal(normalize_heatmap(once), once) == identity


# ------------------------------------------------------------------------------------------- Gaussian

def official_draw_labelmap(point_norm, sigma: float, size: int, integer_center: bool) -> np.ndarray:
    """VAT / GCDR ``draw_labelmap`` as coded (float64 patch added into a float32 map, then / max), with the
    empty-intersection case returning the map (the original divides 0 by 0 there)."""
    img = np.zeros((size, size), np.float32)
    pt = [point_norm[0] * size, point_norm[1] * size]
    if integer_center:
        pt = [float(int(pt[0])), float(int(pt[1]))]
    ul = [int(pt[0] - 3 * sigma), int(pt[1] - 3 * sigma)]
    br = [int(pt[0] + 3 * sigma + 1), int(pt[1] + 3 * sigma + 1)]
    if ul[0] >= size or ul[1] >= size or br[0] <= 0 or br[1] <= 0:
        return img
    patch_size = 2 * int(3 * sigma) + 1
    x = np.arange(0, patch_size, 1, float)
    y = x[:, np.newaxis]
    x0 = y0 = patch_size // 2
    g = np.exp(-((x - x0) ** 2 + (y - y0) ** 2) / (2 * sigma**2))
    g_x = max(0, -ul[0]), min(br[0], size) - ul[0]
    g_y = max(0, -ul[1]), min(br[1], size) - ul[1]
    img_x = max(0, ul[0]), min(br[0], size)
    img_y = max(0, ul[1]), min(br[1], size)
    img[img_y[0]:img_y[1], img_x[0]:img_x[1]] += g[g_y[0]:g_y[1], g_x[0]:g_x[1]].astype(np.float32)
    return img / np.max(img)


def test_gaussian_target_is_the_official_label_map_bit_for_bit():
    rng = np.random.default_rng(3)
    for trial in range(3000):
        point = rng.uniform(-0.3, 1.3, 2)
        if trial % 3 == 0:
            point = (rng.integers(-12, 78, 2) + 0.5 * (trial % 2)) / 64  # cell edges and centres
        integer_center = bool(trial % 2)  # Gaze-LLE: int(), toward zero
        expected = official_draw_labelmap(point, 3.0, 64, integer_center)
        assert bits_equal(gaussian_heatmap_64(point, integer_center=integer_center), expected), (trial, point)
    for sigma, size in ((1.0, 32), (2.0, 20), (4.0, 80)):
        point = rng.random(2)
        assert bits_equal(gaussian_heatmap_64(point, sigma, size), official_draw_labelmap(point, sigma, size, False))


def test_add_gaussian_to_a_map_then_divides_by_the_maximum():
    base = gaussian_heatmap_64((0.3, 0.3))
    two = add_gaussian(base, (0.7 * 64, 0.3 * 64))
    assert bits_equal(two, np.maximum(base, gaussian_heatmap_64((0.7, 0.3))))  # disjoint patches, peaks 1
    assert add_gaussian(base, (-40.0, 10.0)) is base  # misses the map: unchanged


# ------------------------------------------------------------------------------------- head-box mask

def official_head_map(box, rows: int, cols: int) -> torch.Tensor:
    """Gaze-LLE's ``get_input_head_maps`` for one box, as coded."""
    xmin, ymin, xmax, ymax = (float(v) for v in box)
    head_map = torch.zeros((rows, cols))
    head_map[round(ymin * rows):round(ymax * rows), round(xmin * cols):round(xmax * cols)] = 1
    return head_map


def test_head_box_grid_mask_is_the_official_python_round_and_slice():
    rng = np.random.default_rng(4)
    for trial in range(120):
        grid = int(rng.choice([1, 4, 7, 16, 32]))
        cols = grid if trial % 3 else int(rng.integers(1, 20))
        boxes = rng.random((12, 4))
        if trial % 4 == 1:  # exact half cells: round half to even
            boxes = rng.integers(0, 2 * grid + 1, (12, 4)) / (2 * grid)
        elif trial % 4 == 2:  # outside the image, negative edges included
            boxes = rng.uniform(-1.5, 1.5, (12, 4))
        boxes = torch.from_numpy(boxes.astype(np.float32))
        masks = head_box_grid_mask(boxes, grid, cols)
        assert masks.dtype == torch.float32 and masks.shape == (12, grid, cols)
        for box, mask in zip(boxes, masks):
            assert torch.equal(mask, official_head_map(box.tolist(), grid, cols)), (trial, box)
            assert torch.equal(head_box_grid_mask(box, grid, cols), mask)  # one box [4] -> [rows, cols]
        assert torch.equal(head_box_grid_mask(boxes.numpy(), grid, cols), masks)  # numpy in, same masks
        assert torch.equal(head_box_grid_mask(boxes.tolist(), grid, cols), masks)


def test_head_box_grid_mask_rounds_in_float64():
    # 2.5 / 32 * 32 = 2.5 exactly: half to even gives 2; one float64 ulp more is past the half: 3
    assert head_box_grid_mask((2.5 / 32, 0, 6.5 / 32, 1), 32)[0].nonzero().flatten().tolist() == [2, 3, 4, 5]
    nudged = np.nextafter(2.5 / 32, 1.0)
    assert head_box_grid_mask((nudged, 0, 1, 1), 32)[0, 2].item() == 0.0


# ------------------------------------------------------------------------------------------- argmax

def test_argmax_point_is_the_first_maximum_of_any_map():
    rng = np.random.default_rng(5)
    for trial in range(500):
        shape = (64, 64) if trial % 2 else tuple(int(v) for v in rng.integers(1, 50, size=2))
        heatmap = np.round(rng.random(shape) * (3 if trial % 3 == 0 else 1000)).astype(np.float32)  # ties
        row, col = np.unravel_index(int(np.argmax(heatmap)), shape)  # the former gallery fallback
        expected = (col / shape[1], row / shape[0])
        assert argmax_point_norm(heatmap) == expected
        assert argmax_point_norm(torch.from_numpy(heatmap)) == expected
        assert argmax_point_norm(torch.from_numpy(heatmap).bfloat16()) == argmax_point_norm(
            torch.from_numpy(heatmap).bfloat16().float())
        assert all(type(v) is float for v in argmax_point_norm(heatmap))
    with pytest.raises(ValueError, match=r"\[h, w\]"):
        argmax_point_norm(np.zeros((2, 8, 8)))


def test_argmax_spread_is_the_mean_distance_of_the_argmax_points():
    reference = np.zeros((64, 64), np.float32)
    reference[32, 16] = 1  # (x, y) = (0.25, 0.5)
    maps = np.zeros((3, 64, 64), np.float32)
    maps[0, 32, 16] = 1    # on the reference's point: 0
    maps[1, 32, 48] = 1    # (0.75, 0.5): 0.5 away
    maps[2, 0, 16] = 1     # (0.25, 0): 0.5 away
    assert argmax_spread(maps, reference) == pytest.approx(1 / 3)
    assert argmax_spread(maps[:1], reference) == 0.0
    maps[2, 0, 0] = 1      # first maximum wins: (0, 0) is sqrt(0.25^2 + 0.5^2) away
    assert argmax_spread(torch.from_numpy(maps[1:]), reference) == pytest.approx((0.5 + np.hypot(0.25, 0.5)) / 2)
    with pytest.raises(ValueError, match="K >= 1"):
        argmax_spread(np.zeros((0, 64, 64)), reference)


def test_as_numpy_takes_tensors_arrays_and_sequences():
    tensor = torch.arange(6.0, requires_grad=True).reshape(2, 3)
    assert bits_equal(as_numpy(tensor), np.arange(6.0, dtype=np.float32).reshape(2, 3))
    assert as_numpy(tensor.bfloat16()).dtype == np.float32
    assert bits_equal(as_numpy([1.0, 2.0]), np.array([1.0, 2.0]))


def test_importing_the_module_does_not_import_torch():
    code = "import sys, gcdr.heatmaps, gcdr.pseudolabels; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
