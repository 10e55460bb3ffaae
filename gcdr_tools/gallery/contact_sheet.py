"""The contact sheet: the first persons of the chosen order on one PNG, for slides.

The header (title, column names, legend) is laid out by measuring each item, wrapping onto new lines, and the
sheet is at least as wide as its widest item, so that every label lies inside the image."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from gcdr.atomic import atomic_path
from gcdr.data.sample import OUT_OF_FRAME
from gcdr_tools.gallery.config import InspectConfig
from gcdr_tools.gallery.persons import GalleryColumn, GalleryPerson
from gcdr_tools.gallery.tiles import (
    BODY_BOX_RGB,
    GT_POINT_RGB,
    INVALID_RGB,
    PREDICTION_RGB,
    colormap_lut,
    label_font,
    person_rgb,
)

IMAGE_COLUMN = "image"
BACKGROUND_RGB = (245, 246, 248)
MAX_LEGEND_PERSONS = 12  # more person names than this: one "head box: colour per person" key instead
SHEET_ASPECT = 16 / 9  # persons per row are chosen so that the sheet is closest to a slide's shape
MAX_SHEET_WIDTH = 4000


def _fit_text(draw: ImageDraw.ImageDraw, text: str, font: Any, width: int) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength("…" + text, font=font) > width:
        text = text[1:]  # keep the end: ids differ in their tails (frame, person)
    return "…" + text


@dataclass
class LegendKey:
    """One legend entry: a small drawing (``swatch_w`` pixels wide, drawn by ``draw_swatch(sheet, x, y)``, y the
    line's top) followed by ``text``."""

    text: str
    swatch_w: int = 0
    draw_swatch: Callable[[Image.Image, int, int], None] | None = None


def _legend_keys(sheet_colormap: np.ndarray, persons: Sequence[GalleryPerson], labelled: bool,
                 any_invalid: bool) -> list[LegendKey]:
    def colour_bar(sheet: Image.Image, x: int, y: int) -> None:
        bar = np.repeat(sheet_colormap[None, np.linspace(0, 255, 120).astype(int)], 10, axis=0)  # [10, 120, 3]
        sheet.paste(Image.fromarray(bar), (x + 12, y + 3))
        draw = ImageDraw.Draw(sheet)
        draw.text((x, y), "0", fill=(40, 40, 40), font=label_font(12))
        draw.text((x + 136, y), "1", fill=(40, 40, 40), font=label_font(12))

    def box(rgb: tuple[int, int, int], width: int = 2) -> Callable[[Image.Image, int, int], None]:
        def swatch(sheet: Image.Image, x: int, y: int) -> None:
            draw = ImageDraw.Draw(sheet)
            draw.rectangle((x, y + 2, x + 18, y + 14), outline=(0, 0, 0), width=width + 2)
            draw.rectangle((x + 1, y + 3, x + 17, y + 13), outline=rgb, width=width)
        return swatch

    def cross(sheet: Image.Image, x: int, y: int) -> None:
        draw = ImageDraw.Draw(sheet)
        for colour, width in (((0, 0, 0), 4), (PREDICTION_RGB, 2)):
            draw.line((x + 3, y + 3, x + 13, y + 13), fill=colour, width=width)
            draw.line((x + 3, y + 13, x + 13, y + 3), fill=colour, width=width)

    def ground_truth(sheet: Image.Image, x: int, y: int) -> None:
        draw = ImageDraw.Draw(sheet)
        draw.ellipse((x + 1, y + 5, x + 7, y + 11), fill=GT_POINT_RGB, outline=(0, 0, 0))
        draw.ellipse((x + 11, y + 1, x + 25, y + 15), outline=(0, 0, 0), width=3)
        draw.ellipse((x + 12, y + 2, x + 24, y + 14), outline=GT_POINT_RGB, width=1)

    def invalid(sheet: Image.Image, x: int, y: int) -> None:
        draw = ImageDraw.Draw(sheet)
        draw.rectangle((x, y + 2, x + 18, y + 14), fill=(120, 120, 120), outline=INVALID_RGB, width=2)

    keys = [LegendKey("heatmap", 150, colour_bar), LegendKey("argmax", 16, cross)]
    names = sorted({(p.colour_index, p.name) for p in persons if p.name})
    if 0 < len(names) <= MAX_LEGEND_PERSONS:
        keys += [LegendKey(name, 20, box(person_rgb(index))) for index, name in names]
    else:
        keys.append(LegendKey("head box (a colour per person)", 20, box(person_rgb(0))))
    if any(p.body_box_xyxy_px is not None for p in persons):
        keys.append(LegendKey("body box", 20, box(BODY_BOX_RGB, 1)))
    if labelled:
        keys.append(LegendKey("GT points / GT mean", 26, ground_truth))
    else:
        keys.append(LegendKey("no labels: no ground truth, no errors"))
    if any_invalid:
        keys.append(LegendKey("invalid / missing map", 20, invalid))
    return keys


def _flow(items_w: Sequence[int], width: int, gap: int) -> list[list[int]]:
    """Indices of items per line, each line at most ``width`` wide (an item wider than that gets a line)."""
    lines: list[list[int]] = [[]]
    used = 0
    for i, w in enumerate(items_w):
        if lines[-1] and used + gap + w > width:
            lines.append([])
            used = 0
        used += (gap if lines[-1] else 0) + w
        lines[-1].append(i)
    return lines


def write_contact_sheet(path: Path, persons: Sequence[GalleryPerson], columns: Sequence[GalleryColumn],
                        gallery_dir: Path, config: InspectConfig, title: str, labelled: bool = True,
                        max_width: int = MAX_SHEET_WIDTH) -> dict[str, Any]:
    """A PNG grid of the given persons (in order): per person a caption (rank, the person's name in its
    colour, sample id, key noun) and its tiles side by side, each captioned with its column and the L2 error
    or invalid reason ("no labels" when the dataset has none, ``labelled`` False); a header with the title,
    the column names and the legend, wrapped to the sheet's width.

    Returns the layout: {"size": [w, h], "per_row": n, "legend_boxes": [[x1, y1, x2, y2], ...]} (pixels of the
    sheet; one box per header item), so that a caller can check that everything lies inside the image.
    """
    tile_w = config.thumb_px
    tile_h = max([p.tile_wh[1] for p in persons if p.tile_wh[1]] or [round(tile_w * 9 / 16)])
    n_tiles = 1 + len(columns)
    gap, pad, line_h = 4, 12, 20
    small, regular, bold = label_font(12), label_font(13), label_font(18)
    block_w = n_tiles * tile_w + (n_tiles - 1) * gap
    block_h = 20 + tile_h + 2 * 15 + 6
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))

    # header items: the title alone, then the column names, then the legend keys (each a swatch and a text)
    column_texts = [f"tiles: {IMAGE_COLUMN}"] + [f"{i + 1} {c.name}" for i, c in enumerate(columns)]
    keys = _legend_keys(colormap_lut(config.colormap), persons, labelled, any(p.invalid_anywhere for p in persons))
    column_w = [round(measure.textlength(t, font=regular)) for t in column_texts]
    key_w = [k.swatch_w + (6 if k.swatch_w else 0) + round(measure.textlength(k.text, font=small)) for k in keys]

    def height_of(per_row: int) -> int:
        width = pad + per_row * (block_w + 2 * pad)
        lines = len(_flow(column_w, width - 2 * pad, 16)) + len(_flow(key_w, width - 2 * pad, 18))
        return 40 + lines * line_h + 10 + math.ceil(len(persons) / per_row) * (block_h + pad) + pad

    # persons per row: the sheet closest to a slide's shape, no wider than max_width (at least one block)
    fits = max(1, min(len(persons) or 1, (max_width - pad) // (block_w + 2 * pad)))
    per_row = min(range(1, fits + 1), key=lambda n: abs(math.log((pad + n * (block_w + 2 * pad)) / height_of(n))
                                                       - math.log(SHEET_ASPECT)))
    widest = max(column_w + key_w) + 2 * pad
    width = max(pad + per_row * (block_w + 2 * pad), widest)
    column_lines, key_lines = _flow(column_w, width - 2 * pad, 16), _flow(key_w, width - 2 * pad, 18)
    header_h = 40 + (len(column_lines) + len(key_lines)) * line_h + 10
    rows = max(1, math.ceil(len(persons) / per_row))
    sheet = Image.new("RGB", (width, header_h + rows * (block_h + pad) + pad), BACKGROUND_RGB)
    draw = ImageDraw.Draw(sheet)
    legend_boxes = []
    title = _fit_text(draw, title, bold, width - 2 * pad)
    draw.text((pad, 10), title, fill=(20, 20, 20), font=bold)
    legend_boxes.append([pad, 10, pad + round(draw.textlength(title, font=bold)), 10 + 22])
    y = 40
    for line in column_lines:
        x = pad
        for i in line:
            draw.text((x, y), column_texts[i], fill=(60, 60, 60), font=regular)
            legend_boxes.append([x, y, x + column_w[i], y + line_h - 4])
            x += column_w[i] + 16
        y += line_h
    for line in key_lines:
        x = pad
        for i in line:
            key = keys[i]
            if key.draw_swatch is not None:
                key.draw_swatch(sheet, x, y)
            text_x = x + key.swatch_w + (6 if key.swatch_w else 0)
            draw.text((text_x, y + 1), key.text, fill=(60, 60, 60), font=small)
            legend_boxes.append([x, y, x + key_w[i], y + line_h - 4])
            x += key_w[i] + 18
        y += line_h

    names = [IMAGE_COLUMN] + [f"{i + 1} {c.name}" for i, c in enumerate(columns)]
    for rank, person in enumerate(persons):
        row, col = divmod(rank, per_row)
        x0 = pad + col * (block_w + 2 * pad)
        y0 = header_h + row * (block_h + pad)
        draw.rounded_rectangle((x0 - 4, y0 - 4, x0 + block_w + 4, y0 + block_h), radius=6, fill=(255, 255, 255),
                               outline=(220, 222, 226))
        x = x0
        draw.text((x, y0), f"#{rank + 1}", fill=(90, 90, 90), font=regular)
        x += round(draw.textlength(f"#{rank + 1}", font=regular)) + 8
        if person.name:
            name_w = round(draw.textlength(person.name, font=regular))
            draw.rectangle((x, y0, x + name_w + 8, y0 + 17), fill=person_rgb(person.colour_index), outline=(0, 0, 0))
            draw.text((x + 4, y0 + 1), person.name, fill=(0, 0, 0), font=regular)
            x += name_w + 16
        caption = person.sample_id + (f"  · {person.key_noun}" if person.key_noun else "")
        draw.text((x, y0 + 1), _fit_text(draw, caption, regular, x0 + block_w - x), fill=(20, 20, 20), font=regular)
        for t, (thumb, name) in enumerate(zip(person.thumbs, names)):
            tx, ty = x0 + t * (tile_w + gap), y0 + 21
            with Image.open(gallery_dir / thumb) as tile:
                tile = tile.convert("RGB")
                sheet.paste(tile, (tx + (tile_w - tile.width) // 2, ty + (tile_h - tile.height) // 2))
            if t == 0:
                status = "no labels" if not labelled else "no GT" if person.gaze_points_norm is None else \
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
    return {"size": list(sheet.size), "per_row": per_row, "legend_boxes": legend_boxes}
