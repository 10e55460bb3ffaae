"""Transforms of docs/official-code.md#preprocessing-and-augmentation: Gaussian target, head box, pixels, and augmentation of whole views."""

import numpy as np
import pytest
import torch
from PIL import Image

from gcdr.data.transforms import (
    AugmentConfig,
    ColourFactors,
    View,
    augment_gazelle,
    augment_vat,
    crop_heatmap,
    crop_view,
    crop_with_padding,
    enlarge_head_box,
    face_crop,
    flip_view,
    head_channel,
    imagenet_denormalize,
    imagenet_normalize,
    jitter_box_sides,
    jitter_colour,
    resize_rgb,
    sample_crop_window,
    sample_crop_window_gazelle,
)
from gcdr.heatmaps import add_gaussian, gaussian_heatmap_64


def argmax_xy(heatmap: np.ndarray) -> tuple[int, int]:
    row, col = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
    return int(col), int(row)


# -- Gaussian target (docs/official-code.md#gaussian-target) ----------------------------------------------

def test_gaussian_interior_matches_formula_with_floor_center():
    heatmap = gaussian_heatmap_64((20.7 / 64, 40.2 / 64))
    assert heatmap.shape == (64, 64) and heatmap.dtype == np.float32
    cols, rows = np.meshgrid(np.arange(64), np.arange(64))
    inside = (np.abs(cols - 20) <= 9) & (np.abs(rows - 40) <= 9)  # hard 19 x 19 support
    expected = np.where(inside, np.exp(-((cols - 20) ** 2 + (rows - 40) ** 2) / 18.0), 0.0)
    np.testing.assert_allclose(heatmap, expected, atol=1e-6)
    assert heatmap[40, 20] == 1.0


def test_gaussian_center_is_ceil_below_nine_because_of_truncation_toward_zero():
    heatmap = gaussian_heatmap_64((3.5 / 64, 30.5 / 64))
    assert argmax_xy(heatmap) == (4, 30)  # x: ceil(3.5) = 4 (p < 9); y: floor(30.5) = 30
    # the patch ends at int(p + 10) = 13: column 13 (9 cells right of the centre) stays empty
    peak_row = heatmap[30]
    assert peak_row[12] > 0 and peak_row[13] == 0
    np.testing.assert_allclose(peak_row[5], np.exp(-1 / 18.0), rtol=1e-6)
    gazelle = gaussian_heatmap_64((3.5 / 64, 30.5 / 64), integer_center=True)
    assert argmax_xy(gazelle) == (3, 30)


def test_gaussian_clipped_at_border_is_renormalised_to_peak_one():
    heatmap = gaussian_heatmap_64((1.0, 1.0))  # centre cell 64 lies just outside the map
    assert argmax_xy(heatmap) == (63, 63) and heatmap.max() == pytest.approx(1.0)
    # values are the unclipped Gaussian divided by its largest visible value exp(-2/18)
    np.testing.assert_allclose(heatmap[63, 60], np.exp(-(16 + 1) / 18.0) / np.exp(-2 / 18.0), rtol=1e-5)


@pytest.mark.parametrize("point", [(-0.5, 0.5), (0.5, 1.3), (-9.5 / 64, 0.5), (1.0 + 9.5 / 64, 0.2)])
def test_gaussian_fully_outside_gives_zeros_not_nan(point):
    heatmap = gaussian_heatmap_64(point)
    assert np.all(heatmap == 0)


def test_add_gaussian_adds_then_normalises_by_max():
    one = add_gaussian(np.zeros((64, 64), np.float32), (20, 20))
    two = add_gaussian(one, (22, 20))  # overlapping: sum renormalised, peak between the two
    assert two.max() == pytest.approx(1.0)
    assert two[20, 21] == pytest.approx(1.0)  # symmetric between the centres 20 and 22


# -- Head box (docs/official-code.md#head-box-enlargement-and-head-channel) -------------------------------

def test_enlarge_head_box_grows_left_top_10_and_right_bottom_11_percent():
    box = enlarge_head_box((100.0, 200.0, 150.0, 300.0), 0.1)
    np.testing.assert_allclose(box, [95.0, 190.0, 155.5, 311.0])
    np.testing.assert_allclose(enlarge_head_box((10, 10, 20, 20), 0.0), [10, 10, 20, 20])


def test_head_channel_truncates_and_is_end_exclusive():
    mask = head_channel((0.1, 0.2, 0.5, 0.6))  # 22.4, 44.8, 112, 134.4 -> 22, 44, 112, 134
    assert mask.shape == (1, 224, 224) and mask.dtype == np.float32
    rows, cols = np.nonzero(mask[0])
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (44, 133, 22, 111)
    assert mask.sum() == 90 * 90


