"""GazeDataset: keys, shapes and dtypes per style, labels, pseudo-label priors, seeding, unreadable images."""

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from gcdr.data.dataset import MAX_GAZE_POINTS, GazeDataset, gaze_collate
from gcdr.data.images import ImageReadError
from gcdr.data.sample import IN_FRAME, INOUT_UNKNOWN, OUT_OF_FRAME, PersonSample
from gcdr.data.transforms import AugmentConfig, enlarge_head_box, gaussian_heatmap_64, head_channel
from gcdr.pseudolabels import PseudoLabel, PseudoLabelFolder, PseudoLabelWriter, finalize

VAT_DEMO = Path(__file__).resolve().parents[2] / "shared" / "data" / "vat-demo"
HEAD_BOX = (60.0, 40.0, 100.0, 90.0)
GAZE = (0.7, 0.6)

VAT_KEYS = {
    "index": ((), torch.int64), "scene": ((3, 224, 224), torch.float32),
    "face": ((3, 224, 224), torch.float32),
    "head_channel": ((1, 224, 224), torch.float32), "head_box_xyxy_norm": ((4,), torch.float32),
    "target_heatmap_64": ((64, 64), torch.float32), "has_target": ((), torch.bool),
    "prior_heatmap_64": ((64, 64), torch.float32), "prior_valid": ((), torch.bool),
    "inout": ((), torch.float32),
    "is_labeled": ((), torch.bool), "gaze_points_norm": ((MAX_GAZE_POINTS, 2), torch.float32),
    "num_gaze_points": ((), torch.int64), "image_size_wh": ((2,), torch.int64),
}
GAZELLE_KEYS = {k: v for k, v in VAT_KEYS.items() if k not in ("face", "head_channel")} | {
    "scene": ((3, 448, 448), torch.float32)}


def write_image(path: Path, size_wh=(256, 192), seed=0) -> str:
    rng = np.random.default_rng(seed)
    cv2.imwrite(str(path), rng.integers(0, 256, (size_wh[1], size_wh[0], 3), np.uint8))
    return str(path)


def make_samples(tmp_path: Path, n: int = 4, **overrides) -> list[PersonSample]:
    samples = []
    for i in range(n):
        fields = dict(sample_id=f"img{i}.png|{i}", image_path=write_image(tmp_path / f"img{i}.png", seed=i),
                      head_box_xyxy_px=HEAD_BOX, gaze_points_norm=np.array([GAZE], np.float32),
                      inout=IN_FRAME,
                      body_box_xyxy_px=(40.0, 30.0, 140.0, 190.0), source=f"train.txt:{i + 1}")
        fields.update(overrides)
        samples.append(PersonSample(**fields))
    return samples


def assert_item_layout(item: dict, expected: dict) -> None:
    assert set(item) == set(expected)
    for key, (shape, dtype) in expected.items():
        assert tuple(item[key].shape) == shape and item[key].dtype == dtype, key
        assert torch.isfinite(item[key].float()).all(), key


@pytest.mark.parametrize("style, keys", [("vat", VAT_KEYS), ("gazelle", GAZELLE_KEYS)])
@pytest.mark.parametrize("train", [False, True])
def test_item_keys_shapes_dtypes(tmp_path, style, keys, train):
    dataset = GazeDataset(make_samples(tmp_path), train=train, style=style)
    for index in range(len(dataset)):
        assert_item_layout(dataset[index], keys)
    batch = next(iter(DataLoader(dataset, batch_size=3, collate_fn=gaze_collate)))
    assert batch["scene"].shape[0] == 3 and batch["has_target"].shape == (3,)


def test_test_item_values_vat(tmp_path):
    dataset = GazeDataset(make_samples(tmp_path, n=1), train=False, style="vat")
    item = dataset[0]
    box_norm = enlarge_head_box(HEAD_BOX, 0.1) / np.array([256, 192, 256, 192])  # GazeFollow: always +10 %
    np.testing.assert_allclose(item["head_box_xyxy_norm"].numpy(), box_norm, rtol=1e-6)
    np.testing.assert_array_equal(item["head_channel"].numpy(), head_channel(box_norm))
    np.testing.assert_allclose(item["target_heatmap_64"].numpy(), gaussian_heatmap_64(GAZE))
    assert item["has_target"] and item["is_labeled"] and item["inout"] == 1 and not item["prior_valid"]
    assert item["prior_heatmap_64"].abs().sum() == 0
    assert item["num_gaze_points"] == 1 and item["gaze_points_norm"][1:].eq(-1).all()
    np.testing.assert_allclose(item["gaze_points_norm"][0].numpy(), GAZE, rtol=1e-6)
    assert item["image_size_wh"].tolist() == [256, 192]
    scene_mean = item["scene"].mean(dim=(1, 2))  # random uint8 pixels: mean ~127.5 before normalisation
    expected_mean = (0.5 - np.array([0.485, 0.456, 0.406])) / [0.229, 0.224, 0.225]
    np.testing.assert_allclose(scene_mean.numpy(), expected_mean, atol=0.1)


