"""Student files: reading every format a student comes in, and writing the others (``make export``).

- a model directory (:meth:`gcdr.students.student.Student.save_pretrained`): ``config.json`` (the model config,
  ``{"model": name, ...}``) + ``model.safetensors`` (the trainable state); what train-student writes as ``model/``
  next to ``last.pt`` and what ``--format gcdr`` makes of any other file;
- a gcdr checkpoint (``last.pt`` of train-student, and earlier gcdr ``.pt`` student files):
  ``{"model_config", "state_dict", ...training state}``, tensors and plain types only (read with
  ``weights_only=True``);
- an official file (docs/official-code.md#gaze-lle-decoder-checkpoint-keys, #vat-weight-files-and-loading): the
  student whose ``reads_official`` recognises the keys sizes itself from the shapes (Gaze-LLE: gazelle's plain
  decoder state dict, ``gazelle_dinov2_vitb14.pt``, which needs a backbone; VAT: ``{"model": ModelSpatial
  state}``, ``model_gazefollow.pt``). ``--format official`` writes a gcdr student in that layout, loadable by
  gazelle's ``load_gazelle_state_dict`` / VAT's scripts (details: each student's ``official_payload``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from gcdr.atomic import atomic_path
from gcdr.checkpoints import load_torch_file, read_state_dict
from gcdr.students.registry import STUDENTS, build_student, student_class
from gcdr.students.student import CONFIG_FILE, Student

log = logging.getLogger(__name__)

FORMATS = ("official", "gcdr")
HINT = "delete it and rerun train-student"


# ------------------------------------------------------------------------------------------- gcdr files

def save_checkpoint(path: str | Path, student: Student, **extra: Any) -> None:
    """Atomically write ``{"model_config", "state_dict", **extra}`` (the ``last.pt`` layout); the state is
    :meth:`Student.trainable_state_dict` on the CPU."""
    state = {k: v.detach().cpu() for k, v in student.trainable_state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save({"model_config": student.model_config(), "state_dict": state, **extra}, tmp)


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """The content of a ``.pt`` student file (gcdr or official): tensors and plain types only."""
    return load_torch_file(path, map_location=map_location, weights_only=True, hint=HINT)


def load_student(path: str | Path, map_location: str | torch.device = "cpu",
                 backbone: str | Path | None = None) -> tuple[Student, dict[str, Any]]:
    """Rebuild a student from any of its files; returns (student in eval mode, checkpoint dict).

    A model directory or a gcdr checkpoint rebuilds itself from its model config and loads strictly (Gaze-LLE:
    every non-backbone key must be there); the checkpoint dict is the ``.pt`` content, or ``{"model_config",
    "state_dict"}`` for a directory. An official file is recognised by its keys and sized from its shapes; the
    checkpoint dict then holds the inferred ``model_config``, the ``state_dict`` and ``official`` (the
    student's name). ``backbone``: the backbone of official Gaze-LLE files
    (gcdr.students.gazelle.configured_gazelle_backbone; None = the DINOv2 of the file's feature width).
    """
    path = Path(path)
    if path.is_dir():
        student = Student.from_pretrained(path, map_location)
        return student, {"model_config": student.model_config(), "state_dict": student.trainable_state_dict()}
    checkpoint = read_checkpoint(path, map_location)
    if not isinstance(checkpoint, Mapping) or "model_config" not in checkpoint:
        if official_class(checkpoint) is None:
            raise ValueError(f"{path}: neither a gcdr student checkpoint (no model_config) or model directory "
                             f"({CONFIG_FILE}) nor an official file of {', '.join(STUDENTS)}")
        student = official_student(checkpoint, backbone)
        return student, {"model_config": student.model_config(), "state_dict": student.trainable_state_dict(),
                         "official": student.name}
    student = build_student(checkpoint["model_config"])
    try:
        student.load_trainable_state_dict(checkpoint["state_dict"])
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    return student.eval(), checkpoint


def convert_checkpoint(ckpt: str | Path, out_dir: str | Path, backbone: str | Path | None = None) -> str:
    """Write the student of any ``.pt`` file (an earlier gcdr checkpoint, an official file) as a model directory
    (``python -m pipelines.export --format gcdr``); ``backbone`` as :func:`load_student`. Returns the student's
    name."""
    student, _ = load_student(ckpt, backbone=backbone)
    student.save_pretrained(out_dir)
    log.info("wrote %s (%s student of %s)", out_dir, student.name, ckpt)
    return student.name


# ------------------------------------------------------------------------------------------- official files

def official_class(checkpoint: Any) -> type[Student] | None:
    """The student class whose official layout a loaded file has, else None (a gcdr checkpoint: None).

    Accepts the wrappers ``{'model': sd}`` / ``{'state_dict': sd}`` and ``module.`` prefixes (as the loaders do).
    """
    if not isinstance(checkpoint, Mapping) or "model_config" in checkpoint:
        return None
    state = read_state_dict(checkpoint)
    return next((cls for cls in STUDENTS.values() if cls.reads_official(state)), None)


def official_kind(checkpoint: Any) -> str | None:
    """The name of the student whose official file ``checkpoint`` is, else None."""
    cls = official_class(checkpoint)
    return cls.name if cls is not None else None


def official_student(checkpoint: Mapping, backbone: str | Path | None = None) -> Student:
    """The student of an official file's content, in eval mode (see each student's ``from_official``)."""
    cls = official_class(checkpoint)
    if cls is None:
        raise ValueError(f"not an official file of {', '.join(STUDENTS)}")
    student = cls.from_official(read_state_dict(checkpoint), backbone)
    log.info("official %s file read as %s", cls.name, student.model_config())
    return student.eval()


def official_payload(config: Mapping[str, Any], state: Mapping[str, torch.Tensor]) -> Any:
    """What an official file holds for a student of model config ``config`` with state ``state``; raises when
    the student cannot be expressed in the format."""
    state = {k: v.detach().cpu() for k, v in state.items() if isinstance(v, torch.Tensor)}
    return student_class(config["model"]).official_payload(config, state)


def export_official(ckpt: str | Path, out: str | Path) -> str:
    """Write the gcdr student ``ckpt`` (``last.pt`` or a model directory) as an official file ``out``.

    A checkpoint is read without building the student (no backbone is loaded). Returns the student's name.
    """
    if Path(ckpt).is_dir():
        _, checkpoint = load_student(ckpt)
    else:
        checkpoint = read_checkpoint(ckpt)
        if not isinstance(checkpoint, Mapping) or "model_config" not in checkpoint:
            raise ValueError(f"{ckpt}: not a gcdr student checkpoint (no model_config)")
    payload = official_payload(checkpoint["model_config"], checkpoint["state_dict"])
    with atomic_path(out) as tmp:
        torch.save(payload, tmp)
    name = checkpoint["model_config"]["model"]
    log.info("wrote %s (%s, official layout)", out, name)
    return name
