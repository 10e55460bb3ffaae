"""VideoAttentionTarget track files: parsing, in/out conventions, head-box smoothing, splits by show."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from gcdr.data import AnnotationError, ImageReadError, load_samples
from gcdr.data.splits import split_videoattention
from gcdr.data.videoattention import gaze_inout, read_videoattention, smooth_head_boxes, track_id_of

FIXTURES = Path(__file__).parent / "fixtures"
CLIP_SIZES = {("Band of Brothers", "1001_1100", "00000001.jpg"): (200, 100),
              ("Some Show", "0001_0050", "00000100.jpg"): (400, 200),
              ("Test Show", "0001_0010", "00000001.jpg"): (100, 100)}


@pytest.fixture
def vat_root(tmp_path) -> Path:
    """The fixture annotations plus the first frame of every clip (image sizes are read from it)."""
    root = tmp_path / "vat"
    shutil.copytree(FIXTURES / "videoattention", root)
    for (show, clip, frame), (width, height) in CLIP_SIZES.items():
        (root / "images" / show / clip).mkdir(parents=True)
        cv2.imwrite(str(root / "images" / show / clip / frame), np.zeros((height, width, 3), np.uint8))
    return root


def test_smoothing_is_an_edge_padded_11_frame_average():
    # xmin steps from 100 to 122 after 6 frames: the padded 11-frame mean is a ramp of +2 per frame
    boxes = np.array([[100, 50, 160, 120]] * 6 + [[122, 50, 160, 120]] * 6, float)
    smoothed = smooth_head_boxes(boxes)
    np.testing.assert_allclose(smoothed[:, 0], 100 + 2 * np.arange(12))
    np.testing.assert_allclose(smoothed[:, 1:], boxes[:, 1:])
    # short track: every frame sees the padded ends; [0, 11]: (6*0 + 5*11)/11 = 5 and (5*0 + 6*11)/11 = 6
    np.testing.assert_allclose(smooth_head_boxes([[0, 0, 0, 0], [11, 11, 11, 11]])[:, 0], [5.0, 6.0])


def test_inout_conventions():
    gaze = np.array([[100, 50], [-1, -1], [-5, 30], [-3, -4]], float)
    fixed, inout = gaze_inout(gaze, "vat")
    assert inout.tolist() == [1, 0, 1, 1]
    np.testing.assert_array_equal(fixed, [[100, 50], [-1, -1], [0, 30], [0, 0]])
    fixed, inout = gaze_inout(gaze, "gazelle")
    assert inout.tolist() == [1, 0, 1, 0]  # both negative but not (-1, -1): gazelle says out
    np.testing.assert_array_equal(fixed, [[100, 50], [-1, -1], [0, 30], [-1, -1]])


def test_tracks_become_samples(vat_root):
    samples = read_videoattention(vat_root / "annotations" / "train", vat_root / "images")
    assert len(samples) == 12 + 3 + 3
    first = samples[0]
    assert first.sample_id == "Band of Brothers/1001_1100/s00/00000001.jpg"
    assert first.image_path == str((vat_root / "images/Band of Brothers/1001_1100/00000001.jpg").absolute())
    assert first.image_size_wh == (200, 100)
    assert first.inout == 1
    np.testing.assert_allclose(first.gaze_points_norm, [[0.5, 0.5]])  # (100, 50) px in 200 x 100
    assert first.source.endswith("s00.txt:1")
    track = samples[:12]
    np.testing.assert_allclose([s.head_box_xyxy_px[0] for s in track], 100 + 2 * np.arange(12))  # smoothed
    assert [s.inout for s in track[:4]] == [1, 0, 1, 1]
    np.testing.assert_allclose(track[1].gaze_points_norm, [[-1, -1]])   # out-of-frame sentinel
    np.testing.assert_allclose(track[2].gaze_points_norm, [[0.0, 0.3]])  # (-5, 30) clamped to (0, 30)
    np.testing.assert_allclose(track[4].gaze_points_norm, [[0.75, 0.25]])
    other = [s for s in samples if s.sample_id.startswith("Some Show")]
    assert other[0].image_size_wh == (400, 200)
    assert other[0].gaze_points_norm.dtype == np.float64  # (40, 150) px / (400, 200), not rounded to float32
    assert other[0].gaze_points_norm.tolist() == [[40 / 400, 150 / 200]] and 40 / 400 != float(np.float32(0.1))
    assert [track_id_of(s) for s in samples[12:15]] == ["Band of Brothers/1001_1100/s01"] * 3

    raw = read_videoattention(vat_root / "annotations" / "train", vat_root / "images", smooth_boxes=False,
                              inout_rule="gazelle")
    assert [s.head_box_xyxy_px[0] for s in raw[:12]] == [100.0] * 6 + [122.0] * 6
    assert [s.inout for s in raw[:4]] == [1, 0, 1, 0]


def test_body_box_variant(vat_root):
    samples = read_videoattention(vat_root / "annotations_body" / "train", vat_root / "images")
    assert [s.body_box_xyxy_px for s in samples] == [(60.0, 40.0, 190.0, 100.0), None, (0.0, 0.0, 60.0, 100.0),
                                                     (0.0, 0.0, 60.0, 100.0)]
    assert [s.meta for s in samples] == ["", "", "pred_inout=0.75", "pred_inout=0.25"]


def test_errors_name_file_and_line(vat_root, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(FIXTURES / "videoattention_bad", bad)
    (bad / "images/Some Show/0001_0050").mkdir(parents=True)
    cv2.imwrite(str(bad / "images/Some Show/0001_0050/00000100.jpg"), np.zeros((10, 20, 3), np.uint8))
    with pytest.raises(AnnotationError, match=r"s00\.txt:3: 6 columns"):
        read_videoattention(bad / "annotations" / "train", bad / "images")
    samples = read_videoattention(bad / "annotations" / "train", bad / "images", on_error="skip")
    assert [s.source.rsplit(":", 1)[1] for s in samples] == ["1", "2"]  # lines 3 and 4 skipped

    (vat_root / "images/Some Show/0001_0050/00000100.jpg").unlink()
    with pytest.raises(ImageReadError, match=r"Some Show/0001_0050/s00\.txt:1: image not found: .*00000100\.jpg"):
        read_videoattention(vat_root / "annotations" / "train", vat_root / "images")
    kept = read_videoattention(vat_root / "annotations" / "train", vat_root / "images", on_error="skip")
    assert len(kept) == 15 and not any(s.sample_id.startswith("Some Show") for s in kept)


def test_labeled_unlabeled_by_show_or_track_ratio(vat_root):
    cfg = {"dataset": {"format": "videoattentiontarget", "root": str(vat_root), "train_file": "annotations/train",
                       "test_file": "annotations/test"},
           "split": {"ratio": 0.5, "seed": 0, "dir": str(vat_root / "splits")}}
    labeled, unlabeled = load_samples(cfg, "labeled"), load_samples(cfg, "unlabeled")
    assert {s.sample_id.split("/")[0] for s in labeled} == {"Band of Brothers"}  # a GCDR labeled show
    assert {s.sample_id.split("/")[0] for s in unlabeled} == {"Some Show"}
    assert len(load_samples(cfg, "test")) == 2 and len(load_samples(cfg, "train")) == 18

    cfg["dataset"]["labeled_shows"] = None  # ratio of tracks: round(3 * 0.5) = 2 of the 3 tracks
    labeled, unlabeled = load_samples(cfg, "labeled"), load_samples(cfg, "unlabeled")
    assert len({track_id_of(s) for s in labeled}) == 2 and len({track_id_of(s) for s in unlabeled}) == 1
    assert not {track_id_of(s) for s in labeled} & {track_id_of(s) for s in unlabeled}
    again, _ = split_videoattention(load_samples(cfg, "train"), ratio=0.5, seed=0)
    assert [s.sample_id for s in again] == [s.sample_id for s in labeled]
