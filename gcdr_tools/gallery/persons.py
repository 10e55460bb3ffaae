"""The gallery's persons: which ones are shown, their ground truth, validity, argmax point and errors per
column, and every order they can be shown in (the page receives these orders as data)."""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gcdr.data.sample import IN_FRAME, INOUT_UNKNOWN, PersonSample
from gcdr.errors import UserError
from gcdr.heatmaps import argmax_point_norm
from gcdr.pseudolabels import PseudoLabelFolder

log = logging.getLogger(__name__)

SORT_ORDERS = ("worst", "best", "id", "invalid", "random")  # orders of the first column (config, CLI)
COMPARISON_ORDERS = ("gain", "loss")  # L2(first column) - L2(column), for a column other than the first
ERROR_ORDERS = ("worst", "best", *COMPARISON_ORDERS)  # need a gaze label: absent when no person has one
GROUND_TRUTH_SPLITS = ("unlabeled", "labeled", "test", "train")


@dataclass
class GalleryColumn:
    """One compared pseudo-label folder; ``name`` labels its column (the folder name, made unique)."""

    name: str
    folder: Path
    labels: PseudoLabelFolder


@dataclass(frozen=True)
class PersonInImage:
    """Another person of the same image, drawn thinly in its own colour on a person's tiles."""

    name: str
    colour_index: int
    head_box_xyxy_px: tuple[float, float, float, float]


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
    name: str = ""  # who in the image: "person1" (head-box file stem), a VAT track's person, else "person N"
    colour_index: int = 0  # one colour per name (tiles.person_rgb), the same in every image
    others: list[PersonInImage] = field(default_factory=list)  # the other persons of the same image

    @property
    def label(self) -> str:
        """What the tiles write beside the head box: the name and the key noun (or a short answer)."""
        said = self.key_noun or (self.answer if len(self.answer) <= 24 else self.answer[:23] + "…")
        return f"{self.name} · {said}" if said else self.name

    @property
    def has_target(self) -> bool:
        """True when the person has an in-frame ground-truth gaze point (errors are defined)."""
        return self.gaze_points_norm is not None and self.inout == IN_FRAME and len(self.gaze_points_norm) > 0

    @property
    def invalid_anywhere(self) -> bool:
        return not all(self.valid)


# ----------------------------------------------------------------------------------------------------------
# persons and errors


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
        if not (path / "parts").is_dir():
            what = "does not exist" if not path.exists() else "is not a pseudo-label folder (no parts/)"
            raise UserError(f"pseudo-label folder {path} {what}; make one with `make gradcam` (Grad-CAM maps) "
                            "or `make refine` (refined maps)")
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
    name_persons(persons, columns[0])
    return persons


def _name_from_id(sample_id: str, image_path: str) -> str:
    """The person's name when the sample id carries one, else ""."""
    image_name = Path(image_path).name
    head, sep, tail = sample_id.rpartition("|")
    if sep and tail and Path(head).name == image_name:
        return tail  # head-box files: "<frame>|<head-box file stem>"
    parts = sample_id.split("/")
    if len(parts) >= 2 and parts[-1] == image_name:
        return parts[-2]  # VideoAttentionTarget: "<show>/<clip>/<person>/<frame>"
    return ""


