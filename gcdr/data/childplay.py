"""ChildPlay gaze annotations (Tafasca et al., ICCV 2023) -> PersonSample, one per annotated person per frame.

Layout under the dataset root (docs/formats.md#childplay)::

    images/<clip>/<video id>_<absolute frame>.jpg
    annotations/{train,val,test}/<clip>.csv     one CSV per clip, with a header row

``<clip>`` is ``<video id>_<start>-<end>`` (optionally ``-downsample``/``-downsampled`` appended); the video id
may itself contain underscores, so it is everything before the LAST underscore. The CSV's ``frame`` column is
1-based within the clip, so row ``frame`` shows ``<video id>_<start + frame - 1>.jpg``.

Columns read (by header name; others are ignored): ``frame``, ``person_id``, ``bbox_x``, ``bbox_y``,
``bbox_width``, ``bbox_height`` (head box, pixels, top-left + size), ``gaze_class``, ``gaze_x``, ``gaze_y``
(pixels, -1 when there is no in-frame point); optional ``clip`` (must name the file's own clip) and
``is_child`` (0 / 1, kept in ``meta`` and used by ``subset``).

In / out from ``gaze_class`` (as the dataset's reference loaders do):
- ``inside_visible`` -> in frame (1), with the gaze point in pixels / image size;
- ``outside_frame`` -> out of frame (0), sentinel point (-1, -1);
- every other class (``gaze_shift``, ``inside_occluded``, ``inside_uncertain``, ``eyes_closed``, and any class
  not listed here, counted) -> unknown (-1): kept as samples, left out of every metric;
- ``inside_visible`` without a point (a negative coordinate) -> unknown (-1), counted (the reference loaders
  drop these rows).
Head boxes are used as annotated: not smoothed, not enlarged, not clamped. The image size is read once per
clip from its first annotated frame (header only).
"""

from __future__ import annotations

import csv
import logging
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from gcdr.data.gazefollow import AnnotationError, OnError
from gcdr.data.images import ImageReadError, image_size_wh
from gcdr.data.sample import IN_FRAME, INOUT_UNKNOWN, OUT_OF_FRAME, PersonSample

log = logging.getLogger(__name__)

Subset = Literal["all", "child", "adult"]
SUBSETS = ("all", "child", "adult")
REQUIRED_COLUMNS = ("frame", "person_id", "bbox_x", "bbox_y", "bbox_width", "bbox_height", "gaze_class",
                    "gaze_x", "gaze_y")
NUMERIC_COLUMNS = ("frame", "bbox_x", "bbox_y", "bbox_width", "bbox_height", "gaze_x", "gaze_y")
IN_CLASS, OUT_CLASS = "inside_visible", "outside_frame"
# classes the dataset documents; all but the first two have no usable in/out label
KNOWN_CLASSES = (IN_CLASS, OUT_CLASS, "gaze_shift", "inside_occluded", "inside_uncertain", "eyes_closed")
_CLIP_NAME = re.compile(r"^(?P<video>.+)_(?P<start>\d+)-(?P<end>\d+)(?P<suffix>-downsampled?)?$")


def parse_clip_name(clip: str) -> tuple[str, int]:
    """(video id, first absolute frame number) of a clip name ``<video id>_<start>-<end>[-downsample[d]]``."""
    match = _CLIP_NAME.match(clip)
    if match is None:
        raise ValueError(f"clip name {clip!r} is not <video id>_<start>-<end>")
    return match.group("video"), int(match.group("start"))


def frame_file_name(clip: str, frame: int) -> str:
    """Image file of 1-based clip frame ``frame``: ``<video id>_<start + frame - 1>.jpg``."""
    video, start = parse_clip_name(clip)
    return f"{video}_{start + frame - 1}.jpg"


def list_clip_files(annotations_dir: str | os.PathLike) -> list[Path]:
    """The ``<clip>.csv`` files of one split folder, sorted; a missing or empty folder is a one-line error."""
    annotations_dir = Path(annotations_dir)
    if not annotations_dir.is_dir():
        raise FileNotFoundError(f"ChildPlay annotation folder not found: {annotations_dir}")
    files = sorted(annotations_dir.glob("*.csv"))
    if not files:
        raise FileNotFoundError(f"no ChildPlay annotation files (<clip>.csv) in {annotations_dir}")
    return files


