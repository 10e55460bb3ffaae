"""How much of a SynthGaze Grad-CAM folder's quality comes through the VQA's answer?

    python -m gcdr_tools.answer_check <Grad-CAM folder> --set split.ratio=0.1 --set split.seed=0

Scores the folder's valid, in-frame unlabeled persons of that split: the share whose answer names their target
object (SynthGaze's meta column), and the avg L2 (argmax of the map against the mean gaze point, normalised image
coordinates) of the persons answered right and of those answered wrong. With an honest stand-in VQA the map
carries gaze only through the answer, so a useful VQA shows clearly lower L2 for the right answers.
"""

from __future__ import annotations

import numpy as np

from gcdr.pseudolabels import PseudoLabelFolder
from gcdr_tools.report import argmax_errors, folder_check_main
from gcdr_tools.synthgaze import target_name


def answer_check(cfg, folder: str) -> dict[str, float]:
    maps = PseudoLabelFolder(folder)
    right, l2 = [], []
    for sample, error in argmax_errors(cfg, maps):
        truth_name = target_name(sample.meta)
        if truth_name is None:
            raise SystemExit(f"{sample.sample_id}: no SynthGaze target in its meta column (answer_check reads "
                             "SynthGaze data only)")
        right.append(maps.get(sample.sample_id).answer == truth_name)
        l2.append(error)
    if not l2:
        raise SystemExit(f"{folder}: no valid in-frame unlabeled person of this split to score")
    right_mask, l2 = np.array(right), np.array(l2)
    return {"persons": len(l2), "answer_right": float(right_mask.mean()), "avg_l2": float(l2.mean()),
            "right_avg_l2": float(l2[right_mask].mean()) if right_mask.any() else float("nan"),
            "wrong_avg_l2": float(l2[~right_mask].mean()) if (~right_mask).any() else float("nan")}


def main(argv: list[str] | None = None) -> dict[str, float]:
    return folder_check_main(answer_check, __doc__, "a Grad-CAM pseudo-label folder of SynthGaze persons", argv)


if __name__ == "__main__":
    main()