def name_persons(persons: Sequence[GalleryPerson], first: GalleryColumn) -> None:
    """Fill ``name``, ``colour_index`` and ``others`` of each person, from the first folder's manifest (every
    person of an image, shown or not). Names come from the sample ids (head-box file stems, VAT persons);
    persons whose ids name nobody (GazeFollow) are "person 1", "person 2", ... from left to right in their
    image. Colours follow the sorted names, so "person1" has one colour in every image."""
    manifest = first.labels.manifest
    ids = manifest["sample_id"].astype(str).tolist()
    images = manifest["image_path"].astype(str).tolist()
    boxes = manifest[["head_x1_px", "head_y1_px", "head_x2_px", "head_y2_px"]].to_numpy(np.float64)  # [N, 4]
    rows_of_image: dict[str, list[int]] = {}
    for row, image_path in enumerate(images):
        rows_of_image.setdefault(image_path, []).append(row)
    names: dict[str, str] = {}
    for image_path, rows in rows_of_image.items():
        rows.sort(key=lambda r: (np.nan_to_num(boxes[r, 0], nan=np.inf), ids[r]))  # left to right
        for rank, row in enumerate(rows, start=1):
            names[ids[row]] = _name_from_id(ids[row], image_path) or f"person {rank}"
    colour_of = {name: i for i, name in enumerate(sorted(set(names.values())))}
    row_of = {sample_id: row for row, sample_id in enumerate(ids)}
    for person in persons:
        person.name = names.get(person.sample_id, "")
        person.colour_index = colour_of.get(person.name, 0)
        row = row_of.get(person.sample_id)
        person.others = []
        for other in rows_of_image.get(images[row], []) if row is not None else []:
            box = _box_or_none(boxes[other].tolist())
            if ids[other] != person.sample_id and box is not None:
                person.others.append(PersonInImage(names[ids[other]], colour_of[names[ids[other]]], box))


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
# orders: the only definition; the HTML page gets each order as a list of positions and never re-sorts


def sort_persons(persons: Sequence[GalleryPerson], order: str = "worst", column: int = 0) -> list[GalleryPerson]:
    """Persons in a gallery order (ties and persons without a value follow by sample id).

    worst / best: L2 error of ``column`` descending / ascending, persons without an error last;
    gain / loss (``column`` > 0): L2(first column) - L2(``column``) descending / ascending, i.e. the persons
    most improved / most worsened by ``column``, persons without both errors last;
    id: sample id; invalid: persons invalid in any column first, grouped by reason; random: the seeded rank.
    """
    if order in COMPARISON_ORDERS:
        if not 0 < column:
            raise ValueError(f"sort order {order!r} compares a column with the first one; got column {column}")
    elif order not in SORT_ORDERS:
        raise ValueError(f"unknown sort order {order!r}; known: {SORT_ORDERS + COMPARISON_ORDERS}")
    if order in ("worst", "best", "gain", "loss"):
        sign = -1.0 if order in ("worst", "gain") else 1.0

        def value(p: GalleryPerson) -> float | None:
            if order in ("worst", "best"):
                return p.l2[column]
            first, other = p.l2[0], p.l2[column]
            return None if first is None or other is None else first - other

        def key(p: GalleryPerson) -> tuple:
            v = value(p)
            return (v is None, sign * (v or 0.0), p.sample_id)
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


@dataclass(frozen=True)
class PageOrder:
    """One entry of the page's sort menu: ``sort_persons(persons, order, column)`` under ``key``."""

    key: str  # stable name, also kept in the page's URL
    label: str
    order: str
    column: int = 0


def page_orders(column_names: Sequence[str], labelled: bool = True) -> list[PageOrder]:
    """The sort menu of the page: per column worst / best, per later column gain / loss against the first
    (only when some person has a gaze label: ``labelled``), then invalid, id, random."""
    orders = []
    for i, name in enumerate(column_names if labelled else []):
        orders.append(PageOrder(f"worst:{i}", f"L2, worst first \u2014 {name}", "worst", i))
        orders.append(PageOrder(f"best:{i}", f"L2, best first \u2014 {name}", "best", i))
    for i, name in enumerate(column_names[1:] if labelled else [], start=1):
        orders.append(PageOrder(f"gain:{i}", f"most improved by {name} vs {column_names[0]}", "gain", i))
        orders.append(PageOrder(f"loss:{i}", f"most worsened by {name} vs {column_names[0]}", "loss", i))
    orders.append(PageOrder("invalid", "invalid first (by reason)", "invalid"))
    orders.append(PageOrder("id", "sample id", "id"))
    orders.append(PageOrder("random", "random (seeded)", "random"))
    return orders


def page_order_key(order: str) -> str:
    """The page's menu key of a config order (``sort``): the error orders are those of the first column."""
    return f"{order}:0" if order in ("worst", "best") else order
