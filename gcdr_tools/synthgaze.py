"""SynthGaze: synthetic gaze-following scenes written in the exact GazeFollow file format.

Every image shows 2-4 named objects from a fixed vocabulary (``OBJECT_NAMES``) on a cluttered, noisy background
and 1-3 cartoon persons (torso + head). A head is a skin-coloured disc whose face points where the person looks:
hair covers the back of the head, the eyes sit on the front half and a nose wedge sticks out along the gaze
direction. In-frame persons look at one object (the ``meta`` column says which, ``synth:target=<name>``);
out-of-frame persons look towards an image edge along a ray that passes no object (``synth:target=none``).
Because the ground truth is known, the VQA answer to "what is the person in the green bounding box looking at?"
is the target's name, and every stage of the pipeline can be checked against it.

That is version 1 (``synth.version: 1``, the default), which is easy: names are unique in an image (the answer
locates the target), no other object lies within 14 degrees of a gaze ray, heads are large. Version 2
(``synth.version: 2``) makes labels the bottleneck: 4-7 objects whose names repeat, distractors down to 6 degrees
from a gaze ray (half of them placed on purpose 6-18 degrees off one; the target is still the first object the
ray meets), heads of radius 4.5-8 % of the short side with a smaller nose and closer eyes, 1-4 persons (some
sharing a target), 0-2 plain or textured occluders (never over a face, a target's anchor or a gaze ray),
gradient / stripe / checker / noise backgrounds and objects of 8-22 % of the short side.

Layout of ``out_dir`` (GazeFollow's, plus GCDR's body-box files, docs/formats.md#gazefollow-files and #gcdr-persondet-files)::

    train/<8 digits>/<8 digits>.jpg, test2/<8 digits>/<8 digits>.jpg
    train_annotations_release.txt            17 columns, one row per person
    test_annotations_release.txt             16 columns, one row per (person, annotator); in-frame persons only
    train_annotations_release_persondet.txt  21 columns = 17 + body_x1, body_y1, body_x2, body_y2 (int px, -1 = none)
    test_annotations_release_persondet.txt   20 columns = 16 + body box
    synthgaze.json                           config, object vocabulary, counts (deterministic)
    provenance.json
    train_objects.jsonl, test_objects.jsonl  only with synth.write_objects: per image {"path", "objects": [{"name",
                                             "box_xyxy_px"}, ...]}, every drawn object (``read_objects``)

Everything is a function of ``SynthConfig``: each image is drawn from its own random generator seeded by
(seed, split, image index), so the same config gives the same files byte for byte (JPEGs at a fixed quality).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from gcdr.provenance import write_provenance

log = logging.getLogger(__name__)

GENERATOR_VERSION = 1  # bump when the rendering or the file contents change: existing datasets are regenerated
INFO_FILE = "synthgaze.json"
TRAIN_FILE = "train_annotations_release.txt"
TEST_FILE = "test_annotations_release.txt"
TRAIN_PERSONDET_FILE = "train_annotations_release_persondet.txt"
TEST_PERSONDET_FILE = "test_annotations_release_persondet.txt"
SPLIT_IMAGE_DIRS = {"train": "train", "test": "test2"}
SPLIT_CODES = {"train": 0, "test": 1}
SCENE_VERSIONS = (1, 2)  # synth.version: the scene design (not GENERATOR_VERSION, the code revision)
OBJECTS_FILE = "{split}_objects.jsonl"  # written when synth.write_objects
META_PREFIX = "synth:target="
NO_TARGET = "none"
IMAGES_PER_FOLDER = 1000


@dataclass
class SynthConfig:
    """The ``synth:`` section of the config.

    seed:                      everything is a deterministic function of it.
    train_persons:             persons (= rows) in the train file.
    test_persons:              persons in the test file (each with ``test_annotators`` rows).
    persons_per_image:         [min, max] persons drawn in one image.
    image_size:                [min, max] of each image side in pixels (width and height drawn independently).
    out_of_frame_fraction:     fraction of train persons looking outside the image (exact up to rounding).
    test_annotators:           rows per test person (gaze = target point + annotator noise).
    annotator_noise_sd:        sd of test annotators' gaze points, as a fraction of the image side.
    body_box_missing_fraction: fraction of persons whose persondet body box is absent (-1), like missed detections.
    jpeg_quality:              cv2 JPEG quality of the written images.
    version:                   scene design: 1 (easy, the original) or 2 (cluttered and subtle, see "Version 2").
                               Default persons_per_image (None): [1, 3] for version 1, [1, 4] for version 2.
    write_objects:             also write ``<split>_objects.jsonl``: every drawn object's name and box per image
                               (for grounding pretraining; see ``read_objects``).
    """

    seed: int = 0
    train_persons: int = 2000
    test_persons: int = 200
    persons_per_image: Sequence[int] | None = None
    image_size: Sequence[int] = (128, 256)
    out_of_frame_fraction: float = 0.1
    test_annotators: int = 10
    annotator_noise_sd: float = 0.025
    body_box_missing_fraction: float = 0.1
    jpeg_quality: int = 92
    version: int = 1
    write_objects: bool = False

    def __post_init__(self) -> None:
        if self.version not in SCENE_VERSIONS:
            raise ValueError(f"synth.version must be one of {list(SCENE_VERSIONS)}, got {self.version!r}")
        self.version = int(self.version)
        self.write_objects = bool(self.write_objects)
        if self.persons_per_image is None:
            self.persons_per_image = (1, 3) if self.version == 1 else (1, 4)
        self.persons_per_image = tuple(int(v) for v in self.persons_per_image)
        self.image_size = tuple(int(v) for v in self.image_size)
        lo, hi = self.persons_per_image
        most = 3 if self.version == 1 else 4
        if not 1 <= lo <= hi <= most:
            raise ValueError(f"synth.persons_per_image must be [min, max] within [1, {most}] for version "
                             f"{self.version}, got {list(self.persons_per_image)}")
        lo, hi = self.image_size
        if not 96 <= lo <= hi:
            raise ValueError(f"synth.image_size must be [min, max] with min >= 96 px, got {list(self.image_size)}")
        if not 0.0 <= self.out_of_frame_fraction < 1.0 or not 0.0 <= self.body_box_missing_fraction <= 1.0:
            raise ValueError("synth.out_of_frame_fraction must be in [0, 1) and body_box_missing_fraction in [0, 1]")
        if self.train_persons < 0 or self.test_persons < 0 or self.test_annotators < 1:
            raise ValueError("synth.train_persons/test_persons must be >= 0 and test_annotators >= 1")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (tuples as lists), as stored in ``synthgaze.json``.

        Fields added after version 1 (``version``, ``write_objects``) appear only when not at their defaults, so a
        version-1 dataset's ``synthgaze.json`` is byte for byte what it was, and existing folders stay current.
        """
        values = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}
        for key, default in _LATER_FIELDS.items():
            if values[key] == default:
                del values[key]
        return values


_LATER_FIELDS = {"version": 1, "write_objects": False}  # omitted from to_dict() at these values


# ----------------------------------------------------------------------------------------------------------------
# Object vocabulary: shape + colours (RGB). Each object has an "anchor": the point a person looks at, chosen
# inside the object's main coloured part so that the gaze point always falls on the drawn object.
# ----------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ObjectKind:
    name: str
    description: str
    aspect_w_over_h: float  # box shape
    scale: float            # multiplies the sampled size (larger side of the box)
    colours_rgb: dict[str, tuple[int, int, int]]


OBJECT_KINDS: dict[str, ObjectKind] = {k.name: k for k in (
    ObjectKind("ball", "red disc with a white band", 1.0, 0.95,
               {"main": (220, 35, 35), "band": (245, 245, 245), "outline": (120, 20, 20)}),
    ObjectKind("cup", "blue mug with a handle ring", 1.2, 1.0,
               {"main": (40, 90, 215), "rim": (25, 55, 140)}),
    ObjectKind("book", "wide orange cover with cream pages", 1.5, 1.05,
               {"main": (235, 135, 30), "pages": (245, 235, 205), "spine": (140, 75, 20), "title": (250, 205, 130)}),
    ObjectKind("lamp", "yellow shade on a dark pole and base", 0.7, 1.1,
               {"main": (245, 215, 40), "pole": (70, 70, 70)}),
    ObjectKind("plant", "green leaves over a terracotta pot", 0.75, 1.1,
               {"main": (45, 165, 50), "leaf2": (25, 115, 35), "pot": (190, 95, 60), "pot_rim": (145, 70, 45)}),
    ObjectKind("clock", "white dial, black rim and hands", 1.0, 0.95,
               {"main": (250, 250, 250), "ink": (20, 20, 20)}),
    ObjectKind("phone", "black slab with a cyan screen", 0.55, 0.95,
               {"main": (60, 215, 235), "body": (25, 25, 30)}),
    ObjectKind("bottle", "purple bottle with a white cap", 0.42, 1.15,
               {"main": (150, 50, 170), "cap": (240, 240, 240), "label": (230, 180, 240)}),
)}
OBJECT_NAMES: tuple[str, ...] = tuple(OBJECT_KINDS)

SKIN_RGB = ((255, 222, 185), (240, 196, 152), (205, 152, 112), (160, 112, 78), (112, 76, 52))
HAIR_RGB = ((30, 25, 22), (75, 48, 28), (125, 85, 45), (200, 170, 110), (150, 150, 150))


