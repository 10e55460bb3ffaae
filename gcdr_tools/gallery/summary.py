"""The numbers at the top of the gallery page: counts per folder, avg / min L2 and AUC per column."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from gcdr.data.sample import OUT_OF_FRAME, PersonSample
from gcdr_tools.gallery.persons import GalleryColumn, GalleryPerson

log = logging.getLogger(__name__)


def _mean(values: Sequence[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def evaluate_person_auc(column: GalleryColumn, index: int, persons: Sequence[GalleryPerson],
                        samples_by_id: dict[str, PersonSample], dataset: str, chunk: int = 512) -> str:
    """Fill ``person.auc[index]`` for ``persons`` through gcdr.metrics.evaluate(per_sample=True), chunk by
    chunk, and check its avg L2 against ours. Returns "" or why there is no AUC (metrics missing, failure)."""
    try:
        from gcdr.metrics import evaluate
    except ImportError as error:
        return f"gcdr.metrics.evaluate unavailable: {error}"
    mismatches = 0
    try:
        for start in tqdm(range(0, len(persons), chunk), desc=f"AUC {column.name}", unit="chunk",
                          disable=len(persons) <= chunk):
            part = persons[start:start + chunk]
            heatmaps = np.stack([column.labels.heatmap_64(p.sample_id) for p in part])  # [n, 64, 64]
            samples = [samples_by_id[p.sample_id] for p in part]
            sizes = [s.image_size_wh or _image_size(s.image_path) for s in samples]
            result = evaluate(heatmaps, samples, dataset=dataset, image_sizes_wh=sizes, per_sample=True)
            for person, row in zip(part, result["per_sample"]):
                value = row.get("auc")
                person.auc[index] = None if value is None or not np.isfinite(value) else float(value)
                theirs, ours = row.get("avg_l2"), person.l2[index]
                if theirs is not None and ours is not None and np.isfinite(theirs) and abs(theirs - ours) > 1e-5:
                    mismatches += 1
    except Exception as error:  # the gallery is still useful without AUC; say why it is missing
        log.warning("%s: AUC not computed: %s", column.name, error)
        return f"evaluate failed: {error}"
    if mismatches:
        log.warning("%s: gcdr.metrics avg L2 differs from the gallery's for %d persons", column.name, mismatches)
    return ""


def _image_size(path: str) -> tuple[int, int] | None:
    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, UnidentifiedImageError, ValueError):
        return None


def summarize(columns: Sequence[GalleryColumn], persons: Sequence[GalleryPerson],
              samples_by_id: dict[str, PersonSample], *, total_persons: int, dataset: str = "gazefollow",
              auc: bool = True) -> dict[str, Any]:
    """Numbers for the top of the page. Counts (persons, valid, invalid reasons) cover each whole folder;
    metrics cover the shown persons with ground truth and a valid map, per column and on the set valid
    in every column ("shared"), so that columns are compared on the same persons."""
    with_target = [p for p in persons if p.has_target]
    shared = [p for p in with_target if all(p.valid)]
    summary: dict[str, Any] = {
        "persons_in_first_folder": total_persons, "shown": len(persons),
        "sampled": len(persons) < total_persons,
        "with_ground_truth": sum(p.gaze_points_norm is not None for p in persons),
        "in_frame_ground_truth": len(with_target),
        "out_of_frame": sum(p.inout == OUT_OF_FRAME for p in persons),
        "unreadable_images": sum(bool(p.image_error) for p in persons),
        "shared_scored": len(shared), "columns": [],
    }
    for index, column in enumerate(columns):
        manifest = column.labels.manifest
        reasons = Counter(str(r) or "invalid" for r, v in zip(manifest["invalid_reason"], manifest["valid"]) if not v)
        scored = [p for p in with_target if p.valid[index]]
        stats: dict[str, Any] = {
            "name": column.name, "folder": str(column.folder),
            "stage": column.labels.provenance.get("stage", ""),
            "created": column.labels.provenance.get("created", ""),
            "persons": len(manifest), "valid": int(manifest["valid"].sum()),
            "invalid": int((~manifest["valid"].astype(bool)).sum()), "invalid_reasons": dict(reasons.most_common()),
            "shown_present": sum(p.present[index] for p in persons),
            "shown_invalid": sum(not p.valid[index] for p in persons),
            "scored": len(scored),
            "avg_l2": _mean([p.l2[index] for p in scored]), "min_l2": _mean([p.min_l2[index] for p in scored]),
            "shared_avg_l2": _mean([p.l2[index] for p in shared]),
            "shared_min_l2": _mean([p.min_l2[index] for p in shared]),
        }
        if auc and scored:
            note = evaluate_person_auc(column, index, scored, samples_by_id, dataset)
            stats.update(auc=_mean([p.auc[index] for p in scored]), auc_note=note,
                         shared_auc=_mean([p.auc[index] for p in shared]))
        else:
            stats.update(auc=None, shared_auc=None,
                         auc_note="not computed (--no-auc)" if not auc else "no person with GT and a valid map")
        summary["columns"].append(stats)
    return summary