def test_head_channel_clips_to_223_so_the_last_column_stays_empty():
    mask = head_channel((-0.1, -0.05, 1.2, 1.0))
    assert mask[0, 0, 0] == 1 and mask[0, 222, 222] == 1
    assert mask[0, :, 223].sum() == 0 and mask[0, 223, :].sum() == 0


# -- Pixels -----------------------------------------------------------------------------------------------

def test_face_crop_is_black_outside_the_image():
    image = np.full((100, 100, 3), 200, np.uint8)
    face = face_crop(image, (-50.7, 0.0, 50.2, 100.0))  # int() -> (-50, 0, 50, 100): left half outside
    assert face.shape == (224, 224, 3) and face.dtype == np.uint8
    assert face[:, :100].max() == 0 and face[:, 124:].min() == 200


def test_crop_with_padding_is_a_view_inside_and_pads_outside():
    image = np.arange(6 * 8 * 3, dtype=np.uint8).reshape(6, 8, 3)
    inside = crop_with_padding(image, (1, 2, 5, 6))
    assert np.shares_memory(inside, image) and np.array_equal(inside, image[2:6, 1:5])
    padded = crop_with_padding(image, (-2, -1, 3, 4))
    assert padded.shape == (5, 5, 3)
    assert np.array_equal(padded[1:, 2:], image[:4, :3]) and padded[0].max() == 0 and padded[:, :2].max() == 0


def test_resize_matches_pil_bilinear_and_ignores_aspect():
    rng = np.random.default_rng(0)
    image = np.asarray(Image.fromarray(rng.integers(0, 256, (60, 90, 3), np.uint8)).resize((450, 300)))
    ours = resize_rgb(image, (224, 224))
    theirs = np.asarray(Image.fromarray(image).resize((224, 224), Image.BILINEAR))
    assert ours.shape == (224, 224, 3) and ours.dtype == np.uint8
    assert np.abs(ours.astype(int) - theirs).mean() < 0.5


def test_colour_jitter_steps():
    rng = np.random.default_rng(1)
    scene = rng.integers(0, 256, (16, 16, 3), np.uint8)
    face = rng.integers(0, 256, (8, 8, 3), np.uint8)
    same = jitter_colour([scene, face], ColourFactors(1.0, 1.0, 1.0))
    np.testing.assert_allclose(same[0], scene / 255.0, atol=1e-6)
    grey = jitter_colour([scene], ColourFactors(1.0, 1.0, 0.0))[0]
    np.testing.assert_allclose(grey[..., 0], grey[..., 2], atol=1e-6)
    flat_scene, flat_face = jitter_colour([scene, face], ColourFactors(1.0, 0.0, 1.0))
    scene_grey_mean = (scene / 255.0 @ np.array([0.2989, 0.587, 0.114])).mean()
    np.testing.assert_allclose(flat_face, scene_grey_mean, atol=1e-5)  # the SCENE's mean serves the face
    np.testing.assert_allclose(flat_scene, scene_grey_mean, atol=1e-5)
    bright = jitter_colour([scene], ColourFactors(10.0, 1.0, 1.0))[0]
    assert bright.max() <= 1.0 and bright.min() >= 0.0


def test_imagenet_normalize_round_trip():
    image = np.random.default_rng(2).integers(0, 256, (5, 7, 3), np.uint8)
    tensor = imagenet_normalize(image)
    assert tensor.shape == (3, 5, 7) and tensor.dtype == torch.float32
    assert tensor[0, 0, 0].item() == pytest.approx((image[0, 0, 0] / 255 - 0.485) / 0.229, abs=1e-5)
    assert np.array_equal(imagenet_denormalize(tensor), image)


# -- Heatmaps attached to a frame -------------------------------------------------------------------------

def test_crop_heatmap_identity_window_and_zero_padding():
    heatmap = gaussian_heatmap_64((0.3, 0.6))
    np.testing.assert_allclose(crop_heatmap(heatmap, (320, 240), (0, 0, 320, 240)), heatmap, atol=1e-5)
    # a window whose left half lies left of the frame: those cells are zero, the rest is the frame's left half
    shifted = crop_heatmap(heatmap, (320, 240), (-160, 0, 160, 240))
    assert shifted[:, :32].max() == 0
    np.testing.assert_allclose(shifted[:, 32:], heatmap[:, :32], atol=1e-5)
    # a window of half the frame's size zooms in 2x around the same point
    zoomed = crop_heatmap(heatmap, (320, 240), (0, 60, 160, 180))
    assert argmax_xy(zoomed) in {(2 * 19 + d, 2 * (38 - 16) + e) for d in (0, 1) for e in (0, 1)}