def target_name(sample_meta: str) -> str | None:
    """The target object's name from a meta column, ``"synth:target=cup"`` -> ``"cup"``.

    Returns None for out-of-frame persons (``synth:target=none``) and for meta text that is not SynthGaze's
    (real datasets have no known target). Raises ValueError for a SynthGaze meta naming an unknown object.
    """
    meta = sample_meta.strip()
    if not meta.startswith(META_PREFIX):
        return None
    name = meta[len(META_PREFIX):]
    if name == NO_TARGET:
        return None
    if name not in OBJECT_KINDS:
        raise ValueError(f"meta {sample_meta!r} names unknown object {name!r}; vocabulary: {list(OBJECT_NAMES)}")
    return name


# ----------------------------------------------------------------------------------------------------------------
# Drawing primitives: an object or a person is a list of primitives drawn twice, once in colour onto the image
# and once in white onto the object's mask, so the mask is exactly the drawn region.
# ----------------------------------------------------------------------------------------------------------------
# ("circle", (cx, cy), radius, role, thickness) | ("ellipse", (cx, cy), (ax, ay), angle, start, end, role, thickness)
# ("poly", [(x, y), ...], role) | ("line", (x1, y1), (x2, y2), role, thickness) | ("rect", (x1, y1, x2, y2), role)
Primitive = tuple


def _pt(p: Sequence[float]) -> tuple[int, int]:
    return int(round(p[0])), int(round(p[1]))


def _draw(canvas: np.ndarray, primitives: list[Primitive], colours: dict[str, tuple[int, ...]] | None) -> None:
    """Draw primitives onto ``canvas``; ``colours=None`` draws everything in 255 (for a [H, W] mask)."""
    for prim in primitives:
        kind = prim[0]
        if kind == "circle":
            _, centre, radius, role, thickness = prim
            colour = colours[role] if colours else 255
            cv2.circle(canvas, _pt(centre), max(1, int(round(radius))), colour, thickness, cv2.LINE_AA if colours else cv2.LINE_8)
        elif kind == "ellipse":
            _, centre, axes, angle, start, end, role, thickness = prim
            colour = colours[role] if colours else 255
            cv2.ellipse(canvas, _pt(centre), (max(1, int(round(axes[0]))), max(1, int(round(axes[1])))),
                        float(angle), float(start), float(end), colour, thickness, cv2.LINE_AA if colours else cv2.LINE_8)
        elif kind == "poly":
            _, points, role = prim
            colour = colours[role] if colours else 255
            cv2.fillPoly(canvas, [np.array([_pt(p) for p in points], np.int32)], colour,
                         cv2.LINE_AA if colours else cv2.LINE_8)
        elif kind == "line":
            _, p1, p2, role, thickness = prim
            colour = colours[role] if colours else 255
            cv2.line(canvas, _pt(p1), _pt(p2), colour, max(1, int(round(thickness))), cv2.LINE_AA if colours else cv2.LINE_8)
        elif kind == "rect":
            _, (x1, y1, x2, y2), role = prim
            colour = colours[role] if colours else 255
            cv2.rectangle(canvas, _pt((x1, y1)), _pt((x2, y2)), colour, -1)
        else:  # pragma: no cover - programming error
            raise ValueError(f"unknown primitive {kind!r}")


def _object_primitives(name: str, box: Sequence[float], rng: np.random.Generator) -> tuple[list[Primitive], tuple[float, float]]:
    """Primitives of one object inside ``box`` (x1, y1, x2, y2 px) and its anchor point (px)."""
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    if name == "ball":
        radius = min(w, h) / 2
        band_angle = rng.uniform(0, 180)
        return [("circle", (cx, cy), radius, "main", -1),
                ("ellipse", (cx, cy), (radius * 0.78, radius * 0.42), band_angle, 0, 360, "band", max(1, int(radius / 5))),
                ("circle", (cx, cy), radius, "outline", 1)], (cx, cy)
    if name == "cup":
        flip = rng.random() < 0.5
        body_w = 0.74 * w
        bx1 = x2 - body_w if flip else x1
        handle_cx = bx1 if flip else bx1 + body_w
        prims = [("ellipse", (handle_cx, cy + 0.05 * h), (0.22 * w, 0.25 * h), 0, 0, 360, "main", max(2, int(0.07 * w))),
                 ("rect", (bx1, y1 + 0.08 * h, bx1 + body_w, y2), "main"),
                 ("ellipse", (bx1 + body_w / 2, y1 + 0.08 * h), (body_w / 2, 0.08 * h), 0, 0, 360, "rim", -1)]
        return prims, (bx1 + body_w / 2, y1 + 0.55 * h)
    if name == "book":
        return [("rect", (x1, y1, x2, y2), "main"),
                ("rect", (x2 - 0.12 * w, y1 + 0.07 * h, x2, y2 - 0.07 * h), "pages"),
                ("line", (x1 + 0.06 * w, y1), (x1 + 0.06 * w, y2), "spine", max(1, 0.05 * w)),
                ("rect", (x1 + 0.25 * w, y1 + 0.15 * h, x1 + 0.7 * w, y1 + 0.3 * h), "title")], (x1 + 0.45 * w, y1 + 0.62 * h)
    if name == "lamp":
        shade_bottom = y1 + 0.45 * h
        return [("line", (cx, shade_bottom), (cx, y2 - 0.06 * h), "pole", max(2, 0.09 * w)),
                ("ellipse", (cx, y2 - 0.06 * h), (0.36 * w, 0.06 * h), 0, 0, 360, "pole", -1),
                ("poly", [(cx - 0.27 * w, y1), (cx + 0.27 * w, y1), (x2, shade_bottom), (x1, shade_bottom)], "main")], \
            (cx, y1 + 0.24 * h)
    if name == "plant":
        pot_top = y1 + 0.6 * h
        tilt = rng.uniform(20, 45)
        prims = [("ellipse", (cx - 0.24 * w, y1 + 0.38 * h), (0.26 * w, 0.1 * h), -tilt, 0, 360, "leaf2", -1),
                 ("ellipse", (cx + 0.24 * w, y1 + 0.38 * h), (0.26 * w, 0.1 * h), tilt, 0, 360, "leaf2", -1),
                 ("ellipse", (cx, y1 + 0.31 * h), (0.19 * w, 0.3 * h), 0, 0, 360, "main", -1),
                 ("poly", [(cx - 0.36 * w, pot_top), (cx + 0.36 * w, pot_top), (cx + 0.25 * w, y2), (cx - 0.25 * w, y2)], "pot"),
                 ("rect", (cx - 0.4 * w, pot_top - 0.02 * h, cx + 0.4 * w, pot_top + 0.08 * h), "pot_rim")]
        return prims, (cx, y1 + 0.3 * h)
    if name == "clock":
        radius = min(w, h) / 2
        a_hour, a_minute = rng.uniform(0, 2 * math.pi, size=2)
        return [("circle", (cx, cy), radius, "main", -1),
                ("circle", (cx, cy), radius * 0.92, "ink", max(2, int(radius * 0.16))),
                ("line", (cx, cy), (cx + 0.45 * radius * math.cos(a_hour), cy + 0.45 * radius * math.sin(a_hour)),
                 "ink", max(1, 0.1 * radius)),
                ("line", (cx, cy), (cx + 0.7 * radius * math.cos(a_minute), cy + 0.7 * radius * math.sin(a_minute)),
                 "ink", max(1, 0.07 * radius))], (cx, cy)
    if name == "phone":
        corner = 0.18 * w
        return [("rect", (x1 + corner, y1, x2 - corner, y2), "body"),
                ("rect", (x1, y1 + corner, x2, y2 - corner), "body"),
                ("circle", (x1 + corner, y1 + corner), corner, "body", -1),
                ("circle", (x2 - corner, y1 + corner), corner, "body", -1),
                ("circle", (x1 + corner, y2 - corner), corner, "body", -1),
                ("circle", (x2 - corner, y2 - corner), corner, "body", -1),
                ("rect", (x1 + 0.13 * w, y1 + 0.12 * h, x2 - 0.13 * w, y2 - 0.12 * h), "main")], (cx, cy)
    if name == "bottle":
        shoulder = y1 + 0.38 * h
        return [("rect", (x1, shoulder, x2, y2), "main"),
                ("ellipse", (cx, shoulder), (w / 2, 0.08 * h), 0, 180, 360, "main", -1),
                ("rect", (cx - 0.2 * w, y1 + 0.1 * h, cx + 0.2 * w, shoulder), "main"),
                ("rect", (cx - 0.25 * w, y1, cx + 0.25 * w, y1 + 0.12 * h), "cap"),
                ("rect", (x1, y1 + 0.8 * h, x2, y1 + 0.9 * h), "label")], (cx, y1 + 0.6 * h)
    raise ValueError(f"unknown object {name!r}; vocabulary: {list(OBJECT_NAMES)}")


def _jitter_colour(rgb: Sequence[int], rng: np.random.Generator, amount: int = 14) -> tuple[int, int, int]:
    offsets = rng.integers(-amount, amount + 1, size=3)
    return tuple(min(255, max(0, int(c) + int(o))) for c, o in zip(rgb, offsets))


