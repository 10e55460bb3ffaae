"""GOO pickle files: samples (640x480 reference frame, last box = head), the safe unpickler, error discipline,
splits, and GOO's evaluation (5x5 AUC, L2, angle) on a hand case over the real vat-demo frames."""

from __future__ import annotations

import math
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from gcdr.data import AnnotationError, ImageReadError, load_samples
from gcdr.data.goo import load_goo, read_goo, split_persons
from gcdr.metrics import evaluate, goo_auc

VAT_DEMO = Path(__file__).resolve().parents[2] / "shared" / "data" / "vat-demo"


def record(filename: str, gaze=(320.0, 240.0), eye=(160.0, 240.0), size=True, **extra) -> dict:
    """One GOO-Real record, coordinates in the 640x480 frame; NumPy arrays and scalars as in the real files."""
    data = {"filename": filename,
            "ann": {"bboxes": np.array([[300.0, 200.0, 340.0, 260.0], [184.0, 32.0, 250.0, 122.0]]),
                    "labels": np.array([7, -1])},
            "gaze_item": np.int64(7), "gazeIdx": 0, "gaze_cx": np.float64(gaze[0]), "gaze_cy": gaze[1],
            "hx": eye[0], "hy": eye[1], "occluded": False, **extra}
    if size:
        data.update(width=1920, height=1080)
    return data


@pytest.fixture
def goo_root(tmp_path) -> Path:
    """A GOO-Real-like root: the vat-demo frames as the image folder (Windows separators in one file name)."""
    if not VAT_DEMO.is_dir():
        pytest.skip(f"vat-demo frames not found at {VAT_DEMO}")
    root = tmp_path / "goo"
    (root / "images").mkdir(parents=True)
    os.symlink(VAT_DEMO / "frames", root / "images" / "cam1")
    train = [record(f"cam1\\{name}") for name in ("00002575.jpg", "00002576.jpg", "00002577.jpg", "00002578.jpg")]
    test = [record("cam1\\00002579.jpg"),
            record("cam1/00002580.jpg", gaze=(160.0, 360.0), eye=(480.0, 120.0), size=False)]
    for name, records in (("train.pickle", train), ("test.pickle", test)):
        with open(root / name, "wb") as handle:
            pickle.dump(records, handle)
    return root


def cfg_of(root: Path, **dataset) -> dict:
    return {"dataset": {"format": "goo", "root": str(root), "train_file": "train.pickle",
                        "test_file": "test.pickle", "images_dir": "images", **dataset},
            "split": {"ratio": 0.5, "seed": 0}}


def test_records_become_samples(goo_root):
    first, second = load_samples(cfg_of(goo_root), "test")
    assert first.sample_id == "cam1/00002579.jpg"
    assert first.image_path == str((goo_root / "images" / "cam1" / "00002579.jpg").absolute())
    assert Path(first.image_path).is_file()
    assert first.image_size_wh == (1920, 1080)
    # the last box is the head, given in the 640x480 frame: x * 1920 / 640, y * 1080 / 480
    assert first.head_box_xyxy_px == (552.0, 72.0, 750.0, 274.5)
    np.testing.assert_allclose(first.gaze_points_norm, [[0.5, 0.5]])
    assert first.inout == 1 and first.eye_point_norm == (0.25, 0.5)
    assert first.meta == "gazeIdx=0;gaze_item=7"
    assert first.source.endswith("test.pickle:1")
    # no width / height in the record: the size comes from the real frame's header
    assert second.image_size_wh == (1920, 1080)
    np.testing.assert_allclose(second.gaze_points_norm, [[0.25, 0.75]])
    assert second.eye_point_norm == (0.75, 0.25)


def test_splits(goo_root):
    train = load_samples(cfg_of(goo_root), "train")
    labeled, unlabeled = load_samples(cfg_of(goo_root), "labeled"), load_samples(cfg_of(goo_root), "unlabeled")
    assert len(labeled) == 2 and len(unlabeled) == 2
    assert sorted(s.sample_id for s in labeled + unlabeled) == sorted(s.sample_id for s in train)
    assert [s.sample_id for s in split_persons(train, 0.5, seed=0)[0]] == [s.sample_id for s in labeled]
    with pytest.raises(ValueError, match="split.ratio"):
        split_persons(train, None)