def _fail_or_skip(message: str, on_error: OnError, counts: Counter, reason: str) -> None:
    if on_error == "raise":
        raise AnnotationError(message)
    log.warning("skipping malformed row: %s", message)
    counts[f"skipped_{reason}"] += 1


def _parse_clip_file(file: Path, on_error: OnError, counts: Counter) -> list[tuple[int, dict]]:
    """(line number, parsed row) of every well-formed row of one clip file."""
    clip = file.stem
    try:
        parse_clip_name(clip)
    except ValueError as error:
        raise AnnotationError(f"{file}:1: {error} (the file name names the clip)") from error
    with open(file, encoding="utf-8-sig", errors="surrogateescape", newline="") as handle:
        lines = list(csv.reader(handle))
    if not lines:
        raise AnnotationError(f"{file}:1: empty file, expected a header row with {', '.join(REQUIRED_COLUMNS)}")
    header = [name.strip() for name in lines[0]]
    if missing := [name for name in REQUIRED_COLUMNS if name not in header]:
        raise AnnotationError(f"{file}:1: header lacks column(s) {', '.join(missing)}; not a ChildPlay "
                              f"annotation file (expected {', '.join(REQUIRED_COLUMNS)})")
    index = {name: header.index(name) for name in header}
    rows: list[tuple[int, dict]] = []
    seen: dict[tuple[int, str], int] = {}
    for number, fields in enumerate(lines[1:], start=2):
        if not fields or not any(field.strip() for field in fields):
            continue
        fields = [field.strip() for field in fields]
        if len(fields) != len(header):
            _fail_or_skip(f"{file}:{number}: {len(fields)} columns, the header has {len(header)}",
                          on_error, counts, "malformed_rows")
            continue
        row = {name: fields[index[name]] for name in header}
        problem = ""
        try:
            values = {name: float(row[name]) for name in NUMERIC_COLUMNS}
        except ValueError:
            bad = [f"{name}={row[name]!r}" for name in NUMERIC_COLUMNS if not _is_number(row[name])]
            problem = f"invalid number ({', '.join(bad)})"
        else:
            if not all(np.isfinite(v) for v in values.values()):
                problem = f"non-finite number in {[row[n] for n in NUMERIC_COLUMNS]}"
            elif values["frame"] < 1 or values["frame"] != int(values["frame"]):
                problem = f"frame {row['frame']!r} is not a positive integer"
            elif values["bbox_width"] <= 0 or values["bbox_height"] <= 0:
                problem = (f"head box of width {row['bbox_width']} and height {row['bbox_height']}: both must be "
                           "positive")
            elif "clip" in row and row["clip"] != clip:
                problem = f"clip {row['clip']!r} in a file of clip {clip!r}"
            elif not row["person_id"]:
                problem = "empty person_id"
            elif row.get("is_child", "0") not in ("0", "1", "0.0", "1.0"):
                problem = f"is_child {row['is_child']!r} is not 0 or 1"
        if not problem:
            key = (int(values["frame"]), row["person_id"])
            if key in seen:
                problem = (f"person {row['person_id']} annotated twice in frame {key[0]} (first on line "
                           f"{seen[key]}); remove one of the rows")
            else:
                seen[key] = number
        if problem:
            _fail_or_skip(f"{file}:{number}: {problem}", on_error, counts, "malformed_rows")
            continue
        rows.append((number, {**row, **values}))
    return rows


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


@dataclass
class ChildPlayData:
    """Result of reading one split folder: the samples and the counts (skipped rows, in/out, classes)."""

    samples: list[PersonSample]
    counts: dict[str, int]


def read_childplay(annotations_dir: str | os.PathLike, images_dir: str | os.PathLike,
                   on_error: OnError = "raise", *, subset: Subset = "all") -> list[PersonSample]:
    """The samples of :func:`load_childplay`."""
    return load_childplay(annotations_dir, images_dir, on_error, subset=subset).samples


