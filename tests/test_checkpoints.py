"""Damaged weight files: one error that names the file and says what to do, for torch and safetensors files."""

import pytest
import torch
from safetensors.torch import save_file

from gcdr.checkpoints import CheckpointError, load_safetensors_file, load_torch_file
from gcdr.students.vat import read_state_dict


@pytest.fixture
def checkpoint(tmp_path):
    path = tmp_path / "last.pt"
    torch.save({"state_dict": {"w": torch.arange(1000.0)}, "epoch": 3}, path)
    return path


def damaged(path, kind: str):
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2], "empty": b"", "not_torch": b"epoch,auc\n1,0.9\n"}[kind])
    return path


def test_intact_file_loads_as_torch_load(checkpoint):
    state = load_torch_file(checkpoint, map_location="cpu", weights_only=True)
    assert state["epoch"] == 3 and torch.equal(state["state_dict"]["w"], torch.arange(1000.0))


@pytest.mark.parametrize(("kind", "problem"), [("truncated", "is truncated"), ("empty", "is empty"),
                                               ("not_torch", "is not a PyTorch file")])
@pytest.mark.parametrize("weights_only", [True, False])
def test_damaged_torch_file_error_names_path_and_what_to_do(checkpoint, kind, problem, weights_only):
    damaged(checkpoint, kind)
    with pytest.raises(CheckpointError) as error:
        load_torch_file(checkpoint, map_location="cpu", weights_only=weights_only,
                        hint="delete it and rerun train-student")
    message = str(error.value)
    assert message.startswith(str(checkpoint)) and problem in message and "\n" not in message
    assert message.endswith("delete it and rerun train-student")


def test_missing_file_stays_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_torch_file(tmp_path / "absent.pt", weights_only=True)


def test_vat_weights_file_truncated(checkpoint):
    damaged(checkpoint, "truncated")
    with pytest.raises(CheckpointError, match="is truncated.*download"):
        read_state_dict(checkpoint)


@pytest.mark.parametrize(("kind", "problem"), [("truncated", "is truncated"), ("empty", "is empty"),
                                               ("not_safetensors", "is not a safetensors file")])
def test_damaged_safetensors_file(tmp_path, kind, problem):
    path = tmp_path / "model.safetensors"
    save_file({"w": torch.arange(1000.0)}, str(path))
    assert torch.equal(load_safetensors_file(path)["w"], torch.arange(1000.0))
    data = path.read_bytes()
    path.write_bytes({"truncated": data[:-100], "empty": b"", "not_safetensors": b"\x01" * 8 + b"{not json"}[kind])
    with pytest.raises(CheckpointError) as error:
        load_safetensors_file(path, hint="rerun train-teacher")
    message = str(error.value)
    assert message.startswith(str(path)) and problem in message and message.endswith("rerun train-teacher")


def test_damaged_teacher_weights_name_the_file(tmp_path):
    from gcdr.teacher.model import WEIGHTS_FILE, GazeDiffusionTeacher, TeacherModelConfig

    tiny = TeacherModelConfig(encoder_width=8, unet_channels=8, channel_mult=(1, 2, 2, 2), attention_head_dim=8,
                              norm_groups=4, attention_levels=(3,))
    GazeDiffusionTeacher(tiny).save_pretrained(tmp_path / "teacher")
    weights = tmp_path / "teacher" / WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:-1000])
    with pytest.raises(CheckpointError, match="is truncated.*train-teacher") as error:
        GazeDiffusionTeacher.from_pretrained(tmp_path / "teacher")
    assert str(weights) in str(error.value)


def test_damaged_student_checkpoint_names_the_file(checkpoint):
    from gcdr.students.export import load_student

    damaged(checkpoint, "truncated")
    with pytest.raises(CheckpointError, match="is truncated.*train-student") as error:
        load_student(checkpoint)
    assert str(checkpoint) in str(error.value)
