"""The gallery's tiles: per person the image with boxes and ground truth, then one heatmap overlay per
column, drawn at thumbnail size and written once as JPEGs under ``thumbs/`` (keyed by everything drawn)."""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from collections import Counter, OrderedDict
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont, UnidentifiedImageError
from tqdm import tqdm

from gcdr.atomic import atomic_path
from gcdr_tools.gallery.config import InspectConfig
from gcdr_tools.gallery.persons import GalleryColumn, GalleryPerson

log = logging.getLogger(__name__)

TILE_STYLE_VERSION = 2  # bump when tile drawing changes: every thumbnail key changes with it

# marker colours, RGB (the HTML legend and the contact sheet use the same values)
HEAD_BOX_RGB = (57, 255, 20)  # the first person's colour
BODY_BOX_RGB = (0, 200, 255)
GT_POINT_RGB = (255, 255, 255)
PREDICTION_RGB = (255, 0, 200)
INVALID_RGB = (230, 40, 40)
# one colour per person name, bright enough for black label text and apart from the argmax magenta
PERSON_PALETTE_RGB = (HEAD_BOX_RGB, (255, 170, 0), (80, 180, 255), (255, 240, 60), (190, 140, 255),
                      (255, 110, 110), (0, 230, 190), (200, 200, 200))


def person_rgb(colour_index: int) -> tuple[int, int, int]:
    """The colour of a person (``GalleryPerson.colour_index``), RGB; the palette repeats after 8 names."""
    return PERSON_PALETTE_RGB[colour_index % len(PERSON_PALETTE_RGB)]


@functools.lru_cache(maxsize=16)
def label_font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """DejaVu Sans (matplotlib's) at ``size`` pixels, else PIL's default font."""
    try:
        from matplotlib import font_manager

        return ImageFont.truetype(font_manager.findfont("DejaVu Sans"), size)
    except (ImportError, OSError, ValueError):
        return ImageFont.load_default()


# full-resolution colour (no 4:2:0 chroma subsampling), else the 1-pixel boxes of other persons lose their colour
JPEG_PARAMS = ([cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]
               if hasattr(cv2, "IMWRITE_JPEG_SAMPLING_FACTOR_444") else [])


def colormap_lut(name: str) -> np.ndarray:
    """[256, 3] uint8 RGB lookup table of a matplotlib colormap."""
    import matplotlib

    return (matplotlib.colormaps[name](np.linspace(0.0, 1.0, 256))[:, :3] * 255).round().astype(np.uint8)


class TileRenderer:
    """Draws one person's tiles at thumbnail size: decoded images are reduced while decoding (JPEG DCT
    scaling) and the last few kept, since persons of one image follow each other."""

    def __init__(self, thumb_px: int = 320, colormap: str = "turbo", cache_images: int = 8):
        self.thumb_px = int(thumb_px)
        self.font = label_font(max(10, round(self.thumb_px / 28)))
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


def _draw_label(tile: np.ndarray, texts: Sequence[str], box_px: Sequence[float], scale_xy: tuple[float, float],
                rgb: tuple[int, int, int], font: ImageFont.ImageFont | ImageFont.FreeTypeFont) -> None:
    """The first of ``texts`` that fits the tile's width (else the last one) in black on a tag of the person's
    colour, above the head box (below it at the top edge), kept inside the tile."""
    height, width = tile.shape[:2]
    image = Image.fromarray(tile)
    draw = ImageDraw.Draw(image)
    text = next((t for t in texts if draw.textlength(t, font=font) + 6 <= width), texts[-1])
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    tag_w, tag_h = min(width, right - left + 6), bottom - top + 4
    x1, y1 = _scaled(box_px[:2], scale_xy)
    _, y2 = _scaled(box_px[2:], scale_xy)
    x = min(max(0, x1 - 1), max(0, width - tag_w))
    y = y1 - 1 - tag_h if y1 - 1 - tag_h >= 0 else min(y2 + 2, height - tag_h)
    draw.rectangle((x, y, x + tag_w - 1, y + tag_h - 1), fill=rgb, outline=(0, 0, 0))
    draw.text((x + 3 - left, y + 2 - top), text, fill=(0, 0, 0), font=font)
    tile[:] = np.asarray(image)


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
    """The person's tiles, [h, w, 3] uint8 RGB each: the image with the person's head box and label
    (``person.label``) in the person's colour, the other persons of the image thinly in theirs, body box
    (cyan), ground-truth points (white dots, ring = mean) and the head-to-GT gaze line; then per column the
    heatmap overlay with the same boxes, GT points and the argmax (magenta cross); invalid / missing tiles
    greyed with a red frame. An unreadable image gives grey tiles (the caller decides whether that is an error).
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
        for other in person.others:
            _draw_box(tile, other.head_box_xyxy_px, scale_xy, person_rgb(other.colour_index), 1)
        if person.body_box_xyxy_px is not None:
            _draw_box(tile, person.body_box_xyxy_px, scale_xy, BODY_BOX_RGB, 1)
        if person.head_box_xyxy_px is not None:
            _draw_box(tile, person.head_box_xyxy_px, scale_xy, person_rgb(person.colour_index), 2)
            if person.name:
                _draw_label(tile, [person.label, person.name], person.head_box_xyxy_px, scale_xy,
                            person_rgb(person.colour_index), renderer.font)
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
                  f"{person.body_box_xyxy_px}|{person.inout}|{valid}|{person.label}|{person.colour_index}|"
                  f"{person.others}".encode())
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
            ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(tile, cv2.COLOR_RGB2BGR), JPEG_PARAMS + [
                cv2.IMWRITE_JPEG_QUALITY, config.jpeg_quality])
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