def load_childplay(annotations_dir: str | os.PathLike, images_dir: str | os.PathLike,
                   on_error: OnError = "raise", *, subset: Subset = "all") -> ChildPlayData:
    """Read every ``<clip>.csv`` under ``annotations_dir`` (e.g. ``<root>/annotations/test``) into PersonSamples.

    images_dir: ``<root>/images``; image paths are ``images_dir/<clip>/<video id>_<n>.jpg`` (absolute).
    on_error: "raise" -> AnnotationError naming file and line for a malformed row, ImageReadError for a clip
    whose first annotated frame cannot be read; "skip" -> skip the row / clip, log and count.
    subset: "all" | "child" | "adult" (rows with ``is_child`` 1 / 0; needs the ``is_child`` column).
    Samples are ordered by clip file, then file order; sample_id = ``"<clip>/<person_id>/<frame file>"``.
    """
    if subset not in SUBSETS:
        raise ValueError(f"subset must be one of {SUBSETS}, got {subset!r}")
    images_dir = Path(images_dir).absolute()
    counts: Counter = Counter()
    unknown_classes: Counter = Counter()
    samples: list[PersonSample] = []
    for file in list_clip_files(annotations_dir):
        clip = file.stem
        rows = _parse_clip_file(file, on_error, counts)
        if subset != "all":
            if rows and "is_child" not in rows[0][1]:
                raise AnnotationError(f"{file}:1: dataset.childplay_subset={subset} needs the is_child column")
            wanted = 1.0 if subset == "child" else 0.0
            counts[f"left_out_not_{subset}"] += sum(float(row["is_child"]) != wanted for _, row in rows)
            rows = [(number, row) for number, row in rows if float(row["is_child"]) == wanted]
        if not rows:
            counts["empty_clips"] += 1
            continue
        first_number, first = rows[0]
        first_frame = images_dir / clip / frame_file_name(clip, int(first["frame"]))
        try:
            width, height = image_size_wh(first_frame)
        except ImageReadError as error:
            if on_error == "raise":
                raise ImageReadError(f"{file}:{first_number}: {error}") from error
            log.warning("%s:%d: %s (clip skipped)", file, first_number, error)
            counts["skipped_clips_unreadable_image"] += 1
            counts["skipped_rows_unreadable_image"] += len(rows)
            continue
        clip_dir = str(images_dir / clip)
        for number, row in rows:
            frame_file = frame_file_name(clip, int(row["frame"]))
            gaze_class = row["gaze_class"]
            gaze_px = np.array([[row["gaze_x"], row["gaze_y"]]], np.float64)  # [1, 2]
            if gaze_class == IN_CLASS and (gaze_px >= 0).all():
                inout, gaze = IN_FRAME, gaze_px / (width, height)
            elif gaze_class == OUT_CLASS:
                inout, gaze = OUT_OF_FRAME, np.array([[-1.0, -1.0]])
            else:
                inout, gaze = INOUT_UNKNOWN, np.array([[-1.0, -1.0]])
                if gaze_class == IN_CLASS:
                    counts["inside_visible_without_gaze"] += 1
                elif gaze_class not in KNOWN_CLASSES:
                    unknown_classes[gaze_class] += 1
            counts[{IN_FRAME: "in_frame", OUT_OF_FRAME: "out_of_frame", INOUT_UNKNOWN: "inout_unknown"}[inout]] += 1
            left, top = row["bbox_x"], row["bbox_y"]
            meta = f"gaze_class={gaze_class}" + (f";is_child={int(float(row['is_child']))}" if "is_child" in row
                                                 else "")
            samples.append(PersonSample(
                sample_id=f"{clip}/{row['person_id']}/{frame_file}",
                image_path=os.path.join(clip_dir, frame_file),
                head_box_xyxy_px=(left, top, left + row["bbox_width"], top + row["bbox_height"]),
                gaze_points_norm=gaze,
                inout=inout,
                image_size_wh=(width, height),
                meta=meta,
                source=f"{file}:{number}",
            ))
        counts["clips"] += 1
    if unknown_classes:
        log.warning("%s: gaze classes not in %s treated as in/out unknown: %s", annotations_dir, KNOWN_CLASSES,
                    dict(unknown_classes))
        counts["unknown_gaze_class"] = sum(unknown_classes.values())
    counts["samples"] = len(samples)
    problems = {k: v for k, v in counts.items()
                if k.startswith(("skipped", "empty", "inside_visible_without", "unknown")) and v}
    if problems:
        log.warning("%s: %s", annotations_dir, ", ".join(f"{k}={v}" for k, v in problems.items()))
    log.info("%s: %s", annotations_dir, ", ".join(f"{k}={v}" for k, v in counts.items()))
    return ChildPlayData(samples=samples, counts=dict(counts))
