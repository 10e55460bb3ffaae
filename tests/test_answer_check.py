"""gcdr_tools.answer_check: the share of right VQA answers and the maps' avg L2 for right and wrong answers."""

from __future__ import annotations

import numpy as np
import pytest

from gcdr.config import load_config
from gcdr.data import load_samples
from gcdr.data.splits import make_split
from gcdr.heatmaps import gaussian_heatmap_64
from gcdr.pseudolabels import PseudoLabel, PseudoLabelWriter, finalize
from gcdr_tools.answer_check import answer_check
from gcdr_tools.synthgaze import SynthConfig, generate_synthgaze, target_name


def test_answer_check_splits_the_maps_by_whether_the_answer_names_the_target(tmp_path):
    generate_synthgaze(tmp_path / "data", SynthConfig(train_persons=24, test_persons=2, test_annotators=2),
                       progress=False)
    cfg = load_config(None, [f"out_root={tmp_path / 'out'}", f"dataset.root={tmp_path / 'data'}",
                             f"split.dir={tmp_path / 'splits'}", "split.ratio=0.5"])
    make_split(tmp_path / "data" / cfg["dataset"]["train_file"], 0.5, 0, tmp_path / "splits" / "seed0")
    unlabeled = load_samples(cfg, "unlabeled")
    folder = tmp_path / "gradcam"
    right_ids = set()
    with PseudoLabelWriter(folder, chunk_size=5) as writer:
        for i, sample in enumerate(unlabeled):
            truth = np.asarray(sample.gaze_points_norm, np.float64).reshape(-1, 2).mean(0)
            right = sample.inout == 1 and i % 2 == 0
            right_ids |= {sample.sample_id} if right else set()
            # right answers: a map on the gaze point; wrong ones: on the point mirrored through the centre
            point = truth if right or sample.inout != 1 else 1 - truth
            writer.add(PseudoLabel(sample.sample_id, gaussian_heatmap_64(point),
                                   answer=target_name(sample.meta) if right else "nothing", key_noun="x",
                                   image_path=sample.image_path, head_box_xyxy_px=sample.head_box_xyxy_px))
    finalize(folder, expected_ids=[s.sample_id for s in unlabeled])

    result = answer_check(cfg, str(folder))
    in_frame = [s for s in unlabeled if s.inout == 1]
    assert result["persons"] == len(in_frame) and 0 < len(right_ids) < len(in_frame)
    assert result["answer_right"] == pytest.approx(len(right_ids) / len(in_frame))
    assert result["right_avg_l2"] < 0.03 < 0.1 < result["wrong_avg_l2"]  # 64 x 64 grid: argmax within a cell
    share = result["answer_right"]
    assert result["avg_l2"] == pytest.approx(share * result["right_avg_l2"] + (1 - share) * result["wrong_avg_l2"])
