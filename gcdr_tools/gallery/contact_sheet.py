"""The contact sheet: the first persons of the chosen order on one PNG, for slides."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from gcdr.atomic import atomic_path
from gcdr.data.sample import OUT_OF_FRAME
from gcdr_tools.gallery.config import InspectConfig
from gcdr_tools.gallery.persons import GalleryColumn, GalleryPerson
from gcdr_tools.gallery.tiles import colormap_lut

IMAGE_COLUMN = "image"


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