# ----------------------------------------------------------------------------------------------------------------
# Scene description
# ----------------------------------------------------------------------------------------------------------------

@dataclass
class SynthObject:
    """One drawn object. ``mask`` [H, W] bool is exactly the pixels drawn for it."""

    name: str
    box_xyxy_px: tuple[float, float, float, float]
    anchor_xy_px: tuple[float, float]
    mask: np.ndarray = field(repr=False, default_factory=lambda: np.zeros((0, 0), bool))


@dataclass
class SynthPerson:
    """One drawn person. Directions are unit vectors in image coordinates (x right, y down)."""

    head_centre_px: tuple[float, float]
    head_radius_px: float
    head_box_xyxy_px: tuple[float, float, float, float]
    torso_box_xyxy_px: tuple[float, float, float, float]
    eye_xy_px: tuple[float, float]
    direction: tuple[float, float]
    gaze_xy_px: tuple[float, float]          # target anchor (in frame) or the edge point (out of frame)
    target: str | None                       # object name, None when out of frame
    body_box_xyxy_px: tuple[int, int, int, int] | None  # the persondet box (None = "not detected")
    target_index: int | None = None          # index of the target in SynthScene.objects (names may repeat in v2)

    @property
    def in_frame(self) -> bool:
        return self.target is not None


@dataclass
class SynthScene:
    """One rendered image: ``image_rgb`` [H, W, 3] uint8 plus everything drawn on it."""

    image_rgb: np.ndarray
    objects: list[SynthObject]
    persons: list[SynthPerson]
    occluder_masks: list[np.ndarray] = field(default_factory=list)  # [H, W] bool each (version 2)

    @property
    def size_wh(self) -> tuple[int, int]:
        return self.image_rgb.shape[1], self.image_rgb.shape[0]

    def target_of(self, person: SynthPerson) -> SynthObject | None:
        """The object ``person`` looks at (None when out of frame); unambiguous when names repeat (version 2)."""
        return None if person.target_index is None else self.objects[person.target_index]

    def object_named(self, name: str) -> SynthObject:
        """The first object called ``name`` (unique in version 1; use ``target_of`` in version 2)."""
        for obj in self.objects:
            if obj.name == name:
                return obj
        raise KeyError(f"no object {name!r} in this scene ({[o.name for o in self.objects]})")


class _LayoutFailed(Exception):
    pass


# ----------------------------------------------------------------------------------------------------------------
# Geometry helpers (all in pixels)
# ----------------------------------------------------------------------------------------------------------------

MIN_ANGLE_TO_DISTRACTOR_DEG = 14.0  # other objects are at least this far from a person's gaze ray
ITEM_MARGIN_PX = 2.0


def _boxes_overlap(a: Sequence[float], b: Sequence[float], margin: float = ITEM_MARGIN_PX) -> bool:
    return not (a[2] + margin <= b[0] or b[2] + margin <= a[0] or a[3] + margin <= b[1] or b[3] + margin <= a[1])


def _segment_hits_box(p0: Sequence[float], p1: Sequence[float], box: Sequence[float], margin: float = 1.0) -> bool:
    """Liang-Barsky: does the segment p0 -> p1 pass through ``box`` grown by ``margin``?"""
    x1, y1, x2, y2 = box[0] - margin, box[1] - margin, box[2] + margin, box[3] + margin
    dx, dy = p1[0] - p0[0], p1[1] - p0[1]
    t0, t1 = 0.0, 1.0
    for p, q in ((-dx, p0[0] - x1), (dx, x2 - p0[0]), (-dy, p0[1] - y1), (dy, y2 - p0[1])):
        if p == 0:
            if q < 0:
                return False
            continue
        t = q / p
        if p < 0:
            t0 = max(t0, t)
        else:
            t1 = min(t1, t)
        if t0 > t1:
            return False
    return True


def _angle_between_deg(u: Sequence[float], v: Sequence[float]) -> float:
    nu, nv = math.hypot(*u), math.hypot(*v)
    if nu == 0 or nv == 0:
        return 0.0
    cos = (u[0] * v[0] + u[1] * v[1]) / (nu * nv)
    return math.degrees(math.acos(max(-1.0, min(1.0, cos))))


def _ray_exit_point(origin: Sequence[float], direction: Sequence[float], width: int, height: int) -> tuple[float, float]:
    """Where the ray origin + t * direction (t > 0) leaves the image rectangle [0, W] x [0, H]."""
    ts = []
    if direction[0] > 1e-9:
        ts.append((width - origin[0]) / direction[0])
    elif direction[0] < -1e-9:
        ts.append(-origin[0] / direction[0])
    if direction[1] > 1e-9:
        ts.append((height - origin[1]) / direction[1])
    elif direction[1] < -1e-9:
        ts.append(-origin[1] / direction[1])
    t = min(ts)
    return (min(max(origin[0] + t * direction[0], 0.0), float(width)),
            min(max(origin[1] + t * direction[1], 0.0), float(height)))


# ----------------------------------------------------------------------------------------------------------------
# Layout: persons first, then each in-frame person's target, then distractors, then out-of-frame directions.
# ----------------------------------------------------------------------------------------------------------------

@dataclass
class _PersonDraft:
    centre: tuple[float, float]
    radius: float
    head_region: tuple[float, float, float, float]   # occupied by head + nose whatever the direction
    torso_box: tuple[float, float, float, float]
    in_frame: bool
    target_index: int | None = None
    direction: tuple[float, float] | None = None
    gaze_point: tuple[float, float] | None = None

    def eye(self, direction: Sequence[float]) -> tuple[float, float]:
        return self.centre[0] + 0.45 * self.radius * direction[0], self.centre[1] + 0.45 * self.radius * direction[1]


@dataclass
class _ObjectDraft:
    name: str
    box: tuple[float, float, float, float]
    primitives: list[Primitive]
    anchor: tuple[float, float]


def _gaze_ray_ok(person: _PersonDraft, persons: list[_PersonDraft], objects: list[_ObjectDraft],
                 direction: Sequence[float], end: Sequence[float], target_index: int | None) -> bool:
    """True when the ray from the face to ``end`` is unobstructed and no other object lies near the ray."""
    start = (person.centre[0] + 1.4 * person.radius * direction[0], person.centre[1] + 1.4 * person.radius * direction[1])
    for other in persons:
        if _segment_hits_box(start, end, other.torso_box):
            return False
        if other is not person and _segment_hits_box(start, end, other.head_region):
            return False
    eye = person.eye(direction)
    for index, obj in enumerate(objects):
        if index == target_index:
            continue
        if _segment_hits_box(start, end, obj.box, margin=2.0):
            return False
        to_obj = (obj.anchor[0] - eye[0], obj.anchor[1] - eye[1])
        if _angle_between_deg(direction, to_obj) < MIN_ANGLE_TO_DISTRACTOR_DEG:
            return False
    return True


def _all_in_frame_rays_ok(persons: list[_PersonDraft], objects: list[_ObjectDraft]) -> bool:
    for person in persons:
        if person.target_index is None:
            continue
        if not _gaze_ray_ok(person, persons, objects, person.direction, person.gaze_point, person.target_index):
            return False
    return True


def _sample_object(name: str, width: int, height: int, rng: np.random.Generator) -> tuple[float, float]:
    """(w, h) in pixels: larger side 12-20 % of the short image side times the object's scale."""
    kind = OBJECT_KINDS[name]
    size = min(width, height) * rng.uniform(0.12, 0.20) * kind.scale * rng.uniform(0.93, 1.07)
    aspect = kind.aspect_w_over_h * rng.uniform(0.9, 1.1)
    return (size, size / aspect) if aspect >= 1 else (size * aspect, size)


def _place_object(name: str, width: int, height: int, persons: list[_PersonDraft], objects: list[_ObjectDraft],
                  rng: np.random.Generator, accept, tries: int = 40) -> _ObjectDraft:
    """Random free position for a new object such that ``accept(draft)`` holds; raises _LayoutFailed."""
    obj_w, obj_h = _sample_object(name, width, height, rng)
    for _ in range(tries):
        x1 = rng.uniform(2, width - 2 - obj_w)
        y1 = rng.uniform(2, height - 2 - obj_h)
        box = (x1, y1, x1 + obj_w, y1 + obj_h)
        if any(_boxes_overlap(box, p.head_region) or _boxes_overlap(box, p.torso_box) for p in persons):
            continue
        if any(_boxes_overlap(box, o.box, margin=4.0) for o in objects):
            continue
        # the sub-generator keeps the primitives' random draws out of the placement loop's sequence
        primitives, anchor = _object_primitives(name, box, np.random.default_rng(rng.integers(2**32)))
        draft = _ObjectDraft(name, box, primitives, anchor)
        if accept(draft):
            return draft
    raise _LayoutFailed(f"no place for {name}")


