"""What `make ablation` / `make demo` report: pseudo-label quality against the truth, and a student run's final metrics."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gcdr.data import load_samples
from gcdr.data.images import image_size_wh
from gcdr.heatmaps import argmax_point_norm
from gcdr.metrics import evaluate
from gcdr.pseudolabels import PseudoLabelFolder

log = logging.getLogger(__name__)
METRIC_COLUMNS = ["auc", "avg_l2", "min_l2"]


def with_image_sizes(samples: list) -> list:
    """Fill ``image_size_wh`` from the image headers where the annotation format has no size."""
    return [s if s.image_size_wh else replace(s, image_size_wh=image_size_wh(s.image_path)) for s in samples]


def pseudo_label_quality(cfg: dict[str, Any], folders: dict[str, Path],
                         reference: str | None = "Grad-CAM (raw)") -> pd.DataFrame:
    """AUC / avg L2 / min L2 of each folder's maps against the ground truth of the unlabeled split.

    Scored over the in-frame persons whose map is valid; ``invalid_share`` = invalid maps / in-frame persons.
    ``moved`` = mean distance between each map's argmax and the argmax of the ``reference`` folder's map for the
    same person (normalised image coordinates): how far refinement took the labels from the Grad-CAM.
    """
    samples = with_image_sizes([s for s in load_samples(cfg, "unlabeled") if s.has_gaze])
    maps: dict[str, dict[str, np.ndarray]] = {}
    rows = []
    for name, path in folders.items():
        folder = PseudoLabelFolder(path)
        scored = [s for s in samples if s.sample_id in folder and folder.is_valid(s.sample_id)]
        maps[name] = {s.sample_id: folder.heatmap_64(s.sample_id) for s in scored}
        heatmaps = np.stack(list(maps[name].values())) if scored else np.zeros((0, 64, 64))
        metrics = evaluate(heatmaps, scored) if scored else {k: float("nan") for k in METRIC_COLUMNS}
        rows.append({"pseudo-labels": name, **{k: metrics[k] for k in METRIC_COLUMNS},
                     "persons": len(scored), "invalid_share": 1 - len(scored) / max(len(samples), 1),
                     "folder": str(path)})
    for row in rows:
        row["moved"] = _mean_argmax_distance(maps[row["pseudo-labels"]], maps.get(reference, {}))
    return pd.DataFrame(rows)


def _mean_argmax_distance(maps: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> float:
    shared = [i for i in maps if i in reference]
    if not shared:
        return float("nan")
    points = np.array([argmax_point_norm(maps[i]) for i in shared])
    reference_points = np.array([argmax_point_norm(reference[i]) for i in shared])
    return float(np.linalg.norm(points - reference_points, axis=1).mean())


def read_student_metrics(student_dir: Path) -> dict[str, float]:
    """Final test metrics a student run wrote (``metrics.json``; the ``final`` entry when there are several)."""
    metrics = json.loads((Path(student_dir) / "metrics.json").read_text())
    for key in ("final", "last", "test"):
        if isinstance(metrics.get(key), dict):
            metrics = metrics[key]
            break
    return {k: float(metrics[k]) for k in METRIC_COLUMNS if k in metrics}


def argmax_errors(cfg: dict[str, Any], maps: PseudoLabelFolder) -> list[tuple[Any, float]]:
    """(sample, L2 of the map's argmax to the mean gaze point, normalised image coordinates) for each valid,
    in-frame unlabeled person of ``cfg``'s split held by ``maps``: what the folder checks (spread, answers) score."""
    errors = []
    for sample in load_samples(cfg, "unlabeled"):
        if sample.inout != 1 or sample.sample_id not in maps or not maps.is_valid(sample.sample_id):
            continue
        guess = np.asarray(argmax_point_norm(maps.heatmap_64(sample.sample_id)))
        truth = np.asarray(sample.gaze_points_norm, np.float64).reshape(-1, 2).mean(0)
        errors.append((sample, float(np.hypot(*(guess - truth)))))
    return errors


def folder_check_main(check, description: str, folder_help: str, argv: list[str] | None = None) -> dict[str, float]:
    """The command line of a folder check: config options + one folder; prints ``key=value`` on one line."""
    import argparse

    from gcdr.config import add_config_args, config_from_args

    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    parser.add_argument("folder", help=folder_help)
    args = parser.parse_args(argv)
    result = check(config_from_args(args), args.folder)
    print(" ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items()))
    return result