# -- Views and augmentation -------------------------------------------------------------------------------

def make_view(rng: np.random.Generator, size_wh=(320, 240), labeled=True, with_prior=True) -> View:
    """A frame with the head box painted red and the gaze pixel painted white; head boxes may poke out."""
    width, height = size_wh
    box_w, box_h = rng.uniform(10, 60), rng.uniform(10, 60)
    x0, y0 = rng.uniform(-box_w / 2, width - box_w / 2), rng.uniform(-box_h / 2, height - box_h / 2)
    gaze = rng.uniform([0, 0], [width, height])
    image = np.zeros((height, width, 3), np.uint8)
    gaze_norm = gaze / (width, height)
    prior = gaussian_heatmap_64(gaze_norm) if with_prior else None
    return View(image=image, head_box_xyxy_px=(x0, y0, x0 + box_w, y0 + box_h), gaze_points_px=gaze[None],
                inout=1, prior_64=prior, labeled=labeled)


def test_flip_maps_pixels_boxes_and_gaze_consistently():
    image = np.zeros((40, 60, 3), np.uint8)
    image[10:20, 5:15] = (255, 0, 0)       # head box (5, 10, 15, 20)
    image[30, 42] = (0, 255, 0)            # gaze pixel, centre (42.5, 30.5)
    view = View(image=Image.fromarray(image), head_box_xyxy_px=(5, 10, 15, 20), gaze_points_px=[[42.5, 30.5]],
                body_box_xyxy_px=(0, 5, 30, 40), prior_64=gaussian_heatmap_64((42.5 / 60, 30.5 / 40)))
    flipped = flip_view(view)
    x_min, y_min, x_max, y_max = flipped.head_box_xyxy_px.astype(int)
    np.testing.assert_allclose(flipped.head_box_xyxy_px, [45, 10, 55, 20])
    assert (flipped.image[y_min:y_max, x_min:x_max] == (255, 0, 0)).all()
    assert flipped.image[..., 0].sum() == 255 * 100
    gx, gy = flipped.gaze_points_px[0]
    assert (gx, gy) == (17.5, 30.5) and tuple(flipped.image[int(gy), int(gx)]) == (0, 255, 0)
    np.testing.assert_allclose(flipped.body_box_xyxy_px, [30, 5, 60, 40])
    assert np.array_equal(flipped.prior_64, view.prior_64[:, ::-1])
    assert np.array_equal(flip_view(flipped).image, image)


@pytest.mark.parametrize("sampler", [sample_crop_window, sample_crop_window_gazelle])
def test_crop_never_cuts_the_head_box_or_the_gaze_point(sampler):
    rng = np.random.default_rng(3)
    for _ in range(300):
        view = make_view(rng, size_wh=tuple(rng.integers(64, 400, size=2)))
        if sampler is sample_crop_window_gazelle:  # Gaze-LLE boxes are clamped to the image first
            box = np.clip(view.head_box_xyxy_px, 0, [*view.size_wh, *view.size_wh])
            view = View(view.image, box, view.gaze_points_px, prior_64=view.prior_64)
        window = sampler(view, rng)
        cropped = crop_view(view, window)
        width, height = cropped.size_wh
        assert (width, height) == (window[2] - window[0], window[3] - window[1])
        x_min, y_min, x_max, y_max = cropped.head_box_xyxy_px
        assert 0 <= x_min and 0 <= y_min and x_max <= width and y_max <= height
        gx, gy = cropped.gaze_points_px[0]
        assert 0 <= gx <= width and 0 <= gy <= height
        if sampler is sample_crop_window_gazelle:
            assert window[0] >= 0 and window[1] >= 0
            assert window[2] <= view.size_wh[0] and window[3] <= view.size_wh[1]


def test_crop_moves_pixels_with_the_box():
    rng = np.random.default_rng(4)
    image = rng.integers(0, 256, (100, 150, 3), np.uint8)
    view = View(image=image, head_box_xyxy_px=(40, 30, 60, 50), gaze_points_px=[[120, 80]])
    cropped = crop_view(view, (-10, 20, 130, 95))
    np.testing.assert_allclose(cropped.head_box_xyxy_px, [50, 10, 70, 30])
    assert np.array_equal(cropped.image[10:30, 50:70], image[30:50, 40:60])
    assert cropped.image[:, :10].max() == 0


