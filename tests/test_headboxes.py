"""Plain head-box files over a folder of real frames (../shared/data/vat-demo)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from gcdr.data import AnnotationError, ImageReadError, load_image_rgb, load_samples
from gcdr.data.headboxes import read_headbox_file, read_headbox_folder

DEMO = Path(__file__).resolve().parents[2] / "shared" / "data" / "vat-demo"  # ../shared/data beside the repo
FIXTURES = Path(__file__).parent / "fixtures" / "headboxes"
pytestmark = pytest.mark.skipif(not (DEMO / "person1.txt").is_file(), reason="vat-demo frames not available")


def test_one_file_is_one_person():
    samples = read_headbox_file(DEMO / "person1.txt", DEMO / "frames")
    assert len(samples) == 10
    first = samples[0]
    assert first.sample_id == "00002575.jpg|person1"
    assert first.image_path == str(DEMO / "frames" / "00002575.jpg")
    assert first.head_box_xyxy_px == (553.0, 71.0, 752.0, 275.0)
    assert first.inout == -1 and first.gaze_points_norm.shape == (0, 2) and not first.has_gaze
    assert first.image_size_wh == (1920, 1080)
    assert first.source == f"{DEMO / 'person1.txt'}:1"
    assert samples[4].head_box_xyxy_px == (547.0, 65.0, 746.0, 269.0)  # row 5 of the file
    image = load_image_rgb(first.image_path)
    assert image.shape == (1080, 1920, 3) and image.dtype.name == "uint8" and image.std() > 10


def test_several_files_are_several_people_per_image():
    samples = read_headbox_folder(DEMO / "frames", [DEMO / "person1.txt", DEMO / "person2.txt"])
    assert len(samples) == 20
    # grouped by image, people in file order
    assert [s.sample_id for s in samples[:4]] == ["00002575.jpg|person1", "00002575.jpg|person2",
                                                  "00002576.jpg|person1", "00002576.jpg|person2"]
    assert samples[1].head_box_xyxy_px == (1093.0, 33.0, 1347.0, 299.0)
    assert len({s.sample_id for s in samples}) == 20
    assert all(s.image_size_wh == (1920, 1080) for s in samples)
    # a folder of head-box files means the same
    assert [s.sample_id for s in read_headbox_folder(DEMO / "frames", DEMO)] == [s.sample_id for s in samples]


def test_load_samples_reads_a_headbox_config():
    cfg = {"dataset": {"format": "headboxes", "root": str(DEMO), "images_dir": "frames",
                       "heads": ["person1.txt", "person2.txt"]}}
    assert len(load_samples(cfg, "unlabeled")) == 20
    with pytest.raises(ValueError, match="no gaze labels"):
        load_samples(cfg, "labeled")


def test_errors_name_file_and_line(caplog):
    with pytest.raises(AnnotationError, match=r"bad_columns\.txt:2: 4 columns"):
        read_headbox_file(FIXTURES / "bad_columns.txt", DEMO / "frames")
    with pytest.raises(ImageReadError, match=r"missing_image\.txt:2: image not found: .*00009999\.jpg"):
        read_headbox_file(FIXTURES / "missing_image.txt", DEMO / "frames")
    caplog.set_level(logging.WARNING)
    kept = read_headbox_file(FIXTURES / "bad_columns.txt", DEMO / "frames", on_error="skip")
    assert [s.source.rsplit(":", 1)[1] for s in kept] == ["1", "3"]
    assert "skipped_rows=1" in caplog.text


def test_inverted_box_is_repaired_and_counted(caplog):
    caplog.set_level(logging.WARNING)
    samples = read_headbox_file(FIXTURES / "inverted.txt", DEMO / "frames")
    assert samples[0].head_box_xyxy_px == (553.0, 71.0, 752.0, 275.0)
    assert "repaired_inverted_head_box=1" in caplog.text
