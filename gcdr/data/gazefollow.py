"""GazeFollow annotation files (and GCDR's ``_persondet`` and ``_use``/``_left`` variants) -> PersonSample.

The file kind is told by its column count (comma-separated, no header; docs/formats.md#gazefollow-files, #gcdr-persondet-files):

    17  train:  path, idx, body x,y,w,h, eye_x, eye_y, gaze_x, gaze_y, head x_min,y_min,x_max,y_max, inout,
                meta, ori_name
    16  test:   the same without inout
    21  train persondet (GCDR): the 17 columns + body_x1, body_y1, body_x2, body_y2 (pixels, < 0 = no body)
    20  test persondet (GCDR):  the 16 columns + the 4 body columns

Units: eye and gaze normalised to [0, 1] (x/W, y/H); head and GCDR body boxes in pixels. The original
body x,y,w,h columns (3-6) and idx are unused by every reference implementation and are not parsed.

Cleaning (each step logged with a count):
- train rows with inout == -1 are dropped (all implementations do);
- inverted head boxes (x_min > x_max or y_min > y_max): GCDR drops those rows, gazelle swaps the
  coordinates, VAT keeps them as they are. We **repair by swapping** by default (``inverted_boxes="repair"``)
  and can drop like GCDR (``inverted_boxes="drop"``);
- head boxes of zero width or height (after repair) are dropped: no face crop can be cut from them;
- head boxes are clamped to the image only when the image size is known (``read_image_sizes=True``);
  GazeFollow files carry no image size and reading 120k image headers is opt-in.
Test rows (one per annotator) are grouped per person by the key (path, eye_x) in first-appearance
order; the person keeps the first row's boxes and gets every annotator's gaze point, inout = 1.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from gcdr.atomic import atomic_path
from gcdr.data.images import ImageReadError, image_size_wh
from gcdr.data.sample import IN_FRAME, INOUT_UNKNOWN, PersonSample
from gcdr.errors import UserError

log = logging.getLogger(__name__)

OnError = Literal["raise", "skip"]
InvertedBoxes = Literal["repair", "drop"]

TRAIN_COLUMNS, TEST_COLUMNS, TRAIN_PERSONDET_COLUMNS, TEST_PERSONDET_COLUMNS = 17, 16, 21, 20
KNOWN_COLUMN_COUNTS = (TRAIN_COLUMNS, TEST_COLUMNS, TRAIN_PERSONDET_COLUMNS, TEST_PERSONDET_COLUMNS)
_ENCODING, _ENCODING_ERRORS = "utf-8", "surrogateescape"  # undecodable bytes survive a read/write round trip


class AnnotationError(UserError, ValueError):
    """A malformed annotation row or file; the message starts with ``<file>:<line>:``."""


@dataclass(frozen=True)
class GazeFollowLayout:
    """Column indices (0-based) of one GazeFollow file kind, told by its column count."""

    n_columns: int

    @property
    def is_test(self) -> bool:
        return self.n_columns in (TEST_COLUMNS, TEST_PERSONDET_COLUMNS)

    @property
    def has_body(self) -> bool:
        return self.n_columns in (TRAIN_PERSONDET_COLUMNS, TEST_PERSONDET_COLUMNS)

    @property
    def kind(self) -> str:
        return ("test" if self.is_test else "train") + ("_persondet" if self.has_body else "")

    @property
    def inout_column(self) -> int | None:
        return None if self.is_test else 14

    @property
    def meta_column(self) -> int:
        return 14 if self.is_test else 15

    @property
    def body_columns(self) -> list[int]:
        first = 16 if self.is_test else 17
        return list(range(first, first + 4)) if self.has_body else []

    # eye x/y, gaze x/y, head x_min, y_min, x_max, y_max are at the same place in every kind
    EYE_COLUMNS = (6, 7)
    GAZE_COLUMNS = (8, 9)
    HEAD_COLUMNS = (10, 11, 12, 13)


@dataclass
class GazeFollowTable:
    """The parsed rows of one file, column-wise, before any cleaning (row i = ``line_numbers[i]``).

    lines:        original text of each row, without its newline (a CRLF file keeps the ``\\r``),
                  so rows can be written back byte-for-byte.
    eye_xy_norm, gaze_xy_norm: [N, 2] float64.  head_boxes_px: [N, 4] float64 as in the file.
    inout:        [N] int64 (1 for test files).  body_boxes_px: [N, 4] or None (no body columns).
    n_skipped:    malformed rows skipped under ``on_error="skip"``.
    """

    file: Path
    layout: GazeFollowLayout
    lines: list[str]
    line_numbers: np.ndarray
    paths: list[str]
    eye_xy_norm: np.ndarray
    gaze_xy_norm: np.ndarray
    head_boxes_px: np.ndarray
    inout: np.ndarray
    meta: list[str]
    body_boxes_px: np.ndarray | None
    n_skipped: int = 0

    def __len__(self) -> int:
        return len(self.lines)

    def source(self, row: int) -> str:
        return f"{self.file}:{int(self.line_numbers[row])}"

    def keys(self) -> list[str]:
        """The per-person membership key of each row, ``"<path>|<eye_x:.6f>"`` (GCDR's (path, eye_x))."""
        return [person_key(path, eye_x) for path, eye_x in zip(self.paths, self.eye_xy_norm[:, 0].tolist())]


def person_key(path: str, eye_x: float) -> str:
    """GCDR's per-person key (path, eye_x) as text; 6 decimals make it robust to float formatting."""
    return f"{path}|{eye_x:.6f}"


def sample_id_of(path: str, eye_x: float, eye_y: float) -> str:
    """The GazeFollow PersonSample.sample_id: ``"<rel path>|<eye_x:.6f>|<eye_y:.6f>"``."""
    return f"{path}|{eye_x:.6f}|{eye_y:.6f}"


def key_of_sample_id(sample_id: str) -> str:
    """The (path, eye_x) membership key of a GazeFollow sample id (drops the eye_y part)."""
    return sample_id.rsplit("|", 1)[0]


# ----------------------------------------------------------------------------------------------------
# reading rows


def _read_lines(file: Path) -> list[str]:
    if not file.is_file():
        raise FileNotFoundError(f"annotation file not found: {file}")
    text = file.read_bytes().decode(_ENCODING, errors=_ENCODING_ERRORS)
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline ending the last row
    return lines


def _fail_or_skip(message: str, on_error: OnError, skipped: Counter, reason: str) -> None:
    if on_error == "raise":
        raise AnnotationError(message)
    if sum(skipped.values()) < 5:
        log.warning("skipping malformed row: %s", message)
    skipped[reason] += 1


def read_gazefollow_table(path: str | os.PathLike, on_error: OnError = "raise") -> GazeFollowTable:
    """Parse a GazeFollow-format file into columns, validating every row that is used.

    A row whose column count differs from the file's, or whose eye / gaze / head box / inout / body
    field is not a finite number (inout must be -1, 0 or 1), raises AnnotationError
    ``"<file>:<line>: ..."``; with ``on_error="skip"`` it is skipped, logged and counted instead.
    Blank lines are ignored. The file's column count is that of its first row (``"raise"``) or the most
    common known count (``"skip"``).
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    file = Path(path)
    raw_lines = _read_lines(file)
    # strip the BOM (first line) and a CRLF's "\r" for parsing only; `raw_lines` keeps the original text
    parse_lines = [line.rstrip("\r") for line in raw_lines]
    if parse_lines and parse_lines[0].startswith("\ufeff"):
        parse_lines[0] = parse_lines[0][1:]
    nonblank = [i for i, line in enumerate(parse_lines) if line.strip()]
    if not nonblank:
        raise AnnotationError(f"{file}:1: no annotation rows in the file")
    counts = [parse_lines[i].count(",") + 1 for i in nonblank]
    if on_error == "raise":
        n_columns = counts[0]
    else:
        known = Counter(c for c in counts if c in KNOWN_COLUMN_COUNTS)
        n_columns = known.most_common(1)[0][0] if known else counts[0]
    if n_columns not in KNOWN_COLUMN_COUNTS:
        raise AnnotationError(
            f"{file}:{nonblank[0] + 1}: {n_columns} columns, not a GazeFollow file "
            f"(expected 17 train, 16 test, 21 / 20 GCDR persondet)")
    layout = GazeFollowLayout(n_columns)

    skipped: Counter = Counter()
    kept: list[int] = []
    for i, count in zip(nonblank, counts):
        if count == n_columns:
            kept.append(i)
        else:
            _fail_or_skip(f"{file}:{i + 1}: {count} columns, but the file has {n_columns} "
                          f"({layout.kind} format)", on_error, skipped, "column_count")

    numeric_columns = [*layout.EYE_COLUMNS, *layout.GAZE_COLUMNS, *layout.HEAD_COLUMNS, *layout.body_columns]
    if layout.inout_column is not None:
        numeric_columns.append(layout.inout_column)
    kept_lines = [parse_lines[i] for i in kept]
    parsed = _parse_fast(kept_lines, layout, numeric_columns)
    if parsed is None:  # some field is not a number: find and report (or skip) the rows one by one
        parsed = _parse_locating(kept_lines, kept, layout, numeric_columns, file, on_error, skipped)
    good, paths, meta, numbers = parsed
    kept_array = np.asarray(kept, np.int64)[good]
    n_skipped = sum(skipped.values())
    if n_skipped:
        log.warning("%s: skipped %d malformed rows (%s)", file, n_skipped, dict(skipped))

    def stack(cols) -> np.ndarray:
        return np.stack([numbers[c][good] for c in cols], axis=1) if len(cols) else np.zeros((len(kept_array), 0))

    good_rows = np.flatnonzero(good).tolist()
    all_good = len(good_rows) == len(good)
    inout = (numbers[layout.inout_column][good].astype(np.int64) if layout.inout_column is not None
             else np.full(len(kept_array), IN_FRAME, np.int64))
    return GazeFollowTable(
        file=file,
        layout=layout,
        lines=[raw_lines[i] for i in kept_array.tolist()],
        line_numbers=kept_array + 1,
        paths=paths if all_good else [paths[r] for r in good_rows],
        eye_xy_norm=stack(layout.EYE_COLUMNS),
        gaze_xy_norm=stack(layout.GAZE_COLUMNS),
        head_boxes_px=stack(layout.HEAD_COLUMNS),
        inout=inout,
        meta=meta if all_good else [meta[r] for r in good_rows],
        body_boxes_px=stack(layout.body_columns) if layout.has_body else None,
        n_skipped=n_skipped,
    )


_Parsed = tuple[np.ndarray, list[str], list[str], dict[int, np.ndarray]]


def _invalid_numbers(numbers: dict[int, np.ndarray], layout: GazeFollowLayout, n_rows: int) -> np.ndarray:
    """[N] bool: a used number is NaN / inf, or inout is not -1, 0 or 1."""
    bad = np.zeros(n_rows, bool)
    for values in numbers.values():
        bad |= ~np.isfinite(values)
    if layout.inout_column is not None:
        bad |= ~np.isin(numbers[layout.inout_column], (-1.0, 0.0, 1.0))
    return bad


def _parse_fast(lines: list[str], layout: GazeFollowLayout, numeric_columns: list[int]) -> _Parsed | None:
    """pandas' C parser over all rows (~0.4 s for 130k rows); None when any used number is invalid."""
    if not lines:
        return None
    text_columns = [0, layout.meta_column]
    try:
        frame = pd.read_csv(io.StringIO("\n".join(lines)), header=None, names=range(layout.n_columns),
                            usecols=text_columns + numeric_columns, quoting=csv.QUOTE_NONE,
                            na_filter=False, skip_blank_lines=False, engine="c",
                            dtype={**{c: str for c in text_columns}, **{c: np.float64 for c in numeric_columns}})
    except (ValueError, UnicodeError, pd.errors.ParserError):
        return None
    if len(frame) != len(lines):
        return None
    numbers = {c: frame[c].to_numpy(np.float64) for c in numeric_columns}
    if _invalid_numbers(numbers, layout, len(lines)).any():
        return None
    paths = [path.strip() for path in frame[0].tolist()]
    return np.ones(len(lines), bool), paths, frame[layout.meta_column].tolist(), numbers


def _parse_locating(lines: list[str], line_indices: list[int], layout: GazeFollowLayout,
                    numeric_columns: list[int], file: Path, on_error: OnError, skipped: Counter) -> _Parsed:
    """Row-by-row parsing that names the line and column of every invalid number."""
    fields = [line.split(",") for line in lines]
    columns = list(zip(*fields)) if fields else [()] * layout.n_columns
    numbers = {c: pd.to_numeric(pd.Series(columns[c], dtype=object), errors="coerce").to_numpy(np.float64)
               for c in numeric_columns}
    bad = _invalid_numbers(numbers, layout, len(lines))
    for row in np.flatnonzero(bad).tolist():
        bad_fields = [f"column {c + 1}={fields[row][c]!r}" for c in numeric_columns
                      if not np.isfinite(numbers[c][row])
                      or (c == layout.inout_column and numbers[c][row] not in (-1.0, 0.0, 1.0))]
        _fail_or_skip(f"{file}:{line_indices[row] + 1}: invalid number ({', '.join(bad_fields)})",
                      on_error, skipped, "bad_number")
    paths = [path.strip() for path in columns[0]]
    return ~bad, paths, list(columns[layout.meta_column]), numbers


# ----------------------------------------------------------------------------------------------------
# cleaning


def repair_head_boxes(boxes_px: np.ndarray, inverted_boxes: InvertedBoxes = "repair"
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Swap inverted coordinates and find unusable boxes.

    boxes_px: [N, 4] (x_min, y_min, x_max, y_max). Returns (boxes [N, 4] with x_min <= x_max and
    y_min <= y_max, inverted [N] bool = the file had x_min > x_max or y_min > y_max,
    usable [N] bool = positive width and height and, with ``inverted_boxes="drop"``, not inverted).
    """
    if inverted_boxes not in ("repair", "drop"):
        raise ValueError(f"inverted_boxes must be 'repair' or 'drop', got {inverted_boxes!r}")
    boxes_px = np.asarray(boxes_px, np.float64).reshape(-1, 4)
    inverted = (boxes_px[:, 0] > boxes_px[:, 2]) | (boxes_px[:, 1] > boxes_px[:, 3])
    repaired = np.concatenate([np.minimum(boxes_px[:, :2], boxes_px[:, 2:]),
                               np.maximum(boxes_px[:, :2], boxes_px[:, 2:])], axis=1)
    usable = (repaired[:, 2] > repaired[:, 0]) & (repaired[:, 3] > repaired[:, 1])
    if inverted_boxes == "drop":
        usable &= ~inverted
    return repaired, inverted, usable


def _box_cleaning(candidate: np.ndarray, inverted: np.ndarray, usable_box: np.ndarray,
                  inverted_boxes: InvertedBoxes) -> tuple[np.ndarray, dict[str, int]]:
    """Rows kept among ``candidate`` and the counts of repaired / dropped head boxes."""
    dropped_inverted = inverted if inverted_boxes == "drop" else np.zeros_like(inverted)
    action = "dropped" if inverted_boxes == "drop" else "repaired"
    counts = {f"{action}_inverted_head_box": int((candidate & inverted).sum()),
              "dropped_empty_head_box": int((candidate & ~usable_box & ~dropped_inverted).sum())}
    return candidate & usable_box, counts


def usable_train_rows(table: GazeFollowTable, inverted_boxes: InvertedBoxes = "repair"
                      ) -> tuple[np.ndarray, dict[str, int]]:
    """[N] bool: rows that become samples (inout != -1, usable head box), and the counts of each reason.

    The same rule decides which rows the split files hold, so that labeled + unlabeled = train.
    """
    _, inverted, usable_box = repair_head_boxes(table.head_boxes_px, inverted_boxes)
    valid_inout = table.inout != INOUT_UNKNOWN
    keep, counts = _box_cleaning(valid_inout, inverted, usable_box, inverted_boxes)
    return keep, {"rows": len(table), "dropped_inout_-1": int((~valid_inout).sum()), **counts,
                  "kept": int(keep.sum())}


def _log_counts(file: Path, counts: dict[str, int]) -> None:
    problems = {k: v for k, v in counts.items() if v and k.startswith(("dropped", "repaired", "clamped", "merged",
                                                                        "skipped", "inconsistent",
                                                                        "duplicate"))}
    if problems:
        log.warning("%s: %s", file, ", ".join(f"{k}={v}" for k, v in problems.items()))
    log.info("%s: %s", file, ", ".join(f"{k}={v}" for k, v in counts.items()))


def _body_box(values: list[float]) -> tuple[float, float, float, float] | None:
    """GCDR marks "no body" with negative coordinates."""
    if min(values) < 0:
        return None
    return (values[0], values[1], values[2], values[3])


# ----------------------------------------------------------------------------------------------------
# samples


@dataclass
class GazeFollowData:
    """Result of reading one file: the samples, the file kind and the cleaning counts."""

    samples: list[PersonSample]
    kind: str
    counts: dict[str, int]


def load_gazefollow(path: str | os.PathLike, root: str | os.PathLike, on_error: OnError = "raise", *,
                    inverted_boxes: InvertedBoxes = "repair", read_image_sizes: bool = False) -> GazeFollowData:
    """Read a GazeFollow train / test / persondet file into PersonSamples (see the module docstring).

    path: the annotation file; root: the dataset root the image paths are relative to.
    on_error: "raise" on a malformed row (AnnotationError naming file and line) or, with
    ``read_image_sizes``, an unreadable image (ImageReadError); "skip" skips, logs and counts them.
    read_image_sizes: read each image header to set ``image_size_wh`` and clamp head boxes to the image.
    """
    table = read_gazefollow_table(path, on_error)
    root = Path(root).absolute()
    root_text = str(root)
    counts: dict[str, int] = {"skipped_malformed_rows": table.n_skipped}
    boxes, inverted, usable_box = repair_head_boxes(table.head_boxes_px, inverted_boxes)
    if table.layout.is_test:
        first_rows, person_gaze, counts_test = _group_test_rows(table)
        candidate = np.zeros(len(table), bool)
        candidate[first_rows] = True
        keep, box_counts = _box_cleaning(candidate, inverted, usable_box, inverted_boxes)
        counts.update({**counts_test, **box_counts})
    else:  # the rule of the split files too
        person_gaze = None
        keep, train_counts = usable_train_rows(table, inverted_boxes)
        counts.update({k: v for k, v in train_counts.items() if k != "kept"})

    if not table.layout.is_test:
        keep = _check_train_rows(table, boxes, keep, on_error, counts)
    sizes: dict[str, tuple[int, int] | None] = {}
    if read_image_sizes:
        boxes, keep = _apply_image_sizes(table, root, boxes, keep, on_error, sizes, counts)

    samples: list[PersonSample] = []
    eye = table.eye_xy_norm.tolist()
    gaze_rows = list(table.gaze_xy_norm.copy()[:, None, :])  # N views [1, 2] float64, as in the file
    box_list = boxes.tolist()
    bodies = ([_body_box(body) for body in table.body_boxes_px.tolist()] if table.body_boxes_px is not None
              else [None] * len(table))
    inout = table.inout.tolist()
    line_numbers = table.line_numbers.tolist()
    file_text = str(table.file)
    for row in np.flatnonzero(keep).tolist():
        rel_path = table.paths[row]
        eye_x, eye_y = eye[row]
        samples.append(PersonSample(
            sample_id=sample_id_of(rel_path, eye_x, eye_y),
            image_path=os.path.join(root_text, rel_path),
            head_box_xyxy_px=tuple(box_list[row]),
            gaze_points_norm=person_gaze[row] if person_gaze is not None else gaze_rows[row],  # [K, 2]
            inout=inout[row],
            body_box_xyxy_px=bodies[row],
            image_size_wh=sizes.get(rel_path),
            eye_point_norm=(eye_x, eye_y),
            meta=table.meta[row],
            source=f"{file_text}:{line_numbers[row]}",
        ))
    counts["duplicate_sample_ids"] = len(samples) - len({s.sample_id for s in samples})
    counts["samples"] = len(samples)
    _log_counts(table.file, counts)
    return GazeFollowData(samples=samples, kind=table.layout.kind, counts=counts)


def read_gazefollow(path: str | os.PathLike, root: str | os.PathLike, on_error: OnError = "raise", *,
                    inverted_boxes: InvertedBoxes = "repair", read_image_sizes: bool = False) -> list[PersonSample]:
    """The samples of :func:`load_gazefollow` (train: one per usable row; test: one per person)."""
    return load_gazefollow(path, root, on_error, inverted_boxes=inverted_boxes,
                           read_image_sizes=read_image_sizes).samples


def _check_train_rows(table: GazeFollowTable, boxes: np.ndarray, keep: np.ndarray, on_error: OnError,
                      counts: dict[str, int]) -> np.ndarray:
    """Rows that would teach something wrong: an in-frame row without a gaze point (-1, -1), a head box left
    of or above the image, the same person (image, eye point) twice. AnnotationError naming the line, or,
    with ``on_error="skip"``, dropped and counted. Identical repeated rows are merged (the first kept) and
    counted: they teach nothing wrong, only twice."""
    keep = keep.copy()
    skipped: Counter = Counter()

    def refuse(row: int, problem: str, reason: str) -> None:
        _fail_or_skip(f"{table.source(row)}: {problem}", on_error, skipped, reason)
        keep[row] = False

    no_gaze = (table.inout == IN_FRAME) & (table.gaze_xy_norm < -0.5).any(axis=1)
    off_image = (boxes[:, 2] <= 0) | (boxes[:, 3] <= 0)
    for row in np.flatnonzero(keep & (no_gaze | off_image)).tolist():
        if no_gaze[row]:
            refuse(row, f"in frame (inout 1) but no gaze point {tuple(table.gaze_xy_norm[row].tolist())}; give "
                        "the point or mark the row out of frame (0) or unknown (-1)", "in_frame_without_gaze")
        else:
            refuse(row, f"head box {tuple(table.head_boxes_px[row].tolist())} lies outside the image (left "
                        "of or above it); fix the box (pixels x_min,y_min,x_max,y_max)", "head_box_outside_image")
    first_row: dict[str, int] = {}
    merged: list[int] = []
    for row in np.flatnonzero(keep).tolist():
        key = sample_id_of(table.paths[row], *table.eye_xy_norm[row].tolist())
        if key not in first_row:
            first_row[key] = row
        elif table.lines[row].rstrip("\r") == table.lines[first_row[key]].rstrip("\r"):
            keep[row] = False
            merged.append(row)
        else:
            refuse(row, f"the same person (image and eye point) as line {int(table.line_numbers[first_row[key]])}"
                        " with other values; remove one of the rows, or set dataset.on_error: skip to keep the "
                        "first", "conflicting_duplicate_person")
    if merged:
        log.warning("%s: merged %d identical repeated rows into the first (e.g. line %d repeats line %d)",
                    table.file, len(merged), int(table.line_numbers[merged[0]]),
                    int(table.line_numbers[first_row[sample_id_of(table.paths[merged[0]],
                                                                  *table.eye_xy_norm[merged[0]].tolist())]]))
    counts.update({"merged_identical_rows": len(merged),
                   **{f"skipped_{reason}": n for reason, n in skipped.items()}})
    return keep


def _group_test_rows(table: GazeFollowTable) -> tuple[list[int], dict[int, np.ndarray], dict[str, int]]:
    """First row of each (path, eye_x) person, its [K, 2] float64 gaze points, and consistency counts."""
    groups: dict[tuple[str, float], list[int]] = {}
    for row, (path, eye_x) in enumerate(zip(table.paths, table.eye_xy_norm[:, 0].tolist())):
        groups.setdefault((path, eye_x), []).append(row)
    first_rows: list[int] = []
    gaze_points: dict[int, np.ndarray] = {}
    inconsistent = 0
    for rows in groups.values():
        first = rows[0]
        first_rows.append(first)
        gaze_points[first] = table.gaze_xy_norm[rows]  # [K, 2] float64 (a copy: fancy indexing)
        inconsistent += int(not np.all(table.head_boxes_px[rows] == table.head_boxes_px[first]))
    counts = {"rows": len(table), "persons": len(first_rows), "inconsistent_head_box_in_person": inconsistent}
    return first_rows, gaze_points, counts


def _apply_image_sizes(table: GazeFollowTable, root: Path, boxes: np.ndarray, keep: np.ndarray,
                       on_error: OnError, sizes: dict, counts: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """Read image headers, clamp kept boxes to [0, W] x [0, H]; drop rows of unreadable images on "skip"."""
    boxes = boxes.copy()
    keep = keep.copy()
    unreadable = clamped = emptied = 0
    for row in np.flatnonzero(keep).tolist():
        rel_path = table.paths[row]
        if rel_path not in sizes:
            try:
                sizes[rel_path] = image_size_wh(root / rel_path)
            except ImageReadError as error:
                if on_error == "raise":
                    raise ImageReadError(f"{table.source(row)}: {error}") from error
                sizes[rel_path] = None
                log.warning("%s: %s (skipped)", table.source(row), error)
        size = sizes[rel_path]
        if size is None:
            keep[row] = False
            unreadable += 1
            continue
        width, height = size
        clamped_box = np.clip(boxes[row], 0, [width, height, width, height])
        if np.any(clamped_box != boxes[row]):
            clamped += 1
            boxes[row] = clamped_box
            if clamped_box[2] <= clamped_box[0] or clamped_box[3] <= clamped_box[1]:
                if on_error == "raise":
                    raise AnnotationError(f"{table.source(row)}: head box {tuple(boxes[row].tolist())} lies outside "
                                          f"the {width}x{height} image {rel_path}; fix the box, or set "
                                          "dataset.on_error: skip to leave the row out")
                keep[row] = False
                emptied += 1
    counts.update({"skipped_unreadable_image": unreadable, "clamped_head_box": clamped,
                   "dropped_head_box_outside_image": emptied})
    return boxes, keep


# ----------------------------------------------------------------------------------------------------
# writing


def write_gazefollow_rows(path: str | os.PathLike, lines: list[str]) -> None:
    """Write rows (original line texts from a GazeFollowTable) atomically, one per line, "\\n"-terminated.

    Lines keep their own bytes (a CRLF file's ``\\r`` is part of the line text), so rows copied from a
    file come out byte-identical.
    """
    data = "".join(line + "\n" for line in lines).encode(_ENCODING, errors=_ENCODING_ERRORS)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
