"""GOO (Gaze On Objects, Tomas et al., CVPR workshops 2021) pickle files -> PersonSample, one per record.

GOO-Real layout under the dataset root (docs/formats.md#goo-real)::

    finalrealdatasetImgsV3/<filename>           1920x1080 images (dense set; the sparse set: ...V3Sparsed)
    oneshotrealhumansNew.pickle                 train ("one-shot") records
    valrealhumansNew.pickle                     validation records
    testrealhumansNew.pickle                    test records (testrealhumansSparsedNew.pickle: sparse set)

A pickle file holds a Python list of dicts, one per image with one person. Keys read:
``filename`` (relative to the image folder, Windows separators allowed), ``width`` / ``height`` (the image's
pixel size; when absent the image header is read), ``ann['bboxes']`` ([n, 4] xmin, ymin, xmax, ymax; the LAST
box is the person's head), ``gaze_cx`` / ``gaze_cy`` (gaze point), ``hx`` / ``hy`` (a point inside the head,
near the eyes), optional ``gazeIdx`` / ``gaze_item`` (the looked-at object's box index and class, kept in
``meta``). **Every coordinate is in a 640x480 reference frame**, whatever the image size: normalised
coordinates are x / 640, y / 480, and pixel boxes are scaled by (W / 640, H / 480).

Every GOO person looks at an object in the image: inout = 1 and one gaze point (K = 1). The eye point is
(hx / 640, hy / 480). The head box is the annotated last box (the GOO reference loaders instead cut an
eye-centred square of +-0.15 of the image; gcdr keeps the annotation and lets the transforms enlarge it).

Pickles can run code when loaded, so these are read with an unpickler that only rebuilds plain containers
and NumPy arrays / scalars; anything else is refused with one line naming the file.
"""

from __future__ import annotations

import importlib
import logging
import os
import pickle
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gcdr.data.gazefollow import AnnotationError, OnError
from gcdr.data.images import ImageReadError, image_size_wh
from gcdr.data.sample import IN_FRAME, PersonSample

log = logging.getLogger(__name__)

REFERENCE_WH = (640.0, 480.0)  # the frame every GOO coordinate is given in
REQUIRED_KEYS = ("filename", "ann", "gaze_cx", "gaze_cy", "hx", "hy")
# (module, name) globals a GOO pickle may reference: NumPy arrays, dtypes and scalars, ordered dicts
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("collections", "OrderedDict"),
}


class _SafeUnpickler(pickle.Unpickler):
    """Rebuilds only containers, numbers, strings and NumPy arrays / scalars."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} (a GOO annotation pickle holds only "
                                         "lists, dicts, numbers, strings and NumPy arrays)")
        if module.startswith("numpy.core.") and np.lib.NumpyVersion(np.__version__) >= "2.0.0":
            module = "numpy._core." + module[len("numpy.core."):]  # NumPy 2 moved numpy.core to numpy._core
        return getattr(importlib.import_module(module), name)


def load_goo_pickle(path: str | os.PathLike) -> list[Any]:
    """The record list of a GOO pickle; a missing, unreadable or foreign file is a one-line error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"GOO annotation file not found: {path}")
    try:
        with open(path, "rb") as handle:
            records = _SafeUnpickler(handle, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError, TypeError,
            ValueError) as error:
        raise AnnotationError(f"{path}: not a readable GOO annotation pickle ({error})") from error
    if not isinstance(records, (list, tuple)):
        raise AnnotationError(f"{path}: a GOO annotation pickle holds a list of records, found "
                              f"{type(records).__name__}")
    return list(records)


@dataclass
class GooData:
    """Result of reading one pickle: the samples and the counts."""

    samples: list[PersonSample]
    counts: dict[str, int]


def _number(record: dict, key: str) -> float:
    """A Python / NumPy number (or a one-element array, or a numeric string) as a finite float."""
    raw = record[key]
    try:
        value = float(np.asarray(raw).reshape(()).item())
    except (TypeError, ValueError):
        raise ValueError(f"{key}={raw!r} is not a number") from None
    if not np.isfinite(value):
        raise ValueError(f"{key}={value} is not finite")
    return value


def _parse_record(record: Any) -> dict[str, Any]:
    """The fields gcdr uses, checked; ValueError names what is wrong."""
    if not isinstance(record, dict):
        raise ValueError(f"record is a {type(record).__name__}, not a dict")
    if missing := [key for key in REQUIRED_KEYS if key not in record]:
        raise ValueError(f"missing key(s) {', '.join(missing)}")
    filename = record["filename"]
    if not isinstance(filename, str) or not filename.strip():
        raise ValueError(f"filename {filename!r} is not a file name")
    ann = record["ann"]
    if not isinstance(ann, dict) or "bboxes" not in ann:
        raise ValueError("ann has no 'bboxes' (the last box is the head)")
    try:
        boxes = np.asarray(ann["bboxes"], np.float64).reshape(-1, 4)  # [n, 4] in the 640x480 frame
    except (TypeError, ValueError) as error:
        raise ValueError(f"ann['bboxes'] is not a list of [xmin, ymin, xmax, ymax] boxes ({error})") from None
    if len(boxes) == 0:
        raise ValueError("ann['bboxes'] is empty (the last box is the head)")
    head = boxes[-1]
    if not np.isfinite(head).all() or head[2] <= head[0] or head[3] <= head[1]:
        raise ValueError(f"head box (last of ann['bboxes']) {head.tolist()} is not a box with x_min < x_max and "
                         "y_min < y_max")
    gaze = (_number(record, "gaze_cx"), _number(record, "gaze_cy"))
    eye = (_number(record, "hx"), _number(record, "hy"))
    ref_w, ref_h = REFERENCE_WH
    if not (0 <= gaze[0] <= ref_w and 0 <= gaze[1] <= ref_h):
        raise ValueError(f"gaze point {gaze} lies outside the 640x480 frame GOO coordinates are given in")
    size = None
    if "width" in record and "height" in record:
        width, height = _number(record, "width"), _number(record, "height")
        if width < 1 or height < 1 or width != int(width) or height != int(height):
            raise ValueError(f"image size {width}x{height} is not a positive whole number of pixels")
        size = (int(width), int(height))
    meta = ";".join(f"{key}={int(_number(record, key))}" for key in ("gazeIdx", "gaze_item") if key in record)
    return {"filename": filename.strip().replace("\\", "/"), "head": head, "gaze": gaze, "eye": eye,
            "size": size, "meta": meta}


