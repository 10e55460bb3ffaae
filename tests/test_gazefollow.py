"""GazeFollow-format reading: file kinds, cleaning with counts, test grouping, errors naming file and line."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from gcdr.data import AnnotationError, ImageReadError, image_size_wh, load_image_rgb
from gcdr.data.gazefollow import (
    load_gazefollow,
    read_gazefollow,
    read_gazefollow_table,
    write_gazefollow_rows,
)

FIXTURES = Path(__file__).parent / "fixtures" / "gazefollow"


def test_train_file_rows_become_samples_with_counts(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="gcdr.data.gazefollow")
    data = load_gazefollow(FIXTURES / "train_small.txt", tmp_path)
    assert data.kind == "train"
    # 6 rows: one inout -1 dropped, one zero-width box dropped, one inverted box repaired
    assert data.counts["dropped_inout_-1"] == 1
    assert data.counts["dropped_empty_head_box"] == 1
    assert data.counts["repaired_inverted_head_box"] == 1
    assert [s.source.rsplit(":", 1)[1] for s in data.samples] == ["1", "2", "3", "6"]
    assert "dropped_inout_-1=1" in caplog.text and "repaired_inverted_head_box=1" in caplog.text

    first, out_of_frame, repaired, last = data.samples
    assert first.sample_id == "train/00000001/00000001.jpg|0.300000|0.200000"
    assert first.image_path == os.path.join(str(tmp_path.absolute()), "train/00000001/00000001.jpg")
    assert first.head_box_xyxy_px == (10.0, 20.0, 50.0, 70.0)
    assert first.gaze_points_norm.dtype == np.float64  # the file's values, unrounded (metrics cast per protocol)
    assert first.gaze_points_norm.tolist() == [[0.60, 0.70]]
    assert first.inout == 1 and first.eye_point_norm == (0.30, 0.20)
    assert first.meta == "meta_a" and first.body_box_xyxy_px is None and first.image_size_wh is None
    assert first.source == f"{FIXTURES / 'train_small.txt'}:1"
    assert out_of_frame.inout == 0
    np.testing.assert_allclose(out_of_frame.gaze_points_norm, [[0.10, 0.80]], rtol=1e-6)  # kept, never a target
    assert repaired.head_box_xyxy_px == (40.0, 20.0, 80.0, 60.0)  # file had x_min=80 > x_max=40
    assert last.meta == "meta_f"


def test_inverted_boxes_can_be_dropped_like_gcdr(tmp_path):
    data = load_gazefollow(FIXTURES / "train_small.txt", tmp_path, inverted_boxes="drop")
    assert data.counts["dropped_inverted_head_box"] == 1
    assert [s.meta for s in data.samples] == ["meta_a", "meta_b", "meta_f"]


def test_test_rows_are_grouped_per_person_in_first_appearance_order(tmp_path):
    data = load_gazefollow(FIXTURES / "test_small.txt", tmp_path)
    assert data.kind == "test"
    samples = data.samples
    # rows: A, B, A, B, A, C (C = other person in A's image, different eye_x)
    assert [s.meta for s in samples] == ["meta_a", "meta_b", "meta_c"]
    assert all(s.inout == 1 for s in samples)
    assert samples[0].gaze_points_norm.tolist() == [[0.60, 0.70], [0.62, 0.72], [0.64, 0.68]]  # float64, exact
    assert samples[1].gaze_points_norm.tolist() == [[0.20, 0.30], [0.22, 0.34]]
    assert samples[0].gaze_points_norm.dtype == samples[2].gaze_points_norm.dtype == np.float64
    assert samples[2].gaze_points_norm.shape == (1, 2)
    assert samples[0].source.endswith("test_small.txt:1") and samples[1].source.endswith("test_small.txt:2")
    assert samples[0].sample_id == "test2/00000001/00000001.jpg|0.300000|0.200000"
    np.testing.assert_allclose(samples[0].mean_gaze_point_norm, [0.62, 0.70], rtol=1e-6)


def test_persondet_files_carry_body_boxes(tmp_path):
    train = read_gazefollow(FIXTURES / "train_persondet_small.txt", tmp_path)
    assert [s.body_box_xyxy_px for s in train] == [(5.0, 15.0, 80.0, 190.0), None, (30.0, 10.0, 120.0, 200.0)]
    assert [s.inout for s in train] == [1, 0, 1]
    assert train[0].meta == "meta_a"
    test = load_gazefollow(FIXTURES / "test_persondet_small.txt", tmp_path)
    assert test.kind == "test_persondet"
    assert [len(s.gaze_points_norm) for s in test.samples] == [2, 1]
    assert [s.body_box_xyxy_px for s in test.samples] == [(5.0, 15.0, 80.0, 190.0), None]


def test_wrong_column_count_names_file_and_line(tmp_path):
    with pytest.raises(AnnotationError, match=r"train_bad_columns\.txt:3: 16 columns"):
        read_gazefollow(FIXTURES / "train_bad_columns.txt", tmp_path)


def test_non_numeric_field_names_file_and_line(tmp_path):
    # line 2 is blank: line numbers are the file's, not the row index
    with pytest.raises(AnnotationError, match=r"train_bad_number\.txt:4: .*column 7='abc'"):
        read_gazefollow(FIXTURES / "train_bad_number.txt", tmp_path)


def test_skip_mode_skips_and_counts_malformed_rows(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    data = load_gazefollow(FIXTURES / "train_bad_number.txt", tmp_path, on_error="skip")
    # line 4: eye_x 'abc'; line 5: inout 7
    assert data.counts["skipped_malformed_rows"] == 2
    assert [s.source.rsplit(":", 1)[1] for s in data.samples] == ["1", "3", "6"]
    assert "train_bad_number.txt:5" in caplog.text and "skipped 2 malformed rows" in caplog.text
    bad_columns = load_gazefollow(FIXTURES / "train_bad_columns.txt", tmp_path, on_error="skip")
    assert bad_columns.counts["skipped_malformed_rows"] == 1 and len(bad_columns.samples) == 3


def test_slow_and_fast_parsing_agree(tmp_path):
    """Rows that survive the line-by-line fallback equal what the pandas fast path reads."""
    lines = (FIXTURES / "train_bad_number.txt").read_text().splitlines()
    clean = tmp_path / "clean.txt"
    clean.write_text("\n".join(line for i, line in enumerate(lines, 1) if i not in (2, 4, 5)) + "\n")
    fast = read_gazefollow_table(clean)
    slow = read_gazefollow_table(FIXTURES / "train_bad_number.txt", on_error="skip")
    assert fast.paths == slow.paths and fast.meta == slow.meta and fast.lines == slow.lines
    for name in ("eye_xy_norm", "gaze_xy_norm", "head_boxes_px", "inout"):
        np.testing.assert_array_equal(getattr(fast, name), getattr(slow, name))


def test_unknown_column_count_is_rejected(tmp_path):
    file = tmp_path / "odd.txt"
    file.write_text("a,b,c\n")
    with pytest.raises(AnnotationError, match=r"odd\.txt:1: 3 columns"):
        read_gazefollow(file, tmp_path)


def test_image_sizes_clamp_head_boxes(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    for name, (width, height) in {"train/00000001/00000001.jpg": (120, 60), "train/00000002/00000002.jpg": (60, 50),
                                  "train/00000003/00000003.jpg": (100, 100)}.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(tmp_path / name), np.zeros((height, width, 3), np.uint8))
    data = load_gazefollow(FIXTURES / "train_small.txt", tmp_path, read_image_sizes=True)
    by_meta = {s.meta: s for s in data.samples}
    assert by_meta["meta_a"].image_size_wh == (120, 60)
    assert by_meta["meta_a"].head_box_xyxy_px == (10.0, 20.0, 50.0, 60.0)   # y_max 70 -> 60
    assert by_meta["meta_b"].head_box_xyxy_px == (100.0, 30.0, 120.0, 60.0)
    assert by_meta["meta_c"].head_box_xyxy_px == (40.0, 20.0, 60.0, 50.0)
    assert by_meta["meta_f"].head_box_xyxy_px == (5.0, 50.0, 25.0, 75.0)    # inside: unchanged
    assert data.counts["clamped_head_box"] == 3
    assert "clamped_head_box=3" in caplog.text
    os.remove(tmp_path / "train/00000003/00000003.jpg")
    with pytest.raises(ImageReadError, match=r"train_small\.txt:6: image not found: .*00000003\.jpg"):
        load_gazefollow(FIXTURES / "train_small.txt", tmp_path, read_image_sizes=True)
    skipped = load_gazefollow(FIXTURES / "train_small.txt", tmp_path, "skip", read_image_sizes=True)
    assert skipped.counts["skipped_unreadable_image"] == 1 and len(skipped.samples) == 3


def test_rows_written_back_byte_for_byte(tmp_path):
    crlf = tmp_path / "crlf.txt"
    crlf.write_bytes((FIXTURES / "train_small.txt").read_bytes().replace(b"\n", b"\r\n"))
    for source in (FIXTURES / "train_small.txt", crlf):
        table = read_gazefollow_table(source)
        copy = tmp_path / f"copy_{source.name}"
        write_gazefollow_rows(copy, table.lines)
        assert copy.read_bytes() == source.read_bytes()
    assert read_gazefollow_table(crlf).paths[0] == "train/00000001/00000001.jpg"
    np.testing.assert_array_equal(read_gazefollow_table(crlf).inout, read_gazefollow_table(FIXTURES / "train_small.txt").inout)


def test_images_read_rgb_and_name_missing_files(tmp_path):
    pixels = np.zeros((17, 21, 3), np.uint8)
    pixels[..., 0] = 200  # red in RGB
    png = tmp_path / "red.png"
    cv2.imwrite(str(png), pixels[..., ::-1])  # OpenCV writes BGR
    image = load_image_rgb(png)
    assert image.shape == (17, 21, 3) and image.dtype == np.uint8 and image[0, 0].tolist() == [200, 0, 0]
    assert image_size_wh(png) == (21, 17)
    grey = tmp_path / "grey.png"
    cv2.imwrite(str(grey), np.full((16, 18), 9, np.uint8))
    assert load_image_rgb(grey).shape == (16, 18, 3)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    for path in (tmp_path / "missing.jpg", broken):
        with pytest.raises(ImageReadError, match=path.name):
            load_image_rgb(path)
        with pytest.raises(ImageReadError, match=path.name):
            image_size_wh(path)


def _train_file(tmp_path, rows):
    path = tmp_path / "train.txt"
    path.write_text("".join(row + "\n" for row in rows))
    return path


ROW = "train/a.jpg,0,0,0,10,10,{eye},0.2,{gaze},10,20,50,70,{inout},meta,x"


def test_rows_that_would_teach_something_wrong_are_named_by_line_or_skipped_with_a_count(tmp_path):
    good = ROW.format(eye="0.3", gaze="0.6,0.7", inout=1)
    cases = {
        "no gaze point": (ROW.format(eye="0.4", gaze="-1,-1", inout=1), r"train\.txt:2: in frame .* no gaze point"),
        "off-image box": (ROW.format(eye="0.4", gaze="0.6,0.7", inout=1).replace("10,20,50,70", "-50,-40,-10,-5"),
                          r"train\.txt:2: head box .* lies outside the image"),
        "conflicting duplicate": (ROW.format(eye="0.3", gaze="0.1,0.1", inout=1),
                                  r"train\.txt:2: the same person .* as line 1 with other values"),
    }
    for name, (bad, message) in cases.items():
        path = _train_file(tmp_path, [good, bad])
        with pytest.raises(AnnotationError, match=message):
            load_gazefollow(path, tmp_path)
        skipped = load_gazefollow(path, tmp_path, "skip")
        assert [s.source.rsplit(":", 1)[1] for s in skipped.samples] == ["1"], name
        assert sum(v for k, v in skipped.counts.items() if k.startswith("skipped_")) == 1, name
    # an out-of-frame row needs no gaze point
    assert len(load_gazefollow(_train_file(tmp_path, [good, ROW.format(eye="0.4", gaze="-1,-1", inout=0)]),
                               tmp_path).samples) == 2


def test_identical_repeated_rows_are_merged_with_a_count(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    good = ROW.format(eye="0.3", gaze="0.6,0.7", inout=1)
    data = load_gazefollow(_train_file(tmp_path, [good, good, ROW.format(eye="0.4", gaze="0.5,0.5", inout=1)]),
                           tmp_path)
    assert len(data.samples) == 2 and data.counts["merged_identical_rows"] == 1
    assert len({s.sample_id for s in data.samples}) == 2
    assert "merged 1 identical repeated rows into the first (e.g. line 2 repeats line 1)" in caplog.text


def test_a_head_box_outside_the_image_is_an_error_naming_the_line(tmp_path):
    cv2.imwrite(str(tmp_path / "a.jpg"), np.zeros((60, 80, 3), np.uint8))
    (tmp_path / "train").mkdir()
    cv2.imwrite(str(tmp_path / "train" / "a.jpg"), np.zeros((60, 80, 3), np.uint8))
    path = _train_file(tmp_path, [ROW.format(eye="0.3", gaze="0.6,0.7", inout=1).replace("10,20,50,70",
                                                                                         "100,20,150,50")])
    with pytest.raises(AnnotationError, match=r"train\.txt:1: head box .* outside the 80x60 image"):
        load_gazefollow(path, tmp_path, read_image_sizes=True)
    assert load_gazefollow(path, tmp_path, "skip", read_image_sizes=True).samples == []
