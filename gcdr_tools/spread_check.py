"""Is ``draw_spread`` a confidence? The pseudo-labels' avg L2 against the truth, split at the median spread.

    python -m gcdr_tools.spread_check <refined folder> --set split.ratio=0.1 --set split.seed=0

Scores the folder's valid, in-frame unlabeled persons of that split: argmax of the (mean) map against the mean
gaze point, in normalised image coordinates; prints the L2 of the low- and high-spread halves and the rank
correlation between spread and L2 (a useful confidence: clearly lower L2 for the low-spread half).
"""

from __future__ import annotations

import numpy as np

from gcdr.pseudolabels import PseudoLabelFolder
from gcdr.students.recipe import average_ranks
from gcdr_tools.report import argmax_errors, folder_check_main


def spread_check(cfg, folder: str) -> dict[str, float]:
    maps = PseudoLabelFolder(folder)
    rows = [(maps.draw_spread(sample.sample_id), l2) for sample, l2 in argmax_errors(cfg, maps)]
    spread, l2 = np.array(rows).T
    if not np.isfinite(spread).all():
        raise SystemExit(f"{folder}: no draw_spread for every person (refine it with refine.keep_draws=true)")
    low = spread <= np.median(spread)
    ranks = [average_ranks(v) for v in (spread, l2)]  # Spearman with ties
    return {"persons": len(l2), "avg_l2": l2.mean(), "low_spread_avg_l2": l2[low].mean(),
            "high_spread_avg_l2": l2[~low].mean(), "spearman": float(np.corrcoef(*ranks)[0, 1])}


def main(argv: list[str] | None = None) -> dict[str, float]:
    return folder_check_main(spread_check, __doc__, "a pseudo-label folder refined with refine.keep_draws=true", argv)


if __name__ == "__main__":
    main()