def _layout(width: int, height: int, in_frame_flags: Sequence[bool], rng: np.random.Generator
            ) -> tuple[list[_PersonDraft], list[_ObjectDraft]]:
    short = min(width, height)
    persons: list[_PersonDraft] = []
    for in_frame in in_frame_flags:
        radius = short * rng.uniform(0.075, 0.10)
        for _ in range(40):
            cx = rng.uniform(1.5 * radius, width - 1.5 * radius)
            cy = rng.uniform(1.5 * radius, height - 1.7 * radius)
            head_region = (cx - 1.4 * radius, cy - 1.4 * radius, cx + 1.4 * radius, cy + 1.4 * radius)
            torso_box = (cx - 1.35 * radius, cy + 0.85 * radius, cx + 1.35 * radius, min(height, cy + 3.6 * radius))
            if any(_boxes_overlap(head_region, p.head_region) or _boxes_overlap(head_region, p.torso_box)
                   or _boxes_overlap(torso_box, p.head_region) or _boxes_overlap(torso_box, p.torso_box) for p in persons):
                continue
            persons.append(_PersonDraft((cx, cy), radius, head_region, torso_box, bool(in_frame)))
            break
        else:
            raise _LayoutFailed("no place for a person")

    n_in = sum(p.in_frame for p in persons)
    n_objects = int(rng.integers(max(2, n_in), 5))
    names = [str(n) for n in rng.permutation(OBJECT_NAMES)[:n_objects]]
    objects: list[_ObjectDraft] = []

    def aim(person: _PersonDraft, anchor: Sequence[float]) -> tuple[float, float] | None:
        dx, dy = anchor[0] - person.centre[0], anchor[1] - person.centre[1]
        dist = math.hypot(dx, dy)
        if dist < 2.8 * person.radius:
            return None
        return dx / dist, dy / dist

    for person in (p for p in persons if p.in_frame):
        # look at a new object while names remain (distinct answers per person), else at an existing one
        if len(objects) < len(names):
            name = names[len(objects)]

            def accept(draft: _ObjectDraft, person=person) -> bool:
                direction = aim(person, draft.anchor)
                if direction is None:
                    return False
                person.target_index, person.direction, person.gaze_point = len(objects), direction, draft.anchor
                ok = _all_in_frame_rays_ok(persons, objects + [draft])
                if not ok:
                    person.target_index = person.direction = person.gaze_point = None
                return ok

            objects.append(_place_object(name, width, height, persons, objects, rng, accept))
        else:
            for index in rng.permutation(len(objects)):
                direction = aim(person, objects[index].anchor)
                if direction is None:
                    continue
                person.target_index, person.direction, person.gaze_point = int(index), direction, objects[index].anchor
                if _all_in_frame_rays_ok(persons, objects):
                    break
                person.target_index = person.direction = person.gaze_point = None
            else:
                raise _LayoutFailed("no visible target")

    for name in names[len(objects):]:
        objects.append(_place_object(name, width, height, persons, objects, rng,
                                     lambda draft: _all_in_frame_rays_ok(persons, objects + [draft])))

    for person in (p for p in persons if not p.in_frame):
        for _ in range(60):
            angle = rng.uniform(0, 2 * math.pi)
            direction = (math.cos(angle), math.sin(angle))
            edge_point = _ray_exit_point(person.eye(direction), direction, width, height)
            if _gaze_ray_ok(person, persons, objects, direction, edge_point, None):
                person.direction, person.gaze_point = direction, edge_point
                break
        else:
            raise _LayoutFailed("no free direction out of the frame")
    return persons, objects


# ----------------------------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------------------------

def _random_muted_rgb(rng: np.random.Generator, sat: tuple[float, float], val: tuple[float, float],
                      avoid_green: bool = False) -> tuple[int, int, int]:
    hue = rng.uniform(0, 360)
    if avoid_green and 75 <= hue <= 165:  # shirts never look like plants (or the VQA's green box)
        hue = (hue + 120) % 360
    hsv = np.array([[[hue / 2, rng.uniform(*sat) * 255, rng.uniform(*val) * 255]]], np.uint8)
    return tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0])


