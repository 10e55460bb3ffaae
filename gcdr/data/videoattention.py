"""VideoAttentionTarget annotations -> PersonSample (one sample per frame per person; docs/formats.md#videoattentiontarget).

Layout under the dataset root::

    images/<show>/<clip>/<frame file>
    annotations/{train,test}/<show>/<clip>/<person>.txt        7 columns, one file per person track
    annotations_body/{train,test}/<show>/<clip>/<person>.txt   GCDR: 11 columns (+ body box), or 12 (+ pred_inout)

Track file rows (CSV, no header): frame file, xmin, ymin, xmax, ymax (head box, pixels), gazex, gazey
(pixels); out of frame is gaze (-1, -1). GCDR body columns: body_x1..body_y2 (pixels, negative = none),
then optionally pred_inout (kept in ``meta`` as ``"pred_inout=<value>"``).

In / out rule (``inout_rule``):
- ``"vat"`` (VAT and GCDR, the default): exactly (-1, -1) is out of frame; any other negative coordinate
  is clamped to 0 and the frame is in.
- ``"gazelle"``: when exactly one coordinate is negative it is set to 0; in frame iff both are >= 0
  afterwards (so both negative but not (-1, -1) is out, where VAT says in).
Out-of-frame samples keep the sentinel gaze point (-1, -1) in ``gaze_points_norm`` (K = 1); it is never
a target.

Head boxes are smoothed per track and per coordinate before any use (VAT and gazelle both do): moving
average over 11 rows, the track padded by repeating its first / last box 5 times, so the length is
unchanged. Boxes are not enlarged here (VideoAttentionTarget protocol) and not clamped. The image size is
read once per clip from its first annotated frame (header only).
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from pathlib import Path
from typing import Literal

import numpy as np

from gcdr.data.gazefollow import AnnotationError, OnError
from gcdr.data.images import ImageReadError, image_size_wh
from gcdr.data.sample import IN_FRAME, OUT_OF_FRAME, PersonSample

log = logging.getLogger(__name__)

InoutRule = Literal["vat", "gazelle"]
TRACK_COLUMNS, BODY_COLUMNS, BODY_PRED_INOUT_COLUMNS = 7, 11, 12
SMOOTHING_WINDOW = 11
OUT_OF_FRAME_GAZE = (-1.0, -1.0)
# GCDR's labeled shows (docs/formats.md#label-splits); compared after normalise_show_name
GCDR_LABELED_SHOWS = ("Band of Brothers", "Modern Family", "Coveted", "Big Bang Theory")


def normalise_show_name(name: str) -> str:
    """Show names compared case- and separator-insensitively ("Big_Bang_Theory" == "big bang theory")."""
    return " ".join(name.replace("_", " ").split()).lower()


def smooth_head_boxes(boxes_px: np.ndarray, window: int = SMOOTHING_WINDOW) -> np.ndarray:
    """Moving average of a track's head boxes, per coordinate, with edge padding.

    boxes_px: [N, 4] (xmin, ymin, xmax, ymax) in track order. Each coordinate is padded by repeating its
    first / last value ``window // 2`` times and averaged over ``window`` rows ("valid" convolution), so
    the result is [N, 4] float64, the same length.
    """
    boxes_px = np.asarray(boxes_px, np.float64).reshape(-1, 4)
    if len(boxes_px) == 0:
        return boxes_px
    half = window // 2
    padded = np.pad(boxes_px, ((half, half), (0, 0)), mode="edge")  # [N + 2*half, 4]
    kernel = np.ones(window) / window
    return np.stack([np.convolve(padded[:, k], kernel, mode="valid") for k in range(4)], axis=1)


def gaze_inout(gaze_px: np.ndarray, inout_rule: InoutRule = "vat") -> tuple[np.ndarray, np.ndarray]:
    """Apply the in/out rule to [N, 2] pixel gaze; returns (gaze [N, 2] fixed up, inout [N] int 1/0).

    Out-of-frame rows get the sentinel (-1, -1).
    """
    gaze_px = np.asarray(gaze_px, np.float64).reshape(-1, 2)
    if inout_rule == "vat":
        out = (gaze_px[:, 0] == -1) & (gaze_px[:, 1] == -1)
        fixed = np.maximum(gaze_px, 0.0)
    elif inout_rule == "gazelle":
        negative = gaze_px < 0
        one_negative = negative.sum(axis=1) == 1
        fixed = np.where(one_negative[:, None] & negative, 0.0, gaze_px)
        out = (fixed < 0).any(axis=1)
    else:
        raise ValueError(f"inout_rule must be 'vat' or 'gazelle', got {inout_rule!r}")
    fixed[out] = OUT_OF_FRAME_GAZE
    return fixed, np.where(out, OUT_OF_FRAME, IN_FRAME).astype(np.int64)


def _parse_track(file: Path, on_error: OnError, skipped: Counter) -> tuple[list[str], np.ndarray, list[int], int]:
    """(frame names, numbers [N, C-1] float64, 1-based line numbers, column count) of one track file."""
    lines = file.read_text(encoding="utf-8", errors="surrogateescape").splitlines()
    frames: list[str] = []
    rows: list[list[float]] = []
    line_numbers: list[int] = []
    n_columns = 0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        fields = [field.strip() for field in line.split(",")]
        if not n_columns:
            n_columns = len(fields)
            if n_columns not in (TRACK_COLUMNS, BODY_COLUMNS, BODY_PRED_INOUT_COLUMNS):
                raise AnnotationError(f"{file}:{number}: {n_columns} columns, not a VideoAttentionTarget track "
                                      f"(expected 7, or 11 / 12 with GCDR body boxes)")
        problem = ""
        if len(fields) != n_columns:
            problem = f"{len(fields)} columns, but the file's first row has {n_columns}"
        else:
            try:
                values = [float(field) for field in fields[1:]]
            except ValueError:
                problem = f"invalid number in {fields[1:]}"
            else:
                if not np.all(np.isfinite(values)):
                    problem = f"non-finite number in {fields[1:]}"
        if problem:
            message = f"{file}:{number}: {problem}"
            if on_error == "raise":
                raise AnnotationError(message)
            log.warning("skipping malformed row: %s", message)
            skipped["malformed_rows"] += 1
            continue
        frames.append(fields[0])
        rows.append(values)
        line_numbers.append(number)
    numbers = np.asarray(rows, np.float64).reshape(-1, max(n_columns - 1, 0))
    return frames, numbers, line_numbers, n_columns


def list_track_files(annotations_dir: str | os.PathLike) -> list[Path]:
    """``<show>/<clip>/<person>.txt`` files under ``annotations_dir``, sorted."""
    annotations_dir = Path(annotations_dir)
    if not annotations_dir.is_dir():
        raise FileNotFoundError(f"VideoAttentionTarget annotation folder not found: {annotations_dir}")
    return sorted(annotations_dir.glob("*/*/*.txt"))


def read_videoattention(annotations_dir: str | os.PathLike, images_dir: str | os.PathLike,
                        on_error: OnError = "raise", *, inout_rule: InoutRule = "vat",
                        smooth_boxes: bool = True, shows: list[str] | None = None) -> list[PersonSample]:
    """Read every track under ``annotations_dir`` (e.g. ``<root>/annotations/train``) into PersonSamples.

    images_dir: ``<root>/images``; image paths are ``images_dir/<show>/<clip>/<frame file>`` (absolute).
    on_error: "raise" -> AnnotationError naming file and line for a malformed row, ImageReadError for a
    clip whose first frame cannot be read; "skip" -> skip the row / clip, log and count.
    shows: only these shows (normalise_show_name comparison); None = all.
    Samples are ordered by show, clip, person, then file order; sample_id = "<show>/<clip>/<person>/<frame>".
    """
    images_dir = Path(images_dir).absolute()
    wanted = {normalise_show_name(s) for s in shows} if shows is not None else None
    counts: Counter = Counter()
    clip_sizes: dict[tuple[str, str], tuple[int, int] | None] = {}
    samples: list[PersonSample] = []
    for file in list_track_files(annotations_dir):
        show, clip, person = file.parent.parent.name, file.parent.name, file.stem
        if wanted is not None and normalise_show_name(show) not in wanted:
            continue
        frames, numbers, line_numbers, n_columns = _parse_track(file, on_error, counts)
        if not frames:
            counts["empty_tracks"] += 1
            continue
        if (show, clip) not in clip_sizes:
            first_frame = images_dir / show / clip / frames[0]
            try:
                clip_sizes[(show, clip)] = image_size_wh(first_frame)
            except ImageReadError as error:
                if on_error == "raise":
                    raise ImageReadError(f"{file}:{line_numbers[0]}: {error}") from error
                log.warning("%s:%d: %s (clip skipped)", file, line_numbers[0], error)
                clip_sizes[(show, clip)] = None
                counts["skipped_clips_unreadable_image"] += 1
        size = clip_sizes[(show, clip)]
        if size is None:
            counts["skipped_rows_unreadable_image"] += len(frames)
            continue
        width, height = size
        boxes = numbers[:, 0:4]  # [N, 4]
        if smooth_boxes:
            boxes = smooth_head_boxes(boxes)
        gaze_px, inout = gaze_inout(numbers[:, 4:6], inout_rule)  # [N, 2], [N]
        gaze_norm = np.where(inout[:, None] == IN_FRAME, gaze_px / (width, height), gaze_px)  # [N, 2] float64
        counts["in_frame"] += int((inout == IN_FRAME).sum())
        counts["out_of_frame"] += int((inout == OUT_OF_FRAME).sum())
        bodies = numbers[:, 6:10] if n_columns >= BODY_COLUMNS else None
        pred_inout = numbers[:, 10] if n_columns == BODY_PRED_INOUT_COLUMNS else None
        track_id = f"{show}/{clip}/{person}"
        clip_dir = str(images_dir / show / clip)
        box_list, inout_list = boxes.tolist(), inout.tolist()
        gaze_rows = list(gaze_norm[:, None, :])  # N views [1, 2]
        for row, frame in enumerate(frames):
            body = None
            if bodies is not None and bodies[row].min() >= 0:
                body = tuple(bodies[row].tolist())
            samples.append(PersonSample(
                sample_id=f"{track_id}/{frame}",
                image_path=os.path.join(clip_dir, frame),
                head_box_xyxy_px=tuple(box_list[row]),
                gaze_points_norm=gaze_rows[row],  # [1, 2]
                inout=inout_list[row],
                body_box_xyxy_px=body,
                image_size_wh=size,
                meta=f"pred_inout={pred_inout[row]:g}" if pred_inout is not None else "",
                source=f"{file}:{line_numbers[row]}",
            ))
        counts["tracks"] += 1
    counts["samples"] = len(samples)
    problems = {k: v for k, v in counts.items() if k.startswith(("skipped", "malformed", "empty")) and v}
    if problems:
        log.warning("%s: %s", annotations_dir, ", ".join(f"{k}={v}" for k, v in problems.items()))
    log.info("%s: %s", annotations_dir, ", ".join(f"{k}={v}" for k, v in counts.items()))
    return samples


def track_id_of(sample: PersonSample) -> str:
    """``"<show>/<clip>/<person>"`` of a VideoAttentionTarget sample (its sample_id without the frame)."""
    return sample.sample_id.rsplit("/", 1)[0]


def show_of(sample: PersonSample) -> str:
    return sample.sample_id.split("/", 1)[0]
