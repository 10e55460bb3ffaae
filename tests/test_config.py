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
    from gcdr.students.recipe import StudentConfig
    from gcdr.teacher.config import RefineConfig, TeacherConfig
    from gcdr.vqa.blip import VqaConfig
    from gcdr.vqa.gradcam import GradcamConfig
    from gcdr_tools.synth_vqa import SynthVqaConfig
    from gcdr_tools.synthgaze import SynthConfig

    classes = {"dataset": DatasetConfig, "synth": SynthConfig, "vqa": VqaConfig, "synth_vqa": SynthVqaConfig,
               "gradcam": GradcamConfig, "teacher": TeacherConfig, "refine": RefineConfig, "student": StudentConfig}
    for path in CONFIGS:
        cfg = load_config(path)
        for name, cls in classes.items():
            section(cfg, name, cls)  # raises on unknown keys or invalid values


# ------------------------------------------------------------------------- the whole config is validated on load

def write_config(tmp_path, text: str) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


def test_every_section_has_a_dataclass_in_the_table():
    import dataclasses

    from gcdr.config import SECTIONS, section_class

    for name in SECTIONS:
        assert dataclasses.is_dataclass(section_class(name)), name
    for path in CONFIGS:  # every section of the shipped configs is in the table
        assert set(load_config(path)) - {"name", "out_root", "_config_path"} <= set(SECTIONS), path


def test_misspelt_section_names_the_file_and_suggests(tmp_path):
    from gcdr.config import ConfigError

    path = write_config(tmp_path, "name: t\nrefien:\n  T: 100\n")
    with pytest.raises(ConfigError, match=r"run\.yaml: unknown config section 'refien'; did you mean 'refine'\?"):
        load_config(path)


def test_misspelt_key_in_a_section_names_the_file_and_suggests(tmp_path):
    from gcdr.config import ConfigError

    path = write_config(tmp_path, "gradcam:\n  batch_size: 4\n  preveiws: 3\n")  # a section no stage of mine reads
    with pytest.raises(ConfigError, match=r"run\.yaml: unknown key 'gradcam\.preveiws'; "
                                          r"did you mean 'gradcam\.previews'\?"):
        load_config(path)


def test_misspelt_top_level_key_names_the_file_and_suggests(tmp_path):
    from gcdr.config import ConfigError

    path = write_config(tmp_path, "name: t\nout_rot: outputs/x\n")
    with pytest.raises(ConfigError, match=r"run\.yaml: unknown top-level key 'out_rot'; did you mean 'out_root'\?"):
        load_config(path)


def test_unknown_override_is_refused_naming_the_override():
    from gcdr.config import ConfigError

    with pytest.raises(ConfigError, match=r"^--set refien\.T=100: unknown config section 'refien'; "
                                          r"did you mean 'refine'\?$"):
        load_config(None, ["split.ratio=0.2", "refien.T=100"])
    with pytest.raises(ConfigError, match=r"^--set refine\.TT=1: unknown key 'refine\.TT'; did you mean 'refine\.T'\?"):
        load_config(None, ["refine.TT=1"])
    with pytest.raises(ConfigError, match=r"^--set out_rot=o: unknown top-level key 'out_rot'; did you mean 'out_root'"):
        load_config(None, ["out_rot=o"])


def test_bad_values_are_refused_with_the_allowed_values_or_range(tmp_path):
    from gcdr.config import ConfigError

    with pytest.raises(ConfigError, match=r"synthgaze\.yaml with --set split\.ratio=1\.5: split\.ratio must be "
                                          r"a number in \(0, 1\], got 1\.5"):
        load_config(None, ["split.ratio=1.5"])
    with pytest.raises(ConfigError, match=r"with --set dataset\.on_error=ignore: dataset\.on_error must be one of "
                                          r"\('raise', 'skip'\)"):
        load_config(None, ["dataset.on_error=ignore"])
    with pytest.raises(ConfigError, match=r"run\.yaml: gradcam\.batch_size must be >= 1, got 0"):
        load_config(write_config(tmp_path, "gradcam: {batch_size: 0}\n"))  # in the file: no --set named
    with pytest.raises(ConfigError, match=r"student\.epochs must be an integer, got 'ten'"):
        load_config(None, ["student.epochs=ten"])
    with pytest.raises(ConfigError, match=r"teacher\.lr must be a number, got '5e-5' .*write 5\.0e-5"):
        load_config(None, ["teacher.lr=5e-5"])
    with pytest.raises(ConfigError, match="section 'refine' must be a mapping"):
        load_config(None, ["refine=5"])
    ok = load_config(None, ["teacher.lr=1", "refine.method=none", "teacher.mean_teacher=1"])  # as make passes them
    assert ok["teacher"]["lr"] == 1 and ok["refine"]["method"] is None and ok["teacher"]["mean_teacher"] == 1


def test_config_errors_are_one_line_and_stop_a_stage():
    from pipelines import split as split_pipeline

    with pytest.raises(SystemExit) as stop:
        split_pipeline.main(["--set", "splt.ratio=0.2"])
    message = str(stop.value)
    assert message == "config error: --set splt.ratio=0.2: unknown config section 'splt'; did you mean 'split'?"
    assert "\n" not in message


def test_section_suggests_near_misses():
    @dataclass
    class Small:
        alpha: int = 1

    with pytest.raises(ValueError, match=r"unknown keys \['alpah'\]; did you mean 's\.alpha'\?"):
        section({"s": {"alpah": 3}}, "s", Small)


@pytest.mark.parametrize("override, message", [
    ("refine.T=-5", "refine.T must be >= 0"), ("refine.steps=0", "refine.steps must be >= 1"),
    ("refine.samples=0", "refine.samples must be >= 1"), ("refine.method=diffusion", "refine.method must be one of"),
    ("teacher.epochs=0", "teacher.epochs must be >= 1"), ("teacher.consistency=l1", "teacher.consistency must be"),
])
def test_refine_and_teacher_values_are_checked_when_the_config_is_loaded(override, message):
    with pytest.raises(ValueError, match=message):
        load_config("configs/synthgaze.yaml", [override])


def test_the_run_config_gives_each_section_typed_and_refuses_unknown_sections():
    from gcdr.config import ConfigError, RunConfig, load_config
    from gcdr.teacher.config import RefineConfig

    cfg = load_config("configs/synthgaze.yaml", ["refine.T=100"])
    assert isinstance(cfg, RunConfig) and isinstance(cfg.refine, RefineConfig)
    assert cfg.refine.T == 100 and cfg["refine"]["T"] == 100  # the typed section and the tree agree
    with pytest.raises(AttributeError, match="did you mean 'refine'"):
        cfg.refien  # noqa: B018
    with pytest.raises(ConfigError, match="config file not found: nowhere.yaml"):
        load_config("nowhere.yaml")
