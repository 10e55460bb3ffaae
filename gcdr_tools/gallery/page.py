"""The gallery page, index.html: rendered with Jinja2 from ``templates/page.html.j2``, with
``templates/gallery.css`` and ``templates/gallery.js`` inlined and the persons and sort orders as JSON data,
so that the page is one self-contained file (next to its ``thumbs/``) that opens from disk.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Sequence
from typing import Any

import jinja2
import numpy as np
from markupsafe import Markup

from gcdr_tools.gallery.config import InspectConfig
from gcdr_tools.gallery.persons import GalleryColumn, GalleryPerson, page_order_key, page_orders, sort_persons
from gcdr_tools.gallery.tiles import (
    BODY_BOX_RGB,
    HEAD_BOX_RGB,
    INVALID_RGB,
    PREDICTION_RGB,
    colormap_lut,
    person_rgb,
)

PAGE_TEMPLATE = "page.html.j2"
STYLESHEET = "gallery.css"
SCRIPT = "gallery.js"


def metric(value: float | None, digits: int = 3) -> str:
    """A metric as the page shows it: 3 decimals, "–" when there is none."""
    return "–" if value is None else f"{value:.{digits}f}"


def thousands(value: int) -> str:
    return f"{value:,}"


@functools.lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    """The templates of this package (autoescaped; an undefined name is an error)."""
    env = jinja2.Environment(loader=jinja2.PackageLoader("gcdr_tools.gallery", "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                             keep_trailing_newline=True)
    env.filters.update(metric=metric, thousands=thousands)
    return env


def template_text(name: str) -> str:
    """A template file's text as it is (the stylesheet and the script are inlined, not rendered)."""
    env = environment()
    return env.loader.get_source(env, name)[0]  # type: ignore[union-attr]


def _inline(name: str, closing_tag: str) -> Markup:
    text = template_text(name)
    if closing_tag in text.lower():
        raise ValueError(f"{name} contains {closing_tag!r}: it cannot be inlined into the page")
    return Markup(text)


def json_for_script(obj: Any) -> str:
    """JSON safe inside <script>: no "</script>", no HTML-significant characters."""
    text = json.dumps(obj, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _rgb(colour_index: int) -> str:
    return "rgb({},{},{})".format(*person_rgb(colour_index))


def _person_record(person: GalleryPerson) -> dict[str, Any]:
    return {
        "id": person.sample_id, "image": person.image_path, "answer": person.answer, "noun": person.key_noun,
        "name": person.name, "colour": _rgb(person.colour_index),
        "others": [{"name": o.name, "colour": _rgb(o.colour_index)} for o in person.others],
        "gt": person.gaze_points_norm is not None, "target": person.has_target, "inout": person.inout,
        "valid": person.valid, "reason": person.invalid_reason,
        "l2": [None if v is None else round(v, 4) for v in person.l2],
        "min_l2": [None if v is None else round(v, 4) for v in person.min_l2],
        "auc": [None if v is None else round(v, 4) for v in person.auc],
        "thumbs": person.thumbs, "wh": list(person.tile_wh), "image_error": person.image_error,
    }


def order_records(columns: Sequence[GalleryColumn], persons: Sequence[GalleryPerson],
                  labelled: bool = True) -> list[dict[str, Any]]:
    """The page's sort menu: per order its key, label and ``index``, the persons in that order as positions
    in ``persons`` (sorted here by ``sort_persons``, so the page never re-implements an order); without gaze
    labels (``labelled`` False) no order by error."""
    position = {p.sample_id: i for i, p in enumerate(persons)}
    return [{"key": o.key, "label": o.label,
             "index": [position[p.sample_id] for p in sort_persons(persons, o.order, o.column)]}
            for o in page_orders([c.name for c in columns], labelled)]


def _legend(colormap: str, persons: Sequence[GalleryPerson]) -> dict[str, Any]:
    lut = colormap_lut(colormap)
    stops = ", ".join(f"rgb({r},{g},{b}) {100 * i / 10:.0f}%" for i, (r, g, b) in
                      enumerate(lut[np.linspace(0, 255, 11).round().astype(int)]))
    rgb = "rgb({},{},{})".format
    names = sorted({(p.colour_index, p.name) for p in persons if p.name})
    return {"colormap": colormap, "stops": stops, "head_box": rgb(*HEAD_BOX_RGB), "body_box": rgb(*BODY_BOX_RGB),
            "prediction": rgb(*PREDICTION_RGB), "invalid": rgb(*INVALID_RGB),
            "persons": [{"name": n, "colour": _rgb(i)} for i, n in names] if len(names) <= 12 else []}


def render_html(title: str, columns: Sequence[GalleryColumn], persons: Sequence[GalleryPerson],
                summary: dict[str, Any], config: InspectConfig, sampling_note: str, ground_truth_note: str,
                labelled: bool = True) -> str:
    """The whole index.html: summary, legend and inline JSON data: the persons (in ``persons`` order, the
    initial order of the page) and every sort order; the inline script filters and paginates. Without gaze
    labels (``labelled`` False) the page has no metric columns and no orders by error, and says so."""
    data = {
        "title": title, "columns": [{"name": c.name, "folder": str(c.folder)} for c in columns],
        "persons": [_person_record(p) for p in persons], "orders": order_records(columns, persons, labelled),
        "per_page": config.per_page, "sort": page_order_key(config.sort), "thumb_px": config.thumb_px,
        "labels": labelled,
    }
    return environment().get_template(PAGE_TEMPLATE).render(
        title=title, columns=columns, created=time.strftime("%Y-%m-%d %H:%M"), summary=summary, labelled=labelled,
        sampling_note=sampling_note, ground_truth_note=ground_truth_note, legend=_legend(config.colormap, persons),
        css=_inline(STYLESHEET, "</style"), js=_inline(SCRIPT, "</script"), data_json=Markup(json_for_script(data)))
