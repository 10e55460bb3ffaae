"""The inspection gallery: every person shown once, well-formed offline HTML, columns per folder, invalid
persons with their reason, errors and their order, the page's orders and assets from Python and its templates,
sampling, resuming, unreadable images, the CLI."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from importlib import resources
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from gcdr.data.sample import PersonSample
from gcdr.pseudolabels import PseudoLabel, PseudoLabelWriter, finalize
from gcdr_tools.gallery import (
    InspectConfig,
    build_gallery,
    collect_persons,
    open_columns,
    page_orders,
    sort_persons,
)
from gcdr_tools.gallery.page import json_for_script
from gcdr_tools.gallery.persons import sample_person_ids

IMAGE_SIZES_WH = [(160, 120), (200, 100), (120, 160)]
# person -> (image index, column offset of the first folder's peak from the GT mean, in 64-grid cells)
PERSONS = {"img0|a": (0, 0), "img0|b": (1, 4), "img1|a": (1, 8), "img1|b": (1, 12), "img2|a": (2, 16),
           "img2|b": (2, 20)}
INVALID_IN_FIRST = "img1|a"  # reason "nan"
MISSING_IN_SECOND = "img2|a"
WITHOUT_GROUND_TRUTH = "img2|b"
GT_POINTS = np.array([[0.45, 0.5], [0.55, 0.5], [0.5, 0.5]], np.float32)  # mean (0.5, 0.5)


def peak_heatmap(col: int, row: int) -> np.ndarray:
    """[64, 64] Gaussian with its maximum exactly at (row, col)."""
    yy, xx = np.mgrid[0:64, 0:64]
    return np.exp(-((xx - col) ** 2 + (yy - row) ** 2) / (2 * 2.0**2)).astype(np.float32)


def draw_image(path: Path, size_wh: tuple[int, int], seed: int) -> None:
    width, height = size_wh
    rng = np.random.default_rng(seed)
    image = np.zeros((height, width, 3), np.uint8)
    image[:] = rng.integers(40, 200, 3)
    cv2.circle(image, (width // 2, height // 2), min(size_wh) // 5, (250, 250, 250), -1)
    cv2.rectangle(image, (5, 5), (width // 4, height // 4), (30, 30, 220), -1)
    cv2.imwrite(str(path), image)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> dict:
    """Two pseudo-label folders over 6 persons in 3 drawn images, and hand-built samples with ground truth."""
    root = tmp_path_factory.mktemp("inspect")
    image_paths = []
    for i, size in enumerate(IMAGE_SIZES_WH):
        image_paths.append(root / f"img{i}.png")
        draw_image(image_paths[-1], size, seed=i)
    samples = []
    for sample_id, (image_index, _) in PERSONS.items():
        if sample_id == WITHOUT_GROUND_TRUTH:
            continue
        width, height = IMAGE_SIZES_WH[image_index]
        samples.append(PersonSample(
            sample_id=sample_id, image_path=str(image_paths[image_index]),
            head_box_xyxy_px=(5.0, 5.0, width / 4, height / 4), gaze_points_norm=GT_POINTS.copy(), inout=1,
            body_box_xyxy_px=(2.0, 2.0, width / 3, height / 2) if sample_id == "img0|a" else None,
            image_size_wh=(width, height)))
    folders = [root / "gradcam-test", root / "gcdr-T250-test"]
    for folder_index, folder in enumerate(folders):
        with PseudoLabelWriter(folder, chunk_size=4) as writer:
            for sample_id, (image_index, offset) in PERSONS.items():
                if folder_index == 1 and sample_id == MISSING_IN_SECOND:
                    continue
                invalid = folder_index == 0 and sample_id == INVALID_IN_FIRST
                col = 32 + offset if folder_index == 0 else 32  # the second folder is always right
                writer.add(PseudoLabel(
                    sample_id=sample_id, heatmap_64=np.zeros((64, 64)) if invalid else peak_heatmap(col, 32),
                    valid=not invalid, invalid_reason="nan" if invalid else "",
                    answer=f"the thing of {sample_id}", key_noun="thing", image_path=str(image_paths[image_index]),
                    head_box_xyxy_px=(5.0, 5.0, 30.0, 30.0)))
        finalize(folder)
    return {"root": root, "folders": folders, "samples": samples}


def page_data(index_html: Path) -> dict:
    match = re.search(r'<script id="gallery-data" type="application/json">(.*?)</script>', index_html.read_text(),
                      re.S)
    assert match, "no inline gallery data"
    return json.loads(match.group(1))


class TagBalance(HTMLParser):
    """Records unbalanced tags and any reference to something outside the page."""

    VOID = {"meta", "link", "img", "br", "hr", "input", "source", "area", "base", "col", "embed", "wbr"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.problems: list[str] = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("src", "href") and value and re.match(r"^(https?:)?//", value):
                self.problems.append(f"external reference {value}")
        if tag == "script" and dict(attrs).get("src"):
            self.problems.append("external script")
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.problems.append(f"</{tag}> closes <{self.stack[-1] if self.stack else None}>")
        else:
            self.stack.pop()


@pytest.fixture(scope="module")
def gallery(dataset) -> dict:
    out = dataset["root"] / "gallery"
    summary = build_gallery(dataset["folders"], out, dataset["samples"], InspectConfig(thumb_px=96, per_page=4))
    return {"out": out, "summary": summary, "data": page_data(out / "index.html")}


def test_every_person_once_with_thumbnails(gallery):
    data, out = gallery["data"], gallery["out"]
    ids = [p["id"] for p in data["persons"]]
    assert sorted(ids) == sorted(PERSONS)
    html_text = (out / "index.html").read_text()
    for sample_id in PERSONS:
        assert html_text.count(json.dumps(sample_id)) == 1, sample_id
    for person in data["persons"]:
        assert len(person["thumbs"]) == 3  # image + two folders
        for thumb in person["thumbs"]:
            with Image.open(out / thumb) as tile:
                assert tile.format == "JPEG" and max(tile.size) == 96 and list(tile.size) == person["wh"]
    assert (out / "contact_sheet.png").is_file() and (out / "provenance.json").is_file()
    assert json.loads((out / "summary.json").read_text())["shown"] == len(PERSONS)


def test_html_is_well_formed_and_offline(gallery):
    checker = TagBalance()
    checker.feed((gallery["out"] / "index.html").read_text())
    checker.close()
    assert checker.problems == [] and checker.stack == []


def test_comparison_shows_both_folders_as_columns(gallery, dataset):
    data = gallery["data"]
    assert [c["name"] for c in data["columns"]] == ["gradcam-test", "gcdr-T250-test"]
    html_text = (gallery["out"] / "index.html").read_text()
    assert "<b>gradcam-test</b>" in html_text and "<b>gcdr-T250-test</b>" in html_text  # summary rows
    missing = next(p for p in data["persons"] if p["id"] == MISSING_IN_SECOND)
    assert missing["valid"] == [True, False] and missing["reason"] == ["", "missing"]
    # the tiles differ per column: the first folder's tile is not the second folder's
    assert len(set(missing["thumbs"])) == 3


def test_invalid_person_appears_with_its_reason(gallery):
    data = gallery["data"]
    invalid = next(p for p in data["persons"] if p["id"] == INVALID_IN_FIRST)
    assert invalid["valid"] == [False, True] and invalid["reason"] == ["nan", ""]
    assert invalid["l2"][0] is None and invalid["l2"][1] == pytest.approx(0.0, abs=1e-6)
    first = gallery["summary"]["columns"][0]
    assert first["invalid_reasons"] == {"nan": 1} and first["valid"] == len(PERSONS) - 1
    assert "nan: 1" in (gallery["out"] / "index.html").read_text()


def test_errors_and_sort_by_error(gallery, dataset):
    data = gallery["data"]
    by_id = {p["id"]: p for p in data["persons"]}
    for sample_id, (_, offset) in PERSONS.items():
        if sample_id in (INVALID_IN_FIRST, WITHOUT_GROUND_TRUTH):
            assert by_id[sample_id]["l2"][0] is None
        else:  # argmax at (32 + offset) / 64 vs the GT mean 0.5
            assert by_id[sample_id]["l2"][0] == pytest.approx(offset / 64, abs=1e-4)
            assert by_id[sample_id]["min_l2"][0] == pytest.approx(min(abs(offset / 64 + 0.5 - x) for x in
                                                                      (0.45, 0.55, 0.5)), abs=1e-4)
    # the page starts in "worst" order: errors descending, persons without an error last (by id)
    expected = ["img2|a", "img1|b", "img0|b", "img0|a", "img1|a", "img2|b"]
    assert [p["id"] for p in data["persons"]] == expected
    persons = collect_persons(open_columns(dataset["folders"]), list(PERSONS),
                              {s.sample_id: s for s in dataset["samples"]})
    assert [p.sample_id for p in sort_persons(persons, "worst")] == expected
    assert [p.sample_id for p in sort_persons(persons, "best")] == expected[3::-1] + expected[4:]
    assert {p.sample_id for p in sort_persons(persons, "invalid")[:2]} == {INVALID_IN_FIRST, MISSING_IN_SECOND}
    columns = gallery["summary"]["columns"]
    assert columns[0]["avg_l2"] == pytest.approx(np.mean([0, 4, 12, 16]) / 64, abs=1e-4)
    assert columns[1]["avg_l2"] == pytest.approx(0.0, abs=1e-6)
    assert columns[0]["shared_avg_l2"] == pytest.approx(np.mean([0, 4, 12]) / 64, abs=1e-4)


def test_page_gets_each_sort_order_once_from_python(gallery, dataset):
    data, html_text = gallery["data"], (gallery["out"] / "index.html").read_text()
    columns = open_columns(dataset["folders"])
    ids, ranks = sample_person_ids(columns[0].labels.sample_ids, InspectConfig().max_persons, InspectConfig().seed)
    persons = collect_persons(columns, ids, {s.sample_id: s for s in dataset["samples"]}, ranks)
    expected = page_orders([c.name for c in columns])
    assert [o["key"] for o in data["orders"]] == [o.key for o in expected]
    assert {"worst:0", "best:0", "gain:1", "loss:1", "invalid", "id", "random"} <= {o.key for o in expected}
    assert data["sort"] == "worst:0"
    for order, record in zip(expected, data["orders"]):
        assert record["label"] == order.label
        assert [data["persons"][i]["id"] for i in record["index"]] == \
            [p.sample_id for p in sort_persons(persons, order.order, order.column)], order.key
        assert html_text.count(json_for_script(order.label)) == 1, order.key  # once, as data
    script = (resources.files("gcdr_tools.gallery") / "templates" / "gallery.js").read_text()
    for name in ("worst", "best", "gain", "loss", "random"):  # the script does not define orders itself
        assert name not in script


def test_page_inlines_the_template_stylesheet_and_script(gallery):
    html_text = (gallery["out"] / "index.html").read_text()
    templates = resources.files("gcdr_tools.gallery") / "templates"
    for name in ("gallery.css", "gallery.js"):
        text = (templates / name).read_text()
        assert f"gcdr_tools/gallery/templates/{name}" in text.splitlines()[0]  # marker only in that file
        assert html_text.count(f"gcdr_tools/gallery/templates/{name}") == 1 and text in html_text


def test_auc_ranks_the_right_folder_higher(gallery):
    pytest.importorskip("gcdr.metrics")
    first, second = gallery["summary"]["columns"]
    assert first["auc_note"] == "" and second["auc_note"] == ""
    assert 0.0 <= first["auc"] <= 1.0 and second["auc"] > first["auc"]


def test_sampling_is_seeded_and_rerun_reuses_thumbnails(dataset, tmp_path):
    config = InspectConfig(max_persons=3, seed=1, thumb_px=64, auc=False)
    first = build_gallery(dataset["folders"], tmp_path, dataset["samples"], config)
    ids = sorted(p["id"] for p in page_data(tmp_path / "index.html")["persons"])
    assert len(ids) == 3 and first["sampled"] and "random sample" in first["sampling_note"]
    assert first["thumbnails"]["written"] > 0
    again = build_gallery(dataset["folders"], tmp_path, dataset["samples"], config)
    assert sorted(p["id"] for p in page_data(tmp_path / "index.html")["persons"]) == ids
    assert again["thumbnails"]["written"] == 0 and again["thumbnails"]["reused"] == 3 * 3
    everyone = build_gallery(dataset["folders"], tmp_path, None, InspectConfig(max_persons=0, thumb_px=64, auc=False))
    assert everyone["shown"] == len(PERSONS) and not everyone["sampled"]
    assert everyone["with_ground_truth"] == 0  # no samples given: no GT, no errors, still a gallery
    # thumbnails of the earlier runs that nobody refers to any more are gone
    referenced = {t for p in page_data(tmp_path / "index.html")["persons"] for t in p["thumbs"]}
    assert {p.relative_to(tmp_path).as_posix() for p in (tmp_path / "thumbs").glob("*/*.jpg")} == referenced


def test_unreadable_image_is_shown_or_raises(dataset, tmp_path):
    broken = [PersonSample(sample_id=s.sample_id, image_path=str(tmp_path / "gone.png") if s.sample_id == "img0|a"
                           else s.image_path, head_box_xyxy_px=s.head_box_xyxy_px,
                           gaze_points_norm=s.gaze_points_norm, inout=s.inout, image_size_wh=s.image_size_wh)
              for s in dataset["samples"]]
    summary = build_gallery(dataset["folders"], tmp_path / "ok", broken, InspectConfig(thumb_px=64, auc=False))
    assert summary["unreadable_images"] == 1
    person = next(p for p in page_data(tmp_path / "ok" / "index.html")["persons"] if p["id"] == "img0|a")
    assert "gone.png" in person["image_error"]
    with pytest.raises(OSError, match=r"img0\|a.*gone\.png"):
        build_gallery(dataset["folders"], tmp_path / "raise", broken,
                      InspectConfig(thumb_px=64, auc=False, on_missing_image="raise"))


def test_command_line(dataset, tmp_path):
    from pipelines.inspect import main

    config = Path(__file__).resolve().parent.parent / "configs" / "synthgaze.yaml"
    folders = [str(f) for f in dataset["folders"]]
    summary = main(["--config", str(config), "--pseudo", folders[0], "--vs", folders[1], "--out", str(tmp_path),
                    "--no-gt", "--max-persons", "4", "--sort", "id", "--thumb-px", "48", "--contact-sheet", "2"])
    data = page_data(tmp_path / "index.html")
    assert [p["id"] for p in data["persons"]] == sorted(p["id"] for p in data["persons"]) and len(data["persons"]) == 4
    assert len(data["columns"]) == 2 and summary["ground_truth_note"].startswith("not looked up")
    provenance = json.loads((tmp_path / "provenance.json").read_text())
    assert provenance["stage"] == "inspect" and provenance["inspect"]["max_persons"] == 4


# ----------------------------------------------------------------------------------------------------------
# own frames: a head-box dataset (no gaze labels) of real 1920x1080 frames with two persons each

DEMO = Path(__file__).resolve().parents[2] / "shared" / "data" / "vat-demo"  # ../shared/data beside the repo
needs_demo = pytest.mark.skipif(not (DEMO / "person1.txt").is_file(), reason="vat-demo frames not available")
BACKGROUND = np.array([245, 246, 248])  # the contact sheet's


def headbox_overrides() -> list[str]:
    """What `make inspect IMAGES=<DEMO>/frames HEADS="<DEMO>/person1.txt <DEMO>/person2.txt"` passes."""
    heads = ",".join(str(DEMO / f"person{i}.txt") for i in (1, 2))
    return ["dataset.format=headboxes", f"dataset.root={DEMO / 'frames'}", "dataset.images_dir=.",
            f"dataset.heads=[{heads}]"]


def assert_legend_inside(sheet_path: Path, layout: dict) -> None:
    """Every header item of the contact sheet lies inside the PNG and has ink in it."""
    with Image.open(sheet_path) as sheet:
        pixels = np.asarray(sheet.convert("RGB")).astype(int)  # [H, W, 3]
    height, width = pixels.shape[:2]
    assert [width, height] == layout["size"]
    assert len(layout["legend_boxes"]) >= 4
    for x1, y1, x2, y2 in layout["legend_boxes"]:
        assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height, (x1, y1, x2, y2, width, height)
        ink = np.abs(pixels[y1:y2, x1:x2] - BACKGROUND).sum(axis=2) > 60
        assert ink.any(), (x1, y1, x2, y2)


def test_legend_of_a_labelled_contact_sheet_is_inside(gallery):
    assert_legend_inside(gallery["out"] / "contact_sheet.png", gallery["summary"]["contact_sheet_layout"])


@pytest.fixture(scope="module")
def frames_gallery(tmp_path_factory) -> dict:
    """Two pseudo-label folders over the vat-demo frames (person1 looks left, person2 right; one person invalid
    in the second folder), rendered through the command line with the head-box dataset config."""
    if not (DEMO / "person1.txt").is_file():
        pytest.skip("vat-demo frames not available")
    from gcdr.config import load_config
    from gcdr.data import load_samples
    from pipelines.inspect import main

    root = tmp_path_factory.mktemp("frames")
    config = Path(__file__).resolve().parent.parent / "configs" / "synthgaze.yaml"
    samples = load_samples(load_config(config, headbox_overrides()), "unlabeled")
    folders = [root / "gradcam-unlabeled", root / "gcdr-T250-unlabeled"]
    for index, folder in enumerate(folders):
        with PseudoLabelWriter(folder, chunk_size=8) as writer:
            for sample in samples:
                person = sample.sample_id.rsplit("|", 1)[1]
                invalid = index == 1 and sample.sample_id == "00002577.jpg|person2"
                writer.add(PseudoLabel(
                    sample_id=sample.sample_id, image_path=sample.image_path,
                    head_box_xyxy_px=sample.head_box_xyxy_px, valid=not invalid,
                    invalid_reason="nan" if invalid else "",
                    heatmap_64=np.zeros((64, 64)) if invalid else peak_heatmap(20 if person == "person1" else 44, 40),
                    answer="the pan" if person == "person1" else "the bowl",
                    key_noun="pan" if person == "person1" else "bowl"))
        finalize(folder)
    out = root / "gallery"
    args = ["--config", str(config), "--pseudo", str(folders[0]), "--vs", str(folders[1]), "--out", str(out)]
    for item in headbox_overrides():
        args += ["--set", item]
    summary = main(args)
    return {"out": out, "summary": summary, "data": page_data(out / "index.html"), "folders": folders}


@needs_demo
def test_frames_gallery_names_both_persons_of_a_frame(frames_gallery):
    data = frames_gallery["data"]
    assert len(data["persons"]) == 20 and not data["labels"]
    frame = [p for p in data["persons"] if p["id"].startswith("00002575.jpg|")]
    assert sorted(p["name"] for p in frame) == ["person1", "person2"]
    assert len({p["colour"] for p in frame}) == 2  # told apart by colour
    for person in frame:
        assert [o["name"] for o in person["others"]] == ["person2" if person["name"] == "person1" else "person1"]
    html_text = (frames_gallery["out"] / "index.html").read_text()
    for name in ("person1", "person2"):  # the legend names each person in its colour
        assert re.search(rf'<span class="pname" style="background: rgb\([0-9,]+\)">{name}</span>', html_text)
    # the page's first order is image by image, person by person
    assert [p["id"] for p in data["persons"][:2]] == ["00002575.jpg|person1", "00002575.jpg|person2"]


@needs_demo
def test_frames_gallery_has_no_gaze_label_columns_or_orders(frames_gallery):
    data, summary = frames_gallery["data"], frames_gallery["summary"]
    html_text = (frames_gallery["out"] / "index.html").read_text()
    assert "no labels" in html_text
    for header in ("avg L2", "min L2", "AUC", "scored", "shared"):
        assert f"<th>{header}" not in html_text, header
    assert not {o["key"].split(":")[0] for o in data["orders"]} & {"worst", "best", "gain", "loss"}
    assert data["sort"] == "id" and summary["sort"] == "id" and summary["with_ground_truth"] == 0
    assert "head-box" in summary["ground_truth_note"]
    invalid = next(p for p in data["persons"] if p["id"] == "00002577.jpg|person2")
    assert invalid["valid"] == [True, False] and invalid["reason"] == ["", "nan"]


@needs_demo
def test_frames_tiles_keep_the_frame_and_draw_each_person_in_its_colour(frames_gallery):
    from gcdr_tools.gallery.tiles import person_rgb

    data, out = frames_gallery["data"], frames_gallery["out"]
    for person in data["persons"]:
        assert person["wh"] == [320, 180]  # a 1920x1080 frame at the default 320 px, aspect kept
        for thumb in person["thumbs"]:
            with Image.open(out / thumb) as tile:
                assert tile.size == (320, 180)
    first = data["persons"][0]  # 00002575.jpg|person1, head box (553, 71, 752, 275) px: x 92-125, y 12-46
    with Image.open(out / first["thumbs"][0]) as tile:
        pixels = np.asarray(tile.convert("RGB")).astype(int)
    scale = 320 / 1920

    def near(rgb, box_px) -> int:
        x1, y1, x2, y2 = (round(v * scale) for v in box_px)
        region = pixels[max(0, y1 - 16):y2 + 3, max(0, x1 - 3):x2 + 3]  # the box, its edges and the label above
        return int((np.abs(region - np.array(rgb)).sum(axis=2) < 90).sum())

    own, other = person_rgb(0), person_rgb(1)  # colours follow the sorted names: person1, person2
    assert first["colour"] == "rgb({},{},{})".format(*own)
    assert near(own, (553, 71, 752, 275)) > 60  # its thick box and the label tag "person1 · pan"
    assert near(other, (1093, 33, 1347, 299)) > 15  # the other person's thin box
    assert near(other, (553, 71, 752, 275)) < near(own, (553, 71, 752, 275)) / 4


@needs_demo
def test_frames_contact_sheet_legend_is_inside_the_image(frames_gallery):
    from gcdr_tools.gallery.tiles import person_rgb

    sheet_path = frames_gallery["out"] / "contact_sheet.png"
    layout = frames_gallery["summary"]["contact_sheet_layout"]
    assert_legend_inside(sheet_path, layout)
    with Image.open(sheet_path) as sheet:
        pixels = np.asarray(sheet.convert("RGB")).astype(int)
    header_bottom = max(box[3] for box in layout["legend_boxes"])
    for index in (0, 1):  # a colour key per person in the legend
        assert (np.abs(pixels[:header_bottom] - np.array(person_rgb(index))).sum(axis=2) < 10).any(), index
    # the tiles are pasted at full size: the sheet holds its blocks of three 320 px tiles
    assert layout["size"][0] >= layout["per_row"] * 3 * 320


def test_a_missing_folder_is_one_line_naming_it_and_the_command(tmp_path):
    from gcdr.errors import UserError
    from pipelines.inspect import main

    config = Path(__file__).resolve().parent.parent / "configs" / "synthgaze.yaml"
    with pytest.raises(UserError) as error:
        main(["--config", str(config), "--pseudo", str(tmp_path / "gradcam-nowhere")])
    message = str(error.value)
    assert "\n" not in message and "gradcam-nowhere" in message and "does not exist" in message
    assert "make gradcam" in message and "make refine" in message
