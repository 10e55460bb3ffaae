"""Fingerprints: short, stable digests of what a stage's output depends on (its inputs), for stage requests
(gcdr.stage_output) and provenance. A fingerprint changes exactly when the thing it digests changes."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def json_sha256(value: Any) -> str:
    """sha256 of a JSON-able value (keys sorted), e.g. a request or a list of rows."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def samples_fingerprint(samples: Iterable) -> str:
    """sha256 over the persons a stage reads (gcdr.data.sample.PersonSample): id, image path and head box.

    Two requests with the same persons (the same dataset, split and filter) agree; any added, removed or
    re-boxed person changes it. Gaze points are left out on purpose: stage 1 and refine never read them.
    """
    return _lines_sha256(f"{sample.sample_id}\t{sample.image_path}\t{_box_text(sample)}" for sample in samples)


def scored_persons_fingerprint(samples: Iterable) -> str:
    """sha256 over the persons a model is scored on: id, head box, in/out flag and gaze points.

    Unlike :func:`samples_fingerprint` it reads the gaze points (what the metrics compare with) and not the
    absolute image path (the id already names the image within the dataset), so a moved dataset keeps it.
    """
    return _lines_sha256(f"{sample.sample_id}\t{_box_text(sample)}\t{sample.inout}\t"
                         + ";".join(f"{float(x)!r},{float(y)!r}" for x, y in sample.gaze_points_norm)
                         for sample in samples)


def _box_text(sample) -> str:
    return ",".join(repr(float(v)) for v in sample.head_box_xyxy_px)


def _lines_sha256(lines: Iterable[str]) -> str:
    digest = hashlib.sha256()
    for line in lines:
        digest.update(f"{line}\n".encode())
    return digest.hexdigest()


def folder_sha256(folder: str | os.PathLike, pattern: str = "*") -> str:
    """sha256 over the relative names and contents of the files under ``folder`` matching ``pattern`` (sorted),
    e.g. a model directory of config.json + model.safetensors."""
    folder = Path(folder)
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob(pattern) if p.is_file() and not p.name.startswith(".")):
        digest.update(f"{path.relative_to(folder).as_posix()}\t{file_sha256(path)}\n".encode())
    return digest.hexdigest()
