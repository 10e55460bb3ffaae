"""The student interface and registry: every registered student saves and loads itself (config.json +
model.safetensors) with identical outputs, earlier gcdr ``.pt`` student files still load and convert, and no
code outside the registry and the config branches on a student's name."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from gcdr.checkpoints import CheckpointError
from gcdr.students.config import StudentConfig
from gcdr.students.export import convert_checkpoint, load_student
from gcdr.students.registry import STUDENTS, build_student, student_class, student_from_config
from gcdr.students.student import CONFIG_FILE, WEIGHTS_FILE, Student

REPO = Path(__file__).resolve().parents[1]
# tiny settings of the ``student:`` section per registered student (a new student adds its own here)
TINY = {
    "vat": dict(vat_width=4, vat_input_size=64),
    "vat-video": dict(vat_width=4, vat_input_size=64),
    "vat-gc": dict(vat_width=4, vat_input_size=64),
    "gazelle": dict(gazelle_backbone="tiny-dinov2", gazelle_input_size=56, gazelle_dim=16, gazelle_layers=1,
                    gazelle_heads=2, gazelle_inout=True),
}


def tiny_student(name: str, out_root: Path, seed: int = 0) -> Student:
    torch.manual_seed(seed)
    student = student_from_config(StudentConfig(model=name, **TINY[name]), out_root)
    for module in student.modules():  # non-trivial BN statistics: buffers must travel with the weights
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    return student.eval()


def batch_for(student: Student, rows: int = 3) -> dict[str, torch.Tensor]:
    """A batch dict as gcdr.data.dataset.gaze_collate gives it, with every input any student reads."""
    generator = torch.Generator().manual_seed(7)
    size = student.input_size
    head_channel = torch.zeros(rows, 1, size, size)
    head_channel[:, :, size // 8: size // 3, size // 4: size // 2] = 1
    return {"scene": torch.randn(rows, 3, size, size, generator=generator), "head_channel": head_channel,
            "face": torch.randn(rows, 3, size, size, generator=generator),
            "head_box_xyxy_norm": torch.tensor([[0.1, 0.1, 0.4, 0.5], [0.5, 0.2, 0.9, 0.6], [0.3, 0.0, 0.7, 0.3]]),
            "prior_heatmap_64": torch.rand(rows, 64, 64, generator=generator),  # vat-gc's Grad-CAM input
            "prior_valid": torch.ones(rows, dtype=torch.bool)}


def outputs(student: Student, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
    with torch.no_grad():
        return student(batch)


def assert_same_outputs(a: Student, b: Student, batch: dict[str, torch.Tensor]) -> None:
    (heatmap_a, inout_a), (heatmap_b, inout_b) = outputs(a, batch), outputs(b, batch)
    assert heatmap_a.shape == (len(batch["scene"]), 64, 64)
    torch.testing.assert_close(heatmap_b, heatmap_a, rtol=0, atol=0)
    assert (inout_a is None) == (inout_b is None)
    if inout_a is not None:
        torch.testing.assert_close(inout_b, inout_a, rtol=0, atol=0)


def test_the_tiny_settings_cover_every_registered_student():
    assert set(TINY) == set(STUDENTS)
    for name, cls in STUDENTS.items():
        assert cls.name == name and issubclass(cls, Student) and dataclasses.is_dataclass(cls.config_class)
    with pytest.raises(ValueError, match="unknown student model 'resnet'"):
        student_class("resnet")


@pytest.mark.parametrize("name", sorted(STUDENTS))
def test_every_student_round_trips_through_save_pretrained(name, tmp_path):
    student = tiny_student(name, tmp_path)
    directory = student.save_pretrained(tmp_path / "model")
    config = json.loads((directory / CONFIG_FILE).read_text())
    assert config == student.model_config() and config["model"] == name
    assert (directory / WEIGHTS_FILE).is_file()

    for loaded in (Student.from_pretrained(directory), student_class(name).from_pretrained(directory),
                   load_student(directory)[0]):
        assert type(loaded) is type(student) and not loaded.training
        assert loaded.model_config() == student.model_config()
        state = loaded.trainable_state_dict()
        assert state.keys() == student.trainable_state_dict().keys()
        assert all(torch.equal(state[k], v) for k, v in student.trainable_state_dict().items())
        assert_same_outputs(student, loaded, batch_for(student))

    other = next(cls for key, cls in STUDENTS.items() if key != name)
    with pytest.raises(ValueError, match=f"describes a '{name}' student"):
        other.from_pretrained(directory)


def test_a_damaged_model_directory_names_the_file(tmp_path):
    directory = tiny_student("vat", tmp_path).save_pretrained(tmp_path / "model")
    weights = directory / WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="is truncated") as error:
        load_student(directory)
    assert str(weights) in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("name", sorted(STUDENTS))
def test_an_old_gcdr_checkpoint_loads_and_converts_with_the_same_outputs(name, tmp_path):
    """The ``last.pt`` layout of gcdr before model directories, built by hand: it loads (weights_only) and
    ``pipelines.export --format gcdr`` turns it into a model directory that gives the same outputs."""
    from pipelines.export import main

    student = tiny_student(name, tmp_path)
    old = {"model_config": student.model_config(),
           "state_dict": {k: v.clone() for k, v in student.trainable_state_dict().items()},
           "epoch": 2, "global_step": 4, "optimizer": {"state": {}, "param_groups": [{"lr": 0.001, "params": [0]}]},
           "scheduler": {"last_epoch": 2}, "history": [{"epoch": 1, "step": 2, "lr": 0.001, "train_loss": 0.5}],
           "fingerprint": {"student": {"model": name}, "pseudo": "none"}, "stopped_by_max_steps": False,
           "metrics": {"auc": 0.9, "n": 6}}
    torch.save(old, tmp_path / "last.pt")
    loaded, checkpoint = load_student(tmp_path / "last.pt")
    assert checkpoint["epoch"] == 2 and checkpoint["history"] == old["history"]
    batch = batch_for(student)
    assert_same_outputs(student, loaded, batch)

    main(["--ckpt", str(tmp_path / "last.pt"), "--format", "gcdr", "--out", str(tmp_path / "converted")])
    converted, _ = load_student(tmp_path / "converted")
    assert_same_outputs(student, converted, batch)
    assert convert_checkpoint(tmp_path / "last.pt", tmp_path / "again") == name
    assert (tmp_path / "again" / WEIGHTS_FILE).read_bytes() == (tmp_path / "converted" / WEIGHTS_FILE).read_bytes()


def test_official_files_convert_to_model_directories(tmp_path):
    student = tiny_student("vat", tmp_path)
    torch.save({"model": student.model.state_dict()}, tmp_path / "model_gazefollow.pt")  # VAT's own layout
    assert convert_checkpoint(tmp_path / "model_gazefollow.pt", tmp_path / "vat") == "vat"
    assert_same_outputs(student, load_student(tmp_path / "vat")[0], batch_for(student))


def test_build_student_rebuilds_from_a_model_config():
    config = {"model": "vat", "backbone": "resnet18", "width": 4, "input_size": 64, "zero_init_output": True}
    assert build_student(config).model_config() == config
    with pytest.raises(ValueError, match="unknown keys \\['depth'\\]"):
        build_student({**config, "depth": 3})


# files that use students without being one: none of them may ask which student it has
CALLERS = ["gcdr/students/recipe.py", "gcdr/students/train.py", "gcdr/students/evaluation.py",
           "gcdr/students/prediction.py", "gcdr/students/export.py", "gcdr/students/feature_cache.py",
           "pipelines/train_student.py", "pipelines/evaluate.py", "pipelines/predict.py", "pipelines/export.py",
           "gcdr_tools/bench/students.py"]
NAMES = "|".join(STUDENTS)
NAME_TEST = re.compile(r"""(model|kind|variant|name)\W{0,3}\s*(==|!=|\bin\b)\s*[(\[{]?\s*["'](""" + NAMES + """)["']""")


def test_no_caller_branches_on_the_student_name():
    found = [f"{path}:{number}: {line.strip()}" for path in CALLERS
             for number, line in enumerate((REPO / path).read_text().splitlines(), 1) if NAME_TEST.search(line)]
    assert not found, found
    assert NAME_TEST.search('if config["model"] == "gazelle":') and NAME_TEST.search("if student.model == 'vat':")
