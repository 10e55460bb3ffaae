"""What produced an output: config, models, code revision, library versions, time. Written next to every stage's
outputs."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from gcdr.atomic import write_json_atomic

PROVENANCE_FILE = "provenance.json"
# Recorded because the same seed gives the same numbers only with the same numerical kernels: another torch
# release (or CPU instruction set) moves a from-scratch CNN's metrics by about one seed's spread.
LIBRARIES = ("torch", "torchvision", "transformers", "diffusers", "accelerate", "numpy")


def git_revision(repo_dir: str | os.PathLike | None = None) -> str:
    """Commit hash of the gcdr checkout, with ``-dirty`` when it has uncommitted changes; "unknown" outside git."""
    repo_dir = Path(repo_dir or Path(__file__).resolve().parent.parent)
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo_dir, capture_output=True, text=True,
                             check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo_dir,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return rev + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def library_versions() -> dict[str, str]:
    """Installed versions of the numerical libraries (``LIBRARIES``) and torch's CPU kernel level."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "not installed"
    if "torch" in sys.modules:  # not imported just for this
        versions["torch_cpu_capability"] = sys.modules["torch"].backends.cpu.get_cpu_capability()
    return versions


def provenance(stage: str, config: dict[str, Any] | None = None, **details: Any) -> dict[str, Any]:
    """A JSON-able record: stage, config, details (model ids, checkpoints, sources...), git revision, time."""
    return {
        "stage": stage,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "git_revision": git_revision(),
        "command": " ".join(sys.argv),
        "python": platform.python_version(),
        "libraries": library_versions(),
        "host": platform.node(),
        **details,
        "config": config or {},
    }


def write_provenance(out_dir: str | os.PathLike, stage: str, config: dict[str, Any] | None = None,
                     **details: Any) -> dict[str, Any]:
    """Write ``provenance.json`` into ``out_dir`` (atomically) and return the record."""
    record = provenance(stage, config, **details)
    write_json_atomic(Path(out_dir) / PROVENANCE_FILE, record)
    return record
