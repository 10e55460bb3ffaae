"""The pseudo-label folder: round trip, resume, interruption safety, multi-shard merge, lookups, damage."""

import hashlib
import json
import os

import numpy as np
import pandas as pd
import pytest

from gcdr.heatmaps import normalize_heatmap
from gcdr.pseudolabels import (
    MANIFEST_COLUMNS,
    IncompleteFolderError,
    PseudoLabel,
    PseudoLabelFolder,
    PseudoLabelFolderError,
    PseudoLabelWriter,
    check_final,
    content_fingerprint,
    finalize,
    invalid_reason,
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


# ----------------------------------------------------------------------------- damaged folders

def write_folder(folder, n: int = 10, chunk_size: int = 4, stage: str = "gradcam") -> list[PseudoLabel]:
    """A finalized folder of ``n`` persons in chunks rank0-00000 (4), rank0-00001 (4), rank0-00002 (2)."""
    labels = [make_label(i) for i in range(n)]
    with PseudoLabelWriter(folder, chunk_size=chunk_size) as writer:
        for label in labels:
            writer.add(label)
    (folder / "provenance.json").write_text(json.dumps({"stage": stage}))
    finalize(folder)
    return labels


def make_legacy(folder) -> None:
    """What the code before chunk indexes wrote: no parts/format.json, no parts/*.index.json."""
    (folder / "parts" / "format.json").unlink()
    for index in (folder / "parts").glob("*.index.json"):
        index.unlink()


def assert_names(error, path) -> None:
    message = str(error.value)
    assert str(path) in message and "\n" not in message, message


def test_truncated_part_file_is_an_error_naming_it(tmp_path):
    write_folder(tmp_path)
    part = tmp_path / "parts" / "rank0-00001.heatmap_64.npy"
    part.write_bytes(part.read_bytes()[:-100])
    with pytest.raises(PseudoLabelFolderError, match="truncated") as error:
        PseudoLabelFolder(tmp_path)
    assert_names(error, part)
    assert "rerun the gradcam stage" in str(error.value) and "rank0-00001.*" in str(error.value)


def test_garbage_manifest_line_is_an_error_naming_it(tmp_path):
    write_folder(tmp_path)
    manifest = tmp_path / "manifest.csv"
    lines = manifest.read_text().splitlines(keepends=True)
    manifest.write_text("".join([*lines[:4], "x7#,garbage\n", *lines[4:]]))
    with pytest.raises(PseudoLabelFolderError) as error:
        PseudoLabelFolder(tmp_path)
    assert_names(error, manifest)


def test_truncated_manifest_is_an_error_naming_it(tmp_path):
    write_folder(tmp_path)
    manifest = tmp_path / "manifest.csv"
    full = manifest.read_bytes()
    for keep_lines in (9, 5):  # the last chunk missing entirely (line 9 ends chunk 1), or cut inside a chunk
        manifest.write_bytes(b"".join(full.splitlines(keepends=True)[:keep_lines]))
        with pytest.raises(PseudoLabelFolderError, match="truncated") as error:
            PseudoLabelFolder(tmp_path)
        assert_names(error, manifest)
    manifest.write_bytes(full[: len(full) // 2])  # cut mid-line
    with pytest.raises(PseudoLabelFolderError) as error:
        PseudoLabelFolder(tmp_path)
    assert_names(error, manifest)


def test_edited_manifest_is_an_error_naming_it(tmp_path):
    labels = write_folder(tmp_path)
    manifest = tmp_path / "manifest.csv"
    frame = pd.read_csv(manifest, keep_default_na=False)
    frame.loc[3, "valid"] = False
    frame.to_csv(manifest, index=False)
    with pytest.raises(PseudoLabelFolderError, match=r"valid=.*edited") as error:
        PseudoLabelFolder(tmp_path)
    assert_names(error, manifest)
    assert labels[3].sample_id in str(error.value)


def test_swapped_row_values_are_an_error_naming_the_file(tmp_path):
    write_folder(tmp_path)
    manifest = tmp_path / "manifest.csv"
    intact = manifest.read_bytes()
    frame = pd.read_csv(manifest, keep_default_na=False)
    frame.loc[[0, 1], "row"] = frame.loc[[1, 0], "row"].to_numpy()
    frame.to_csv(manifest, index=False)
    with pytest.raises(PseudoLabelFolderError, match="row") as error:
        PseudoLabelFolder(tmp_path)
    assert_names(error, manifest)

    manifest.write_bytes(intact)  # the same swap in the chunk's own CSV: its checksum no longer matches
    part = tmp_path / "parts" / "rank0-00000.csv"
    frame = pd.read_csv(part, keep_default_na=False)
    frame.loc[[0, 1], "row"] = frame.loc[[1, 0], "row"].to_numpy()
    frame.to_csv(part, index=False)
    with pytest.raises(PseudoLabelFolderError, match="sha256") as error:
        PseudoLabelFolder(tmp_path)
    assert_names(error, part)


def test_missing_chunk_index_is_an_error_naming_it(tmp_path):
    write_folder(tmp_path)
    index = tmp_path / "parts" / "rank0-00002.index.json"
    index.unlink()
    with pytest.raises(PseudoLabelFolderError, match="missing") as error:
        PseudoLabelFolder(tmp_path)
    assert_names(error, index)
    with pytest.raises(PseudoLabelFolderError, match="missing"):  # a resumed writer does not build on it either
        PseudoLabelWriter(tmp_path)


def test_changed_bytes_of_same_size_fail_the_checksum(tmp_path):
    write_folder(tmp_path)
    raw = tmp_path / "parts" / "rank0-00000.raw.npy"
    data = bytearray(raw.read_bytes())
    data[-5] ^= 0xFF
    raw.write_bytes(bytes(data))
    with pytest.raises(PseudoLabelFolderError, match="sha256") as error:
        PseudoLabelFolder(tmp_path)
    assert_names(error, raw)
    assert len(PseudoLabelFolder(tmp_path, checksums=False)) == 10  # sizes and shapes still agree


def test_draws_round_trip_with_zeros_and_nan_for_labels_without_them(tmp_path):
    labels = [make_label(i, valid=i != 1) for i in range(5)]
    draws = {lb.sample_id: np.stack([lb.heatmap_64, lb.heatmap_64[::-1]]) for lb in labels if lb.valid}
    with PseudoLabelWriter(tmp_path, chunk_size=3, draws=2) as writer:
        for i, label in enumerate(labels):
            if label.valid:
                label.draws_64, label.draw_spread = draws[label.sample_id], 0.125 * i
            writer.add(label)
    finalize(tmp_path)
    assert sorted(p.name for p in (tmp_path / "parts").glob("*.draws_64.npy")) == [
        "rank0-00000.draws_64.npy", "rank0-00001.draws_64.npy"]  # one per chunk, recorded in its index
    folder = PseudoLabelFolder(tmp_path)
    assert folder.has_draws and folder.has_draw_spread
    for i, label in enumerate(labels):
        if label.valid:
            np.testing.assert_allclose(folder.draws_64(label.sample_id), draws[label.sample_id], atol=1e-3)
            assert folder.draw_spread(label.sample_id) == 0.125 * i
        else:  # zeros and NaN, as refine writes invalid persons
            assert folder.draws_64(label.sample_id).shape == (2, 64, 64) and not folder.draws_64(label.sample_id).any()
            assert np.isnan(folder.draw_spread(label.sample_id))
    assert list(read_manifest(tmp_path).columns) == MANIFEST_COLUMNS + ["draw_spread"]

    draws_file = tmp_path / "parts" / "rank0-00001.draws_64.npy"
    np.save(draws_file, np.zeros((3, 2, 64, 64), np.float16))  # 3 rows for a chunk of 2 (index rewritten too)
    index = tmp_path / "parts" / "rank0-00001.index.json"
    record = json.loads(index.read_text())
    record["files"][draws_file.name] = {"bytes": draws_file.stat().st_size, "sha256": hashlib.sha256(draws_file.read_bytes()).hexdigest()}
    index.write_text(json.dumps(record))
    with pytest.raises(PseudoLabelFolderError, match=r"has shape \(3, 2, 64, 64\), rank0-00001.csv lists 2") as error:
        PseudoLabelFolder(tmp_path)
    assert_names(error, draws_file)


def test_legacy_folder_without_checksums_is_read_and_checked(tmp_path, caplog):
    labels = write_folder(tmp_path)
    expected = {lb.sample_id: PseudoLabelFolder(tmp_path).heatmap_64(lb.sample_id) for lb in labels}
    make_legacy(tmp_path)
    with caplog.at_level("WARNING", logger="gcdr.pseudolabels"):
        folder = PseudoLabelFolder(tmp_path)
        PseudoLabelFolder(tmp_path)
    assert sum("without checksums" in r.getMessage() for r in caplog.records) == 1  # logged once
    for sid, heatmap in expected.items():
        np.testing.assert_array_equal(folder.heatmap_64(sid), heatmap)

    part = tmp_path / "parts" / "rank0-00001.csv"  # swapped rows: caught without a checksum
    intact = part.read_bytes()
    frame = pd.read_csv(part, keep_default_na=False)
    frame.loc[[0, 1], "row"] = frame.loc[[1, 0], "row"].to_numpy()
    frame.to_csv(part, index=False)
    with pytest.raises(PseudoLabelFolderError, match="rows swapped") as error:
        PseudoLabelFolder(tmp_path)
    assert_names(error, part)
    part.write_bytes(intact)
    (tmp_path / "manifest.csv").touch()
    heatmaps = tmp_path / "parts" / "rank0-00002.heatmap_64.npy"  # truncated: caught by the .npy header
    heatmaps.write_bytes(heatmaps.read_bytes()[:-1])
    with pytest.raises(PseudoLabelFolderError, match="truncated") as error:
        PseudoLabelFolder(tmp_path)
    assert_names(error, heatmaps)


def test_legacy_folder_resumed_by_new_writer(tmp_path):
    labels = [make_label(i) for i in range(9)]
    with PseudoLabelWriter(tmp_path, chunk_size=4) as writer:
        for label in labels[:4]:
            writer.add(label)
    make_legacy(tmp_path)
    with PseudoLabelWriter(tmp_path, chunk_size=4) as writer:
        for label in labels[4:]:
            writer.add(label)
    assert not (tmp_path / "parts" / "format.json").exists()  # still a mixed, old-style folder
    finalize(tmp_path)
    assert sorted(PseudoLabelFolder(tmp_path).sample_ids) == sorted(lb.sample_id for lb in labels)


def test_kill_between_index_and_csv_redoes_the_chunk(tmp_path):
    labels = [make_label(i) for i in range(8)]
    with PseudoLabelWriter(tmp_path, chunk_size=4) as writer:
        for label in labels:
            writer.add(label)
    # the job died after the arrays and the index of chunk 1 landed, before its CSV
    (tmp_path / "parts" / "rank0-00001.csv").unlink()
    assert len(PseudoLabelFolder(tmp_path)) == 4  # readers see the done chunk only
    with PseudoLabelWriter(tmp_path, chunk_size=4) as writer:
        assert not (tmp_path / "parts" / "rank0-00001.index.json").exists()  # orphan removed
        assert writer.done_ids == {lb.sample_id for lb in labels[:4]}
        for label in labels[4:]:
            writer.add(label)
    finalize(tmp_path)
    folder = PseudoLabelFolder(tmp_path)
    for label in labels:
        np.testing.assert_allclose(folder.heatmap_64(label.sample_id), label.heatmap_64, atol=1e-3)


def test_manifest_older_than_new_chunks_is_not_an_error(tmp_path):
    labels = [make_label(i) for i in range(8)]
    with PseudoLabelWriter(tmp_path, chunk_size=4) as writer:
        for label in labels[:4]:
            writer.add(label)
    finalize(tmp_path)
    with PseudoLabelWriter(tmp_path, chunk_size=4) as writer:  # resumed, not finalized yet
        for label in labels[4:]:
            writer.add(label)
    manifest = tmp_path / "manifest.csv"
    stamp = (tmp_path / "parts" / "rank0-00000.csv").stat().st_mtime_ns
    os.utime(manifest, ns=(stamp, stamp))
    os.utime(tmp_path / "parts" / "rank0-00001.csv", ns=(stamp + 10**9, stamp + 10**9))
    assert len(PseudoLabelFolder(tmp_path)) == 8  # the parts are read; manifest.csv only lags behind


# ----------------------------------------------------------------------------- final or not

def test_summary_records_the_fingerprint_of_the_parts_and_final_folders_pass(tmp_path):
    labels = write_folder(tmp_path)
    ids = [lb.sample_id for lb in labels]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["fingerprint"] == content_fingerprint(tmp_path) and len(summary["fingerprint"]) == 64
    assert finalize(tmp_path)["fingerprint"] == summary["fingerprint"]  # finalize again: same content
    assert check_final(tmp_path, ids[:5])["fingerprint"] == summary["fingerprint"]
    before = content_fingerprint(tmp_path)
    (tmp_path / "previews").mkdir()
    (tmp_path / "previews" / "x.png").write_bytes(b"png")
    assert content_fingerprint(tmp_path) == before  # only the parts count


def test_a_folder_its_stage_did_not_finish_is_not_final(tmp_path):
    labels = [make_label(i) for i in range(10)]
    ids = [lb.sample_id for lb in labels]
    with PseudoLabelWriter(tmp_path, chunk_size=4) as writer:  # killed after 6 of 10
        for label in labels[:6]:
            writer.add(label)
    (tmp_path / "provenance.json").write_text(json.dumps({"stage": "gradcam", "split": "train", "status": "running"}))
    with pytest.raises(IncompleteFolderError) as error:
        check_final(tmp_path, ids, what="split 'train'")
    assert_names(error, tmp_path)
    assert "incomplete (4 of 10 persons of split 'train' missing; it has no summary.json" in str(error.value)
    assert str(error.value).endswith("finish it with `make gradcam SPLIT=train` first")

    finalize(tmp_path, expected_ids=ids)  # finalized, but the stage has not said done (killed in between)
    with pytest.raises(IncompleteFolderError, match="still running or was interrupted"):
        check_final(tmp_path, ids[:6])
    (tmp_path / "provenance.json").write_text(json.dumps({"stage": "gradcam", "split": "train", "status": "done"}))
    with pytest.raises(IncompleteFolderError, match="summary.json counts 4 of 10 persons missing"):
        check_final(tmp_path, ids)
    assert check_final(tmp_path, ids[:6])["missing"] == 4  # the persons asked for are all there

    with PseudoLabelWriter(tmp_path, chunk_size=4) as writer:  # resumed, not finalized yet
        for label in labels[6:]:
            writer.add(label)
    with pytest.raises(IncompleteFolderError, match="is not final .its parts changed after summary.json"):
        check_final(tmp_path, ids)
    finalize(tmp_path, expected_ids=ids)
    assert check_final(tmp_path, ids)["missing"] == 0


def test_a_summary_of_an_older_gcdr_must_count_the_persons_there_are(tmp_path):
    labels = write_folder(tmp_path, stage="refine")
    summary = json.loads((tmp_path / "summary.json").read_text())
    del summary["fingerprint"]
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    assert check_final(tmp_path, [lb.sample_id for lb in labels])["fingerprint"] == content_fingerprint(tmp_path)
    (tmp_path / "summary.json").write_text(json.dumps(dict(summary, persons=7)))
    with pytest.raises(IncompleteFolderError, match="counts 7 persons, the parts hold 10"):
        check_final(tmp_path, [])