def test_malformed_records_are_named_or_skipped(goo_root):
    records = [record("cam1/00002575.jpg"), record("cam1/00002576.jpg"), record("cam1/00002577.jpg"),
               record("cam1/00002575.jpg")]
    del records[1]["gaze_cx"]
    records[2]["ann"]["bboxes"] = np.array([[10.0, 10.0, 5.0, 20.0]])  # head box x_min > x_max
    bad = goo_root / "bad.pickle"
    bad.write_bytes(pickle.dumps(records))
    with pytest.raises(AnnotationError, match=r"bad\.pickle:2: missing key\(s\) gaze_cx"):
        read_goo(bad, goo_root / "images")
    data = load_goo(bad, goo_root / "images", "skip")
    assert [s.sample_id for s in data.samples] == ["cam1/00002575.jpg"]
    assert data.counts["skipped_malformed_records"] == 2 and data.counts["skipped_duplicate_image"] == 1
    records = [record("cam1/00002575.jpg", gaze=(700.0, 10.0))]
    bad.write_bytes(pickle.dumps(records))
    with pytest.raises(AnnotationError, match=r"bad\.pickle:1: gaze point .* outside the 640x480 frame"):
        read_goo(bad, goo_root / "images")


def test_the_unpickler_refuses_code_and_missing_files_are_one_line_errors(goo_root):
    class Exploit:
        def __reduce__(self):
            return (os.system, ("echo should-not-run",))

    evil = goo_root / "evil.pickle"
    evil.write_bytes(pickle.dumps([Exploit()]))
    with pytest.raises(AnnotationError, match=r"evil\.pickle: not a readable GOO annotation pickle \(refusing to load"):
        read_goo(evil, goo_root / "images")
    with pytest.raises(FileNotFoundError, match="GOO annotation file not found"):
        load_samples(cfg_of(goo_root, test_file="nope.pickle"), "test")
    (goo_root / "images" / "cam1").unlink()
    with pytest.raises(ImageReadError, match=r"test\.pickle:2:"):
        load_samples(cfg_of(goo_root), "test")  # record 2 has no size: its image header must be read
    assert len(load_samples(cfg_of(goo_root, on_error="skip"), "test")) == 1


def hot(row: int, col: int) -> np.ndarray:
    heatmap = np.zeros((64, 64), np.float32)
    heatmap[row, col] = 1.0
    return heatmap


def test_goo_auc_is_the_5x5_cv2_grid():
    # cv2's bilinear 64 -> 5 samples rows / cols 5.9, 18.7, 31.5, 44.3, 57.1: pixel (32, 32) reaches cell (2, 2)
    # with weight 0.5 x 0.5 and no other cell; pixel (16, 32) reaches none (no anti-aliasing): all 25 tie
    assert goo_auc(hot(32, 32), (0.5, 0.5)) == 1.0
    assert goo_auc(hot(32, 32), (0.1, 0.1)) == pytest.approx(11.5 / 24)  # 0 vs one 0.25 and 23 ties
    assert goo_auc(hot(16, 32), (0.5, 0.5)) == 0.5
    assert goo_auc(hot(32, 32), (1.0, 1.0)) == pytest.approx(11.5 / 24)  # g = 1 clamps to cell 4


def test_protocol_hand_case(goo_root):
    first, second = load_samples(cfg_of(goo_root), "test")
    # person 1: truth (0.5, 0.5), eye (0.25, 0.5), prediction (0.5, 0.5): AUC 1, L2 0
    # person 2: truth (0.25, 0.75), eye (0.75, 0.25), prediction at (row 16, col 32) = (0.5, 0.25): AUC 0.5
    result = evaluate(np.stack([hot(32, 32), hot(16, 32)]), [first, second], dataset="goo")
    assert (result["n"], result["n_skipped"], result["n_angular"]) == (2, 0, 2)
    assert result["auc"] == 0.75
    assert result["l2"] == result["avg_l2"] == pytest.approx(math.hypot(0.25, 0.5) / 2)

    def angle(p, g, e):  # GOO's formula, 1e-6 added to the product of the norms
        u, v = np.subtract(p, e), np.subtract(g, e)
        return math.degrees(math.acos(min(1.0, u @ v / (np.linalg.norm(u) * np.linalg.norm(v) + 1e-6))))

    expected = (angle((0.5, 0.5), (0.5, 0.5), (0.25, 0.5)) + angle((0.5, 0.25), (0.25, 0.75), (0.75, 0.25))) / 2
    assert result["angular"] == pytest.approx(expected, rel=1e-12)
    assert angle((0.5, 0.25), (0.25, 0.75), (0.75, 0.25)) == pytest.approx(45.0, abs=1e-3)
