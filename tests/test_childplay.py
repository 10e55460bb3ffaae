"""ChildPlay clip CSV files: samples, in/out from gaze classes, error discipline, splits, and the protocol
(VideoAttentionTarget's metrics + P.Head) on a hand case over the real vat-demo frames."""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from gcdr.data import AnnotationError, DatasetConfig, ImageReadError, load_samples
from gcdr.data.childplay import frame_file_name, load_childplay, parse_clip_name, read_childplay
from gcdr.data.videoattention import track_id_of
from gcdr.metrics import evaluate

FIXTURES = Path(__file__).parent / "fixtures" / "childplay"
VAT_DEMO = Path(__file__).resolve().parents[2] / "shared" / "data" / "vat-demo"
CLIP = "demo_vid_100-109"
P2_HEAD = (1093.0, 33.0, 1347.0, 299.0)  # person2.txt, frame 1


def _link(source: Path, target: Path) -> None:
    try:
        os.symlink(source, target)
    except OSError:
        shutil.copyfile(source, target)


@pytest.fixture
def cp_root(tmp_path) -> Path:
    """The fixture annotations plus the vat-demo frames named as ChildPlay names them."""
    if not VAT_DEMO.is_dir():
        pytest.skip(f"vat-demo frames not found at {VAT_DEMO}")
    root = tmp_path / "childplay"
    shutil.copytree(FIXTURES / "annotations", root / "annotations")
    (root / "images" / CLIP).mkdir(parents=True)
    for index, frame in enumerate(sorted((VAT_DEMO / "frames").glob("*.jpg"))):
        _link(frame, root / "images" / CLIP / frame_file_name(CLIP, index + 1))
    return root


def cfg_of(root: Path, **dataset) -> dict:
    return {"dataset": {"format": "childplay", "root": str(root), "train_file": "annotations/train",
                        "test_file": "annotations/test", **dataset},
            "split": {"ratio": 0.5, "seed": 0, "dir": str(root / "splits")}}


def test_clip_names_and_frame_files():
    assert parse_clip_name("js4wxP9HxG0_3496-3539") == ("js4wxP9HxG0", 3496)
    assert parse_clip_name("a_b_c_10-20-downsample") == ("a_b_c", 10)  # the video id keeps its underscores
    assert frame_file_name("demo_vid_100-109", 1) == "demo_vid_100.jpg"
    assert frame_file_name("demo_vid_100-109", 10) == "demo_vid_109.jpg"
    with pytest.raises(ValueError, match="not <video id>_<start>-<end>"):
        parse_clip_name("no-interval")


def test_fixture_loads_into_the_right_samples(cp_root):
    samples = load_samples(cfg_of(cp_root), "test")
    assert [s.sample_id for s in samples] == [f"{CLIP}/1/demo_vid_100.jpg", f"{CLIP}/2/demo_vid_100.jpg",
                                              f"{CLIP}/1/demo_vid_101.jpg", f"{CLIP}/2/demo_vid_101.jpg",
                                              f"{CLIP}/1/demo_vid_102.jpg"]
    assert [s.inout for s in samples] == [1, 0, 1, -1, -1]  # inside_visible, outside_frame, gaze_shift, no point
    first = samples[0]
    assert first.image_path == str((cp_root / "images" / CLIP / "demo_vid_100.jpg").absolute())
    assert Path(first.image_path).is_file()
    assert first.image_size_wh == (1920, 1080)  # read from the real frame
    assert first.head_box_xyxy_px == (553.0, 71.0, 752.0, 275.0)  # x, y, width, height -> xyxy, as annotated
    np.testing.assert_allclose(first.gaze_points_norm, [[0.5, 0.5]])
    assert first.meta == "gaze_class=inside_visible;is_child=1"
    assert first.source.endswith("demo_vid_100-109.csv:2")
    np.testing.assert_allclose(samples[2].gaze_points_norm, [[1220 / 1920, 166 / 1080]])
    np.testing.assert_array_equal(samples[1].gaze_points_norm, [[-1, -1]])  # sentinel, never a target
    assert samples[1].head_box_xyxy_px == P2_HEAD
    data = load_childplay(cp_root / "annotations" / "test", cp_root / "images")
    assert data.counts["inside_visible_without_gaze"] == 1 and data.counts["inout_unknown"] == 2


def test_subsets_and_splits(cp_root):
    children = load_samples(cfg_of(cp_root, childplay_subset="child"), "test")
    assert {s.sample_id.split("/")[1] for s in children} == {"1"}
    with pytest.raises(ValueError, match="childplay_subset"):
        DatasetConfig(format="childplay", childplay_subset="kids")
    train = load_samples(cfg_of(cp_root), "train")
    labeled, unlabeled = load_samples(cfg_of(cp_root), "labeled"), load_samples(cfg_of(cp_root), "unlabeled")
    # 2 person tracks, ratio 0.5: one whole track each; labeled + unlabeled = train
    assert len({track_id_of(s) for s in labeled}) == 1 and len({track_id_of(s) for s in unlabeled}) == 1
    assert sorted(s.sample_id for s in labeled + unlabeled) == sorted(s.sample_id for s in train)
    cfg = cfg_of(cp_root)
    del cfg["split"]
    with pytest.raises(ValueError, match="no fixed labeled / unlabeled split"):
        load_samples(cfg, "labeled")


