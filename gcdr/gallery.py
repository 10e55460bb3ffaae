"""Inspect pseudo-label folders by eye: a static HTML gallery and a contact sheet.

``build_gallery`` writes into ``<folder>/inspect/`` (or ``out_dir``)::

    index.html            one self-contained page (inline CSS/JS, no server, no network): summary table,
                          legend, and a sortable, filterable, paginated grid of persons; opens from disk
    thumbs/<xx>/<key>.jpg small JPEG tiles per person: the image with boxes and ground truth, then one
                          heatmap overlay per folder. ``key`` hashes everything drawn, so a rerun reuses the
                          tiles that did not change and never shows a stale one.
    contact_sheet.png     the first K persons in the chosen order (for slides)
    summary.json          the numbers of the page's summary
    provenance.json

Conventions: heatmaps are [64, 64] in [0, 1] over the whole image. The predicted point is the heatmap's
first argmax, (col / 64, row / 64) in normalised image coordinates (METHOD_FACTS §3.1); a person's error is
its L2 distance to the mean of the ground-truth points (GazeFollow's avg L2), min L2 the distance to the
nearest point. Errors exist only for persons with an in-frame ground truth and a valid heatmap.
"""

from __future__ import annotations

import dataclasses
import hashlib
import html
import json
import logging
import os
import re
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont, UnidentifiedImageError
from tqdm import tqdm

from gcdr.atomic import atomic_path, write_json_atomic, write_text_atomic
from gcdr.data.sample import IN_FRAME, INOUT_UNKNOWN, OUT_OF_FRAME, PersonSample
from gcdr.provenance import write_provenance
from gcdr.pseudolabels import PseudoLabelFolder

log = logging.getLogger(__name__)

TILE_STYLE_VERSION = 1  # bump when tile drawing changes: every thumbnail key changes with it
SORT_ORDERS = ("worst", "best", "id", "invalid", "random")
GROUND_TRUTH_SPLITS = ("unlabeled", "labeled", "test", "train")
IMAGE_COLUMN = "image"

# marker colours, RGB (the HTML legend uses the same values)
HEAD_BOX_RGB = (57, 255, 20)
BODY_BOX_RGB = (0, 200, 255)
GT_POINT_RGB = (255, 255, 255)
PREDICTION_RGB = (255, 0, 200)
INVALID_RGB = (230, 40, 40)


@dataclass
class InspectConfig:
    """Config section ``inspect`` (every field optional; the command line overrides it)."""

    max_persons: int = 2000  # show a seeded random sample of at most this many persons; 0 = all
    seed: int = 0  # of that sample and of the "random" order
    thumb_px: int = 192  # longer side of each tile, pixels
    jpeg_quality: int = 85
    per_page: int = 200  # persons per page of the HTML grid (changeable in the page)
    contact_sheet_persons: int = 48  # the first K persons of the chosen order go on the contact sheet
    sort: str = "worst"  # worst | best (L2 of the first folder) | id | invalid | random
    colormap: str = "turbo"  # any matplotlib colormap name
    auc: bool = True  # AUC through gcdr.metrics.evaluate (GazeFollow protocol upsamples to image size)
    on_missing_image: str = "placeholder"  # placeholder (grey tile, counted, logged) | raise


@dataclass
class GalleryColumn:
    """One compared pseudo-label folder; ``name`` labels its column (the folder name, made unique)."""

    name: str
    folder: Path
    labels: PseudoLabelFolder


@dataclass
class GalleryPerson:
    """One person row of the gallery; list fields have one entry per column (folder)."""

    sample_id: str
    image_path: str
    head_box_xyxy_px: tuple[float, float, float, float] | None
    body_box_xyxy_px: tuple[float, float, float, float] | None = None
    answer: str = ""
    key_noun: str = ""
    gaze_points_norm: np.ndarray | None = None  # [K, 2] normalised (x, y); None = no ground truth known
    inout: int = INOUT_UNKNOWN
    present: list[bool] = field(default_factory=list)
    valid: list[bool] = field(default_factory=list)
    invalid_reason: list[str] = field(default_factory=list)  # "" when valid; "missing" when absent
    argmax_norm: list[tuple[float, float] | None] = field(default_factory=list)
    l2: list[float | None] = field(default_factory=list)  # argmax vs GT mean, normalised coords
    min_l2: list[float | None] = field(default_factory=list)
    auc: list[float | None] = field(default_factory=list)  # filled by evaluate_person_auc
    random_rank: int = 0
    thumbs: list[str] = field(default_factory=list)  # paths relative to the gallery: image, then columns
    tile_wh: tuple[int, int] = (0, 0)
    image_error: str = ""

    @property
    def has_target(self) -> bool:
        """True when the person has an in-frame ground-truth gaze point (errors are defined)."""
        return self.gaze_points_norm is not None and self.inout == IN_FRAME and len(self.gaze_points_norm) > 0

    @property
    def invalid_anywhere(self) -> bool:
        return not all(self.valid)


# ----------------------------------------------------------------------------------------------------------
# persons, errors, order


def _argmax_function() -> Callable[[np.ndarray], tuple[float, float]]:
    try:
        from gcdr.metrics import argmax_point_norm
    except ImportError:
        return _numpy_argmax_point_norm
    return argmax_point_norm


def _numpy_argmax_point_norm(heatmap_64: np.ndarray) -> tuple[float, float]:
    """First maximum (row-major) of a [h, w] map as (col / w, row / h): METHOD_FACTS §3.1, no half-pixel."""
    row, col = np.unravel_index(int(np.argmax(heatmap_64)), heatmap_64.shape)
    return col / heatmap_64.shape[1], row / heatmap_64.shape[0]


def open_columns(folders: Sequence[str | os.PathLike]) -> list[GalleryColumn]:
    """Open the folders to compare; column names are the folder names (with the parent when they clash)."""
    paths = [Path(f) for f in folders]
    if not paths:
        raise ValueError("no pseudo-label folder given")
    names = [p.resolve().name for p in paths]
    clashes = {n for n, c in Counter(names).items() if c > 1}
    columns = []
    for i, path in enumerate(paths):
        name = names[i]
        if name in clashes:
            name = f"{path.resolve().parent.name}/{name}"
        if name in {c.name for c in columns}:
            name = f"{name} ({i + 1})"
        columns.append(GalleryColumn(name=name, folder=path, labels=PseudoLabelFolder(path)))
    return columns


def _box_or_none(values: Sequence[float] | None) -> tuple[float, float, float, float] | None:
    if values is None:
        return None
    box = tuple(float(v) for v in values)
    if len(box) != 4 or not all(np.isfinite(box)) or box[2] <= box[0] or box[3] <= box[1]:
        return None
    return box  # type: ignore[return-value]


def _ground_truth_points(sample: PersonSample | None) -> np.ndarray | None:
    """[K, 2] annotated points, or None when the sample says nothing about the gaze (no points, inout unknown)."""
    if sample is None:
        return None
    points = np.asarray(sample.gaze_points_norm, np.float32).reshape(-1, 2)
    return points if len(points) or sample.inout != INOUT_UNKNOWN else None


