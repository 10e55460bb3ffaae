"""SynthGaze: GazeFollow-format files, determinism, and ground truth that matches the drawn pixels."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import pytest

from gcdr_tools.synthgaze import (
    OBJECT_KINDS,
    OBJECT_NAMES,
    OBJECTS_FILE,
    TEST_FILE,
    TEST_PERSONDET_FILE,
    TRAIN_FILE,
    TRAIN_PERSONDET_FILE,
    V2_HEAD_RADIUS,
    V2_NOSE_LENGTH,
    SynthConfig,
    generate_synthgaze,
    image_relpath,
    plan_images,
    read_objects,
    render_scene,
    target_name,
)

REPO = Path(__file__).resolve().parents[1]
SMALL = SynthConfig(seed=3, train_persons=150, test_persons=30, test_annotators=10)


def read_rows(path: Path) -> list[list[str]]:
    return [line.split(",") for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out_dir = tmp_path_factory.mktemp("synth") / "synthgaze"
    generate_synthgaze(out_dir, SMALL, progress=False)
    return out_dir


def test_files_and_column_counts(dataset: Path):
    expected = {TRAIN_FILE: 17, TEST_FILE: 16, TRAIN_PERSONDET_FILE: 21, TEST_PERSONDET_FILE: 20}
    for name, n_columns in expected.items():
        rows = read_rows(dataset / name)
        assert rows, name
        assert {len(row) for row in rows} == {n_columns}, name
    train, test = read_rows(dataset / TRAIN_FILE), read_rows(dataset / TEST_FILE)
    assert len(train) == SMALL.train_persons
    assert len(test) == SMALL.test_persons * SMALL.test_annotators
    # persondet = the plain file + 4 integer body columns
    for plain_name, det_name in ((TRAIN_FILE, TRAIN_PERSONDET_FILE), (TEST_FILE, TEST_PERSONDET_FILE)):
        for plain, det in zip(read_rows(dataset / plain_name), read_rows(dataset / det_name)):
            assert det[:-4] == plain
            assert all(int(v) == float(v) for v in det[-4:])
    for row in train + test:
        assert row[0].startswith(("train/", "test2/")) and (dataset / row[0]).is_file()
        assert len(Path(row[0]).parent.name) == 8 and len(Path(row[0]).stem) == 8
    info = json.loads((dataset / "synthgaze.json").read_text())
    assert info["config"] == SMALL.to_dict() and sorted(info["objects"]) == sorted(OBJECT_NAMES)
    assert info["train"]["persons"] == SMALL.train_persons and (dataset / "provenance.json").is_file()


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path):
    config = SynthConfig(seed=5, train_persons=30, test_persons=6, test_annotators=3)
    generate_synthgaze(tmp_path / "a", config, progress=False)
    generate_synthgaze(tmp_path / "b", config, progress=False)
    generate_synthgaze(tmp_path / "c", SynthConfig(seed=6, train_persons=30, test_persons=6, test_annotators=3),
                       progress=False)
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert files_a == files_b
    jpegs = [f for f in files_a if f.suffix == ".jpg"]
    assert len(jpegs) >= 10
    for rel in files_a:
        if rel.name != "provenance.json":  # holds the creation time
            assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    for name in (TRAIN_FILE, TEST_PERSONDET_FILE):
        assert (tmp_path / "a" / name).read_bytes() != (tmp_path / "c" / name).read_bytes()
    assert (tmp_path / "a" / jpegs[0]).read_bytes() != (tmp_path / "c" / jpegs[0]).read_bytes()


def test_test_rows_group_into_multi_annotator_persons(dataset: Path):
    groups: dict[tuple[str, str], list[list[str]]] = defaultdict(list)
    for row in read_rows(dataset / TEST_FILE):
        groups[(row[0], row[6])].append(row)
    assert len(groups) == SMALL.test_persons
    for rows in groups.values():
        assert len(rows) == SMALL.test_annotators
        assert len({tuple(r[6:8] + r[10:14] + r[14:15]) for r in rows}) == 1  # same eye, head box, meta
        gaze = np.array([[float(r[8]), float(r[9])] for r in rows])
        assert np.all((gaze >= 0) & (gaze <= 1))
        assert gaze.std(axis=0).max() > 0.005  # annotators disagree a little
        assert target_name(rows[0][14]) in OBJECT_NAMES  # test persons are all in frame
    # several persons share some images, so the grouping key must include eye_x
    assert len({path for path, _ in groups}) < len(groups)


def _scenes_for_split(config: SynthConfig, split: str, n_images: int):
    for image_index, flags in enumerate(plan_images(config, split)[:n_images]):
        yield image_relpath(split, image_index), render_scene(config, split, image_index, flags)


def _distance_to_palette(pixel_rgb: np.ndarray, palette_rgb) -> float:
    """Distance of a pixel to the nearest blend a * c1 + (1 - a) * c2 of two palette colours."""
    palette = [np.asarray(c, float) for c in palette_rgb]
    best = np.inf
    for c1 in palette:
        for c2 in palette:
            span = c2 - c1
            a = np.clip(np.dot(pixel_rgb - c1, span) / max(np.dot(span, span), 1e-9), 0, 1)
            best = min(best, float(np.linalg.norm(c1 + a * span - pixel_rgb)))
    return best


def test_gaze_points_fall_on_the_named_target(dataset: Path):
    rows_by_path: dict[str, list[list[str]]] = defaultdict(list)
    for row in read_rows(dataset / TRAIN_FILE):
        rows_by_path[row[0]].append(row)
    checked = 0
    for rel_path, scene in _scenes_for_split(SMALL, "train", 40):
        written = cv2.cvtColor(cv2.imread(str(dataset / rel_path)), cv2.COLOR_BGR2RGB)
        width, height = scene.size_wh
        assert written.shape == scene.image_rgb.shape
        # the regenerated scene is the written image (up to JPEG loss), so its masks describe the file
        # (compared after a blur that removes the sensor noise the JPEG partly smooths away)
        smooth_written, smooth_scene = (cv2.GaussianBlur(im, (5, 5), 0).astype(int) for im in (written, scene.image_rgb))
        assert np.abs(smooth_written - smooth_scene).mean() < 2.5
        rows = rows_by_path[rel_path]
        assert [target_name(r[15]) for r in rows] == [p.target for p in scene.persons]
        for row in rows:
            name = target_name(row[15])
            if name is None:
                continue
            x, y = float(row[8]) * width, float(row[9]) * height
            col, line = min(int(x), width - 1), min(int(y), height - 1)
            assert scene.object_named(name).mask[line, col], (rel_path, name)
            # independent of the masks: the written pixel has one of the target's colours (or an
            # anti-aliased blend of two of them, e.g. where a clock hand meets the dial)
            pixel = written[line, col].astype(float)
            assert _distance_to_palette(pixel, OBJECT_KINDS[name].colours_rgb.values()) < 50, (rel_path, name, pixel)
            checked += 1
    assert checked > 40

    test_groups: dict[tuple[str, str], list[list[str]]] = defaultdict(list)
    for row in read_rows(dataset / TEST_FILE):
        test_groups[(row[0], row[6])].append(row)
    tolerance = 4 * SMALL.annotator_noise_sd / np.sqrt(SMALL.test_annotators)
    for rel_path, scene in _scenes_for_split(SMALL, "test", 5):
        width, height = scene.size_wh
        for person in scene.persons:
            rows = test_groups[(rel_path, f"{person.eye_xy_px[0] / width:.6f}")]
            mean = np.array([[float(r[8]), float(r[9])] for r in rows]).mean(axis=0)
            anchor = np.array(scene.object_named(person.target).anchor_xy_px) / (width, height)
            assert np.abs(mean - anchor).max() < tolerance


def test_out_of_frame_persons(dataset: Path):
    train = read_rows(dataset / TRAIN_FILE)
    out = [row for row in train if row[14] == "0"]
    assert len(out) == round(SMALL.out_of_frame_fraction * SMALL.train_persons)
    assert {row[14] for row in train} == {"0", "1"}
    for row in train:
        assert (row[14] == "0") == (row[15] == "synth:target=none")
    for row in out:  # gaze = where the gaze ray leaves the image
        gaze_x, gaze_y = float(row[8]), float(row[9])
        assert min(abs(gaze_x), abs(gaze_x - 1), abs(gaze_y), abs(gaze_y - 1)) < 1e-6
    assert all(row[14] != "synth:target=none" for row in read_rows(dataset / TEST_FILE))


@pytest.mark.parametrize("name", [TRAIN_PERSONDET_FILE, TEST_PERSONDET_FILE])
def test_boxes_are_consistent(dataset: Path, name: str):
    rows = read_rows(dataset / name)
    sizes: dict[str, tuple[int, int]] = {}
    absent = 0
    for row in rows:
        if row[0] not in sizes:
            height, width = cv2.imread(str(dataset / row[0])).shape[:2]
            assert SMALL.image_size[0] <= min(width, height) and max(width, height) <= SMALL.image_size[1]
            sizes[row[0]] = (width, height)
        width, height = sizes[row[0]]
        hx1, hy1, hx2, hy2 = (float(v) for v in row[10:14])
        assert 0 <= hx1 < hx2 <= width - 1 and 0 <= hy1 < hy2 <= height - 1
        eye_x, eye_y = float(row[6]) * width, float(row[7]) * height
        assert hx1 <= eye_x <= hx2 and hy1 <= eye_y <= hy2
        bx1, by1, bx2, by2 = (int(v) for v in row[-4:])
        if bx1 < 0:
            assert (bx1, by1, bx2, by2) == (-1, -1, -1, -1)
            absent += 1
            continue
        assert bx1 <= hx1 and by1 <= hy1 and hx2 <= bx2 and hy2 <= by2
        assert bx2 <= width - 1 and by2 <= height - 1
        # GazeFollow's normalised x, y, w, h body box also holds the head
        nx, ny, nw, nh = (float(v) for v in row[2:6])
        assert nx <= float(row[6]) <= nx + nw and ny <= float(row[7]) <= ny + nh
    persons = len(rows) // (SMALL.test_annotators if name == TEST_PERSONDET_FILE else 1)
    absent //= SMALL.test_annotators if name == TEST_PERSONDET_FILE else 1
    assert 0 < absent < 0.3 * persons


def test_face_is_turned_towards_the_gaze(dataset: Path):
    """The eye point sits on the side of the head that faces the target (the face is drawn there)."""
    agree = total = 0
    for row in read_rows(dataset / TRAIN_FILE):
        height, width = cv2.imread(str(dataset / row[0])).shape[:2]
        hx1, hy1, hx2, hy2 = (float(v) for v in row[10:14])
        head_centre = np.array([(hx1 + hx2) / 2 / width, (hy1 + hy2) / 2 / height])
        eye = np.array([float(row[6]), float(row[7])])
        gaze = np.array([float(row[8]), float(row[9])])
        agree += float(np.dot(eye - head_centre, gaze - eye)) > 0
        total += 1
    assert agree / total > 0.95


def test_regeneration_is_skipped_forced_or_refused(tmp_path: Path):
    config = SynthConfig(train_persons=10, test_persons=3, test_annotators=2)
    first = generate_synthgaze(tmp_path / "ds", config, progress=False)
    stamp = (tmp_path / "ds" / TRAIN_FILE).stat().st_mtime_ns
    again = generate_synthgaze(tmp_path / "ds", config, progress=False)
    assert not first["skipped"] and again["skipped"] and again["train"] == first["train"]
    assert (tmp_path / "ds" / TRAIN_FILE).stat().st_mtime_ns == stamp
    forced = generate_synthgaze(tmp_path / "ds", config, force=True, progress=False)
    assert not forced["skipped"]
    changed = generate_synthgaze(tmp_path / "ds", SynthConfig(train_persons=12, test_persons=3, test_annotators=2),
                                 progress=False)
    assert not changed["skipped"] and len(read_rows(tmp_path / "ds" / TRAIN_FILE)) == 12
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folders left
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "precious.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="refusing"):
        generate_synthgaze(tmp_path / "other", config, force=True, progress=False)
    assert (tmp_path / "other" / "precious.txt").read_text() == "keep me"


def test_target_name():
    assert target_name("synth:target=cup") == "cup"
    assert target_name("synth:target=none") is None
    assert target_name("some gazefollow meta") is None
    with pytest.raises(ValueError, match="zebra"):
        target_name("synth:target=zebra")
    assert 6 <= len(OBJECT_NAMES) <= 10 and len(set(OBJECT_NAMES)) == len(OBJECT_NAMES)


def test_config_validation_and_yaml_section():
    import yaml

    from gcdr.config import section

    cfg = yaml.safe_load((REPO / "configs" / "synthgaze.yaml").read_text())
    config = section(cfg, "synth", SynthConfig)
    assert config.persons_per_image == tuple(cfg["synth"]["persons_per_image"])
    with pytest.raises(ValueError, match="persons_per_image"):
        SynthConfig(persons_per_image=[2, 5])
    with pytest.raises(ValueError, match="image_size"):
        SynthConfig(image_size=[300, 200])


def test_pipeline_cli(tmp_path: Path):
    from pipelines.data_synth import main

    out_dir = tmp_path / "cli"
    summary = main(["--config", str(REPO / "configs" / "synthgaze.yaml"), "--no-progress",
                    "--set", f"dataset.root={out_dir}", "--set", "synth.train_persons=12",
                    "--set", "synth.test_persons=2"])
    assert summary["train"]["persons"] == 12 and len(read_rows(out_dir / TRAIN_PERSONDET_FILE)) == 12
    provenance = json.loads((out_dir / "provenance.json").read_text())
    assert provenance["stage"] == "data_synth" and provenance["config"]["dataset"]["root"] == str(out_dir)


def test_read_gazefollow_reads_the_files(dataset: Path):
    gazefollow = pytest.importorskip("gcdr.data.gazefollow", reason="gcdr/data/gazefollow.py not written yet")
    train = gazefollow.read_gazefollow(dataset / TRAIN_PERSONDET_FILE, dataset)
    test = gazefollow.read_gazefollow(dataset / TEST_PERSONDET_FILE, dataset)
    assert len(train) == SMALL.train_persons and len(test) == SMALL.test_persons
    assert sum(s.inout == 0 for s in train) == round(SMALL.out_of_frame_fraction * SMALL.train_persons)
    assert all(s.gaze_points_norm.shape == (SMALL.test_annotators, 2) and s.inout == 1 for s in test)
    rows = read_rows(dataset / TRAIN_PERSONDET_FILE)
    assert sum(s.body_box_xyxy_px is None for s in train) == sum(r[-4] == "-1" for r in rows)
    for sample, row in zip(train, rows):
        assert Path(sample.image_path).is_file() and sample.meta == row[15]
        assert target_name(sample.meta) == (None if row[14] == "0" else row[15].split("=")[1])
    assert len({s.sample_id for s in train + test}) == len(train) + len(test)


# ----------------------------------------------------------------------------------------------------------------
# Version 2 (synth.version = 2) and the objects file
# ----------------------------------------------------------------------------------------------------------------

V1_GOLDEN_SHA256 = {  # SynthConfig(seed=5, train_persons=30, test_persons=6, test_annotators=3), version-1 code
    TRAIN_PERSONDET_FILE: "606ced115468364ce6ebabecd7684053f5149280c81c19ba252069bfbf7dec56",
    TEST_PERSONDET_FILE: "25ec12d047a3710afb9aa882b658dce82222be89a749ef996a9e33fa8613f98a",
    "synthgaze.json": "e779b5d548ed6ac4b97c6cc1cab60afe8c2fa2dfc096ff8d8ccf71dd71bc811e",
}
V2_SMALL = SynthConfig(seed=7, version=2, train_persons=60, test_persons=8, test_annotators=3, write_objects=True)


def _files_of(root: Path) -> dict[Path, bytes]:
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != "provenance.json"}  # provenance holds the creation time


@pytest.fixture(scope="module")
def dataset_v2(tmp_path_factory) -> Path:
    out_dir = tmp_path_factory.mktemp("synth_v2") / "synthgaze"
    generate_synthgaze(out_dir, V2_SMALL, progress=False)
    return out_dir


def test_version_1_files_are_unchanged(tmp_path: Path):
    """Version 1's bytes are those of the original generator (annotations and synthgaze.json; JPEG bytes depend on
    the libjpeg build, the determinism test covers them)."""
    import hashlib

    generate_synthgaze(tmp_path / "v1", SynthConfig(seed=5, train_persons=30, test_persons=6, test_annotators=3),
                       progress=False)
    for name, digest in V1_GOLDEN_SHA256.items():
        assert hashlib.sha256((tmp_path / "v1" / name).read_bytes()).hexdigest() == digest, \
            f"{name}: version-1 output changed (it must stay byte-identical)"
    assert not list((tmp_path / "v1").glob("*_objects.jsonl"))
    assert "version" not in json.loads((tmp_path / "v1" / "synthgaze.json").read_text())["config"]


def test_version_2_is_deterministic_and_differs_from_version_1(dataset_v2: Path, tmp_path: Path):
    generate_synthgaze(tmp_path / "again", V2_SMALL, progress=False)
    first, again = _files_of(dataset_v2), _files_of(tmp_path / "again")
    assert first.keys() == again.keys() and sum(p.suffix == ".jpg" for p in first) >= 10
    for rel, data in first.items():
        assert again[rel] == data, rel
    v1 = SynthConfig(**{**V2_SMALL.to_dict(), "version": 1, "persons_per_image": [1, 3]})
    assert render_scene(v1, "train", 0, [True]).image_rgb.tobytes() != \
        render_scene(V2_SMALL, "train", 0, [True]).image_rgb.tobytes()
    info = json.loads((dataset_v2 / "synthgaze.json").read_text())
    assert info["config"]["version"] == 2 and info["config"]["persons_per_image"] == [1, 4]
    assert info["train"]["persons"] == V2_SMALL.train_persons and info["train"]["difficulty"]["objects"] > 0
    # the GazeFollow files keep their format: 17 / 21 columns, test_annotators rows per test person
    assert {len(r) for r in read_rows(dataset_v2 / TRAIN_PERSONDET_FILE)} == {21}
    assert len(read_rows(dataset_v2 / TEST_FILE)) == V2_SMALL.test_persons * V2_SMALL.test_annotators


def _ray_pixels(start, end, width: int, height: int):
    """Integer pixels along start -> end in half-pixel steps (inside the image)."""
    length = max(1, int(2 * np.hypot(end[0] - start[0], end[1] - start[1])))
    for t in np.linspace(0.0, 1.0, length + 1):
        col = min(int(start[0] + t * (end[0] - start[0])), width - 1)
        line = min(int(start[1] + t * (end[1] - start[1])), height - 1)
        yield line, col


def test_version_2_scene_properties():
    plan = plan_images(V2_SMALL, "train")
    assert max(len(flags) for flags in plan) == 4 and sum(map(len, plan)) == V2_SMALL.train_persons
    repeats = occluders = near_misses = in_frame = 0
    for image_index, flags in enumerate(plan):
        scene = render_scene(V2_SMALL, "train", image_index, flags)
        width, height = scene.size_wh
        short = min(width, height)
        names = [obj.name for obj in scene.objects]
        assert 4 <= len(names) <= 7
        repeats += len(set(names)) < len(names)
        occluders += len(scene.occluder_masks)
        occluded = np.zeros((height, width), bool)
        for mask in scene.occluder_masks:
            occluded |= mask
        for obj in scene.objects:  # masks are the visible pixels: never under an occluder, at least half visible
            assert obj.mask.any() and not (obj.mask & occluded).any()
        for person in scene.persons:
            (cx, cy), r = person.head_centre_px, person.head_radius_px
            assert V2_HEAD_RADIUS[0] * short - 1e-6 <= r <= V2_HEAD_RADIUS[1] * short + 1e-6
            face = np.zeros((height, width), np.uint8)
            cv2.circle(face, (int(round(cx)), int(round(cy))), int(np.ceil(V2_NOSE_LENGTH * r)) + 1, 255, -1)
            assert not (occluded & (face > 0)).any(), "an occluder covers a face"
            hits = [index for line, col in _ray_pixels(person.eye_xy_px, person.gaze_xy_px, width, height)
                    for index, obj in enumerate(scene.objects) if obj.mask[line, col]]
            if not person.in_frame:
                assert not hits, "an out-of-frame gaze ray passes an object"
                continue
            in_frame += 1
            target = scene.target_of(person)
            assert target.name == person.target and person.gaze_xy_px == target.anchor_xy_px
            gx, gy = int(person.gaze_xy_px[0]), int(person.gaze_xy_px[1])
            assert target.mask[gy, gx] and not occluded[gy, gx], "the target's anchor is hidden"
            assert hits and hits[0] == person.target_index, "the target is not the first object on the ray"
            eye = np.array(person.eye_xy_px)
            assert np.dot(eye - (cx, cy), np.array(person.gaze_xy_px) - eye) > 0  # the face points at the target
            angles = [np.degrees(np.arccos(np.clip(np.dot(person.direction, (np.array(o.anchor_xy_px) - eye)
                                                          / np.linalg.norm(np.array(o.anchor_xy_px) - eye)), -1, 1)))
                      for i, o in enumerate(scene.objects) if i != person.target_index]
            assert min(angles) >= 6.0 - 1e-6
            near_misses += min(angles) < 15.0
    assert repeats >= len(plan) // 3 and occluders >= len(plan) // 4
    assert in_frame >= 40 and near_misses >= in_frame // 5


def test_objects_file_lists_every_object(dataset_v2: Path):
    for split in ("train", "test"):
        objects = read_objects(dataset_v2, split)
        plan = plan_images(V2_SMALL, split)
        assert list(objects) == [image_relpath(split, i) for i in range(len(plan))]
        for image_index in (0, len(plan) - 1):
            scene = render_scene(V2_SMALL, split, image_index, plan[image_index])
            listed = objects[image_relpath(split, image_index)]
            assert [name for name, _ in listed] == [obj.name for obj in scene.objects]
            assert np.allclose([box for _, box in listed], [obj.box_xyxy_px for obj in scene.objects], atol=0.006)
        for rel_path, listed in objects.items():
            height, width = cv2.imread(str(dataset_v2 / rel_path)).shape[:2]
            assert 4 <= len(listed) <= 7
            for name, (x1, y1, x2, y2) in listed:
                assert name in OBJECT_NAMES and 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
    with pytest.raises(FileNotFoundError, match="write_objects"):
        read_objects(dataset_v2, "val")


def test_version_1_objects_file_and_regeneration_across_versions(tmp_path: Path):
    v1 = SynthConfig(seed=2, train_persons=10, test_persons=3, test_annotators=2)
    generate_synthgaze(tmp_path / "ds", v1, progress=False)
    jpeg = tmp_path / "ds" / image_relpath("train", 0)
    v1_jpeg = jpeg.read_bytes()
    with_objects = generate_synthgaze(tmp_path / "ds", SynthConfig(**{**v1.to_dict(), "write_objects": True}),
                                      progress=False)
    assert not with_objects["skipped"] and jpeg.read_bytes() == v1_jpeg  # the flag adds files, changes no image
    listed = read_objects(tmp_path / "ds", "train")
    assert len(listed) == with_objects["train"]["images"]
    assert all(len({name for name, _ in objs}) == len(objs) for objs in listed.values())  # v1: names unique
    v2 = SynthConfig(**{**v1.to_dict(), "version": 2})
    assert v2.persons_per_image == (1, 3)  # an explicit persons_per_image is kept
    switched = generate_synthgaze(tmp_path / "ds", v2, progress=False)
    assert not switched["skipped"] and jpeg.read_bytes() != v1_jpeg
    assert json.loads((tmp_path / "ds" / "synthgaze.json").read_text())["config"]["version"] == 2
    assert not list((tmp_path / "ds").glob("*_objects.jsonl"))
    assert generate_synthgaze(tmp_path / "ds", v2, progress=False)["skipped"]
    assert OBJECTS_FILE.format(split="train") == "train_objects.jsonl"


def test_version_config_validation():
    assert SynthConfig().persons_per_image == (1, 3) and SynthConfig(version=2).persons_per_image == (1, 4)
    assert "version" not in SynthConfig().to_dict() and "write_objects" not in SynthConfig().to_dict()
    assert SynthConfig(version=2, write_objects=True).to_dict()["write_objects"] is True
    with pytest.raises(ValueError, match="version"):
        SynthConfig(version=3)
    with pytest.raises(ValueError, match="persons_per_image"):
        SynthConfig(persons_per_image=[1, 4])
    with pytest.raises(ValueError, match="persons_per_image"):
        SynthConfig(version=2, persons_per_image=[1, 5])


def test_a_killed_generation_leaves_nothing_behind_after_the_next_run(tmp_path):
    from gcdr_tools.synthgaze import SynthConfig, generate_synthgaze

    dead_pid = 2**22 + 12345  # above the default pid_max: never a running process
    for kind in ("tmp", "old"):
        (tmp_path / f".data.{kind}-{dead_pid}" / "train").mkdir(parents=True)
    generate_synthgaze(tmp_path / "data", SynthConfig(train_persons=3, test_persons=1), progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_make_data_synth_refuses_a_dataset_of_another_config_in_one_line(tmp_path: Path, capsys):
    from gcdr.locking import run_stage
    from pipelines import data_synth

    base = ["--no-progress", "--set", f"dataset.root={tmp_path / 'ds'}", "--set", "synth.train_persons=6",
            "--set", "synth.test_persons=2", "--set", "synth.test_annotators=2"]
    data_synth.main(base)
    stamp = (tmp_path / "ds" / TRAIN_FILE).stat().st_mtime_ns
    with pytest.raises(SystemExit) as stopped:
        run_stage(data_synth.main, [*base, "--set", "synth.seed=5"])
    assert stopped.value.code == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("error:") and "synth.seed: 0 -> 5" in error and "--restart" in error
    assert (tmp_path / "ds" / TRAIN_FILE).stat().st_mtime_ns == stamp  # untouched
    assert not data_synth.main([*base, "--set", "synth.seed=5", "--restart"])["skipped"]