def test_malformed_rows_are_named_or_skipped(cp_root):
    bad = cp_root / "annotations" / "bad"
    bad.mkdir()
    lines = (FIXTURES / "annotations" / "test" / f"{CLIP}.csv").read_text().splitlines()
    lines[2] = lines[2].replace("outside_frame,-1,-1", "outside_frame,abc,-1")  # line 3
    lines.append(lines[1])  # line 7: person 1 twice in frame 1
    (bad / f"{CLIP}.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(AnnotationError, match=rf"{CLIP}\.csv:3: invalid number \(gaze_x='abc'\)"):
        read_childplay(bad, cp_root / "images")
    data = load_childplay(bad, cp_root / "images", "skip")
    assert data.counts["skipped_malformed_rows"] == 2
    assert len(data.samples) == 4
    (bad / f"{CLIP}.csv").write_text("frame,person_id\n1,1\n")
    with pytest.raises(AnnotationError, match=r":1: header lacks column\(s\) bbox_x"):
        read_childplay(bad, cp_root / "images")


def test_missing_files_are_one_line_errors(cp_root, tmp_path):
    with pytest.raises(FileNotFoundError, match="ChildPlay annotation folder not found"):
        load_samples(cfg_of(cp_root, test_file="annotations/nope"), "test")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no ChildPlay annotation files"):
        read_childplay(empty, cp_root / "images")
    shutil.rmtree(cp_root / "images")
    with pytest.raises(ImageReadError, match=rf"{CLIP}\.csv:2:"):
        load_samples(cfg_of(cp_root), "test")
    assert load_samples(cfg_of(cp_root, on_error="skip"), "test") == []


def hot(x_norm: float, y_norm: float) -> np.ndarray:
    """[64, 64] zeros with one 1 at grid cell (int(64 y), int(64 x)): its argmax point is (col / 64, row / 64)."""
    heatmap = np.zeros((64, 64), np.float32)
    heatmap[int(64 * y_norm), int(64 * x_norm)] = 1.0
    return heatmap


def test_protocol_hand_case(cp_root):
    samples = load_samples(cfg_of(cp_root), "test")
    on_p2_head = (1220 / 1920, 166 / 1080)  # grid cell (row 9, col 40) -> point (0.625, 0.140625) = (1200, 151.9) px
    heatmaps = np.stack([hot(*on_p2_head), np.zeros((64, 64), np.float32), hot(*on_p2_head),
                         np.zeros((64, 64), np.float32), np.zeros((64, 64), np.float32)])
    inout_scores = [0.9, 0.1, 0.8, 0.95, 0.95]  # the two unknown frames would spoil AP if they counted as out
    result = evaluate(heatmaps, samples, inout_scores=inout_scores, dataset="childplay", protocol="gcdr")
    assert (result["n"], result["n_skipped"], result["n_ap"]) == (2, 3, 2 + 1)
    assert result["ap"] == 1.0
    # P.Head: both predictions fall in person 2's head; the truth does only for frame 2 -> 1 / 2
    assert (result["p_head"], result["n_p_head"]) == (0.5, 2)
    # AUC on 64x64 against the 19x19 square: frame 1's square (cols/rows 23..41) misses the hot cell (row 9):
    # every positive ties with the 3734 zero negatives; frame 2's square (cols 31..49, rows 0..18) holds it
    expected_auc = (0.5 * 3734 / 3735 + (3735 + 360 * 0.5 * 3735) / (361 * 3735)) / 2
    assert math.isclose(result["auc"], expected_auc, rel_tol=1e-12)
    expected_l2 = (math.hypot(0.625 - 0.5, 0.140625 - 0.5) + math.hypot(0.625 - 1220 / 1920, 0.140625 - 166 / 1080)) / 2
    assert math.isclose(result["l2"], expected_l2, rel_tol=1e-12) and result["l2"] == result["avg_l2"]
    # the same frames under VideoAttentionTarget's protocol: identical numbers, no P.Head
    vat = evaluate(heatmaps, samples, inout_scores=inout_scores, dataset="videoattentiontarget", protocol="gcdr")
    assert "p_head" not in vat and vat["auc"] == result["auc"] and vat["ap"] == result["ap"]


def test_p_head_is_nan_without_predictions_on_heads(cp_root):
    samples = load_samples(cfg_of(cp_root), "test")
    heatmaps = np.stack([hot(0.5, 0.5)] * len(samples))
    result = evaluate(heatmaps, samples, dataset="childplay")
    assert math.isnan(result["p_head"]) and result["n_p_head"] == 0 and math.isnan(result["ap"])