def collect_persons(columns: Sequence[GalleryColumn], sample_ids: Sequence[str],
                    samples_by_id: dict[str, PersonSample] | None = None,
                    random_ranks: dict[str, int] | None = None) -> list[GalleryPerson]:
    """One GalleryPerson per id: texts and boxes from the manifests (ground truth and body box from the
    samples when given), validity, argmax point and errors per column.

    The image path and head box come from the sample when there is one, else from the first folder's manifest.
    """
    samples_by_id = samples_by_id or {}
    argmax_point_norm = _argmax_function()
    manifest_rows = [c.labels.manifest.set_index("sample_id", drop=False) for c in columns]
    persons = []
    for sample_id in sample_ids:
        sample = samples_by_id.get(sample_id)
        rows = [m.loc[sample_id] if sample_id in c.labels else None for c, m in zip(columns, manifest_rows)]
        first = next(r for r in rows if r is not None)
        manifest_box = [first.get(k, np.nan) for k in ("head_x1_px", "head_y1_px", "head_x2_px", "head_y2_px")]
        person = GalleryPerson(
            sample_id=sample_id,
            image_path=sample.image_path if sample else str(first.get("image_path", "")),
            head_box_xyxy_px=_box_or_none(sample.head_box_xyxy_px if sample else manifest_box),
            body_box_xyxy_px=_box_or_none(sample.body_box_xyxy_px) if sample else None,
            answer=next((str(r["answer"]) for r in rows if r is not None and str(r.get("answer", ""))), ""),
            key_noun=next((str(r["key_noun"]) for r in rows if r is not None and str(r.get("key_noun", ""))), ""),
            gaze_points_norm=_ground_truth_points(sample),
            inout=sample.inout if sample else INOUT_UNKNOWN,
            random_rank=(random_ranks or {}).get(sample_id, 0),
        )
        for column, row in zip(columns, rows):
            present = row is not None
            valid = present and bool(row["valid"])
            person.present.append(present)
            person.valid.append(valid)
            person.invalid_reason.append("" if valid else (str(row["invalid_reason"]) or "invalid")
                                         if present else "missing")
            point = l2 = min_l2 = None
            if valid:
                point = tuple(float(v) for v in argmax_point_norm(column.labels.heatmap_64(sample_id)))
                if person.has_target:
                    offsets = person.gaze_points_norm - np.asarray(point, np.float32)  # [K, 2]
                    l2 = float(np.linalg.norm(person.gaze_points_norm.mean(axis=0) - np.asarray(point)))
                    min_l2 = float(np.linalg.norm(offsets, axis=1).min())
            person.argmax_norm.append(point)
            person.l2.append(l2)
            person.min_l2.append(min_l2)
            person.auc.append(None)
        persons.append(person)
    return persons


def sort_persons(persons: Sequence[GalleryPerson], order: str = "worst", column: int = 0) -> list[GalleryPerson]:
    """Persons in a gallery order (ties and persons without an error follow by sample id).

    worst / best: L2 error of ``column`` descending / ascending, persons without an error last;
    id: sample id; invalid: persons invalid in any column first, grouped by reason; random: the seeded rank.
    The HTML page offers the same orders (and per-column and improvement orders) in the browser.
    """
    if order not in SORT_ORDERS:
        raise ValueError(f"unknown sort order {order!r}; known: {SORT_ORDERS}")
    if order in ("worst", "best"):
        sign = -1.0 if order == "worst" else 1.0

        def key(p: GalleryPerson) -> tuple:
            error = p.l2[column]
            return (error is None, sign * (error or 0.0), p.sample_id)
    elif order == "id":
        def key(p: GalleryPerson) -> tuple:
            return (p.sample_id,)
    elif order == "invalid":
        def key(p: GalleryPerson) -> tuple:
            reasons = [r for r in p.invalid_reason if r]
            return (not reasons, reasons[0] if reasons else "", p.sample_id)
    else:
        def key(p: GalleryPerson) -> tuple:
            return (p.random_rank, p.sample_id)
    return sorted(persons, key=key)


def ground_truth_samples(cfg: dict[str, Any], sample_ids: Sequence[str],
                         splits: Sequence[str] = GROUND_TRUTH_SPLITS) -> tuple[dict[str, PersonSample], list[str]]:
    """Find the persons' annotations: try ``gcdr.data.load_samples(cfg, split)`` split by split.

    Returns ({sample_id: PersonSample}, ["<split>:<matched count>", ...]); stops once every id is found.
    A split that cannot be loaded is logged and skipped; without gcdr.data the gallery has no ground truth.
    """
    try:
        from gcdr.data import load_samples
    except ImportError as error:
        log.warning("ground truth unavailable (gcdr.data.load_samples: %s); the gallery shows no GT", error)
        return {}, []
    wanted = set(sample_ids)
    found: dict[str, PersonSample] = {}
    used = []
    for split in splits:
        try:
            samples = load_samples(cfg, split)
        except FileNotFoundError as error:
            log.info("ground truth: split %r not available (%s)", split, error)
            continue
        except Exception as error:  # a broken split must not stop the gallery, but must be seen
            log.warning("ground truth: split %r could not be loaded: %s", split, error)
            continue
        hits = {s.sample_id: s for s in samples if s.sample_id in wanted and s.sample_id not in found}
        if hits:
            found.update(hits)
            used.append(f"{split}:{len(hits)}")
            log.info("ground truth: %d of %d persons found in split %r", len(hits), len(wanted), split)
        if len(found) == len(wanted):
            break
    return found, used


# ----------------------------------------------------------------------------------------------------------
# tiles


def colormap_lut(name: str) -> np.ndarray:
    """[256, 3] uint8 RGB lookup table of a matplotlib colormap."""
    import matplotlib

    return (matplotlib.colormaps[name](np.linspace(0.0, 1.0, 256))[:, :3] * 255).round().astype(np.uint8)


class TileRenderer:
    """Draws one person's tiles at thumbnail size: decoded images are reduced while decoding (JPEG DCT
    scaling) and the last few kept, since persons of one image follow each other."""

    def __init__(self, thumb_px: int = 192, colormap: str = "turbo", cache_images: int = 8):
        self.thumb_px = int(thumb_px)
        self.lut = colormap_lut(colormap)  # [256, 3]
        self._cache: OrderedDict[str, tuple[np.ndarray, tuple[int, int]]] = OrderedDict()
        self._cache_size = cache_images

    def base_image(self, image_path: str) -> tuple[np.ndarray, tuple[int, int]]:
        """(thumbnail [h, w, 3] uint8 RGB with max(h, w) = thumb_px, original (W, H)); OSError if unreadable."""
        if image_path in self._cache:
            self._cache.move_to_end(image_path)
            return self._cache[image_path]
        try:
            with Image.open(image_path) as image:
                width, height = image.size
                scale = self.thumb_px / max(width, height)
                size = (max(1, round(width * scale)), max(1, round(height * scale)))
                image.draft("RGB", size)  # JPEG: decode at the smallest 1/2^k scale >= size
                thumb = np.asarray(image.convert("RGB").resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0))
        except (OSError, UnidentifiedImageError, ValueError) as error:
            raise OSError(f"cannot read image {image_path}: {error}") from error
        self._cache[image_path] = (thumb, (width, height))
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return thumb, (width, height)

    def overlay(self, thumb: np.ndarray, heatmap_64: np.ndarray) -> np.ndarray:
        """Heatmap in colour over the (dimmed) image; opacity grows with the heatmap value."""
        h, w = thumb.shape[:2]
        values = np.clip(cv2.resize(np.asarray(heatmap_64, np.float32), (w, h), interpolation=cv2.INTER_LINEAR),
                         0.0, 1.0)  # [h, w]
        colour = self.lut[(values * 255).astype(np.uint8)].astype(np.float32)  # [h, w, 3]
        alpha = (0.1 + 0.7 * values)[..., None]  # [h, w, 1]
        base = thumb.astype(np.float32) * 0.8
        return (base * (1 - alpha) + colour * alpha).clip(0, 255).astype(np.uint8)


def _scaled(point_px: Sequence[float], scale_xy: tuple[float, float]) -> tuple[int, int]:
    return round(point_px[0] * scale_xy[0]), round(point_px[1] * scale_xy[1])


