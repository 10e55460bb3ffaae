"""Where every stage reads and writes, derived from the config in one place.

    <dataset.root>/                         the dataset (SynthGaze is generated here)
    <split.dir>/seed<S>/train_annotations_weak_ratio<R>_{use,left}.txt     labeled / unlabeled rows
    <out_root>/pseudo/gradcam-<split>/      stage 1 folders
    <out_root>/pseudo/gcdr-T<T>-<split>/, argmax-<split>/, raw-gradcam-<split>/   stage 2 folders
    <out_root>/teacher/r<R>-seed<S>/        diffusion teacher checkpoints and logs
    <out_root>/students/<model>-r<R>-<pseudo>/  student checkpoints, logs, metrics
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def ratio_text(ratio: float) -> str:
    """GCDR writes the ratio as Python float text: 0.05, 0.1, 0.2."""
    return repr(float(ratio))


def out_root(cfg: dict[str, Any]) -> Path:
    return Path(cfg.get("out_root", f"outputs/{cfg.get('name', 'run')}"))


def split_files(cfg: dict[str, Any]) -> tuple[Path, Path]:
    """(labeled ``_use`` file, unlabeled ``_left`` file) for the config's split ratio and seed."""
    split = cfg["split"]
    folder = Path(split["dir"]) / f"seed{split['seed']}"
    stem = f"train_annotations_weak_ratio{ratio_text(split['ratio'])}"
    return folder / f"{stem}_use.txt", folder / f"{stem}_left.txt"


def gradcam_dir(cfg: dict[str, Any], split: str) -> Path:
    return out_root(cfg) / "pseudo" / f"gradcam-{split}"


def refined_dir(cfg: dict[str, Any], method: str, T: int, split: str) -> Path:
    name = {"gcdr": f"gcdr-T{T}-{split}", "none": f"raw-gradcam-{split}"}.get(method, f"{method}-{split}")
    return out_root(cfg) / "pseudo" / name


def teacher_dir(cfg: dict[str, Any]) -> Path:
    split = cfg["split"]
    suffix = "-mt" if cfg.get("teacher", {}).get("mean_teacher") else ""
    return out_root(cfg) / "teacher" / f"r{ratio_text(split['ratio'])}-seed{split['seed']}{suffix}"


def student_dir(cfg: dict[str, Any], model: str, pseudo: str | None) -> Path:
    ratio = ratio_text(cfg["split"]["ratio"])
    pseudo_name = Path(pseudo).name if pseudo and pseudo != "none" else "none"
    return out_root(cfg) / "students" / f"{model}-r{ratio}-{pseudo_name}"