def test_box_conventions_per_style(tmp_path):
    samples = make_samples(tmp_path, n=1, head_box_xyxy_px=(-20.0, 40.0, 30.0, 90.0))
    size = np.array([256, 192, 256, 192])
    no_enlarge = GazeDataset(samples, train=False, style="vat", enlarge_head_box=False)[0]
    np.testing.assert_allclose(no_enlarge["head_box_xyxy_norm"].numpy(), np.array([-20, 40, 30, 90]) / size,
                               rtol=1e-6)
    gazelle = GazeDataset(samples, train=False, style="gazelle")[0]  # clamped, never enlarged
    np.testing.assert_allclose(gazelle["head_box_xyxy_norm"].numpy(), np.array([0, 40, 30, 90]) / size,
                               rtol=1e-6)
    gaze_cell = int(GAZE[0] * 64), int(GAZE[1] * 64)
    target = gazelle["target_heatmap_64"].numpy()
    assert np.unravel_index(target.argmax(), target.shape) == gaze_cell[::-1]


def test_targets_only_for_labeled_in_frame(tmp_path):
    samples = make_samples(tmp_path, n=3)
    samples[1].inout = OUT_OF_FRAME
    samples[2].inout = INOUT_UNKNOWN
    unlabeled = make_samples(tmp_path, n=1)
    dataset = GazeDataset(samples + unlabeled, train=False, labeled=[True, True, True, False])
    items = [dataset[i] for i in range(4)]
    assert [bool(it["has_target"]) for it in items] == [True, False, False, False]
    assert [bool(it["is_labeled"]) for it in items] == [True, True, True, False]
    assert [float(it["inout"]) for it in items] == [1.0, 0.0, -1.0, 1.0]
    assert all(it["target_heatmap_64"].abs().sum() == 0 for it in items[1:])
    assert items[1]["num_gaze_points"] == 0 and items[1]["gaze_points_norm"].eq(-1).all()
    with pytest.raises(ValueError, match="3 flags for 4 samples"):
        GazeDataset(samples + samples[:1], train=False, labeled=[True] * 3)


def test_multi_annotator_points_are_all_kept_and_the_target_is_at_their_mean(tmp_path):
    points = np.random.default_rng(0).uniform(0.3, 0.7, size=(12, 2)).astype(np.float32)
    dataset = GazeDataset(make_samples(tmp_path, n=1, gaze_points_norm=points), train=False)
    item = dataset[0]
    assert item["num_gaze_points"] == 12
    np.testing.assert_allclose(item["gaze_points_norm"][:12].numpy(), points, rtol=1e-6)
    assert item["gaze_points_norm"][12:].eq(-1).all()
    np.testing.assert_allclose(item["target_heatmap_64"].numpy(), gaussian_heatmap_64(points.mean(axis=0)))
    too_many = np.zeros((MAX_GAZE_POINTS + 1, 2), np.float32)
    with pytest.raises(ValueError, match=r"img0\.png\|0.*21 gaze points"):
        GazeDataset(make_samples(tmp_path, n=1, gaze_points_norm=too_many), train=False)


def write_pseudo_folder(folder: Path, samples: list[PersonSample]) -> None:
    """sample 0: a valid map peaked at the gaze point; sample 1: invalid (zeros); the rest: absent."""
    with PseudoLabelWriter(folder) as writer:
        writer.add(PseudoLabel(sample_id=samples[0].sample_id, heatmap_64=gaussian_heatmap_64(GAZE)))
        writer.add(PseudoLabel(sample_id=samples[1].sample_id, heatmap_64=np.zeros((64, 64), np.float32),
                               valid=False, invalid_reason="all_zero"))
    finalize(folder)


def test_prior_maps_come_from_the_pseudo_label_folder(tmp_path):
    samples = make_samples(tmp_path, n=3)
    write_pseudo_folder(tmp_path / "pseudo", samples)
    dataset = GazeDataset(samples, train=False, pseudo=PseudoLabelFolder(tmp_path / "pseudo"))
    items = [dataset[i] for i in range(3)]
    assert [bool(it["prior_valid"]) for it in items] == [True, False, False]
    np.testing.assert_allclose(items[0]["prior_heatmap_64"].numpy(), gaussian_heatmap_64(GAZE), atol=1e-3)
    assert items[1]["prior_heatmap_64"].abs().sum() == 0 and items[2]["prior_heatmap_64"].abs().sum() == 0


