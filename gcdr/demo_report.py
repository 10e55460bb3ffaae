"""The demo's two tables: pseudo-label quality on the unlabeled split, and student metrics per pseudo-label source."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gcdr.atomic import atomic_path, write_text_atomic
from gcdr.data import load_samples
from gcdr.data.images import image_size_wh
from gcdr.metrics import argmax_point_norm, evaluate
from gcdr.provenance import write_provenance
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


def markdown_table(frame: pd.DataFrame, floatfmt: str = ".3f") -> str:
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    cells = [
        "| " + " | ".join(format(v, floatfmt) if isinstance(v, float) else str(v) for v in row) + " |"
        for row in frame.itertuples(index=False)
    ]
    return "\n".join([header, rule, *cells])


def plot_results(path: Path, quality: pd.DataFrame, students: pd.DataFrame) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_students, ax_quality) = plt.subplots(1, 2, figsize=(12, 4.5))
    x = np.arange(len(students))
    ax_students.bar(x - 0.2, students["avg_l2"], 0.4, label="avg L2 (lower is better)", color="#4c72b0")
    ax_auc = ax_students.twinx()
    ax_auc.bar(x + 0.2, students["auc"], 0.4, label="AUC (higher is better)", color="#dd8452")
    ax_students.set_xticks(x, students["student trained on"], rotation=20, ha="right")
    ax_students.set_ylabel("avg L2")
    ax_auc.set_ylabel("AUC")
    ax_auc.set_ylim(min(0.5, float(students["auc"].min()) - 0.02), 1.0)
    ax_students.set_title("Student on the test split, per pseudo-label source")
    ax_students.legend(loc="upper left", fontsize=8)
    ax_auc.legend(loc="upper right", fontsize=8)

    sweep = quality[quality["pseudo-labels"].str.startswith("GCDR T=")]
    ts = sweep["pseudo-labels"].str.removeprefix("GCDR T=").astype(int)
    ax_quality.plot(ts, sweep["avg_l2"], "o-", label="GCDR refined", color="#55a868")
    for name, style in (("Grad-CAM (raw)", "--"), ("argmax Gaussian", ":")):
        row = quality[quality["pseudo-labels"] == name]
        if len(row):
            ax_quality.axhline(float(row["avg_l2"].iloc[0]), linestyle=style, color="gray", label=name)
    ax_quality.set_xlabel("refinement timestep T (of 500)")
    ax_quality.set_ylabel("avg L2 to ground truth (unlabeled split)")
    ax_quality.set_title("Pseudo-label quality versus T")
    ax_quality.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


def write_results(demo_dir: Path, quality: pd.DataFrame, student_dirs: dict[str, Path],
                  timings: dict[str, float], cfg: dict[str, Any], wall_s: float | None = None) -> str:
    """Write results.md / results.csv / results.png into ``demo_dir``; return (and print) the markdown.

    ``timings``: seconds per stage; ``wall_s``: the whole run's wall time when stages overlapped.
    """
    students = pd.DataFrame([{"student trained on": name, **read_student_metrics(d), "run": str(d)}
                             for name, d in student_dirs.items()])
    table = pd.concat([quality.assign(table="pseudo-label quality (unlabeled split)"),
                       students.assign(table="student (test split)")], ignore_index=True)
    with atomic_path(demo_dir / "results.csv") as tmp:
        table.to_csv(tmp, index=False)
    timing_rows = pd.DataFrame({"stage": list(timings), "seconds": [round(t, 1) for t in timings.values()]})
    text = "\n\n".join([
        "# GCDR on SynthGaze",
        f"Config: `{cfg.get('_config_path')}`, label ratio {cfg['split']['ratio']}, student `{cfg['student']['model']}`.",
        "## Pseudo-label quality on the unlabeled split (valid maps, in-frame persons)",
        markdown_table(quality.drop(columns=["folder"])),
        "## Students on the test split (same model, budget and seed)",
        markdown_table(students.drop(columns=["run"])),
        "## Wall time per stage",
        markdown_table(timing_rows, ".1f") + f"\n\nSum of stages: {sum(timings.values()):.0f} s"
        + (f"; wall time {wall_s:.0f} s (independent stages ran side by side)" if wall_s else ""),
    ]) + "\n"
    write_text_atomic(demo_dir / "results.md", text)
    plot_results(demo_dir / "results.png", quality, students)
    write_provenance(demo_dir, "demo", cfg, timings=timings, wall_s=wall_s)
    print(text)
    return text