def _draw_box(tile: np.ndarray, box_px: Sequence[float], scale_xy: tuple[float, float], rgb: tuple[int, int, int],
              thickness: int) -> None:
    cv2.rectangle(tile, _scaled(box_px[:2], scale_xy), _scaled(box_px[2:], scale_xy), (0, 0, 0), thickness + 2,
                  cv2.LINE_AA)
    cv2.rectangle(tile, _scaled(box_px[:2], scale_xy), _scaled(box_px[2:], scale_xy), rgb, thickness, cv2.LINE_AA)


def _draw_ground_truth(tile: np.ndarray, points_norm: np.ndarray, line_from: tuple[int, int] | None) -> None:
    h, w = tile.shape[:2]
    mean = points_norm.mean(axis=0)
    mean_px = (round(float(mean[0]) * w), round(float(mean[1]) * h))
    if line_from is not None:
        cv2.line(tile, line_from, mean_px, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.line(tile, line_from, mean_px, GT_POINT_RGB, 1, cv2.LINE_AA)
    for x, y in points_norm:
        centre = (round(float(x) * w), round(float(y) * h))
        cv2.circle(tile, centre, 3, (0, 0, 0), -1, cv2.LINE_AA)
        cv2.circle(tile, centre, 2, GT_POINT_RGB, -1, cv2.LINE_AA)
    if len(points_norm) > 1:
        cv2.circle(tile, mean_px, 6, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.circle(tile, mean_px, 6, GT_POINT_RGB, 1, cv2.LINE_AA)


def _draw_prediction(tile: np.ndarray, point_norm: tuple[float, float]) -> None:
    h, w = tile.shape[:2]
    x, y = round(point_norm[0] * w), round(point_norm[1] * h)
    for colour, thickness in (((0, 0, 0), 4), (PREDICTION_RGB, 2)):
        cv2.line(tile, (x - 5, y - 5), (x + 5, y + 5), colour, thickness, cv2.LINE_AA)
        cv2.line(tile, (x - 5, y + 5), (x + 5, y - 5), colour, thickness, cv2.LINE_AA)


def _mark_invalid(tile: np.ndarray) -> np.ndarray:
    grey = cv2.cvtColor(cv2.cvtColor(tile, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    tile = (grey.astype(np.float32) * 0.55 + 40).astype(np.uint8)
    cv2.rectangle(tile, (1, 1), (tile.shape[1] - 2, tile.shape[0] - 2), INVALID_RGB, 3)
    return tile


def render_person_tiles(renderer: TileRenderer, person: GalleryPerson,
                        heatmaps_64: Sequence[np.ndarray | None]) -> list[np.ndarray]:
    """The person's tiles, [h, w, 3] uint8 RGB each: the image with head box (green), body box (cyan),
    ground-truth points (white dots, ring = mean) and the head-to-GT gaze line; then per column the heatmap
    overlay with the head box, GT points and the argmax (magenta cross); invalid / missing tiles greyed
    with a red frame. An unreadable image gives grey tiles (the caller decides whether that is an error).
    """
    try:
        thumb, (width, height) = renderer.base_image(person.image_path)
        person.image_error = ""
    except OSError as error:
        person.image_error = str(error)
        aspect = 9 / 16
        thumb = np.full((round(renderer.thumb_px * aspect), renderer.thumb_px, 3), 70, np.uint8)
        width, height = renderer.thumb_px, round(renderer.thumb_px * aspect)
    scale_xy = (thumb.shape[1] / width, thumb.shape[0] / height)
    head_centre = None
    if person.head_box_xyxy_px is not None:
        x1, y1, x2, y2 = person.head_box_xyxy_px
        head_centre = _scaled(((x1 + x2) / 2, (y1 + y2) / 2), scale_xy)

    def annotate(tile: np.ndarray, gaze_line: bool) -> np.ndarray:
        if person.body_box_xyxy_px is not None:
            _draw_box(tile, person.body_box_xyxy_px, scale_xy, BODY_BOX_RGB, 1)
        if person.head_box_xyxy_px is not None:
            _draw_box(tile, person.head_box_xyxy_px, scale_xy, HEAD_BOX_RGB, 2)
        if person.has_target:
            _draw_ground_truth(tile, person.gaze_points_norm, head_centre if gaze_line else None)
        return tile

    tiles = [annotate(thumb.copy(), gaze_line=True)]
    for valid, heatmap, point in zip(person.valid, heatmaps_64, person.argmax_norm):
        if not valid or heatmap is None:
            tiles.append(annotate(_mark_invalid(thumb), gaze_line=False))
            continue
        tile = annotate(renderer.overlay(thumb, heatmap), gaze_line=False)
        if point is not None:
            _draw_prediction(tile, point)
        tiles.append(tile)
    return tiles


def _tile_key(person: GalleryPerson, settings: str, heatmap: np.ndarray | None, valid: bool | None) -> str:
    digest = hashlib.sha1()
    digest.update(f"{TILE_STYLE_VERSION}|{settings}|{person.image_path}|{person.head_box_xyxy_px}|"
                  f"{person.body_box_xyxy_px}|{person.inout}|{valid}".encode())
    try:
        digest.update(str(os.stat(person.image_path).st_mtime_ns).encode())
    except OSError:
        digest.update(b"unreadable")
    if person.has_target:
        digest.update(np.ascontiguousarray(person.gaze_points_norm, np.float32).tobytes())
    if heatmap is not None:
        digest.update(np.ascontiguousarray(heatmap, np.float32).tobytes())
    return digest.hexdigest()[:20]


def write_thumbnails(persons: Sequence[GalleryPerson], columns: Sequence[GalleryColumn], out_dir: Path,
                     config: InspectConfig) -> dict[str, int]:
    """Write each person's tiles as JPEGs under ``out_dir/thumbs`` (skipping existing ones) and fill
    ``person.thumbs`` / ``person.tile_wh``; remove thumbnails no person refers to any more.

    Returns counts: written, reused, unreadable_images. Raises OSError for an unreadable image when
    ``config.on_missing_image == "raise"``.
    """
    renderer = TileRenderer(config.thumb_px, config.colormap)
    settings = f"{config.thumb_px}|{config.jpeg_quality}|{config.colormap}"
    counts = Counter(written=0, reused=0, unreadable_images=0)
    thumbs_dir = out_dir / "thumbs"
    referenced: set[Path] = set()
    # persons of one image next to each other: each image decoded once (the gallery order is kept)
    work = sorted(persons, key=lambda p: (p.image_path, p.sample_id))
    for person in tqdm(work, desc="thumbnails", unit="person", mininterval=1.0):
        heatmaps = [c.labels.heatmap_64(person.sample_id) if ok else None for c, ok in zip(columns, person.valid)]
        keys = [_tile_key(person, settings, None, None)]
        keys += [_tile_key(person, settings, h, ok) for h, ok in zip(heatmaps, person.valid)]
        paths = [thumbs_dir / key[:2] / f"{key[2:]}.jpg" for key in keys]
        referenced.update(paths)
        person.thumbs = [p.relative_to(out_dir).as_posix() for p in paths]
        if all(p.exists() for p in paths):
            with Image.open(paths[0]) as existing:
                person.tile_wh = existing.size
            counts["reused"] += len(paths)
            if not os.path.isfile(person.image_path):
                person.image_error = f"image not found: {person.image_path}"
            continue
        tiles = render_person_tiles(renderer, person, heatmaps)
        if person.image_error:
            if config.on_missing_image == "raise":
                raise OSError(f"sample {person.sample_id!r}: {person.image_error}")
            log.warning("sample %r: %s (grey tiles)", person.sample_id, person.image_error)
            counts["unreadable_images"] += 1
        person.tile_wh = (tiles[0].shape[1], tiles[0].shape[0])
        for path, tile in zip(paths, tiles):
            if path.exists():
                counts["reused"] += 1
                continue
            ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(tile, cv2.COLOR_RGB2BGR),
                                       [cv2.IMWRITE_JPEG_QUALITY, config.jpeg_quality])
            if not ok:
                raise OSError(f"cannot encode thumbnail {path}")
            with atomic_path(path) as tmp:
                tmp.write_bytes(encoded.tobytes())
            counts["written"] += 1
    if thumbs_dir.is_dir():
        for stale in thumbs_dir.glob("*/*.jpg"):
            if stale not in referenced:
                stale.unlink(missing_ok=True)
    return dict(counts)


# ----------------------------------------------------------------------------------------------------------
# summary


def _mean(values: Sequence[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def evaluate_person_auc(column: GalleryColumn, index: int, persons: Sequence[GalleryPerson],
                        samples_by_id: dict[str, PersonSample], dataset: str, chunk: int = 512) -> str:
    """Fill ``person.auc[index]`` for ``persons`` through gcdr.metrics.evaluate(per_sample=True), chunk by
    chunk, and check its avg L2 against ours. Returns "" or why there is no AUC (metrics missing, failure)."""
    try:
        from gcdr.metrics import evaluate
    except ImportError as error:
        return f"gcdr.metrics.evaluate unavailable: {error}"
    mismatches = 0
    try:
        for start in tqdm(range(0, len(persons), chunk), desc=f"AUC {column.name}", unit="chunk",
                          disable=len(persons) <= chunk):
            part = persons[start:start + chunk]
            heatmaps = np.stack([column.labels.heatmap_64(p.sample_id) for p in part])  # [n, 64, 64]
            samples = [samples_by_id[p.sample_id] for p in part]
            sizes = [s.image_size_wh or _image_size(s.image_path) for s in samples]
            result = evaluate(heatmaps, samples, dataset=dataset, image_sizes_wh=sizes, per_sample=True)
            for person, row in zip(part, result["per_sample"]):
                value = row.get("auc")
                person.auc[index] = None if value is None or not np.isfinite(value) else float(value)
                theirs, ours = row.get("avg_l2"), person.l2[index]
                if theirs is not None and ours is not None and np.isfinite(theirs) and abs(theirs - ours) > 1e-5:
                    mismatches += 1
    except Exception as error:  # the gallery is still useful without AUC; say why it is missing
        log.warning("%s: AUC not computed: %s", column.name, error)
        return f"evaluate failed: {error}"
    if mismatches:
        log.warning("%s: gcdr.metrics avg L2 differs from the gallery's for %d persons", column.name, mismatches)
    return ""


def _image_size(path: str) -> tuple[int, int] | None:
    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, UnidentifiedImageError, ValueError):
        return None


def summarize(columns: Sequence[GalleryColumn], persons: Sequence[GalleryPerson],
              samples_by_id: dict[str, PersonSample], *, total_persons: int, dataset: str = "gazefollow",
              auc: bool = True) -> dict[str, Any]:
    """Numbers for the top of the page. Counts (persons, valid, invalid reasons) cover each whole folder;
    metrics cover the shown persons with ground truth and a valid map, per column and on the set valid
    in every column ("shared"), so that columns are compared on the same persons."""
    with_target = [p for p in persons if p.has_target]
    shared = [p for p in with_target if all(p.valid)]
    summary: dict[str, Any] = {
        "persons_in_first_folder": total_persons, "shown": len(persons),
        "sampled": len(persons) < total_persons,
        "with_ground_truth": sum(p.gaze_points_norm is not None for p in persons),
        "in_frame_ground_truth": len(with_target),
        "out_of_frame": sum(p.inout == OUT_OF_FRAME for p in persons),
        "unreadable_images": sum(bool(p.image_error) for p in persons),
        "shared_scored": len(shared), "columns": [],
    }
    for index, column in enumerate(columns):
        manifest = column.labels.manifest
        reasons = Counter(str(r) or "invalid" for r, v in zip(manifest["invalid_reason"], manifest["valid"]) if not v)
        scored = [p for p in with_target if p.valid[index]]
        stats: dict[str, Any] = {
            "name": column.name, "folder": str(column.folder),
            "stage": column.labels.provenance.get("stage", ""),
            "created": column.labels.provenance.get("created", ""),
            "persons": len(manifest), "valid": int(manifest["valid"].sum()),
            "invalid": int((~manifest["valid"].astype(bool)).sum()), "invalid_reasons": dict(reasons.most_common()),
            "shown_present": sum(p.present[index] for p in persons),
            "shown_invalid": sum(not p.valid[index] for p in persons),
            "scored": len(scored),
            "avg_l2": _mean([p.l2[index] for p in scored]), "min_l2": _mean([p.min_l2[index] for p in scored]),
            "shared_avg_l2": _mean([p.l2[index] for p in shared]),
            "shared_min_l2": _mean([p.min_l2[index] for p in shared]),
        }
        if auc and scored:
            note = evaluate_person_auc(column, index, scored, samples_by_id, dataset)
            stats.update(auc=_mean([p.auc[index] for p in scored]), auc_note=note,
                         shared_auc=_mean([p.auc[index] for p in shared]))
        else:
            stats.update(auc=None, shared_auc=None,
                         auc_note="not computed (--no-auc)" if not auc else "no person with GT and a valid map")
        summary["columns"].append(stats)
    return summary


# ----------------------------------------------------------------------------------------------------------
# HTML and contact sheet


def _fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _json_for_script(obj: Any) -> str:
    """JSON safe inside <script>: no "</script>", no HTML-significant characters."""
    text = json.dumps(obj, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _person_record(person: GalleryPerson) -> dict[str, Any]:
    return {
        "id": person.sample_id, "image": person.image_path, "answer": person.answer, "noun": person.key_noun,
        "gt": person.gaze_points_norm is not None, "target": person.has_target, "inout": person.inout,
        "valid": person.valid, "reason": person.invalid_reason,
        "l2": [None if v is None else round(v, 4) for v in person.l2],
        "min_l2": [None if v is None else round(v, 4) for v in person.min_l2],
        "auc": [None if v is None else round(v, 4) for v in person.auc],
        "thumbs": person.thumbs, "wh": list(person.tile_wh), "rand": person.random_rank,
        "image_error": person.image_error,
    }


def _summary_html(summary: dict[str, Any], sampling_note: str, ground_truth_note: str) -> str:
    esc = html.escape
    shared = len(summary["columns"]) > 1
    head = ("<tr><th>column</th><th>stage</th><th>persons</th><th>valid</th><th>invalid (reasons)</th>"
            "<th>scored</th><th>avg L2 ↓</th><th>min L2 ↓</th><th>AUC ↑</th>"
            + ("<th>shared avg L2</th><th>shared AUC</th>" if shared else "") + "</tr>")
    rows = []
    for i, c in enumerate(summary["columns"]):
        reasons = ", ".join(f"{esc(r)}: {n:,}" for r, n in c["invalid_reasons"].items()) or "–"
        auc_cell = _fmt(c.get("auc")) if c.get("auc") is not None else \
            f'<span title="{esc(c.get("auc_note", "not computed"))}">–</span>'
        rows.append(
            f'<tr><td><span class="colkey">{i + 1}</span> <b>{esc(c["name"])}</b>'
            f'<div class="path">{esc(c["folder"])}</div></td><td>{esc(c["stage"] or "–")}</td>'
            f'<td>{c["persons"]:,}</td><td>{c["valid"]:,}</td><td>{c["invalid"]:,} <span class="muted">'
            f'({reasons})</span></td><td>{c["scored"]:,}</td><td>{_fmt(c["avg_l2"])}</td>'
            f'<td>{_fmt(c["min_l2"])}</td><td>{auc_cell}</td>'
            + (f'<td>{_fmt(c["shared_avg_l2"])}</td><td>{_fmt(c.get("shared_auc"))}</td>' if shared else "")
            + "</tr>")
    facts = [
        f'<b>{summary["shown"]:,}</b> persons shown of <b>{summary["persons_in_first_folder"]:,}</b> '
        f'in the first folder. {esc(sampling_note)}',
        f'Ground truth: {esc(ground_truth_note)}; in-frame targets for {summary["in_frame_ground_truth"]:,} '
        f'shown persons, out of frame {summary["out_of_frame"]:,}.',
        "Metrics over the shown persons with an in-frame target and a valid map (\u201cscored\u201d); "
        "L2 = argmax (col/64, row/64) vs the GT mean (min L2: nearest GT point), normalised coordinates."
        + (f' \u201cShared\u201d = the {summary["shared_scored"]:,} persons valid in every column.' if shared else ""),
    ]
    if summary["unreadable_images"]:
        facts.append(f'<span class="bad">{summary["unreadable_images"]:,} images could not be read '
                     "(grey tiles).</span>")
    return (f'<table class="summary">{head}{"".join(rows)}</table>'
            f'<ul class="facts">{"".join(f"<li>{f}</li>" for f in facts)}</ul>')


def _legend_html(lut: np.ndarray, colormap: str) -> str:
    stops = ", ".join(f"rgb({r},{g},{b}) {100 * i / 10:.0f}%" for i, (r, g, b) in
                      enumerate(lut[np.linspace(0, 255, 11).round().astype(int)]))

    def swatch(svg: str, label: str) -> str:
        return f'<span class="key"><svg width="22" height="16" viewBox="0 0 22 16">{svg}</svg>{label}</span>'

    rgb = "rgb({},{},{})".format
    return (
        '<div class="legend">'
        f'<span class="key"><span class="cbar-wrap"><span class="cbar" style="background: linear-gradient(90deg, '
        f'{stops})"></span><span class="cbar-ticks"><span>0</span><span>0.5</span><span>1</span></span></span>'
        f'heatmap ({html.escape(colormap)}; opacity grows with the value)</span>'
        + swatch(f'<rect x="3" y="2" width="16" height="12" fill="none" stroke="#000" stroke-width="4"/>'
                 f'<rect x="3" y="2" width="16" height="12" fill="none" stroke="{rgb(*HEAD_BOX_RGB)}" '
                 'stroke-width="2"/>', "head box")
        + swatch(f'<rect x="2" y="1" width="18" height="14" fill="none" stroke="{rgb(*BODY_BOX_RGB)}" '
                 'stroke-width="1.5"/>', "body box")
        + swatch('<circle cx="6" cy="8" r="3" fill="#fff" stroke="#000"/><circle cx="15" cy="8" r="5.5" '
                 'fill="none" stroke="#fff" stroke-width="1.5"/><circle cx="15" cy="8" r="6.5" fill="none" '
                 'stroke="#000" stroke-width="0.8"/>', "GT points / GT mean")
        + swatch(f'<path d="M6 3 L16 13 M6 13 L16 3" stroke="#000" stroke-width="4"/><path d="M6 3 L16 13 M6 13 '
                 f'L16 3" stroke="{rgb(*PREDICTION_RGB)}" stroke-width="2"/>', "heatmap argmax")
        + swatch(f'<rect x="2" y="2" width="18" height="12" fill="#777" stroke="{rgb(*INVALID_RGB)}" '
                 'stroke-width="2.5"/>', "invalid / missing map")
        + "</div>")


def render_html(title: str, columns: Sequence[GalleryColumn], persons: Sequence[GalleryPerson],
                summary: dict[str, Any], config: InspectConfig, sampling_note: str, ground_truth_note: str) -> str:
    """The whole index.html: summary, legend and an inline JSON array of persons (in ``persons`` order, the
    initial order of the page) that inline JS sorts, filters and paginates."""
    data = {
        "title": title, "columns": [{"name": c.name, "folder": str(c.folder)} for c in columns],
        "persons": [_person_record(p) for p in persons], "per_page": config.per_page,
        "sort": config.sort, "thumb_px": config.thumb_px,
    }
    lut = colormap_lut(config.colormap)
    replacements = {
        "__TITLE__": html.escape(title),
        "__SUBTITLE__": html.escape(" vs ".join(c.name for c in columns)),
        "__CREATED__": html.escape(time.strftime("%Y-%m-%d %H:%M")),
        "__SUMMARY__": _summary_html(summary, sampling_note, ground_truth_note),
        "__LEGEND__": _legend_html(lut, config.colormap),
        "__DATA__": _json_for_script(data),
        "__CSS__": _CSS, "__JS__": _JS,
    }
    # one pass: text from the data (ids, answers, folder names) is never scanned for tokens again
    return re.sub(r"__[A-Z]+__", lambda match: replacements.get(match.group(0), match.group(0)), _PAGE)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        from matplotlib import font_manager

        return ImageFont.truetype(font_manager.findfont("DejaVu Sans"), size)
    except (ImportError, OSError, ValueError):
        return ImageFont.load_default()


def _fit_text(draw: ImageDraw.ImageDraw, text: str, font: Any, width: int) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength("…" + text, font=font) > width:
        text = text[1:]  # keep the end: ids differ in their tails (frame, person)
    return "…" + text


def write_contact_sheet(path: Path, persons: Sequence[GalleryPerson], columns: Sequence[GalleryColumn],
                        gallery_dir: Path, config: InspectConfig, title: str, target_width: int = 1900) -> None:
    """A PNG grid of the given persons (in order): per person its tiles side by side, each tile captioned
    with its column and the L2 error or invalid reason; a header with the column names and colour bar."""
    tile_w = config.thumb_px
    tile_h = max([p.tile_wh[1] for p in persons if p.tile_wh[1]] or [round(tile_w * 9 / 16)])
    n_tiles = 1 + len(columns)
    gap, pad = 4, 10
    small, regular, bold = _font(12), _font(13), _font(18)
    block_w = n_tiles * tile_w + (n_tiles - 1) * gap
    block_h = 18 + tile_h + 2 * 15 + 6
    per_row = max(1, (target_width - pad) // (block_w + 2 * pad))
    rows = max(1, -(-len(persons) // per_row))
    header_h = 70
    sheet = Image.new("RGB", (pad + per_row * (block_w + 2 * pad), header_h + rows * (block_h + pad) + pad),
                      (245, 246, 248))
    draw = ImageDraw.Draw(sheet)
    draw.text((pad, 8), title, fill=(20, 20, 20), font=bold)
    labels = f"tiles: {IMAGE_COLUMN} | " + " | ".join(f"{i + 1} {c.name}" for i, c in enumerate(columns))
    draw.text((pad, 34), labels, fill=(60, 60, 60), font=regular)
    lut = colormap_lut(config.colormap)
    bar_x = sheet.width - pad - 260
    bar = np.repeat(lut[None, np.linspace(0, 255, 200).astype(int)], 12, axis=0)  # [12, 200, 3]
    sheet.paste(Image.fromarray(bar), (bar_x + 30, 14))
    draw.text((bar_x + 18, 12), "0", fill=(40, 40, 40), font=small)
    draw.text((bar_x + 234, 12), "1", fill=(40, 40, 40), font=small)
    draw.text((bar_x + 30, 30), "heatmap · × argmax · ○ GT mean · • GT", fill=(60, 60, 60), font=small)
    for rank, person in enumerate(persons):
        row, col = divmod(rank, per_row)
        x0 = pad + col * (block_w + 2 * pad)
        y0 = header_h + row * (block_h + pad)
        draw.rounded_rectangle((x0 - 4, y0 - 4, x0 + block_w + 4, y0 + block_h), radius=6, fill=(255, 255, 255),
                               outline=(220, 222, 226))
        caption = f"#{rank + 1}  {person.sample_id}" + (f"  · {person.key_noun}" if person.key_noun else "")
        draw.text((x0, y0), _fit_text(draw, caption, regular, block_w), fill=(20, 20, 20), font=regular)
        names = [IMAGE_COLUMN] + [f"{i + 1} {c.name}" for i, c in enumerate(columns)]
        for t, (thumb, name) in enumerate(zip(person.thumbs, names)):
            tx, ty = x0 + t * (tile_w + gap), y0 + 18
            with Image.open(gallery_dir / thumb) as tile:
                tile = tile.convert("RGB")
                sheet.paste(tile, (tx + (tile_w - tile.width) // 2, ty + (tile_h - tile.height) // 2))
            if t == 0:
                status = "no GT" if person.gaze_points_norm is None else \
                    ("out of frame" if person.inout == OUT_OF_FRAME else "GT" if person.has_target else "no target")
                colour = (90, 90, 90)
            elif not person.valid[t - 1]:
                status, colour = f"invalid: {person.invalid_reason[t - 1]}", (200, 30, 30)
            else:
                status = "valid" if person.l2[t - 1] is None else f"L2 {person.l2[t - 1]:.3f}"
                colour = (30, 30, 30)
            draw.text((tx, ty + tile_h + 2), _fit_text(draw, name, small, tile_w), fill=(90, 90, 90), font=small)
            draw.text((tx, ty + tile_h + 16), _fit_text(draw, status, small, tile_w), fill=colour, font=small)
    with atomic_path(path) as tmp:
        sheet.save(tmp, format="PNG", optimize=False)


# ----------------------------------------------------------------------------------------------------------
# the whole gallery


def sample_person_ids(sample_ids: Sequence[str], max_persons: int, seed: int) -> tuple[list[str], dict[str, int]]:
    """(the ids to show, in their folder order, at most ``max_persons`` of them (0 = all) drawn with ``seed``;
    {id: rank} of one seeded random order, for the "random" sort)."""
    rng = np.random.default_rng(seed)
    ids = list(sample_ids)
    if 0 < max_persons < len(ids):
        chosen = np.sort(rng.choice(len(ids), size=max_persons, replace=False))
        ids = [ids[i] for i in chosen]
    ranks = rng.permutation(len(ids))
    return ids, {sid: int(r) for sid, r in zip(ids, ranks)}


def build_gallery(folders: Sequence[str | os.PathLike], out_dir: str | os.PathLike | None = None,
                  samples: Sequence[PersonSample] | None = None, config: InspectConfig | None = None, *,
                  dataset: str = "gazefollow", ground_truth_note: str | None = None,
                  run_config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write the gallery of ``folders`` (the first one defines the persons; the others are compared column by
    column) into ``out_dir`` (default ``<first folder>/inspect``).

    samples: annotations of (some of) the persons, for ground truth and body boxes (None: none known).
    dataset: evaluate()'s dataset ("gazefollow" | "videoattentiontarget") for the AUC.
    Returns the summary (also in summary.json) with "index_html", "contact_sheet", "timings_s" added.
    """
    config = config or InspectConfig()
    if config.sort not in SORT_ORDERS:
        raise ValueError(f"inspect.sort must be one of {SORT_ORDERS}, got {config.sort!r}")
    if config.on_missing_image not in ("placeholder", "raise"):
        raise ValueError(f"inspect.on_missing_image must be placeholder or raise, got {config.on_missing_image!r}")
    timings: dict[str, float] = {}
    start = time.perf_counter()
    columns = open_columns(folders)
    out_dir = Path(out_dir) if out_dir is not None else columns[0].folder / "inspect"
    out_dir.mkdir(parents=True, exist_ok=True)
    all_ids = columns[0].labels.sample_ids
    if not all_ids:
        raise ValueError(f"pseudo-label folder {columns[0].folder} has no persons")
    ids, random_ranks = sample_person_ids(all_ids, config.max_persons, config.seed)
    samples_by_id = {s.sample_id: s for s in samples or []}
    persons = collect_persons(columns, ids, samples_by_id, random_ranks)
    timings["collect"] = time.perf_counter() - start

    tick = time.perf_counter()
    thumb_counts = write_thumbnails(persons, columns, out_dir, config)
    timings["thumbnails"] = time.perf_counter() - tick

    tick = time.perf_counter()
    summary = summarize(columns, persons, samples_by_id, total_persons=len(all_ids), dataset=dataset,
                        auc=config.auc)
    timings["summary"] = time.perf_counter() - tick

    tick = time.perf_counter()
    ordered = sort_persons(persons, config.sort)
    if len(ids) < len(all_ids):
        sampling_note = (f"A random sample (seed {config.seed}) of {len(ids):,}; use --all (or --max-persons) "
                         "to show more.")
    else:
        sampling_note = "All persons are shown."
    n_gt = summary["with_ground_truth"]
    ground_truth_note = ground_truth_note or (f"found for {n_gt:,} of {len(ids):,} shown persons" if n_gt
                                              else "none found (no annotations matched the sample ids)")
    title = f"gcdr inspect · {columns[0].name}"
    page = render_html(title, columns, ordered, summary, config, sampling_note, ground_truth_note)
    index_html = out_dir / "index.html"
    write_text_atomic(index_html, page)
    contact_sheet = out_dir / "contact_sheet.png"
    write_contact_sheet(contact_sheet, ordered[: config.contact_sheet_persons], columns, out_dir, config,
                        f"{title} — first {min(len(ordered), config.contact_sheet_persons)} by '{config.sort}'")
    timings["html_and_sheet"] = time.perf_counter() - tick
    timings["total"] = time.perf_counter() - start

    summary.update(index_html=str(index_html), contact_sheet=str(contact_sheet), sort=config.sort,
                   sampling_note=sampling_note, ground_truth_note=ground_truth_note, thumbnails=thumb_counts,
                   timings_s={k: round(v, 2) for k, v in timings.items()})
    write_json_atomic(out_dir / "summary.json", summary)
    write_provenance(out_dir, "inspect", run_config or {}, folders=[str(c.folder) for c in columns],
                     columns=[c.name for c in columns], inspect=dataclasses.asdict(config),
                     shown=len(persons), persons=len(all_ids),
                     folder_provenance={c.name: c.labels.provenance for c in columns})
    log.info("gallery of %d persons (%d columns) in %s: %.1f s", len(persons), len(columns), index_html,
             timings["total"])
    return summary


# ----------------------------------------------------------------------------------------------------------
# page template (inline CSS and JS only: the page must open from disk without any network)

_CSS = """
:root { --tile: 1; --ink: #1d2330; --muted: #6b7280; --line: #e3e6eb; --bg: #f4f5f7; --card: #fff;
        --bad: #d42a2a; --good: #1b8a4b; --warn: #b7791f; --accent: #3b5bdb; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       color: var(--ink); background: var(--bg); }
header.top { padding: 14px 22px 6px; background: var(--card); border-bottom: 1px solid var(--line); }
h1 { margin: 0; font-size: 20px; font-weight: 650; }
h1 .sub { font-weight: 400; color: var(--muted); font-size: 15px; margin-left: 8px; }
.created { color: var(--muted); font-size: 12px; }
table.summary { border-collapse: collapse; margin: 10px 0 4px; font-size: 13px; }
table.summary th, table.summary td { padding: 4px 10px; border-bottom: 1px solid var(--line); text-align: right;
       vertical-align: top; }
table.summary th:first-child, table.summary td:first-child { text-align: left; }
table.summary th { color: var(--muted); font-weight: 600; background: #fafbfc; }
.path { color: var(--muted); font-size: 11px; font-family: ui-monospace, Menlo, monospace; }
.muted { color: var(--muted); }
.bad { color: var(--bad); }
.colkey { display: inline-block; min-width: 18px; height: 18px; border-radius: 9px; background: var(--ink);
       color: #fff; font-size: 11px; text-align: center; line-height: 18px; }
ul.facts { margin: 4px 0 6px; padding-left: 18px; color: #374151; font-size: 13px; }
.legend { display: flex; flex-wrap: wrap; gap: 18px; align-items: center; font-size: 12.5px; color: #374151;
       padding: 6px 0 4px; }
.key { display: inline-flex; align-items: center; gap: 6px; }
.key svg { background: #8a8f98; border-radius: 3px; }
.cbar-wrap { display: inline-flex; flex-direction: column; }
.cbar { display: inline-block; width: 160px; height: 10px; border-radius: 2px; border: 1px solid #0003; }
.cbar-ticks { display: flex; justify-content: space-between; font-size: 10px; color: var(--muted); width: 160px; }
.controls { position: sticky; top: 0; z-index: 5; display: flex; flex-wrap: wrap; gap: 10px 16px;
       align-items: center; padding: 8px 22px; background: #fffffff0; border-bottom: 1px solid var(--line);
       backdrop-filter: blur(4px); }
.controls label { font-size: 12.5px; color: var(--muted); display: inline-flex; gap: 6px; align-items: center; }
.controls select, .controls input[type=search] { font: inherit; font-size: 13px; padding: 3px 6px;
       border: 1px solid #cfd4dc; border-radius: 5px; background: #fff; color: var(--ink); }
.controls input[type=search] { width: 190px; }
.controls select { max-width: 330px; }
.pager { display: inline-flex; gap: 6px; align-items: center; margin-left: auto; font-size: 13px; }
.pager button { font: inherit; padding: 3px 10px; border: 1px solid #cfd4dc; border-radius: 5px;
       background: #fff; cursor: pointer; }
.pager button:disabled { opacity: .4; cursor: default; }
.count { font-size: 12.5px; color: var(--muted); }
main { padding: 14px 22px 30px; }
.grid { display: flex; flex-wrap: wrap; gap: 14px; align-items: flex-start; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 8px 10px 9px;
       box-shadow: 0 1px 2px #0000000d; }
.card.invalid { border-color: #f0b4b4; }
.card .hd { display: flex; align-items: baseline; gap: 8px; max-width: calc(var(--w) * 1px); }
.rank { color: var(--muted); font-size: 12px; font-variant-numeric: tabular-nums; }
.sid { font-family: ui-monospace, Menlo, monospace; font-size: 12px; overflow: hidden; text-overflow: ellipsis;
       white-space: nowrap; direction: rtl; text-align: left; flex: 1; }
.badge { font-size: 11px; padding: 0 6px; border-radius: 9px; background: #eef0f3; color: #4b5563;
       white-space: nowrap; }
.badge.gt { background: #e6f4ea; color: var(--good); }
.badge.oof { background: #fff4e5; color: var(--warn); }
.badge.bad { background: #fde8e8; color: var(--bad); }
.qa { font-size: 13px; margin: 2px 0 6px; max-width: calc(var(--w) * 1px); white-space: nowrap; overflow: hidden;
       text-overflow: ellipsis; }
.qa .ans { color: #374151; }
.qa .noun { font-weight: 650; background: #eef2ff; color: var(--accent); padding: 0 6px; border-radius: 4px;
       margin-left: 6px; }
.tiles { display: flex; gap: 6px; }
figure { margin: 0; }
figure img { display: block; border-radius: 4px; background: #ddd; width: calc(var(--tw) * var(--tile) * 1px);
       height: calc(var(--th) * var(--tile) * 1px); }
figcaption { font-size: 11.5px; margin-top: 3px; display: flex; justify-content: space-between; gap: 6px;
       width: calc(var(--tw) * var(--tile) * 1px); }
figcaption .cn { color: var(--muted); overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
figcaption .v { font-variant-numeric: tabular-nums; font-weight: 600; white-space: nowrap; }
.v.ok { color: var(--good); } .v.mid { color: var(--warn); } .v.hi { color: var(--bad); }
.v.inv { color: var(--bad); font-weight: 600; }
.empty { padding: 40px; color: var(--muted); }
footer { padding: 0 22px 24px; color: var(--muted); font-size: 12px; }
"""

_JS = r"""
(function () {
  "use strict";
  const D = JSON.parse(document.getElementById("gallery-data").textContent);
  const C = D.columns, P = D.persons;
  P.forEach((p, i) => { p.initial = i; });
  const $ = (id) => document.getElementById(id);
  const el = (tag, cls, text) => {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  };
  const fmt = (v) => (v === null || v === undefined) ? "–" : v.toFixed(3);
  const byId = (a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
  const errorOrder = (col, sign) => (a, b) => {
    const x = a.l2[col], y = b.l2[col];
    if ((x === null) !== (y === null)) return x === null ? 1 : -1;
    if (x !== null && x !== y) return sign * (x - y);
    return byId(a, b);
  };
  const gainOrder = (col, sign) => (a, b) => {  // L2(first column) - L2(col): > 0 = col is better
    const g = (p) => (p.l2[0] === null || p.l2[col] === null) ? null : p.l2[0] - p.l2[col];
    const x = g(a), y = g(b);
    if ((x === null) !== (y === null)) return x === null ? 1 : -1;
    if (x !== null && x !== y) return sign * (y - x);
    return byId(a, b);
  };
  const firstReason = (p) => p.reason.find((r) => r) || "";
  const orders = [];
  C.forEach((c, i) => {
    orders.push(["worst:" + i, "L2, worst first — " + c.name, errorOrder(i, -1)]);
    orders.push(["best:" + i, "L2, best first — " + c.name, errorOrder(i, 1)]);
  });
  C.forEach((c, i) => {
    if (i === 0) return;
    orders.push(["gain:" + i, "most improved by " + c.name + " vs " + C[0].name, gainOrder(i, 1)]);
    orders.push(["loss:" + i, "most worsened by " + c.name + " vs " + C[0].name, gainOrder(i, -1)]);
  });
  orders.push(["invalid", "invalid first (by reason)", (a, b) => {
    const x = firstReason(a), y = firstReason(b);
    if ((x === "") !== (y === "")) return x === "" ? 1 : -1;
    return x < y ? -1 : x > y ? 1 : byId(a, b);
  }]);
  orders.push(["id", "sample id", byId]);
  orders.push(["random", "random (seeded)", (a, b) => a.rand - b.rand || byId(a, b)]);
  const filters = [["all", "all persons", () => true],
                   ["valid", "valid in every column", (p) => p.valid.every((v) => v)],
                   ["invalid", "invalid in any column", (p) => !p.valid.every((v) => v)]];
  C.forEach((c, i) => {
    const reasons = [...new Set(P.map((p) => p.reason[i]).filter((r) => r))].sort();
    reasons.forEach((r) => filters.push(["reason:" + i + ":" + r, c.name + ": " + r,
                                         (p) => p.reason[i] === r]));
  });
  if (P.some((p) => p.gt)) {
    filters.push(["target", "with in-frame GT", (p) => p.target]);
    filters.push(["oof", "GT out of frame", (p) => p.inout === 0]);
    filters.push(["nogt", "without GT", (p) => !p.gt]);
  }
  if (P.some((p) => p.image_error)) filters.push(["imgerr", "unreadable image", (p) => !!p.image_error]);

  const fill = (select, items, value) => {
    items.forEach(([k, label]) => { const o = el("option", "", label); o.value = k; select.appendChild(o); });
    select.value = value;
  };
  const initialSort = {worst: "worst:0", best: "best:0"}[D.sort] || D.sort;
  fill($("sort"), orders, initialSort);
  fill($("filter"), filters, "all");
  [50, 100, 200, 500, 1000].concat([D.per_page]).filter((v, i, a) => a.indexOf(v) === i)
    .sort((a, b) => a - b).forEach((n) => {
      const o = el("option", "", String(n)); o.value = String(n); $("perpage").appendChild(o);
    });
  $("perpage").value = String(D.per_page);

  let view = P.slice(), page = 0;
  const perPage = () => parseInt($("perpage").value, 10);
  const pages = () => Math.max(1, Math.ceil(view.length / perPage()));

  function tileClass(p, i) {
    if (!p.valid[i]) return "v inv";
    const v = p.l2[i];
    if (v === null) return "v";
    return v < 0.1 ? "v ok" : v < 0.2 ? "v mid" : "v hi";
  }
  function figure(src, w, h, name, valueText, valueClass, title) {
    const f = el("figure");
    const img = el("img");
    img.loading = "lazy"; img.decoding = "async"; img.src = src; img.alt = name;
    img.width = w; img.height = h;
    if (title) img.title = title;
    f.appendChild(img);
    const cap = el("figcaption");
    cap.appendChild(el("span", "cn", name));
    cap.appendChild(el("span", valueClass, valueText));
    f.appendChild(cap);
    return f;
  }
  function card(p, rank) {
    const [w, h] = p.wh;
    const c = el("div", "card" + (p.valid.every((v) => v) ? "" : " invalid"));
    const width = (C.length + 1) * w + C.length * 6;
    c.style.setProperty("--w", String(width));
    c.style.setProperty("--tw", String(w)); c.style.setProperty("--th", String(h));
    const hd = el("div", "hd");
    hd.appendChild(el("span", "rank", "#" + (rank + 1)));
    const sid = el("span", "sid"); sid.appendChild(el("bdi", "", p.id)); sid.title = p.id + "\n" + p.image;
    hd.appendChild(sid);
    if (p.target) hd.appendChild(el("span", "badge gt", "GT"));
    else if (p.inout === 0) hd.appendChild(el("span", "badge oof", "GT out of frame"));
    else if (!p.gt) hd.appendChild(el("span", "badge", "no GT"));
    if (p.image_error) hd.appendChild(el("span", "badge bad", "image unreadable"));
    c.appendChild(hd);
    const qa = el("div", "qa");
    qa.appendChild(el("span", "ans", p.answer ? "\u201c" + p.answer + "\u201d" : "(no answer)"));
    if (p.noun) qa.appendChild(el("span", "noun", p.noun));
    qa.title = p.answer + (p.noun ? "  [key noun: " + p.noun + "]" : "");
    c.appendChild(qa);
    const tiles = el("div", "tiles");
    const gtText = p.target ? "GT" : p.inout === 0 ? "out of frame" : p.gt ? "" : "no GT";
    tiles.appendChild(figure(p.thumbs[0], w, h, "image", gtText, "v", p.image_error || p.image));
    C.forEach((col, i) => {
      const value = p.valid[i] ? (p.l2[i] === null ? "valid" : "L2 " + fmt(p.l2[i])) : "invalid: " + p.reason[i];
      const title = col.name + "\n" + (p.valid[i] ? "L2 " + fmt(p.l2[i]) + ", min L2 " + fmt(p.min_l2[i]) +
                                                    ", AUC " + fmt(p.auc[i]) : "invalid: " + p.reason[i]);
      tiles.appendChild(figure(p.thumbs[i + 1], w, h, (i + 1) + " " + col.name, value, tileClass(p, i), title));
    });
    c.appendChild(tiles);
    return c;
  }
  function render() {
    page = Math.min(page, pages() - 1);
    const grid = $("grid");
    const start = page * perPage(), stop = Math.min(view.length, start + perPage());
    const cards = view.slice(start, stop).map((p, k) => card(p, start + k));
    grid.replaceChildren(...cards);
    if (!cards.length) grid.appendChild(el("div", "empty", "No person matches this filter."));
    const text = view.length ? `${(start + 1).toLocaleString()}–${stop.toLocaleString()} of ` +
      `${view.length.toLocaleString()}` + (view.length < P.length ? ` (filtered from ${P.length.toLocaleString()})` : "")
      : `0 of ${P.length.toLocaleString()}`;
    document.querySelectorAll(".count").forEach((e) => { e.textContent = text; });
    document.querySelectorAll(".pageno").forEach((e) => { e.textContent = `page ${page + 1} / ${pages()}`; });
    document.querySelectorAll(".prev").forEach((b) => { b.disabled = page === 0; });
    document.querySelectorAll(".next").forEach((b) => { b.disabled = page >= pages() - 1; });
    saveState();
  }
  function saveState() {
    const state = new URLSearchParams({sort: $("sort").value, show: $("filter").value, q: $("search").value,
                                       per: $("perpage").value, page: String(page + 1)});
    history.replaceState(null, "", "#" + state.toString());
  }
  function loadState() {
    const state = new URLSearchParams(location.hash.slice(1));
    const set = (id, value) => {
      if (value !== null && [...$(id).options].some((o) => o.value === value)) $(id).value = value; };
    set("sort", state.get("sort")); set("filter", state.get("show")); set("perpage", state.get("per"));
    if (state.get("q")) $("search").value = state.get("q");
    return Math.max(0, (parseInt(state.get("page"), 10) || 1) - 1);
  }
  function update() {
    const f = filters.find((x) => x[0] === $("filter").value)[2];
    const q = $("search").value.trim().toLowerCase();
    const o = orders.find((x) => x[0] === $("sort").value)[2];
    view = P.filter((p) => f(p) && (!q || (p.id + " " + p.answer + " " + p.noun).toLowerCase().includes(q)));
    view.sort(o);
    page = 0;
    render();
  }
  const go = (delta) => { const next = Math.max(0, Math.min(pages() - 1, page + delta));
    if (next !== page) { page = next; render(); window.scrollTo(0, 0); } };
  document.querySelectorAll(".prev").forEach((b) => b.addEventListener("click", () => go(-1)));
  document.querySelectorAll(".next").forEach((b) => b.addEventListener("click", () => go(1)));
  ["sort", "filter", "perpage"].forEach((id) => $(id).addEventListener("change", update));
  $("search").addEventListener("input", update);
  $("zoom").addEventListener("input", () => {
    document.documentElement.style.setProperty("--tile", String($("zoom").value / 100)); });
  document.addEventListener("keydown", (e) => {
    if (e.target.tagName === "INPUT" || e.target.tagName === "SELECT") return;
    if (e.key === "ArrowRight") go(1);
    if (e.key === "ArrowLeft") go(-1);
  });
  const startPage = loadState();
  update();
  if (startPage) { page = startPage; render(); }
})();
"""

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>__TITLE__</title>
<style>__CSS__</style>
</head>
<body>
<header class="top">
<h1>__TITLE__<span class="sub">__SUBTITLE__</span></h1>
<div class="created">written __CREATED__ by gcdr inspect</div>
__SUMMARY__
__LEGEND__
</header>
<div class="controls">
<label>sort <select id="sort"></select></label>
<label>show <select id="filter"></select></label>
<label>search <input id="search" type="search" placeholder="id, answer, noun"></label>
<label>tile size <input id="zoom" type="range" min="60" max="250" value="100"></label>
<label>per page <select id="perpage"></select></label>
<span class="pager"><span class="count"></span><button class="prev" type="button">&larr; prev</button>
<span class="pageno"></span><button class="next" type="button">next &rarr;</button></span>
</div>
<main>
<noscript><p class="empty">This gallery needs JavaScript (inline, no network) to show the persons.</p></noscript>
<div id="grid" class="grid"></div>
</main>
<footer><span class="pager"><span class="count"></span><button class="prev" type="button">&larr; prev</button>
<span class="pageno"></span><button class="next" type="button">next &rarr;</button></span></footer>
<script id="gallery-data" type="application/json">__DATA__</script>
<script>__JS__</script>
</body>
</html>
"""