def test_prior_is_cropped_and_flipped_with_the_image(tmp_path):
    samples = make_samples(tmp_path, n=2)
    write_pseudo_folder(tmp_path / "pseudo", samples)
    augment = AugmentConfig(crop_prob=0.9, flip_prob=0.5, jitter_prob=0.5, colour_prob=0.5)
    pseudo = PseudoLabelFolder(tmp_path / "pseudo")
    dataset = GazeDataset(samples[:1], train=True, pseudo=pseudo, augment=augment)
    flips = set()
    for epoch in range(24):
        dataset.set_epoch(epoch)
        item = dataset[0]
        prior, target = item["prior_heatmap_64"].numpy(), item["target_heatmap_64"].numpy()
        prior_rc = np.array(np.unravel_index(prior.argmax(), prior.shape))
        target_rc = np.array(np.unravel_index(target.argmax(), target.shape))
        assert np.abs(prior_rc - target_rc).max() <= 2, (epoch, prior_rc, target_rc)
        flips.add(bool(item["gaze_points_norm"][0, 0] < 0.5))
    assert flips == {True, False}


def test_same_seed_same_tensors_any_worker_count(tmp_path):
    samples = make_samples(tmp_path, n=4)
    augment = AugmentConfig(jitter_prob=1.0, crop_prob=1.0, flip_prob=0.5, colour_prob=1.0)
    first = GazeDataset(samples, train=True, seed=3, augment=augment)
    second = GazeDataset(samples, train=True, seed=3, augment=augment)
    loaded = next(iter(DataLoader(second, batch_size=4, num_workers=2)))
    for index in range(4):
        item = first[index]
        for key in item:
            assert torch.equal(item[key], loaded[key][index]), key
    first.set_epoch(1)
    other_seed = GazeDataset(samples, train=True, seed=4, augment=augment)
    assert not torch.equal(first[0]["scene"], second[0]["scene"])
    assert not torch.equal(other_seed[0]["scene"], second[0]["scene"])
    test_set = GazeDataset(samples, train=False)
    assert torch.equal(test_set[0]["scene"], test_set[0]["scene"])


def test_each_draw_of_a_person_within_an_epoch_is_augmented_anew(tmp_path):
    samples = make_samples(tmp_path, n=1)
    augment = AugmentConfig(jitter_prob=1.0, crop_prob=1.0, flip_prob=0.5, colour_prob=1.0)
    dataset = GazeDataset(samples, train=True, seed=3, augment=augment)
    assert torch.equal(dataset[0]["scene"], dataset[(0, 0)]["scene"])
    assert torch.equal(dataset[(0, 1)]["scene"], dataset[(0, 1)]["scene"])  # still a function of the key
    assert not torch.equal(dataset[(0, 0)]["scene"], dataset[(0, 1)]["scene"])
    assert dataset[(0, 1)]["index"] == 0


@pytest.mark.skipif(not (VAT_DEMO / "person1.txt").is_file(), reason="needs ../shared/data/vat-demo beside the repository")
def test_real_frame_vat_demo_head_box():
    frame, *box = (VAT_DEMO / "person1.txt").read_text().splitlines()[0].split(",")
    sample = PersonSample(sample_id=f"{frame}|person1", image_path=str(VAT_DEMO / "frames" / frame),
                          head_box_xyxy_px=tuple(float(v) for v in box), source="person1.txt:1")
    for style, keys in (("vat", VAT_KEYS), ("gazelle", GAZELLE_KEYS)):
        for train in (False, True):
            dataset = GazeDataset([sample], train=train, style=style, labeled=False, enlarge_head_box=False)
            item = dataset[0]
            assert_item_layout(item, keys)
            assert item["image_size_wh"].tolist() == [1920, 1080] and not item["has_target"]
            assert item["num_gaze_points"] == 0 and item["inout"] == -1
    test_item = GazeDataset([sample], train=False, labeled=False, enlarge_head_box=False)[0]
    np.testing.assert_allclose(test_item["head_box_xyxy_norm"].numpy(),
                               np.array([float(v) for v in box]) / [1920, 1080, 1920, 1080], rtol=1e-6)
    assert test_item["head_channel"].sum() > 0 and test_item["face"].std() > 0.1
    assert GazeDataset([sample], train=False).sample(0).image_size_wh == (1920, 1080)


