"""Configs: every shipped YAML loads, overrides apply, unknown keys are caught; output paths."""

from dataclasses import dataclass
from pathlib import Path

import pytest

from gcdr import paths
from gcdr.config import apply_overrides, load_config, section

CONFIGS = sorted(Path("configs").glob("*.yaml"))


def test_shipped_configs_load_with_every_stage_section():
    assert {p.name for p in CONFIGS} >= {"synthgaze.yaml", "gazefollow.yaml", "videoattentiontarget.yaml"}
    for path in CONFIGS:
        cfg = load_config(path)
        for name in ("dataset", "split", "vqa", "gradcam", "teacher", "refine", "student"):
            assert name in cfg, f"{path} lacks section {name}"


def test_overrides_parse_types_and_create_sections():
    cfg = apply_overrides({"split": {"ratio": 0.1}}, ["split.ratio=0.2", "new.flag=true", "a.b=none", "x.l=[1, 2]"])
    assert cfg["split"]["ratio"] == 0.2 and cfg["new"]["flag"] is True
    assert cfg["a"]["b"] is None and cfg["x"]["l"] == [1, 2]
    with pytest.raises(ValueError, match="key.sub=value"):
        apply_overrides({}, ["novalue"])


def test_section_rejects_unknown_keys():
    @dataclass
    class Small:
        a: int = 1

    assert section({"s": {"a": 3}}, "s", Small).a == 3
    with pytest.raises(ValueError, match="unknown keys \\['b'\\]"):
        section({"s": {"b": 3}}, "s", Small)


def test_split_file_names_follow_gcdr():
    cfg = {"split": {"ratio": 0.1, "seed": 3, "dir": "splits"}}
    use, left = paths.split_files(cfg)
    assert use == Path("splits/seed3/train_annotations_weak_ratio0.1_use.txt")
    assert left.name == "train_annotations_weak_ratio0.1_left.txt"
    assert paths.refined_dir({"out_root": "o"}, "gcdr", 250, "unlabeled") == Path("o/pseudo/gcdr-T250-unlabeled")


def test_every_section_builds_its_stage_dataclass():
    from gcdr.data import DatasetConfig
    from gcdr.data.synthgaze import SynthConfig
    from gcdr.students.training import StudentConfig
    from gcdr.teacher.config import RefineConfig, TeacherConfig
    from gcdr.vqa.blip import VqaConfig
    from gcdr.vqa.gradcam import GradcamConfig
    from gcdr.vqa.synth_vqa import SynthVqaConfig

    classes = {"dataset": DatasetConfig, "synth": SynthConfig, "vqa": VqaConfig, "synth_vqa": SynthVqaConfig,
               "gradcam": GradcamConfig, "teacher": TeacherConfig, "refine": RefineConfig, "student": StudentConfig}
    for path in CONFIGS:
        cfg = load_config(path)
        for name, cls in classes.items():
            section(cfg, name, cls)  # raises on unknown keys or invalid values
