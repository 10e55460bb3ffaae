"""Students by name: the one place that maps ``student.model`` to a student class (as segment-anything's
``build_sam.py``). A new student is a :class:`gcdr.students.student.Student` subclass and one entry here;
no caller branches on the name.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gcdr.students.gazelle import GazeLLEStudent
from gcdr.students.student import Student
from gcdr.students.vat import VATGCStudent, VATStudent
from gcdr.students.vat_video import VATVideoStudent

if TYPE_CHECKING:
    from gcdr.students.config import StudentConfig

STUDENTS: dict[str, type[Student]] = {
    "vat-video": VATVideoStudent,  # before "vat": official files are claimed by the first student that reads them
    "vat": VATStudent,
    "vat-gc": VATGCStudent,
    "gazelle": GazeLLEStudent,
}


def student_class(name: str) -> type[Student]:
    """The student class registered as ``name``."""
    try:
        return STUDENTS[name]
    except KeyError:
        raise ValueError(f"unknown student model {name!r}; choose from {tuple(STUDENTS)}") from None


def build_student(model_config: Mapping[str, Any]) -> Student:
    """A freshly initialised student from a model config dict (``{"model": name, ...}``, a ``config.json``)."""
    cls = student_class(model_config["model"])
    return cls(cls.config_from_dict(model_config))


def student_from_config(student: StudentConfig, out_root: str | Path | None = None) -> Student:
    """A freshly initialised student of the ``student:`` section (``out_root``: where a tiny test backbone goes)."""
    cls = student_class(student.model)
    return cls(cls.config_from(student, out_root))
