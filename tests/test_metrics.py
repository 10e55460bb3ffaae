"""gcdr.metrics: argmax point, L2, GazeFollow / VideoAttentionTarget AUC per protocol, AP, skipping."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage
from sklearn.metrics import average_precision_score, roc_auc_score

from gcdr import metrics
from gcdr.data.gazefollow import read_gazefollow
from gcdr.data.sample import PersonSample
from gcdr.heatmaps import normalize_heatmap

YS, XS = np.mgrid[0:64, 0:64]


def gaussian_64(col: float, row: float, sigma: float = 3.0) -> np.ndarray:
    """[64, 64] float32 Gaussian bump centred on grid position (col, row)."""
    return np.exp(-((XS - col) ** 2 + (YS - row) ** 2) / (2 * sigma ** 2)).astype(np.float32)


def person(points, inout: int = 1, size_wh=(64, 64), name: str = "p") -> PersonSample:
    return PersonSample(sample_id=name, image_path=f"/images/{name}.jpg", head_box_xyxy_px=(0, 0, 5, 5),
                        gaze_points_norm=np.asarray(points, np.float32).reshape(-1, 2), inout=inout,
                        image_size_wh=size_wh, source=f"test:{name}")


def reference_vat_target(gaze_x: float, gaze_y: float) -> np.ndarray:
    """VAT's AUC target written from docs/official-code.md#gaussian-target and docs/protocols.md#videoattentiontarget-auc-l2-and-ap: add the clipped 19x19 Gaussian patch at
    ul = int(p - 9), divide by the maximum, threshold > 0."""
    target = np.zeros((64, 64))
    px, py = gaze_x * 64, gaze_y * 64
    ul = (int(px - 9), int(py - 9))
    br = (int(px + 10), int(py + 10))
    if ul[0] >= 64 or ul[1] >= 64 or br[0] < 0 or br[1] < 0:
        return target > 0
    offsets = np.arange(19) - 9
    patch = np.exp(-(offsets[None, :] ** 2 + offsets[:, None] ** 2) / (2 * 3.0 ** 2))  # [19, 19]
    x0, x1 = max(0, ul[0]), min(br[0], 64)
    y0, y1 = max(0, ul[1]), min(br[1], 64)
    target[y0:y1, x0:x1] += patch[y0 - ul[1]:y1 - ul[1], x0 - ul[0]:x1 - ul[0]]
    return (target / target.max()) > 0


# ------------------------------------------------------------------------------------------------ points


def test_argmax_point_is_first_maximum_without_half_pixel_offset():
    heatmap = np.zeros((64, 64), np.float32)
    heatmap[10, 40] = heatmap[20, 5] = 1.0  # tie: row 10 comes first in row-major order
    assert metrics.argmax_point_norm(heatmap) == (40 / 64, 10 / 64)
    assert metrics.argmax_point_norm(torch.from_numpy(heatmap)) == (40 / 64, 10 / 64)
    grid = np.zeros((30, 20))
    grid[3, 7] = 5
    assert metrics.argmax_point_norm(grid) == (7 / 20, 3 / 30)  # any h x w: (col / w, row / h)


def test_prediction_at_known_offset_gives_that_l2():
    heatmap = gaussian_64(32, 32)  # argmax (0.5, 0.5)
    result = metrics.evaluate(heatmap[None], [person([(0.6, 0.5)], size_wh=(640, 480))])
    assert result["min_l2"] == pytest.approx(0.1, abs=1e-7)  # the GT is float32 in PersonSample
    assert result["avg_l2"] == pytest.approx(0.1, abs=1e-7)


def test_min_and_avg_l2_with_several_annotators():
    # prediction (0.5, 0.5); annotators (0.6, 0.5), (0.5, 0.8), (0.2, 0.1):
    # min = 0.1; mean point (1.3/3, 1.4/3) -> avg = sqrt((0.2/3)^2 + (0.1/3)^2) = sqrt(5)/30
    points = [(0.6, 0.5), (0.5, 0.8), (0.2, 0.1)]
    assert metrics.l2_distances((0.5, 0.5), np.array(points)) == pytest.approx((0.1, math.sqrt(5) / 30), abs=1e-12)
    # a second person (single annotator at distance 0.25) -> evaluate averages over persons
    samples = [person(points, size_wh=(100, 80)), person([(0.5, 0.75)], size_wh=(100, 80), name="q")]
    result = metrics.evaluate(np.stack([gaussian_64(32, 32)] * 2), samples)
    assert result["min_l2"] == pytest.approx((0.1 + 0.25) / 2, abs=1e-7)
    assert result["avg_l2"] == pytest.approx((math.sqrt(5) / 30 + 0.25) / 2, abs=1e-7)
    assert result["n"] == 2 and result["n_skipped"] == 0


# ------------------------------------------------------------------------------------------------ GazeFollow AUC


def test_perfect_heatmap_on_the_64_grid_gives_auc_1_and_l2_0():
    gaze = (20 / 64, 41 / 64)
    for protocol in metrics.PROTOCOLS:
        result = metrics.evaluate(gaussian_64(20, 41)[None], [person([gaze], size_wh=(64, 64))], protocol=protocol)
        assert result["auc"] == pytest.approx(1.0, abs=1e-12), protocol
        assert result["min_l2"] == 0.0 and result["avg_l2"] == 0.0


def test_perfect_heatmap_upsampled_gives_auc_1():
    # 64 -> 192 x 320: output col 3j+1 / row 5i+2 sample the grid point (j, i) exactly (unique maximum)
    width, height, col, row = 192, 320, 20, 41
    gaze = ((3 * col + 1.5) / width, (5 * row + 2.5) / height)
    for protocol in ("gcdr", "gazelle"):
        result = metrics.evaluate(gaussian_64(col, row)[None], [person([gaze], size_wh=(width, height))],
                                  protocol=protocol)
        assert result["auc"] == pytest.approx(1.0, abs=1e-12), protocol
    vat = metrics.evaluate(gaussian_64(col, row)[None], [person([gaze], size_wh=(width, height))], protocol="vat")
    assert 0.9999 < vat["auc"] <= 1.0  # uint8 ties around the peak


def test_fast_auc_equals_sklearn_on_random_heatmaps_and_sizes():
    rng = np.random.default_rng(0)
    for trial in range(4):
        width, height = (int(v) for v in rng.integers(20, 400, 2))  # some sizes below 64: down-sampling
        smooth = ndimage.gaussian_filter(rng.random((64, 64)), 2).astype(np.float32)  # [64, 64]
        heatmap = smooth if trial % 2 else rng.random((64, 64)).astype(np.float32)
        points = rng.random((int(rng.integers(1, 12)), 2))
        for protocol in metrics.PROTOCOLS:
            upsampled = metrics.upsample_heatmap(heatmap, (height, width), protocol)  # [H, W]
            target = np.zeros((height, width))
            for gaze_x, gaze_y in points.astype(np.float64 if protocol == "gazelle" else np.float32):
                target[min(int(gaze_y * height), height - 1), min(int(gaze_x * width), width - 1)] = 1
            expected = roc_auc_score(target.ravel(), upsampled.ravel())
            assert metrics.gazefollow_auc(heatmap, points, (width, height), protocol) == pytest.approx(
                expected, abs=1e-9), (protocol, width, height)
    assert metrics.upsample_heatmap(heatmap, (50, 70), "vat").dtype == np.uint8


def test_target_pixel_arithmetic_follows_the_protocol():
    # VAT/GCDR: int(g * W) on float32 tensors; gazelle: on Python floats. Just below 17/640 they disagree.
    gaze_x = float(np.nextafter(np.float32(17 / 640), np.float32(0)))
    points = np.array([[gaze_x, 0.5]])
    assert int(torch.tensor(gaze_x) * torch.tensor(640).float()) == 17 and int(gaze_x * 640) == 16
    for protocol, col in (("vat", 17), ("gcdr", 17), ("gazelle", 16)):
        assert metrics.gazefollow_target_indices(points, (640, 480), protocol).tolist() == [240 * 640 + col]
    # clamping of g = 1 to the last row / column
    assert metrics.gazefollow_target_indices(np.array([[1.0, 1.0]]), (10, 8)).tolist() == [7 * 10 + 9]


def test_auc_from_scores_with_ties_matches_sklearn_on_every_path():
    rng = np.random.default_rng(1)
    cases = [
        (rng.integers(0, 6, 5000), 7),          # small array: sort path, heavy ties
        (rng.integers(0, 256, 90_000), 10),     # uint8-like ties, comparison path (few distinct positives)
        (rng.integers(0, 256, 90_000), 400),    # many distinct positive values: sort path
        (rng.random(90_000).astype(np.float32), 1),  # a single positive
    ]
    for scores, n_positive in cases:
        positive = rng.choice(scores.size, n_positive, replace=False)
        target = np.zeros(scores.size, bool)
        target[positive] = True
        expected = roc_auc_score(target, scores)
        assert metrics.auc_from_scores(scores, positive) == pytest.approx(expected, abs=1e-9)
        assert metrics.auc_from_scores(scores, target) == pytest.approx(expected, abs=1e-9)
    with pytest.raises(ValueError, match="one class"):
        metrics.auc_from_scores(np.arange(4.0), np.zeros(4, bool))
    with pytest.raises(ValueError, match="NaN"):
        metrics.auc_from_scores(np.array([0.0, np.nan, 1.0]), np.array([0]))


def test_gcdr_upsampling_is_skimage_resize_order_1():
    # skimage.transform.resize(order=1) = ndimage.zoom(grid_mode=True, mode="mirror") after min-max,
    # with Gaussian anti-aliasing when down-sampling, clipped to the input range
    rng = np.random.default_rng(2)
    for (height, width), dtype in [((480, 640), np.float64), ((333, 500), np.float32), ((65, 64), np.float64),
                                   ((40, 300), np.float32)]:
        heatmap = (rng.random((64, 64)) * 7 - 3).astype(dtype)
        normalised = (heatmap - heatmap.min()) / (heatmap.max() - heatmap.min() + dtype(1e-11))  # GCDR's eps
        factors = np.array([64 / height, 64 / width])
        filtered = normalised
        if (factors > 1).any():
            filtered = ndimage.gaussian_filter(normalised, np.maximum(0, (factors - 1) / 2), mode="mirror")
        expected = ndimage.zoom(filtered, 1 / factors, order=1, mode="mirror", grid_mode=True)
        upsampled = metrics.upsample_heatmap(heatmap, (height, width), "gcdr")
        assert upsampled.shape == (height, width) and upsampled.dtype == dtype
        np.testing.assert_array_equal(upsampled, np.clip(expected, 0, normalised.max()))  # bit for bit
    # hand example, 1 x 2 -> 1 x 4: source x = -0.25, 0.25, 0.75, 1.25; mirror vs clamp at the border
    row = np.array([[0.0, 1.0]])
    np.testing.assert_allclose(metrics.upsample_heatmap(row, (1, 4), "gcdr"), [[0.25, 0.25, 0.75, 0.75]])
    np.testing.assert_allclose(metrics.upsample_heatmap(row, (1, 4), "gazelle"), [[0.0, 0.25, 0.75, 1.0]])


def test_gcdr_resize_keeps_skimage_ties_bit_for_bit():
    # [[3, 1]] -> min-max [[1, 0]] -> 1 x 6. Source x = (j + 0.5) / 3 - 0.5 = -1/3, 0, 1/3, 2/3, 1, 4/3; the
    # mirror border folds -1/3 onto 1/3 and 4/3 onto 2/3, so columns 0 and 2 (and 3 and 5) are the same
    # interpolation. skimage.transform.resize(order=1) returns exactly these float32 values (ties kept); the
    # former cv2-based rebuild returned 0.66666663 and 0.3333333 in columns 2 and 3 (AUC 0.8 / 0.2 below).
    raw = np.array([[3.0, 1.0]], np.float32)
    skimage_values = np.array([[2 / 3, 1, 2 / 3, 1 / 3, 0, 1 / 3]], np.float32)
    upsampled = metrics.upsample_heatmap(raw, (1, 6), "gcdr")
    assert upsampled.dtype == np.float32
    np.testing.assert_array_equal(upsampled, skimage_values)
    # one positive pixel: 3 negatives below, 1 tied (counts 1/2), 1 above -> (3 + 0.5) / 5
    assert metrics.gazefollow_auc(raw, [[0.05, 0.5]], (6, 1), "gcdr") == 0.7  # column 0
    assert metrics.gazefollow_auc(raw, [[0.55, 0.5]], (6, 1), "gcdr") == 0.3  # column 3: (1 + 0.5) / 5
    # a 2-D case, skimage's output (rows 0-1 and 2-3 sample the source rows at the same weights)
    raw_2d = np.array([[3.0, 0.0], [1.0, 0.0]], np.float32)
    top, bottom = np.array([5 / 9, 5 / 6, 5 / 9, 5 / 18, 0, 5 / 18]), np.array([1 / 3, 1 / 2, 1 / 3, 1 / 6, 0, 1 / 6])
    np.testing.assert_array_equal(metrics.upsample_heatmap(raw_2d, (4, 6), "gcdr"),
                                  np.stack([top, top, bottom, bottom]).astype(np.float32))


def test_gcdr_resize_equals_installed_skimage():
    transform = pytest.importorskip("skimage.transform")  # not a dependency; checked where it is installed
    rng = np.random.default_rng(7)
    for trial in range(12):
        size = (int(rng.integers(20, 700)), int(rng.integers(20, 700)))
        heatmap = ndimage.gaussian_filter(rng.random((64, 64)), 2 * (trial % 2))
        heatmap = (np.round(heatmap * 16) if trial % 3 == 0 else heatmap).astype(np.float32 if trial % 4 else np.float64)
        expected = transform.resize(normalize_heatmap(heatmap, keep_float64=True), size, order=1)
        np.testing.assert_array_equal(metrics.upsample_heatmap(heatmap, size, "gcdr"), expected)


def test_gazelle_target_pixel_uses_the_files_float64_gaze(tmp_path):
    # gaze_x "0.018" on a 500-pixel-wide image: 0.018 * 500 = 9.0 in float64 (gazelle: Python floats),
    # but the float32 value 0.017999999 times 500 in float64 is 8.9999996 -> column 8. The point must
    # reach the metric unrounded; VAT/GCDR multiply in float32, which rounds back to 9.0.
    width, height = 500, 300
    assert int(float(np.float32(0.018)) * width) == 8 and int(0.018 * width) == 9
    file = tmp_path / "test_annotations.txt"
    file.write_text("test2/00000001/00000001.jpg,0,0.1,0.1,0.5,0.5,0.30,0.20,0.018,0.5,10,20,50,70,meta,orig.jpg\n")
    (sample,) = read_gazefollow(file, tmp_path)
    assert sample.gaze_points_norm.dtype == np.float64 and sample.gaze_points_norm.tolist() == [[0.018, 0.5]]
    for protocol in metrics.PROTOCOLS:
        assert metrics.gazefollow_target_indices(sample.gaze_points_norm, (width, height), protocol).tolist() == [
            150 * width + 9], protocol

    heatmap = np.tile(np.linspace(0, 1, 64, dtype=np.float32), (64, 1))  # rises left to right: the column counts
    upsampled = torch.nn.functional.interpolate(torch.from_numpy(heatmap)[None, None], size=(height, width),
                                                mode="bilinear")[0, 0].numpy()  # [H, W]
    auc_by_column = {}
    for col in (8, 9):
        target = np.zeros((height, width))
        target[150, col] = 1
        auc_by_column[col] = roc_auc_score(target.ravel(), upsampled.ravel())
    assert auc_by_column[8] < auc_by_column[9]
    result = metrics.evaluate(heatmap[None], [sample], protocol="gazelle", image_sizes_wh=[(width, height)])
    assert result["auc"] == pytest.approx(auc_by_column[9], abs=1e-12)


def test_vat_protocol_quantises_like_imresize_and_gazelle_uses_torch():
    heatmap = np.array([[0.0, 0.5], [1.0, 0.2]], np.float32)
    # bytescale: 0 -> 0, 0.5 -> 127.5 + 0.5 -> 128, 1 -> 255, 0.2 -> 51.5 -> 51
    np.testing.assert_array_equal(metrics.upsample_heatmap(heatmap, (2, 2), "vat"), [[0, 128], [255, 51]])
    raw = np.random.default_rng(3).random((64, 64)).astype(np.float32) * 3
    expected = torch.nn.functional.interpolate(torch.from_numpy(raw)[None, None], size=(100, 150), mode="bilinear")
    np.testing.assert_array_equal(metrics.upsample_heatmap(raw, (100, 150), "gazelle"), expected[0, 0].numpy())


def test_missing_image_size_names_the_sample_and_can_be_overridden():
    sample = person([(0.5, 0.5)], size_wh=None, name="img_007.jpg|0.42")
    with pytest.raises(ValueError, match=r"img_007\.jpg\|0\.42"):
        metrics.evaluate(gaussian_64(32, 32)[None], [sample])
    result = metrics.evaluate(gaussian_64(32, 32)[None], [sample], image_sizes_wh=[(64, 64)])
    assert result["auc"] == pytest.approx(1.0) and result["n"] == 1


def test_out_of_frame_persons_are_skipped_and_counted():
    rng = np.random.default_rng(4)
    heatmaps = rng.random((5, 1, 64, 64)).astype(np.float32)  # [N, 1, 64, 64] is accepted too
    samples = [person([(0.3, 0.6)], size_wh=(90, 70), name="in1"),
               person([(-1, -1)], inout=0, name="out"),
               person([(0.2, 0.2)], inout=-1, name="unknown"),
               person(np.zeros((0, 2)), name="no_points"),
               person([(0.7, 0.1), (0.8, 0.2)], size_wh=(120, 80), name="in2")]
    result = metrics.evaluate(torch.from_numpy(heatmaps), samples, per_sample=True)
    assert (result["n"], result["n_skipped"], result["n_total"]) == (2, 3, 5)
    only_in = metrics.evaluate(heatmaps[[0, 4]], [samples[0], samples[4]])
    for key in ("auc", "min_l2", "avg_l2"):
        assert result[key] == pytest.approx(only_in[key], abs=1e-12)
    assert [math.isnan(row["auc"]) for row in result["per_sample"]] == [False, True, True, True, False]

    points = np.array([metrics.argmax_point_norm(h[0]) for h in heatmaps])
    by_points = metrics.evaluate_points(points, samples)
    assert (by_points["n"], by_points["n_skipped"]) == (2, 3)
    assert by_points["min_l2"] == pytest.approx(result["min_l2"], abs=1e-12)
    assert by_points["avg_l2"] == pytest.approx(result["avg_l2"], abs=1e-12)
    with pytest.raises(ValueError, match="in2"):
        metrics.evaluate_points(np.where(np.arange(5)[:, None] == 4, np.nan, points), samples)
    empty = metrics.evaluate(heatmaps[1:4], samples[1:4])
    assert empty["n"] == 0 and math.isnan(empty["auc"])


def test_persons_whose_image_was_not_read_are_counted_as_skipped():
    rng = np.random.default_rng(5)
    heatmaps = rng.random((2, 64, 64)).astype(np.float32)
    samples = [person([(0.3, 0.6)], size_wh=(90, 70), name="a"), person([(0.7, 0.1)], size_wh=(120, 80), name="b")]
    read = metrics.evaluate(heatmaps, samples)
    assert (read["n_skipped"], read["n_unreadable"], read["n_total"]) == (0, 0, 2)
    with_unread = metrics.evaluate(heatmaps, samples, unreadable=2)
    assert (with_unread["n"], with_unread["n_skipped"], with_unread["n_unreadable"], with_unread["n_total"]) == (
        2, 2, 2, 4)
    assert all(with_unread[k] == read[k] for k in ("auc", "min_l2", "avg_l2"))  # nothing scored for them
    with pytest.raises(ValueError, match="unreadable"):
        metrics.evaluate(heatmaps, samples, unreadable=-1)


# ------------------------------------------------------------------------------------------------ VideoAttentionTarget


def test_videoattention_target_square_and_index_63():
    rng = np.random.default_rng(5)
    for gaze in [*rng.random((30, 2)), (0.0, 0.0), (0.995, 0.999), (0.1, 0.97), (0.14, 0.5)]:
        expected = reference_vat_target(*gaze)
        np.testing.assert_array_equal(metrics.videoattention_target_64([gaze], "vat"), expected)
        np.testing.assert_array_equal(metrics.videoattention_target_64([gaze], "gcdr"), expected)
        gazelle = metrics.videoattention_target_64([gaze], "gazelle")
        assert not gazelle[63].any() and not gazelle[:, 63].any()
        np.testing.assert_array_equal(gazelle[:63, :63], expected[:63, :63])
    near_corner = metrics.videoattention_target_64([(0.95, 0.95)], "vat")
    assert near_corner[63, 63] and near_corner[51:, 51:].all() and near_corner.sum() == 13 * 13  # 60.8 - 9 -> 51

    # the same prediction scores differently: index 63 is a positive for VAT, a negative for gazelle
    heatmap = np.zeros((64, 64), np.float32)
    heatmap[55:63, 55:63] = 1.0
    heatmap[63, :] = 0.5
    sample = person([(0.95, 0.95)])
    vat = metrics.evaluate(heatmap[None], [sample], dataset="videoattentiontarget", protocol="vat")
    gazelle = metrics.evaluate(heatmap[None], [sample], dataset="videoattentiontarget", protocol="gazelle")
    assert vat["auc"] == pytest.approx(roc_auc_score(reference_vat_target(0.95, 0.95).ravel(), heatmap.ravel()))
    assert gazelle["auc"] == pytest.approx(
        roc_auc_score(metrics.videoattention_target_64([(0.95, 0.95)], "gazelle").ravel(), heatmap.ravel()))
    assert vat["auc"] > gazelle["auc"]


def test_videoattention_square_arithmetic_follows_the_protocol():
    # VAT: gaze in float32 tensors, int(g * 64 - 9) and int(g * 64 + 9 + 1) in float32; gazelle: Python floats.
    gaze_x = 0.5 - 1e-9  # float32 rounds it to 0.5: VAT's square starts at column 23, gazelle's at 22
    vat_x = torch.tensor([gaze_x], dtype=torch.float32) * 64
    vat_cols = (int(vat_x - 9), int(vat_x + 9 + 1))
    gazelle_cols = (int(gaze_x * 64 - 9), min(int(gaze_x * 64 + 9 + 1), 63))
    assert vat_cols == (23, 42) and gazelle_cols == (22, 41)
    for protocol, (left, right) in (("vat", vat_cols), ("gcdr", vat_cols), ("gazelle", gazelle_cols)):
        columns = np.flatnonzero(metrics.videoattention_target_64([(gaze_x, 0.5)], protocol).any(axis=0))
        assert (columns[0], columns[-1] + 1) == (left, right), protocol


def test_videoattention_auc_l2_and_ap_match_sklearn():
    rng = np.random.default_rng(6)
    count = 12
    heatmaps = ndimage.gaussian_filter(rng.random((count, 64, 64)), (0, 2, 2)).astype(np.float32)
    inout = np.array([1, 0, 1, 1, -1, 0, 1, 1, 0, 1, 1, 1])
    samples = [person([rng.random(2)] if flag == 1 else [(-1, -1)], inout=int(flag), name=f"f{i}")
               for i, flag in enumerate(inout)]
    scores = rng.normal(size=count)
    for protocol in metrics.PROTOCOLS:
        result = metrics.evaluate(heatmaps, samples, inout_scores=scores, dataset="videoattentiontarget",
                                  protocol=protocol)
        aucs, l2s = [], []
        for heatmap, sample in zip(heatmaps, samples):
            if sample.inout != 1:
                continue
            gaze = sample.gaze_points_norm[0]
            ranked = heatmap
            if protocol == "vat":  # imresize to the same size = bytescale to uint8
                ranked = (np.clip((heatmap - heatmap.min()) * np.float32(255 / (heatmap.max() - heatmap.min())),
                                  0, 255) + 0.5).astype(np.uint8)
            target = metrics.videoattention_target_64([gaze], protocol)
            aucs.append(roc_auc_score(target.ravel(), ranked.ravel()))
            l2s.append(np.linalg.norm(np.array(metrics.argmax_point_norm(heatmap)) - gaze))
        assert result["auc"] == pytest.approx(np.mean(aucs), abs=1e-9), protocol
        assert result["l2"] == pytest.approx(np.mean(l2s), abs=1e-7)
        assert (result["n_in"], result["n_skipped"], result["n_ap"]) == (8, 4, 11)
        known = inout >= 0
        assert result["ap"] == pytest.approx(average_precision_score(inout[known] == 1, scores[known]), abs=1e-12)
    without_scores = metrics.evaluate(heatmaps, samples, dataset="videoattentiontarget")
    assert math.isnan(without_scores["ap"])


def test_bad_inputs_raise_clear_errors():
    sample = person([(0.5, 0.5)])
    with pytest.raises(ValueError, match="protocol"):
        metrics.evaluate(gaussian_64(1, 1)[None], [sample], protocol="skimage")
    with pytest.raises(ValueError, match="2 heatmaps for 1 samples"):
        metrics.evaluate(np.zeros((2, 64, 64)), [sample])
    with pytest.raises(ValueError, match="finite"):
        metrics.evaluate(np.full((1, 64, 64), np.nan), [sample])
    with pytest.raises(ValueError, match="64x64"):
        metrics.evaluate(np.zeros((1, 32, 32)), [sample], dataset="videoattentiontarget")
