"""Plain head-box files for any folder of images (prediction / Grad-CAM on unannotated frames).

One file per person, CSV without header, one row per frame::

    <frame file>,<left>,<top>,<right>,<bottom>        (pixels of the full image)

as in ../shared/data/vat-demo/person1.txt. Several files over one image folder = several people per
image. Samples have no gaze (K = 0) and inout = -1 (unknown); sample_id = ``"<frame file>|<file stem>"``;
image_size_wh is read from each image header. Inverted boxes are repaired by swapping (logged, counted),
as for GazeFollow.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from gcdr.data.gazefollow import AnnotationError, OnError, repair_head_boxes
from gcdr.data.images import ImageReadError, image_size_wh
from gcdr.data.sample import INOUT_UNKNOWN, PersonSample

log = logging.getLogger(__name__)

HEADBOX_COLUMNS = 5


def read_headbox_file(path: str | os.PathLike, images_dir: str | os.PathLike,
                      on_error: OnError = "raise") -> list[PersonSample]:
    """One PersonSample per row of a head-box file, images looked up in ``images_dir``.

    Raises AnnotationError ``"<file>:<line>: ..."`` for a row that is not 5 fields with 4 finite numbers
    or whose box is empty, ImageReadError (also naming file and line) when its image is missing or
    unreadable; ``on_error="skip"`` skips, logs and counts those rows instead.
    """
    file = Path(path)
    if not file.is_file():
        raise AnnotationError(f"head-box file not found: {file} (expected one CSV file per person with rows "
                              "frame,left,top,right,bottom)")
    images_dir = Path(images_dir).absolute()
    person = file.stem
    sizes: dict[str, tuple[int, int]] = {}
    samples: list[PersonSample] = []
    n_skipped = n_repaired = 0
    first_line: dict[str, int] = {}
    for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        fields = [field.strip() for field in line.split(",")]
        try:
            if len(fields) != HEADBOX_COLUMNS:
                raise AnnotationError(f"{file}:{number}: {len(fields)} columns, expected 5 "
                                      "(frame,left,top,right,bottom)")
            try:
                box = np.array([float(v) for v in fields[1:]], np.float64)
            except ValueError:
                raise AnnotationError(f"{file}:{number}: invalid number in {fields[1:]}") from None
            if not np.all(np.isfinite(box)):
                raise AnnotationError(f"{file}:{number}: non-finite number in {fields[1:]}")
            repaired, inverted, usable = repair_head_boxes(box[None])
            if not usable[0]:
                raise AnnotationError(f"{file}:{number}: empty head box {fields[1:]}")
            frame = fields[0]
            if frame in first_line:
                raise AnnotationError(f"{file}:{number}: a second head box for {frame} (the first is on line "
                                      f"{first_line[frame]}); one file holds one person: remove one of the rows")
            if frame not in sizes:
                try:
                    sizes[frame] = image_size_wh(images_dir / frame)
                except ImageReadError as error:
                    raise ImageReadError(f"{file}:{number}: {error}") from error
            width, height = sizes[frame]
            x1, y1, x2, y2 = repaired[0].tolist()
            if x2 <= 0 or y2 <= 0 or x1 >= width or y1 >= height:
                raise AnnotationError(f"{file}:{number}: head box {fields[1:]} lies outside the {width}x{height} "
                                      f"image {frame}; fix the box (pixels: left,top,right,bottom)")
            first_line[frame] = number
        except (AnnotationError, ImageReadError) as error:
            if on_error == "raise":
                raise
            log.warning("skipping head-box row: %s", error)
            n_skipped += 1
            continue
        n_repaired += int(inverted[0])
        samples.append(PersonSample(
            sample_id=f"{frame}|{person}",
            image_path=str(images_dir / frame),
            head_box_xyxy_px=tuple(repaired[0].tolist()),
            inout=INOUT_UNKNOWN,
            image_size_wh=sizes[frame],
            source=f"{file}:{number}",
        ))
    if n_skipped or n_repaired:
        log.warning("%s: skipped_rows=%d, repaired_inverted_head_box=%d", file, n_skipped, n_repaired)
    log.info("%s: %d head boxes", file, len(samples))
    return samples


def head_box_files(heads: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """The head-box files meant by ``heads``: one file, a list of files, or a folder (its ``*.txt``, sorted)."""
    items = [heads] if isinstance(heads, (str, os.PathLike)) else list(heads)
    files: list[Path] = []
    for item in items:
        item = Path(item)
        if item.is_dir():
            files.extend(sorted(p for p in item.glob("*.txt") if p.is_file()))
        else:
            files.append(item)
    if not files:
        raise AnnotationError(f"no head-box files in {heads} (expected *.txt files, one per person)")
    stems = [f.stem for f in files]
    if len(set(stems)) != len(stems):
        raise AnnotationError(f"head-box file names must differ (the stem names the person): {[str(f) for f in files]}")
    return files


def read_headbox_folder(images_dir: str | os.PathLike, heads: str | os.PathLike | Sequence[str | os.PathLike],
                        on_error: OnError = "raise") -> list[PersonSample]:
    """All people of an image folder: one head-box file per person (see :func:`head_box_files`).

    Returns the samples ordered by image (frame file name), then by the order of the files, so the
    people of one image are adjacent.
    """
    per_file = [read_headbox_file(file, images_dir, on_error) for file in head_box_files(heads)]
    tagged = [(sample.sample_id.rsplit("|", 1)[0], file_index, sample)
              for file_index, samples in enumerate(per_file) for sample in samples]
    tagged.sort(key=lambda item: (item[0], item[1]))
    return [sample for _, _, sample in tagged]