def load_goo(path: str | os.PathLike, images_dir: str | os.PathLike, on_error: OnError = "raise") -> GooData:
    """Read a GOO pickle into PersonSamples (see the module docstring).

    images_dir: the image folder the records' file names are relative to (GOO-Real: finalrealdatasetImgsV3).
    on_error: "raise" -> AnnotationError ``"<file>:<record>: ..."`` (record = 1-based position in the list;
    a pickle has no lines) for a malformed record, ImageReadError for an image whose size must be read and
    cannot; "skip" -> skip the record, log and count.
    sample_id = the record's file name (``/`` separators); one person per image.
    """
    path = Path(path)
    records = load_goo_pickle(path)
    images_dir = Path(images_dir).absolute()
    counts: Counter = Counter(records=len(records))
    samples: list[PersonSample] = []
    first_record: dict[str, int] = {}

    def fail_or_skip(message: str, reason: str) -> None:
        if on_error == "raise":
            raise AnnotationError(message)
        log.warning("skipping GOO record: %s", message)
        counts[f"skipped_{reason}"] += 1

    for index, record in enumerate(records, start=1):
        source = f"{path}:{index}"
        try:
            fields = _parse_record(record)
        except ValueError as error:
            fail_or_skip(f"{source}: {error}", "malformed_records")
            continue
        filename = fields["filename"]
        if filename in first_record:
            fail_or_skip(f"{source}: image {filename} already annotated by record {first_record[filename]} (GOO "
                         "has one person per image); remove one of the records", "duplicate_image")
            continue
        image_path = images_dir / filename
        size = fields["size"]
        if size is None:
            try:
                size = image_size_wh(image_path)
            except ImageReadError as error:
                if on_error == "raise":
                    raise ImageReadError(f"{source}: {error}") from error
                log.warning("%s: %s (skipped)", source, error)
                counts["skipped_unreadable_image"] += 1
                continue
        first_record[filename] = index
        ref_w, ref_h = REFERENCE_WH
        scale = np.array([size[0] / ref_w, size[1] / ref_h] * 2)
        head_px = (fields["head"] * scale).tolist()
        samples.append(PersonSample(
            sample_id=filename,
            image_path=str(image_path),
            head_box_xyxy_px=tuple(head_px),
            gaze_points_norm=np.array([[fields["gaze"][0] / ref_w, fields["gaze"][1] / ref_h]], np.float64),
            inout=IN_FRAME,
            image_size_wh=size,
            eye_point_norm=(fields["eye"][0] / ref_w, fields["eye"][1] / ref_h),
            meta=fields["meta"],
            source=source,
        ))
    counts["samples"] = len(samples)
    problems = {k: v for k, v in counts.items() if k.startswith("skipped") and v}
    if problems:
        log.warning("%s: %s", path, ", ".join(f"{k}={v}" for k, v in problems.items()))
    log.info("%s: %s", path, ", ".join(f"{k}={v}" for k, v in counts.items()))
    return GooData(samples=samples, counts=dict(counts))


def read_goo(path: str | os.PathLike, images_dir: str | os.PathLike, on_error: OnError = "raise"
             ) -> list[PersonSample]:
    """The samples of :func:`load_goo`."""
    return load_goo(path, images_dir, on_error).samples


def split_persons(samples: Sequence[PersonSample], ratio: float | None, seed: int = 0
                  ) -> tuple[list[PersonSample], list[PersonSample]]:
    """(labeled, unlabeled): round(N * ratio) persons, the first of ``default_rng(seed).permutation(N)`` over
    the persons sorted by sample id, are labeled (GOO fixes no label split; the same rule as a seeded
    VideoAttentionTarget split, per person instead of per track)."""
    if ratio is None or isinstance(ratio, bool) or not 0.0 < float(ratio) <= 1.0:
        raise ValueError(f"split.ratio must be a number in (0, 1] for a GOO labeled / unlabeled split, got {ratio!r}")
    ids = sorted({sample.sample_id for sample in samples})
    permutation = np.random.default_rng(seed).permutation(len(ids))
    labeled_ids = {ids[i] for i in permutation[:int(round(len(ids) * float(ratio)))].tolist()}
    labeled = [s for s in samples if s.sample_id in labeled_ids]
    unlabeled = [s for s in samples if s.sample_id not in labeled_ids]
    log.info("GOO split: %d labeled, %d unlabeled persons", len(labeled), len(unlabeled))
    return labeled, unlabeled