def test_missing_image_raises_naming_file_and_sample_or_is_skipped(tmp_path, caplog):
    samples = make_samples(tmp_path, n=3)
    Path(samples[1].image_path).unlink()
    with pytest.raises(ImageReadError, match=r"img1\.png.*img1\.png\|1.*train\.txt:2"):
        GazeDataset(samples, train=False)
    with caplog.at_level(logging.WARNING):
        dataset = GazeDataset(samples, train=False, on_error="skip")
    assert len(dataset) == 2 and [sid for sid, _ in dataset.skipped] == ["img1.png|1"]
    assert "skipping 1 of 3 samples" in caplog.text
    assert [dataset.sample(i).sample_id for i in range(2)] == ["img0.png|0", "img2.png|2"]


def test_undecodable_image_raises_or_is_replaced(tmp_path):
    samples = make_samples(tmp_path, n=3)
    Path(samples[1].image_path).write_bytes(b"not an image")
    with pytest.raises(ImageReadError, match=r"img1\.png\|1.*img1\.png"):
        GazeDataset(samples, train=False)[1]
    dataset = GazeDataset(samples, train=False, on_error="skip")
    assert dataset[1]["index"] == 2 and list(dataset.unreadable) == [1]
    assert dataset[1]["index"] == 2 and len(dataset.unreadable) == 1


def test_empty_image_is_an_image_read_error_naming_the_file(tmp_path):
    from gcdr.data import images

    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    for read in (images.load_image_rgb, images.image_size_wh):
        with pytest.raises(ImageReadError, match=r"empty \(0 bytes\)") as error:
            read(empty)
        assert str(empty) in str(error.value) and "\n" not in str(error.value)


def test_drop_unreadable_leaves_only_persons_whose_image_was_read(tmp_path):
    samples = make_samples(tmp_path, n=5)
    Path(samples[1].image_path).write_bytes(b"not an image")
    Path(samples[3].image_path).write_bytes(b"")
    with pytest.raises(ImageReadError, match=r"img1\.png\|1.*img1\.png"):
        GazeDataset(samples, train=False).drop_unreadable()
    dataset = GazeDataset(samples, train=False, on_error="skip")
    dropped = dataset.drop_unreadable()
    assert [sid for sid, _ in dropped] == ["img1.png|1", "img3.png|3"] and dataset.skipped == dropped
    assert "empty (0 bytes)" in dropped[1][1] and samples[3].image_path in dropped[1][1]
    assert [dataset.sample(i).sample_id for i in range(len(dataset))] == ["img0.png|0", "img2.png|2", "img4.png|4"]
    assert [int(dataset[i]["index"]) for i in range(len(dataset))] == [0, 1, 2] and not dataset.unreadable
    assert dataset.drop_unreadable() == []


def test_one_head_box_rule_for_teacher_refine_and_students():
    from gcdr.data.dataset import enlarges_head_boxes

    assert enlarges_head_boxes({"dataset": {"format": "gazefollow"}}) and enlarges_head_boxes({})
    assert not enlarges_head_boxes({"dataset": {"format": "videoattentiontarget"}})
    assert not enlarges_head_boxes({"dataset": {"format": "headboxes"}})


def test_a_truncated_jpeg_and_a_tiny_image_are_errors_naming_the_file(tmp_path):
    import cv2
    import numpy as np

    from gcdr.data.images import ImageReadError, load_image_rgb

    smooth = cv2.resize((np.random.default_rng(0).random((12, 16, 3)) * 255).astype(np.uint8), (640, 480))
    data = cv2.imencode(".jpg", smooth)[1].tobytes()
    whole, cut, trailer = tmp_path / "whole.jpg", tmp_path / "cut.jpg", tmp_path / "trailer.jpg"
    whole.write_bytes(data)
    cut.write_bytes(data[: len(data) * 8 // 10])  # OpenCV alone would decode it, the rest grey
    trailer.write_bytes(data + b"camera trailer")  # complete, with bytes after the end marker
    assert load_image_rgb(whole).shape == (480, 640, 3)
    assert np.array_equal(load_image_rgb(trailer), load_image_rgb(whole))
    with pytest.raises(ImageReadError, match=r"image is truncated .*cut\.jpg"):
        load_image_rgb(cut)
    tiny = tmp_path / "tiny.png"
    cv2.imwrite(str(tiny), smooth[:8, :8])
    with pytest.raises(ImageReadError, match=r"8x8 pixels.*tiny\.png"):
        load_image_rgb(tiny)
