"""Is ``draw_spread`` a confidence? The pseudo-labels' avg L2 against the truth, split at the median spread.

    python -m gcdr_tools.spread_check <refined folder> --set split.ratio=0.1 --set split.seed=0

Scores the folder's valid, in-frame unlabeled persons of that split: argmax of the (mean) map against the mean
gaze point, in normalised image coordinates; prints the L2 of the low- and high-spread halves and the rank
correlation between spread and L2 (a useful confidence: clearly lower L2 for the low-spread half).
"""

from __future__ import annotations

import argparse

import numpy as np

from gcdr.config import add_config_args, config_from_args
from gcdr.data import load_samples
from gcdr.heatmaps import argmax_point_norm
from gcdr.pseudolabels import PseudoLabelFolder
from gcdr.students.recipe import average_ranks


def spread_check(cfg, folder: str) -> dict[str, float]:
    maps = PseudoLabelFolder(folder)
    rows = []
    for sample in load_samples(cfg, "unlabeled"):
        if sample.inout != 1 or sample.sample_id not in maps or not maps.is_valid(sample.sample_id):
            continue
        guess = np.asarray(argmax_point_norm(maps.heatmap_64(sample.sample_id)))
        truth = np.asarray(sample.gaze_points_norm, np.float64).reshape(-1, 2).mean(0)
        rows.append((maps.draw_spread(sample.sample_id), float(np.hypot(*(guess - truth)))))
    spread, l2 = np.array(rows).T
    if not np.isfinite(spread).all():
        raise SystemExit(f"{folder}: no draw_spread for every person (refine it with refine.keep_draws=true)")
    low = spread <= np.median(spread)
    ranks = [average_ranks(v) for v in (spread, l2)]  # Spearman with ties
    return {"persons": len(l2), "avg_l2": l2.mean(), "low_spread_avg_l2": l2[low].mean(),
            "high_spread_avg_l2": l2[~low].mean(), "spearman": float(np.corrcoef(*ranks)[0, 1])}


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    parser.add_argument("folder", help="a pseudo-label folder refined with refine.keep_draws=true")
    args = parser.parse_args(argv)
    result = spread_check(config_from_args(args), args.folder)
    print(" ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items()))
    return result


if __name__ == "__main__":
    main()