@pytest.mark.parametrize("augment", [augment_vat, augment_gazelle])
def test_attached_prior_follows_the_gaze_through_crop_and_flip(augment):
    rng = np.random.default_rng(5)
    cfg = AugmentConfig(crop_prob=0.8, colour_prob=0.0, jitter_max=0.2)
    moved = 0
    for _ in range(150):
        view = make_view(rng, size_wh=tuple(rng.integers(80, 400, size=2)))
        if augment is augment_gazelle:
            box = np.clip(view.head_box_xyxy_px, 0, [*view.size_wh, *view.size_wh])
            view = View(view.image, box, view.gaze_points_px, prior_64=view.prior_64)
        # a tracer point at the centre of the prior's peak cell travels with the gaze points
        peak_px = (np.array(argmax_xy(view.prior_64)) + 0.5) * np.array(view.size_wh) / 64
        view.gaze_points_px = np.stack([view.gaze_points_px[0], peak_px])
        out = augment(view, rng, cfg)
        prior_xy = np.array(argmax_xy(out.prior_64))
        tracer_xy = np.floor(out.gaze_points_px[1] / out.size_wh * 64)
        assert np.abs(prior_xy - tracer_xy).max() <= 1, (prior_xy, tracer_xy)
        # and the prior peak stays next to the target's peak: within 2 cells, plus the zoomed-in quantisation
        # of the original map (its peak cell lies up to 1.5 cells from the point when p < 9, docs/official-code.md#gaussian-target)
        target_xy = np.array(argmax_xy(gaussian_heatmap_64(out.gaze_points_px[0] / out.size_wh)))
        zoom = np.array(view.size_wh) / np.array(out.size_wh)
        tolerance = np.maximum(2, np.ceil(1.5 * zoom) + 1)
        assert np.all(np.abs(prior_xy - target_xy) <= tolerance), (prior_xy, target_xy, zoom)
        assert out.prior_64.max() == pytest.approx(1.0, abs=1e-4)
        moved += out.size_wh != view.size_wh or not np.allclose(out.gaze_points_px, view.gaze_points_px)
    assert moved > 75  # the draws really cropped / flipped


def test_unlabeled_views_are_never_cropped_by_default():
    rng = np.random.default_rng(6)
    always = AugmentConfig(crop_prob=1.0)
    for _ in range(50):
        view = make_view(rng, labeled=False)
        assert augment_vat(view, rng, always).size_wh == view.size_wh
    cropping = AugmentConfig(crop_prob=1.0, crop_only_labeled=False)
    sizes = [augment_vat(make_view(rng, labeled=False), rng, cropping).size_wh for _ in range(20)]
    assert any(size != (320, 240) for size in sizes)


def test_vat_jitter_only_expands_within_the_configured_fraction():
    rng = np.random.default_rng(7)
    cfg = AugmentConfig(jitter_prob=1.0, crop_prob=0.0, flip_prob=0.0, colour_prob=0.0, jitter_max=0.1)
    for _ in range(100):
        view = make_view(rng)
        x0, y0, x1, y1 = view.head_box_xyxy_px
        nx0, ny0, nx1, ny1 = augment_vat(view, rng, cfg).head_box_xyxy_px
        assert x0 - 0.1 * (x1 - x0) <= nx0 <= x0 and y0 - 0.1 * (y1 - y0) <= ny0 <= y0
        assert x1 <= nx1 <= x1 + 0.11 * (x1 - x0) + 1e-9


def test_gazelle_side_jitter_is_bounded_and_clamped():
    rng = np.random.default_rng(8)
    for _ in range(200):
        box = np.array([rng.uniform(0, 100), rng.uniform(0, 100)])
        box = np.concatenate([box, box + rng.uniform(5, 50, size=2)])
        jittered = jitter_box_sides(box, (120, 110), 0.2, rng)
        size = np.array([box[2] - box[0], box[3] - box[1]] * 2)
        assert np.all(jittered >= 0) and np.all(jittered <= [120, 110, 120, 110])
        assert np.all(np.abs(jittered - np.clip(box, 0, [120, 110, 120, 110])) <= 0.2 * size + 1e-9)


def test_same_seed_same_augmentation():
    view = make_view(np.random.default_rng(9))
    cfg = AugmentConfig(jitter_prob=1.0, crop_prob=1.0, flip_prob=0.5, colour_prob=1.0)
    first = augment_vat(view, np.random.default_rng(42), cfg)
    second = augment_vat(view, np.random.default_rng(42), cfg)
    assert np.array_equal(first.image, second.image) and np.array_equal(first.prior_64, second.prior_64)
    assert np.array_equal(first.head_box_xyxy_px, second.head_box_xyxy_px) and first.colour == second.colour
    others = [augment_vat(view, np.random.default_rng(seed), cfg).head_box_xyxy_px for seed in range(5)]
    assert any(not np.array_equal(o, first.head_box_xyxy_px) for o in others)