def _background(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """Two-tone gradient wall/floor with faint rectangles and lines (clutter), [H, W, 3] uint8."""
    top = np.array(_random_muted_rgb(rng, (0.05, 0.35), (0.55, 0.9)), np.float32)
    bottom = np.array(_random_muted_rgb(rng, (0.05, 0.35), (0.4, 0.75)), np.float32)
    ramp = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]  # [H, 1, 1]
    image = (top * (1 - ramp) + bottom * ramp) * np.ones((1, width, 1), np.float32)  # [H, W, 3]
    floor_y = int(height * rng.uniform(0.55, 0.8))
    image[floor_y:] *= rng.uniform(0.8, 0.95)
    image = np.clip(image, 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(3, 8))):
        colour = _jitter_colour(image[int(rng.integers(height)), int(rng.integers(width))], rng, 28)
        x1, y1 = int(rng.integers(0, width)), int(rng.integers(0, height))
        if rng.random() < 0.6:
            w, h = int(rng.integers(width // 10, width // 3)), int(rng.integers(height // 10, height // 3))
            cv2.rectangle(image, (x1, y1), (x1 + w, y1 + h), colour, -1 if rng.random() < 0.5 else 2)
        else:
            x2, y2 = int(rng.integers(0, width)), int(rng.integers(0, height))
            cv2.line(image, (x1, y1), (x2, y2), colour, int(rng.integers(1, 4)), cv2.LINE_AA)
    cv2.line(image, (0, floor_y), (width, floor_y), tuple(int(c * 0.8) for c in image[floor_y, 0]), 1)
    return image


def _person_primitives(person: _PersonDraft) -> list[Primitive]:
    """Neck, torso and head; the face (eyes, nose) points along ``person.direction`` and hair covers the back."""
    (cx, cy), r = person.centre, person.radius
    dx, dy = person.direction
    px, py = -dy, dx  # perpendicular
    shoulder_y = cy + 1.35 * r
    bottom_y = person.torso_box[3] + 2
    face_angle = math.degrees(math.atan2(dy, dx))
    eye_centres = [(cx + 0.45 * r * dx + s * 0.34 * r * px, cy + 0.45 * r * dy + s * 0.34 * r * py) for s in (-1, 1)]
    prims: list[Primitive] = [
        ("rect", (cx - 0.3 * r, cy + 0.5 * r, cx + 0.3 * r, shoulder_y), "skin"),
        ("ellipse", (cx, shoulder_y), (1.15 * r, 0.5 * r), 0, 180, 360, "shirt", -1),
        ("poly", [(cx - 1.15 * r, shoulder_y), (cx + 1.15 * r, shoulder_y), (cx + 1.3 * r, bottom_y), (cx - 1.3 * r, bottom_y)], "shirt"),
        ("circle", (cx, cy), r, "skin", -1),
        ("ellipse", (cx, cy), (r, r), face_angle, 105, 255, "hair", -1),
        ("poly", [(cx + 1.32 * r * dx, cy + 1.32 * r * dy), (cx + 0.75 * r * dx + 0.24 * r * px, cy + 0.75 * r * dy + 0.24 * r * py),
                  (cx + 0.75 * r * dx - 0.24 * r * px, cy + 0.75 * r * dy - 0.24 * r * py)], "nose"),
    ]
    for ex, ey in eye_centres:
        prims.append(("circle", (ex, ey), max(1.2, 0.19 * r), "eye_white", -1))
        prims.append(("circle", (ex + 0.08 * r * dx, ey + 0.08 * r * dy), max(1.0, 0.1 * r), "pupil", -1))
    return prims


def _finish_person(person: _PersonDraft, width: int, height: int, rng: np.random.Generator,
                   body_missing_fraction: float, objects: list[_ObjectDraft], nose_length: float = 1.32) -> SynthPerson:
    (cx, cy), r = person.centre, person.radius
    dx, dy = person.direction
    nose_tip = (cx + nose_length * r * dx, cy + nose_length * r * dy)
    slop = rng.uniform(0.02, 0.12, size=4) * r  # annotators draw boxes a little loosely
    head_box = (max(0.0, min(cx - r, nose_tip[0]) - slop[0]), max(0.0, min(cy - r, nose_tip[1]) - slop[1]),
                min(width - 1.0, max(cx + r, nose_tip[0]) + slop[2]), min(height - 1.0, max(cy + r, nose_tip[1]) + slop[3]))
    body = None
    if rng.random() >= body_missing_fraction:
        tx1, ty1, tx2, ty2 = person.torso_box
        body = (max(0, math.floor(min(tx1, head_box[0]))), max(0, math.floor(min(ty1, head_box[1]))),
                min(width - 1, math.ceil(max(tx2, head_box[2]))), min(height - 1, math.ceil(max(ty2, head_box[3]))))
    target = objects[person.target_index].name if person.target_index is not None else None
    return SynthPerson(head_centre_px=(cx, cy), head_radius_px=r, head_box_xyxy_px=head_box,
                       torso_box_xyxy_px=person.torso_box, eye_xy_px=person.eye(person.direction),
                       direction=(dx, dy), gaze_xy_px=tuple(person.gaze_point), target=target, body_box_xyxy_px=body,
                       target_index=person.target_index)


def _find_layout(layout, config: SynthConfig, split: str, image_index: int, in_frame_flags: Sequence[bool],
                 rng: np.random.Generator) -> tuple[int, int, list, list]:
    """(width, height, person drafts, object drafts) of the first image size for which ``layout`` succeeds and
    every person's eye x (6 decimals, with the path the test file's person key) is distinct."""
    lo, hi = config.image_size
    for _attempt in range(300):
        width, height = int(rng.integers(lo, hi + 1)), int(rng.integers(lo, hi + 1))
        try:
            drafts, object_drafts = layout(width, height, in_frame_flags, rng)
        except _LayoutFailed:
            continue
        eye_x_texts = [f"{p.eye(p.direction)[0] / width:.6f}" for p in drafts]
        if len(set(eye_x_texts)) == len(eye_x_texts):  # (path, eye_x) must identify a person
            return width, height, drafts, object_drafts
    raise RuntimeError(f"SynthGaze: no layout found for {split} image {image_index} with {len(in_frame_flags)} persons")


def _draw_objects(image: np.ndarray, object_drafts: list, rng: np.random.Generator) -> list[np.ndarray]:
    """Draw every object in its jittered colours onto ``image``; returns their exact masks ([H, W] bool each)."""
    masks = []
    for draft in object_drafts:
        colours = {role: _jitter_colour(rgb, rng) for role, rgb in OBJECT_KINDS[draft.name].colours_rgb.items()}
        _draw(image, draft.primitives, colours)
        mask = np.zeros(image.shape[:2], np.uint8)
        _draw(mask, draft.primitives, None)
        masks.append(mask > 0)
    return masks


def _person_colours(rng: np.random.Generator) -> dict[str, tuple[int, ...]]:
    skin = _jitter_colour(SKIN_RGB[int(rng.integers(len(SKIN_RGB)))], rng, 8)
    return {"skin": skin, "nose": tuple(int(c * 0.8) for c in skin),
            "hair": _jitter_colour(HAIR_RGB[int(rng.integers(len(HAIR_RGB)))], rng, 10),
            "shirt": _random_muted_rgb(rng, (0.25, 0.65), (0.3, 0.75), avoid_green=True),
            "eye_white": (250, 250, 250), "pupil": (15, 15, 15)}


def render_scene(config: SynthConfig, split: str, image_index: int, in_frame_flags: Sequence[bool]) -> SynthScene:
    """Draw image ``image_index`` of ``split`` ("train" | "test") with one person per flag (True = in frame).

    Deterministic in (config.seed, split, image_index, in_frame_flags, config.image_size).
    Returns the RGB image [H, W, 3] uint8, its objects (with exact masks) and persons (with their gaze truth).
    ``config.version`` 2 draws the cluttered scenes of ``_render_scene_v2``.
    """
    if config.version == 2:
        return _render_scene_v2(config, split, image_index, in_frame_flags)
    rng = np.random.default_rng([config.seed, SPLIT_CODES[split], image_index])
    width, height, drafts, object_drafts = _find_layout(_layout, config, split, image_index, in_frame_flags, rng)

    image = _background(width, height, rng)
    objects = [SynthObject(d.name, d.box, d.anchor, mask)
               for d, mask in zip(object_drafts, _draw_objects(image, object_drafts, rng))]
    persons = []
    for draft in drafts:
        colours = _person_colours(rng)
        _draw(image, _person_primitives(draft), colours)
        persons.append(_finish_person(draft, width, height, rng, config.body_box_missing_fraction, object_drafts))
    noise = rng.standard_normal(size=image.shape, dtype=np.float32) * rng.uniform(2.0, 5.0)  # [H, W, 3] sensor noise
    image = np.clip(image + noise, 0, 255).astype(np.uint8)
    return SynthScene(image, objects, persons)


# ----------------------------------------------------------------------------------------------------------------
# Version 2 (synth.version = 2): cluttered scenes in which the gaze direction, not the answer, locates the target.
# 4-7 objects with repeated names, distractors down to 6 degrees from a gaze ray (the target is still the first
# object the ray meets), small faces with small features, 1-4 persons, 0-2 occluders, textured backgrounds.
# Version 1's functions above are left as they are: version-1 datasets stay byte for byte the same.
# ----------------------------------------------------------------------------------------------------------------

V2_OBJECTS_PER_IMAGE = (4, 7)
V2_OBJECT_SIZE = (0.08, 0.22)            # larger side of an object box, fraction of the short side (x kind.scale)
V2_MIN_OBJECT_PX = 10.0                  # ... but at least this many pixels
V2_HEAD_RADIUS = (0.045, 0.08)           # fraction of the short side
V2_HEAD_REGION = 1.3                     # head + nose fit in a square of +- this many radii
V2_NOSE_LENGTH = 1.18                    # nose tip from the head centre, in radii (v1: 1.32)
V2_EYE_SPREAD = 0.26                     # eye centres +- this many radii across the face (v1: 0.34)
V2_MIN_ANGLE_TO_DISTRACTOR_DEG = 6.0     # v1: 14
V2_NEAR_RAY_FRACTION = 0.5               # distractors placed on purpose next to a gaze ray (6-18 degrees off it)
V2_NEAR_RAY_ANGLE_DEG = (6.0, 18.0)
V2_SHARED_TARGET_FRACTION = 0.25         # a further in-frame person looks at an object already looked at
V2_OCCLUDERS = (0, 2)
V2_OCCLUDER_SIZE = (0.12, 0.35)          # each side, fraction of the short side
V2_OCCLUDER_MIN_VISIBLE = 0.5            # every object keeps at least this fraction of its pixels visible


def _sample_object_v2(name: str, width: int, height: int, rng: np.random.Generator) -> tuple[float, float]:
    """(w, h) in pixels: larger side 8-22 % of the short image side times the object's scale (>= 10 px)."""
    kind = OBJECT_KINDS[name]
    size = max(V2_MIN_OBJECT_PX, min(width, height) * rng.uniform(*V2_OBJECT_SIZE) * kind.scale * rng.uniform(0.93, 1.07))
    aspect = kind.aspect_w_over_h * rng.uniform(0.9, 1.1)
    return (size, size / aspect) if aspect >= 1 else (size * aspect, size)


def _gaze_ray_ok_v2(person: _PersonDraft, persons: list[_PersonDraft], objects: list[_ObjectDraft],
                    direction: Sequence[float], end: Sequence[float], target_index: int | None) -> bool:
    """Like ``_gaze_ray_ok`` with distractors allowed down to 6 degrees from the ray; objects are checked from the
    eye on, so the target (or, out of frame, nothing) is the first object the ray meets."""
    start = (person.centre[0] + 1.4 * person.radius * direction[0], person.centre[1] + 1.4 * person.radius * direction[1])
    for other in persons:
        if _segment_hits_box(start, end, other.torso_box):
            return False
        if other is not person and _segment_hits_box(start, end, other.head_region):
            return False
    eye = person.eye(direction)
    for index, obj in enumerate(objects):
        if index == target_index:
            continue
        if _segment_hits_box(eye, end, obj.box, margin=2.0):
            return False
        to_obj = (obj.anchor[0] - eye[0], obj.anchor[1] - eye[1])
        if _angle_between_deg(direction, to_obj) < V2_MIN_ANGLE_TO_DISTRACTOR_DEG:
            return False
    return True


def _all_in_frame_rays_ok_v2(persons: list[_PersonDraft], objects: list[_ObjectDraft]) -> bool:
    return all(_gaze_ray_ok_v2(p, persons, objects, p.direction, p.gaze_point, p.target_index)
               for p in persons if p.target_index is not None)


def _place_object_v2(name: str, width: int, height: int, persons: list[_PersonDraft], objects: list[_ObjectDraft],
                     rng: np.random.Generator, accept, near_ray: _PersonDraft | None = None,
                     tries: int = 40) -> _ObjectDraft:
    """Like ``_place_object``; with ``near_ray`` the box centre is drawn 6-18 degrees off that person's gaze ray
    (at 0.4-1.6 times the target's distance), a near miss that only the exact direction tells apart."""
    obj_w, obj_h = _sample_object_v2(name, width, height, rng)
    for _ in range(tries):
        if near_ray is None:
            x1, y1 = rng.uniform(2, width - 2 - obj_w), rng.uniform(2, height - 2 - obj_h)
        else:
            eye = near_ray.eye(near_ray.direction)
            reach = math.dist(eye, near_ray.gaze_point) * rng.uniform(0.4, 1.6)
            angle = math.atan2(near_ray.direction[1], near_ray.direction[0]) \
                + math.radians(rng.uniform(*V2_NEAR_RAY_ANGLE_DEG)) * (1 if rng.random() < 0.5 else -1)
            x1 = eye[0] + reach * math.cos(angle) - obj_w / 2
            y1 = eye[1] + reach * math.sin(angle) - obj_h / 2
            if not (2 <= x1 <= width - 2 - obj_w and 2 <= y1 <= height - 2 - obj_h):
                continue
        box = (x1, y1, x1 + obj_w, y1 + obj_h)
        if any(_boxes_overlap(box, p.head_region) or _boxes_overlap(box, p.torso_box) for p in persons):
            continue
        if any(_boxes_overlap(box, o.box, margin=3.0) for o in objects):
            continue
        primitives, anchor = _object_primitives(name, box, np.random.default_rng(rng.integers(2**32)))
        draft = _ObjectDraft(name, box, primitives, anchor)
        if accept(draft):
            return draft
    raise _LayoutFailed(f"no place for {name}")


def _layout_v2(width: int, height: int, in_frame_flags: Sequence[bool], rng: np.random.Generator
               ) -> tuple[list[_PersonDraft], list[_ObjectDraft]]:
    short = min(width, height)
    reg = V2_HEAD_REGION
    persons: list[_PersonDraft] = []
    for in_frame in in_frame_flags:
        radius = short * rng.uniform(*V2_HEAD_RADIUS)
        for _ in range(60):
            cx = rng.uniform(reg * radius + 1, width - reg * radius - 1)
            cy = rng.uniform(reg * radius + 1, height - 1.6 * radius)
            head_region = (cx - reg * radius, cy - reg * radius, cx + reg * radius, cy + reg * radius)
            torso_box = (cx - 1.35 * radius, cy + 0.85 * radius, cx + 1.35 * radius, min(height, cy + 3.6 * radius))
            if any(_boxes_overlap(head_region, p.head_region) or _boxes_overlap(head_region, p.torso_box)
                   or _boxes_overlap(torso_box, p.head_region) or _boxes_overlap(torso_box, p.torso_box) for p in persons):
                continue
            persons.append(_PersonDraft((cx, cy), radius, head_region, torso_box, bool(in_frame)))
            break
        else:
            raise _LayoutFailed("no place for a person")

    n_objects = int(rng.integers(V2_OBJECTS_PER_IMAGE[0], V2_OBJECTS_PER_IMAGE[1] + 1))
    names = [OBJECT_NAMES[int(i)] for i in rng.integers(len(OBJECT_NAMES), size=n_objects)]  # repeats allowed
    objects: list[_ObjectDraft] = []

    def aim(person: _PersonDraft, anchor: Sequence[float]) -> tuple[float, float] | None:
        dx, dy = anchor[0] - person.centre[0], anchor[1] - person.centre[1]
        dist = math.hypot(dx, dy)
        if dist < 2.8 * person.radius:
            return None
        return dx / dist, dy / dist

    def look(person: _PersonDraft, index: int | None, anchor: Sequence[float] | None = None) -> None:
        direction = None if anchor is None else aim(person, anchor)
        if direction is None:
            person.target_index = person.direction = person.gaze_point = None
        else:
            person.target_index, person.direction, person.gaze_point = index, direction, tuple(anchor)

    for person in (p for p in persons if p.in_frame):
        if objects and rng.random() < V2_SHARED_TARGET_FRACTION:  # joint attention on an existing object
            for index in rng.permutation(len(objects)):
                look(person, int(index), objects[int(index)].anchor)
                if person.direction is not None and _all_in_frame_rays_ok_v2(persons, objects):
                    break
                look(person, None)
        if person.direction is None:
            def accept(draft: _ObjectDraft, person=person) -> bool:
                look(person, len(objects), draft.anchor)
                ok = person.direction is not None and _all_in_frame_rays_ok_v2(persons, objects + [draft])
                if not ok:
                    look(person, None)
                return ok

            objects.append(_place_object_v2(names[len(objects)], width, height, persons, objects, rng, accept))

    lookers = [p for p in persons if p.in_frame]
    for name in names[len(objects):]:
        near = lookers[int(rng.integers(len(lookers)))] if lookers and rng.random() < V2_NEAR_RAY_FRACTION else None
        accept = lambda draft: _all_in_frame_rays_ok_v2(persons, objects + [draft])  # noqa: E731
        try:
            objects.append(_place_object_v2(name, width, height, persons, objects, rng, accept, near_ray=near))
        except _LayoutFailed:
            if near is None:
                raise
            objects.append(_place_object_v2(name, width, height, persons, objects, rng, accept))

    for person in (p for p in persons if not p.in_frame):
        for _ in range(60):
            angle = rng.uniform(0, 2 * math.pi)
            direction = (math.cos(angle), math.sin(angle))
            edge_point = _ray_exit_point(person.eye(direction), direction, width, height)
            if _gaze_ray_ok_v2(person, persons, objects, direction, edge_point, None):
                person.direction, person.gaze_point = direction, edge_point
                break
        else:
            raise _LayoutFailed("no free direction out of the frame")
    return persons, objects


def _texture(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """A random [H, W] float32 pattern in [0, 1]: linear gradient, stripes, checker or smooth noise."""
    kind = int(rng.integers(4))
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, math.pi)
    u = xs * math.cos(angle) + ys * math.sin(angle)  # [H, W] coordinate across the pattern
    if kind == 0:  # gradient
        return (u - u.min()) / max(float(u.max() - u.min()), 1.0)
    if kind == 1:  # stripes, hard or soft
        period = rng.uniform(4.0, 0.25 * min(width, height))
        wave = 0.5 + 0.5 * np.sin(2 * math.pi * u / period + rng.uniform(0, 2 * math.pi))
        return (wave > 0.5).astype(np.float32) if rng.random() < 0.5 else wave
    if kind == 2:  # checker (possibly rotated)
        cell = rng.uniform(4.0, 0.2 * min(width, height))
        v = -xs * math.sin(angle) + ys * math.cos(angle)
        return ((np.floor(u / cell) + np.floor(v / cell)) % 2).astype(np.float32)
    grid = rng.random((int(rng.integers(2, 9)), int(rng.integers(2, 9)))).astype(np.float32)  # smooth noise
    smooth = cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)
    fine = cv2.resize(rng.random((max(2, height // 4), max(2, width // 4))).astype(np.float32), (width, height),
                      interpolation=cv2.INTER_LINEAR)
    return np.clip(0.75 * smooth + 0.25 * fine, 0.0, 1.0)


def _background_v2(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """A textured wall (gradient / stripes / checker / noise at a random scale and in random muted colours), an
    optional floor band and a few faint clutter shapes, [H, W, 3] uint8."""
    first = np.array(_random_muted_rgb(rng, (0.05, 0.45), (0.4, 0.9)), np.float32)
    second = np.array(_random_muted_rgb(rng, (0.05, 0.45), (0.4, 0.9)), np.float32)
    second = first + (second - first) * rng.uniform(0.3, 0.8)  # moderate contrast: objects stay visible
    t = _texture(width, height, rng)[:, :, None]  # [H, W, 1]
    image = first * (1 - t) + second * t  # [H, W, 3]
    if rng.random() < 0.5:  # floor band
        floor_y = int(height * rng.uniform(0.55, 0.8))
        image[floor_y:] *= rng.uniform(0.75, 0.95)
    image = np.clip(image, 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(2, 7))):
        colour = _jitter_colour(image[int(rng.integers(height)), int(rng.integers(width))], rng, 28)
        x1, y1 = int(rng.integers(0, width)), int(rng.integers(0, height))
        if rng.random() < 0.6:
            w, h = int(rng.integers(width // 10, width // 3)), int(rng.integers(height // 10, height // 3))
            cv2.rectangle(image, (x1, y1), (x1 + w, y1 + h), colour, -1 if rng.random() < 0.5 else 2)
        else:
            x2, y2 = int(rng.integers(0, width)), int(rng.integers(0, height))
            cv2.line(image, (x1, y1), (x2, y2), colour, int(rng.integers(1, 4)), cv2.LINE_AA)
    return image


def _person_primitives_v2(person: _PersonDraft) -> list[Primitive]:
    """Version 1's person with a smaller face cue: a shorter, narrower nose and eyes closer together."""
    (cx, cy), r = person.centre, person.radius
    dx, dy = person.direction
    px, py = -dy, dx  # perpendicular
    shoulder_y = cy + 1.35 * r
    bottom_y = person.torso_box[3] + 2
    face_angle = math.degrees(math.atan2(dy, dx))
    eye_centres = [(cx + 0.45 * r * dx + s * V2_EYE_SPREAD * r * px, cy + 0.45 * r * dy + s * V2_EYE_SPREAD * r * py)
                   for s in (-1, 1)]
    tip, base, half = V2_NOSE_LENGTH * r, 0.82 * r, 0.17 * r
    prims: list[Primitive] = [
        ("rect", (cx - 0.3 * r, cy + 0.5 * r, cx + 0.3 * r, shoulder_y), "skin"),
        ("ellipse", (cx, shoulder_y), (1.15 * r, 0.5 * r), 0, 180, 360, "shirt", -1),
        ("poly", [(cx - 1.15 * r, shoulder_y), (cx + 1.15 * r, shoulder_y), (cx + 1.3 * r, bottom_y), (cx - 1.3 * r, bottom_y)], "shirt"),
        ("circle", (cx, cy), r, "skin", -1),
        ("ellipse", (cx, cy), (r, r), face_angle, 105, 255, "hair", -1),
        ("poly", [(cx + tip * dx, cy + tip * dy), (cx + base * dx + half * px, cy + base * dy + half * py),
                  (cx + base * dx - half * px, cy + base * dy - half * py)], "nose"),
    ]
    for ex, ey in eye_centres:
        prims.append(("circle", (ex, ey), max(1.0, 0.15 * r), "eye_white", -1))
        prims.append(("circle", (ex + 0.06 * r * dx, ey + 0.06 * r * dy), max(1.0, 0.08 * r), "pupil", -1))
    return prims


def _occluders_v2(width: int, height: int, persons: list[_PersonDraft], object_drafts: list[_ObjectDraft],
                  object_masks: list[np.ndarray], rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    """0-2 plain or textured rectangles / blobs as (mask [H, W] bool, pixels [H, W, 3] uint8).

    An occluder never covers a face (head + nose region), a target's anchor (a disc around it), any gaze ray, nor
    more than half of any object; it may hide parts of torsos and objects.
    """
    protected = np.zeros((height, width), np.uint8)
    for person in persons:
        (cx, cy), r = person.centre, person.radius
        cv2.circle(protected, _pt((cx, cy)), int(math.ceil(V2_HEAD_REGION * r)) + 1, 255, -1)
        cv2.line(protected, _pt(person.eye(person.direction)), _pt(person.gaze_point), 255, 3)
        if person.target_index is not None:
            x1, y1, x2, y2 = object_drafts[person.target_index].box
            cv2.circle(protected, _pt(person.gaze_point), int(max(3.0, 0.2 * min(x2 - x1, y2 - y1))) + 1, 255, -1)
    protected_bool = protected > 0
    areas = [max(1, int(m.sum())) for m in object_masks]
    covered = np.zeros((height, width), bool)
    short = min(width, height)
    occluders = []
    for _ in range(int(rng.integers(V2_OCCLUDERS[0], V2_OCCLUDERS[1] + 1))):
        colour = np.array(_random_muted_rgb(rng, (0.1, 0.6), (0.25, 0.85)), np.float32)
        if rng.random() < 0.5:  # textured
            other = np.array(_random_muted_rgb(rng, (0.1, 0.6), (0.25, 0.85)), np.float32)
            t = _texture(width, height, rng)[:, :, None]
            pixels = np.clip(colour * (1 - t) + other * t, 0, 255).astype(np.uint8)
        else:
            pixels = np.broadcast_to(colour.astype(np.uint8), (height, width, 3))
        is_blob = rng.random() < 0.5
        for _try in range(30):
            w, h = (short * rng.uniform(*V2_OCCLUDER_SIZE, size=2)).tolist()
            cx, cy = rng.uniform(0, width), rng.uniform(0, height)
            mask = np.zeros((height, width), np.uint8)
            if is_blob:
                n = int(rng.integers(9, 15))
                angles = np.sort(rng.uniform(0, 2 * math.pi, n))
                radii = 0.5 * rng.uniform(0.7, 1.0, n)
                points = [(cx + w * q * math.cos(a), cy + h * q * math.sin(a)) for a, q in zip(angles, radii)]
            else:
                turn = math.radians(rng.uniform(-20, 20))
                c, s = math.cos(turn), math.sin(turn)
                points = [(cx + c * ox - s * oy, cy + s * ox + c * oy)
                          for ox, oy in ((-w / 2, -h / 2), (w / 2, -h / 2), (w / 2, h / 2), (-w / 2, h / 2))]
            cv2.fillPoly(mask, [np.array([_pt(p) for p in points], np.int32)], 255)
            mask_bool = mask > 0
            if not mask_bool.any() or (mask_bool & protected_bool).any():
                continue
            union = covered | mask_bool
            if any((m & union).sum() > (1 - V2_OCCLUDER_MIN_VISIBLE) * a for m, a in zip(object_masks, areas)):
                continue
            covered = union
            occluders.append((mask_bool, pixels))
            break
    return occluders


def _render_scene_v2(config: SynthConfig, split: str, image_index: int, in_frame_flags: Sequence[bool]) -> SynthScene:
    """``render_scene`` for version 2: background, objects, persons, then occluders (which may hide parts of
    objects and torsos, never a face, a target's anchor or a gaze ray); object masks are the visible pixels."""
    rng = np.random.default_rng([config.seed, SPLIT_CODES[split], image_index])
    width, height, drafts, object_drafts = _find_layout(_layout_v2, config, split, image_index, in_frame_flags, rng)

    image = _background_v2(width, height, rng)
    masks = _draw_objects(image, object_drafts, rng)
    persons = []
    for draft in drafts:
        colours = _person_colours(rng)
        _draw(image, _person_primitives_v2(draft), colours)
        persons.append(_finish_person(draft, width, height, rng, config.body_box_missing_fraction, object_drafts,
                                      nose_length=V2_NOSE_LENGTH))
    occluders = _occluders_v2(width, height, drafts, object_drafts, masks, rng)
    for occluder_mask, pixels in occluders:
        image[occluder_mask] = pixels[occluder_mask]
        for mask in masks:
            mask &= ~occluder_mask
    noise = rng.standard_normal(size=image.shape, dtype=np.float32) * rng.uniform(2.0, 6.0)  # [H, W, 3] sensor noise
    image = np.clip(image + noise, 0, 255).astype(np.uint8)
    objects = [SynthObject(d.name, d.box, d.anchor, m) for d, m in zip(object_drafts, masks)]
    return SynthScene(image, objects, persons, [m for m, _ in occluders])


# ----------------------------------------------------------------------------------------------------------------
# Dataset plan and annotation rows
# ----------------------------------------------------------------------------------------------------------------

def plan_images(config: SynthConfig, split: str) -> list[list[bool]]:
    """In-frame flags of the persons of every image of ``split``.

    Train: exactly round(out_of_frame_fraction * train_persons) persons look out of frame, spread at random.
    Test: all persons are in frame (like GazeFollow's test set).
    """
    total = config.train_persons if split == "train" else config.test_persons
    rng = np.random.default_rng([config.seed, SPLIT_CODES[split], 2**31])
    in_frame = np.ones(total, bool)
    if split == "train":
        in_frame[rng.permutation(total)[:round(config.out_of_frame_fraction * total)]] = False
    lo, hi = config.persons_per_image
    plan, start = [], 0
    while start < total:
        count = min(int(rng.integers(lo, hi + 1)), total - start)
        plan.append([bool(v) for v in in_frame[start:start + count]])
        start += count
    return plan


def image_relpath(split: str, image_index: int) -> str:
    """``train/00000001/00001234.jpg``-style path relative to the dataset root (1000 images per folder)."""
    return f"{SPLIT_IMAGE_DIRS[split]}/{image_index // IMAGES_PER_FOLDER:08d}/{image_index:08d}.jpg"


def _person_rows(scene: SynthScene, person: SynthPerson, split: str, rel_path: str, person_id: int,
                 config: SynthConfig, rng: np.random.Generator) -> tuple[list[str], list[str]]:
    """(plain rows, persondet rows) of one person: 1 row in train, ``test_annotators`` rows in test."""
    width, height = scene.size_wh
    tx1, ty1, tx2, ty2 = person.torso_box_xyxy_px
    hx1, hy1, hx2, hy2 = person.head_box_xyxy_px
    # GazeFollow's normalised (x, y, w, h) body box: head + visible torso
    bx1, by1 = min(tx1, hx1), min(ty1, hy1)
    bx2, by2 = min(max(tx2, hx2), width - 1.0), min(max(ty2, hy2), height - 1.0)
    body_norm = f"{bx1 / width:.6f},{by1 / height:.6f},{(bx2 - bx1) / width:.6f},{(by2 - by1) / height:.6f}"
    eye = f"{person.eye_xy_px[0] / width:.6f},{person.eye_xy_px[1] / height:.6f}"
    head = f"{hx1:.2f},{hy1:.2f},{hx2:.2f},{hy2:.2f}"
    meta = f"{META_PREFIX}{person.target or NO_TARGET}"
    ori_name = f"synthgaze/{config.seed}/{rel_path}"
    body = ",".join(str(v) for v in (person.body_box_xyxy_px or (-1, -1, -1, -1)))
    gaze_norm = np.array([person.gaze_xy_px[0] / width, person.gaze_xy_px[1] / height])
    if split == "train":
        if person.in_frame:  # a tiny click error that keeps the point on the object (truncated at 2 sd)
            gaze_norm = gaze_norm + np.clip(rng.normal(0, 0.003, 2), -0.006, 0.006)
        gazes = [np.clip(gaze_norm, 0.0, 1.0)]
    else:
        noise = rng.normal(0, config.annotator_noise_sd, size=(config.test_annotators, 2))
        gazes = list(np.clip(gaze_norm[None] + noise, 0.0, 1.0))
    plain, persondet = [], []
    for gaze in gazes:
        inout = f",{int(person.in_frame)}" if split == "train" else ""
        row = f"{rel_path},{person_id},{body_norm},{eye},{gaze[0]:.6f},{gaze[1]:.6f},{head}{inout},{meta},{ori_name}"
        plain.append(row)
        persondet.append(f"{row},{body}")
    return plain, persondet


# ----------------------------------------------------------------------------------------------------------------
# Generation
# ----------------------------------------------------------------------------------------------------------------

def config_differences(out_dir: str | os.PathLike, config: SynthConfig) -> list[str]:
    """What differs between the SynthGaze dataset in ``out_dir`` and ``config`` (``["synth.seed: 0 -> 1"]``);
    empty when there is no dataset there or it is the same."""
    from gcdr.stage_output import request_differences

    info_path = Path(out_dir) / INFO_FILE
    try:
        info = json.loads(info_path.read_text()) if info_path.is_file() else None
    except (OSError, json.JSONDecodeError):
        info = None
    if info is None:
        return []
    return request_differences({"synth": info.get("config"), "generator_version": info.get("generator_version")},
                               {"synth": config.to_dict(), "generator_version": GENERATOR_VERSION})


def _info_matches(out_dir: Path, config: SynthConfig) -> dict[str, Any] | None:
    info_path = out_dir / INFO_FILE
    if not info_path.is_file():
        return None
    try:
        info = json.loads(info_path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    objects_files = [OBJECTS_FILE.format(split=split) for split in SPLIT_CODES] if config.write_objects else []
    files_present = all((out_dir / name).is_file() for name in
                        (TRAIN_FILE, TEST_FILE, TRAIN_PERSONDET_FILE, TEST_PERSONDET_FILE, *objects_files))
    if (info.get("generator_version") == GENERATOR_VERSION and info.get("config") == config.to_dict()
            and files_present):
        return info
    return None


def _objects_line(rel_path: str, scene: SynthScene) -> str:
    """One line of ``<split>_objects.jsonl``: every drawn object's name and layout box (px, the box it fills)."""
    objects = [{"name": obj.name, "box_xyxy_px": [round(float(v), 2) for v in obj.box_xyxy_px]} for obj in scene.objects]
    return json.dumps({"path": rel_path, "objects": objects})


def _remove_killed_runs_leftovers(out_dir: Path) -> None:
    """Remove ``.<name>.tmp-<pid>`` / ``.<name>.old-<pid>`` siblings of ``out_dir`` whose process is gone (a
    killed generation); those of a running process are left alone."""
    for leftover in sorted(out_dir.parent.glob(f".{out_dir.name}.tmp-*")) + sorted(
            out_dir.parent.glob(f".{out_dir.name}.old-*")):
        pid_text = leftover.name.rsplit("-", 1)[-1]
        if not pid_text.isdigit():
            continue
        try:
            os.kill(int(pid_text), 0)
            continue  # that process still runs
        except ProcessLookupError:
            pass
        except PermissionError:
            continue  # alive, another user's
        shutil.rmtree(leftover, ignore_errors=True)
        log.info("removed %s, left by a killed SynthGaze generation", leftover)


def read_objects(out_dir: str | os.PathLike, split: str) -> dict[str, list[tuple[str, tuple[float, float, float, float]]]]:
    """``{image path relative to out_dir: [(object name, (x1, y1, x2, y2) px), ...]}`` from ``<split>_objects.jsonl``
    (every drawn object, targets and distractors alike; written when ``synth.write_objects`` is true).

    For grounding pretraining: where named objects are, never where persons look. Images are in file order.
    """
    path = Path(out_dir) / OBJECTS_FILE.format(split=split)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: generate SynthGaze with synth.write_objects=true")
    result: dict[str, list[tuple[str, tuple[float, float, float, float]]]] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            result[record["path"]] = [(o["name"], tuple(float(v) for v in o["box_xyxy_px"])) for o in record["objects"]]
    return result


def _v2_stats(scene: SynthScene, counts: Counter) -> None:
    """Difficulty counts of a version-2 scene (added to synthgaze.json's split stats)."""
    counts["objects"] += len(scene.objects)
    counts["occluders"] += len(scene.occluder_masks)
    names = Counter(obj.name for obj in scene.objects)
    counts["images_with_repeated_names"] += any(n > 1 for n in names.values())
    for person in scene.persons:
        if person.target_index is None:
            continue
        counts["targets_sharing_name"] += names[person.target] > 1
        angles = [_angle_between_deg(person.direction, (obj.anchor_xy_px[0] - person.eye_xy_px[0],
                                                        obj.anchor_xy_px[1] - person.eye_xy_px[1]))
                  for index, obj in enumerate(scene.objects) if index != person.target_index]
        counts["targets_with_distractor_within_15deg"] += bool(angles) and min(angles) < 15.0


def _generate_split(tmp_dir: Path, config: SynthConfig, split: str, progress: bool
                    ) -> tuple[list[str], list[str], dict[str, Any], list[str]]:
    plan = plan_images(config, split)
    plain_rows: list[str] = []
    persondet_rows: list[str] = []
    object_lines: list[str] = []
    targets: Counter[str] = Counter()
    counts = Counter()
    v2_counts: Counter[str] = Counter()
    person_id = 0
    for image_index, flags in enumerate(tqdm(plan, desc=f"synthgaze {split}", unit="img", disable=not progress)):
        scene = render_scene(config, split, image_index, flags)
        rel_path = image_relpath(split, image_index)
        image_path = tmp_dir / rel_path
        image_path.parent.mkdir(parents=True, exist_ok=True)
        bgr = cv2.cvtColor(scene.image_rgb, cv2.COLOR_RGB2BGR)
        if not cv2.imwrite(str(image_path), bgr, [cv2.IMWRITE_JPEG_QUALITY, int(config.jpeg_quality)]):
            raise OSError(f"cv2 could not write {image_path}")
        if config.write_objects:
            object_lines.append(_objects_line(rel_path, scene))
        if config.version == 2:
            _v2_stats(scene, v2_counts)
        rng = np.random.default_rng([config.seed, SPLIT_CODES[split], image_index, 1])
        for person in scene.persons:
            plain, persondet = _person_rows(scene, person, split, rel_path, person_id, config, rng)
            plain_rows += plain
            persondet_rows += persondet
            person_id += 1
            targets[person.target or NO_TARGET] += 1
            counts["out_of_frame"] += not person.in_frame
            counts["body_boxes_absent"] += person.body_box_xyxy_px is None
    stats = {"images": len(plan), "persons": person_id, "rows": len(plain_rows),
             "out_of_frame_persons": counts["out_of_frame"], "body_boxes_absent": counts["body_boxes_absent"],
             "targets": dict(sorted(targets.items()))}
    if config.version == 2:
        stats["difficulty"] = {key: v2_counts[key] for key in
                               ("objects", "occluders", "images_with_repeated_names", "targets_sharing_name",
                                "targets_with_distractor_within_15deg")}
    return plain_rows, persondet_rows, stats, object_lines


def generate_synthgaze(out_dir: str | os.PathLike, config: SynthConfig | None = None, *, force: bool = False,
                       progress: bool = True, provenance_config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write the SynthGaze dataset into ``out_dir`` (GazeFollow layout, see the module docstring).

    Skips the work when ``out_dir`` already holds a SynthGaze dataset made with the same config and generator
    version (unless ``force``). The dataset is built in a temporary sibling folder and renamed into place, so an
    interrupted run leaves the previous dataset (or nothing) behind; regenerating replaces the whole folder
    (including anything stored inside it, e.g. split files, which would be stale anyway).
    A non-empty ``out_dir`` that is not a SynthGaze dataset is never deleted: that is an error.

    provenance_config: the full run config to record in provenance.json (default: the synth section).
    Returns the summary: the ``synthgaze.json`` content plus ``out_dir``, ``seconds`` and ``skipped``.
    """
    config = config or SynthConfig()
    out_dir = Path(out_dir)
    start = time.perf_counter()
    if out_dir.exists():
        existing = _info_matches(out_dir, config)
        if existing is not None and not force:
            log.info("SynthGaze already in %s with the same config; skipping (use --force to regenerate)", out_dir)
            return {**existing, "out_dir": str(out_dir), "seconds": 0.0, "skipped": True}
        if not (out_dir / INFO_FILE).is_file() and any(out_dir.iterdir()):
            raise FileExistsError(f"{out_dir} exists, is not empty and holds no {INFO_FILE}: refusing to overwrite it")

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    _remove_killed_runs_leftovers(out_dir)
    tmp_dir = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    if tmp_dir.exists():
        shutil.rmtree(tmp_dir)
    tmp_dir.mkdir()
    try:
        train_plain, train_det, train_stats, train_objects = _generate_split(tmp_dir, config, "train", progress)
        test_plain, test_det, test_stats, test_objects = _generate_split(tmp_dir, config, "test", progress)
        files = [(TRAIN_FILE, train_plain), (TRAIN_PERSONDET_FILE, train_det),
                 (TEST_FILE, test_plain), (TEST_PERSONDET_FILE, test_det)]
        if config.write_objects:
            files += [(OBJECTS_FILE.format(split="train"), train_objects), (OBJECTS_FILE.format(split="test"), test_objects)]
        for name, rows in files:
            (tmp_dir / name).write_text("".join(row + "\n" for row in rows))
        info = {
            "name": "SynthGaze",
            "generator_version": GENERATOR_VERSION,
            "config": config.to_dict(),
            "objects": {name: kind.description for name, kind in OBJECT_KINDS.items()},
            "meta_format": f"{META_PREFIX}<object name> ({META_PREFIX}{NO_TARGET} when out of frame)",
            "files": {"train": TRAIN_FILE, "test": TEST_FILE, "train_persondet": TRAIN_PERSONDET_FILE,
                      "test_persondet": TEST_PERSONDET_FILE,
                      **({f"{split}_objects": OBJECTS_FILE.format(split=split) for split in SPLIT_CODES}
                         if config.write_objects else {})},
            "train": train_stats,
            "test": test_stats,
        }
        (tmp_dir / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
        seconds = time.perf_counter() - start
        write_provenance(tmp_dir, "data_synth", provenance_config or {"synth": config.to_dict()},
                         generator_version=GENERATOR_VERSION, seconds=round(seconds, 2),
                         counts={"train": train_stats, "test": test_stats})
        old_dir = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
        if out_dir.exists():
            os.replace(out_dir, old_dir)
        os.replace(tmp_dir, out_dir)
        if old_dir.exists():
            shutil.rmtree(old_dir)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    log.info("SynthGaze: %d train persons in %d images, %d test persons in %d images -> %s (%.1f s)",
             train_stats["persons"], train_stats["images"], test_stats["persons"], test_stats["images"], out_dir, seconds)
    return {**info, "out_dir": str(out_dir), "seconds": round(seconds, 2), "skipped": False}
