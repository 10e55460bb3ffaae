"""The pseudo-label folder: round trip, resume, interruption safety, multi-shard merge, lookups."""

import numpy as np
import pandas as pd
import pytest

from gcdr.pseudolabels import (
    PseudoLabel,
    PseudoLabelFolder,
    PseudoLabelWriter,
    finalize,
    invalid_reason,
    normalize_heatmap,
    read_manifest,
    resize_to_64,
)


def make_label(i: int, valid: bool = True) -> PseudoLabel:
    rng = np.random.default_rng(i)
    raw = rng.random((24, 24)).astype(np.float32) if valid else np.zeros((24, 24), np.float32)
    return PseudoLabel(
        sample_id=f"img{i // 2}.jpg|{i}", heatmap_64=normalize_heatmap(resize_to_64(raw)), valid=valid,
        invalid_reason="" if valid else "all_zero", raw_map=raw, answer=f"thing {i}", key_noun="thing",
        image_path=f"/data/img{i // 2}.jpg", head_box_xyxy_px=(1.0, 2.0, 3.0, 4.0), source="test",
    )


def test_round_trip_preserves_maps_and_fields(tmp_path):
    labels = [make_label(i, valid=i != 3) for i in range(10)]
    with PseudoLabelWriter(tmp_path, chunk_size=4) as writer:
        for label in labels:
            writer.add(label)
    summary = finalize(tmp_path, expected_ids=[lb.sample_id for lb in labels] + ["missing|0"])
    assert summary["persons"] == 10 and summary["valid"] == 9
    assert summary["invalid_reasons"] == {"all_zero": 1} and summary["missing"] == 1

    folder = PseudoLabelFolder(tmp_path)
    assert len(folder) == 10 and sorted(folder.sample_ids) == sorted(lb.sample_id for lb in labels)
    for label in labels:
        got = folder.get(label.sample_id)
        np.testing.assert_allclose(got.heatmap_64, label.heatmap_64, atol=1e-3)  # float16 storage
        np.testing.assert_array_equal(got.raw_map, label.raw_map)
        assert got.valid == label.valid and got.answer == label.answer
        assert got.head_box_xyxy_px == (1.0, 2.0, 3.0, 4.0)
    assert not folder.is_valid(labels[3].sample_id)
    with pytest.raises(KeyError, match="not in pseudo-label folder"):
        folder.heatmap_64("nope")


def test_resume_skips_done_ids_and_matches_one_run(tmp_path):
    labels = [make_label(i) for i in range(9)]
    with PseudoLabelWriter(tmp_path / "a", chunk_size=2) as writer:
        for label in labels[:5]:
            writer.add(label)
    with PseudoLabelWriter(tmp_path / "a", chunk_size=2) as writer:  # resumed job
        assert writer.done_ids == {lb.sample_id for lb in labels[:5]}
        for label in labels:
            if label.sample_id not in writer.done_ids:
                writer.add(label)
    with PseudoLabelWriter(tmp_path / "b", chunk_size=2) as writer:  # one uninterrupted job
        for label in labels:
            writer.add(label)
    a, b = PseudoLabelFolder(tmp_path / "a"), PseudoLabelFolder(tmp_path / "b")
    assert sorted(a.sample_ids) == sorted(b.sample_ids)
    for sid in b.sample_ids:
        np.testing.assert_array_equal(a.heatmap_64(sid), b.heatmap_64(sid))


def test_interrupted_chunk_leaves_no_partial_rows(tmp_path):
    writer = PseudoLabelWriter(tmp_path, chunk_size=100)
    for i in range(3):
        writer.add(make_label(i))
    # the job dies before flushing: nothing is half-written, the chunk is simply not done
    del writer
    assert len(read_manifest(tmp_path)) == 0
    # arrays of a chunk whose CSV never landed are orphans: removed when the next writer starts
    orphan = tmp_path / "parts" / "rank0-00000.heatmap_64.npy"
    np.save(orphan, np.zeros((1, 64, 64), np.float16))
    PseudoLabelWriter(tmp_path)
    assert not orphan.exists()


def test_duplicate_add_is_an_error(tmp_path):
    with PseudoLabelWriter(tmp_path) as writer:
        writer.add(make_label(0))
        with pytest.raises(ValueError, match="already"):
            writer.add(make_label(0))


def test_shards_of_several_processes_merge_into_one_manifest(tmp_path):
    labels = [make_label(i) for i in range(8)]
    for rank in range(2):
        with PseudoLabelWriter(tmp_path, shard=f"rank{rank}", chunk_size=3) as writer:
            for label in labels[rank::2]:
                writer.add(label)
    finalize(tmp_path)
    manifest = pd.read_csv(tmp_path / "manifest.csv")
    assert sorted(manifest["sample_id"]) == sorted(lb.sample_id for lb in labels)
    assert set(manifest["part"].str.split("-").str[0]) == {"rank0", "rank1"}


def test_previews_written_for_first_n(tmp_path):
    image = np.zeros((32, 48, 3), np.uint8)
    with PseudoLabelWriter(tmp_path, max_previews=2) as writer:
        for i in range(4):
            writer.add(make_label(i), preview_rgb=image if writer.wants_preview() else None)
    assert len(list((tmp_path / "previews").glob("*.png"))) == 2


@pytest.mark.parametrize(
    ("raw", "answer", "reason"),
    [
        (np.full((4, 4), np.nan), "cup", "nan"),
        (np.zeros((4, 4)), "cup", "all_zero"),
        (np.ones((4, 4)), "cup", "constant"),
        (np.eye(4), "", "no_answer"),
        (np.eye(4), "cup", ""),
    ],
)
def test_invalid_reasons(raw, answer, reason):
    assert invalid_reason(raw, answer, require_answer=True) == reason


def test_normalize_heatmap_range():
    out = normalize_heatmap(np.array([[2.0, 4.0], [6.0, 10.0]]))
    assert out.min() == 0.0 and abs(out.max() - 1.0) < 1e-6 and out.dtype == np.float32
