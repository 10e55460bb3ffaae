"""The data layer: every annotation format becomes a list of PersonSample, one per person.

    load_samples(cfg, split)   the one entry point stages use; split in train | test | labeled | unlabeled
    gazefollow.py              GazeFollow train / test files and GCDR's persondet / split files
    videoattention.py          VideoAttentionTarget track files
    childplay.py               ChildPlay clip CSV files
    goo.py                     GOO (GOO-Real / GOO-Synth) pickle files
    headboxes.py               plain head-box files for any folder of images (no labels)
    splits.py                  labeled / unlabeled splits (files for GazeFollow, tracks for VAT)
    images.py                  decoding images, header-only image sizes
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gcdr.config import section
from gcdr.data.childplay import SUBSETS as CHILDPLAY_SUBSETS
from gcdr.data.childplay import read_childplay
from gcdr.data.gazefollow import AnnotationError, read_gazefollow
from gcdr.data.goo import read_goo, split_persons
from gcdr.data.headboxes import read_headbox_folder
from gcdr.data.images import ImageReadError, image_size_wh, load_image_rgb
from gcdr.data.sample import IN_FRAME, INOUT_UNKNOWN, OUT_OF_FRAME, PersonSample
from gcdr.data.splits import split_gazefollow, split_videoattention
from gcdr.data.videoattention import GCDR_LABELED_SHOWS, read_videoattention
from gcdr.paths import split_files

__all__ = [
    "AnnotationError", "DatasetConfig", "ImageReadError", "IN_FRAME", "INOUT_UNKNOWN", "OUT_OF_FRAME",
    "PersonSample", "SPLITS", "image_size_wh", "load_image_rgb", "load_samples", "read_childplay", "read_gazefollow",
    "read_goo", "read_headbox_folder", "read_videoattention",
]

log = logging.getLogger(__name__)

FORMATS = ("gazefollow", "videoattentiontarget", "childplay", "goo", "headboxes")
# the image folder of each format when dataset.images_dir is null
DEFAULT_IMAGES_DIRS = {"videoattentiontarget": "images", "childplay": "images", "goo": "finalrealdatasetImgsV3"}
SPLITS = ("train", "test", "labeled", "unlabeled")


@dataclass
class DatasetConfig:
    """The ``dataset:`` config section. Relative paths are relative to ``root``.

    format:          gazefollow | videoattentiontarget | childplay | goo | headboxes.
    root:            dataset root; GazeFollow image paths in the files are relative to it.
    train_file, test_file: gazefollow: annotation files (17/16 or GCDR 21/20 columns);
                     videoattentiontarget: track folders, e.g. annotations/train (annotations_body/train
                     for GCDR's body boxes); childplay: clip-CSV folders (annotations/train, annotations/test or
                     annotations/val); goo: pickle files (GOO-Real: oneshotrealhumansNew.pickle,
                     testrealhumansNew.pickle).
    on_error:        raise | skip: malformed annotation rows (and, later, unreadable images) raise an error
                     naming file and line, or are skipped, logged and counted.
    images_dir:      videoattentiontarget, childplay: the frames folder (default ``images``); goo: the image folder
                     (default ``finalrealdatasetImgsV3``, GOO-Real's dense set); headboxes: the images.
    heads:           headboxes: one head-box file, a list of them, or a folder of them (one per person).
    inverted_boxes:  repair (swap, gazelle) | drop (GCDR) GazeFollow head boxes with x_min > x_max.
    read_image_sizes: gazefollow: read every image header to set image_size_wh and clamp head boxes.
    inout_rule:      videoattentiontarget: vat (only (-1, -1) is out) | gazelle (docs/formats.md#videoattentiontarget).
    smooth_head_boxes: videoattentiontarget: 11-frame moving average of head boxes (VAT, gazelle).
    labeled_shows:   videoattentiontarget: shows whose tracks are labeled (GCDR's four by default);
                     null = a seeded ratio of tracks from the ``split:`` section. Not used by childplay / goo
                     (always a seeded ratio: of person tracks / of persons).
    childplay_subset: childplay: all | child | adult persons (the ``is_child`` column).
    """

    format: str = "gazefollow"
    root: str = "data/synthgaze"
    train_file: str = "train_annotations_release_persondet.txt"
    test_file: str = "test_annotations_release_persondet.txt"
    on_error: str = "raise"
    images_dir: str | None = None
    heads: str | list[str] | None = None
    inverted_boxes: str = "repair"
    read_image_sizes: bool = False
    inout_rule: str = "vat"
    smooth_head_boxes: bool = True
    labeled_shows: list[str] | None = dataclasses.field(default_factory=lambda: list(GCDR_LABELED_SHOWS))
    childplay_subset: str = "all"

    def __post_init__(self) -> None:
        choices = {"format": FORMATS, "on_error": ("raise", "skip"), "inverted_boxes": ("repair", "drop"),
                   "inout_rule": ("vat", "gazelle"), "childplay_subset": CHILDPLAY_SUBSETS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"dataset.{name} must be one of {allowed}, got {getattr(self, name)!r}")

    def path(self, relative: str | Path) -> Path:
        """``relative`` under ``root`` (absolute paths stay as they are)."""
        return Path(self.root) / relative


def load_samples(cfg: dict[str, Any], split: str) -> list[PersonSample]:
    """The people of one split of the configured dataset.

    cfg: the whole config (``dataset:`` section, and ``split:`` for labeled / unlabeled).
    split: "train" | "test" | "labeled" | "unlabeled". GazeFollow labeled / unlabeled come from the split
    files of ``gcdr.paths.split_files(cfg)`` (``make split``); VideoAttentionTarget's from
    ``dataset.labeled_shows`` or a seeded ratio of tracks; ChildPlay's from a seeded ratio (``split.ratio``,
    ``split.seed``) of person tracks (clip, person_id), GOO's of persons; a head-box folder has no labels, so
    every split but "labeled" is the whole folder.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    dataset = section(cfg, "dataset", DatasetConfig)
    if dataset.format == "gazefollow":
        return _load_gazefollow(cfg, dataset, split)
    if dataset.format == "videoattentiontarget":
        return _load_videoattention(cfg, dataset, split)
    if dataset.format == "childplay":
        return _load_childplay(cfg, dataset, split)
    if dataset.format == "goo":
        return _load_goo(cfg, dataset, split)
    return _load_headboxes(dataset, split)


def _load_gazefollow(cfg: dict[str, Any], dataset: DatasetConfig, split: str) -> list[PersonSample]:
    file = dataset.path(dataset.test_file if split == "test" else dataset.train_file)
    samples = read_gazefollow(file, dataset.root, dataset.on_error, inverted_boxes=dataset.inverted_boxes,
                              read_image_sizes=dataset.read_image_sizes)
    if split in ("train", "test"):
        return samples
    labeled, unlabeled = split_gazefollow(samples, *split_files(cfg))
    return labeled if split == "labeled" else unlabeled


def _load_videoattention(cfg: dict[str, Any], dataset: DatasetConfig, split: str) -> list[PersonSample]:
    annotations_dir = dataset.path(dataset.test_file if split == "test" else dataset.train_file)
    samples = read_videoattention(annotations_dir, dataset.path(dataset.images_dir or "images"),
                                  dataset.on_error, inout_rule=dataset.inout_rule,
                                  smooth_boxes=dataset.smooth_head_boxes)
    if split in ("train", "test"):
        return samples
    split_cfg = cfg.get("split") or {}
    labeled, unlabeled = split_videoattention(samples, labeled_shows=dataset.labeled_shows,
                                              ratio=split_cfg.get("ratio"), seed=int(split_cfg.get("seed", 0)))
    return labeled if split == "labeled" else unlabeled


def _images_dir(dataset: DatasetConfig) -> Path:
    return dataset.path(dataset.images_dir or DEFAULT_IMAGES_DIRS[dataset.format])


def _ratio_split(cfg: dict[str, Any], dataset_name: str) -> tuple[Any, int]:
    """(split.ratio, split.seed) for a seeded labeled / unlabeled split; a missing ratio is a one-line error."""
    split_cfg = cfg.get("split") or {}
    ratio = split_cfg.get("ratio")
    if ratio is None:
        raise ValueError(f"{dataset_name} has no fixed labeled / unlabeled split: set split.ratio (and split.seed)")
    return ratio, int(split_cfg.get("seed", 0))


def _load_childplay(cfg: dict[str, Any], dataset: DatasetConfig, split: str) -> list[PersonSample]:
    annotations_dir = dataset.path(dataset.test_file if split == "test" else dataset.train_file)
    samples = read_childplay(annotations_dir, _images_dir(dataset), dataset.on_error,
                             subset=dataset.childplay_subset)
    if split in ("train", "test"):
        return samples
    ratio, seed = _ratio_split(cfg, "ChildPlay")
    # whole person tracks (<clip>/<person_id>), as a seeded VideoAttentionTarget split; show names play no part
    labeled, unlabeled = split_videoattention(samples, labeled_shows=None, ratio=ratio, seed=seed)
    return labeled if split == "labeled" else unlabeled


def _load_goo(cfg: dict[str, Any], dataset: DatasetConfig, split: str) -> list[PersonSample]:
    file = dataset.path(dataset.test_file if split == "test" else dataset.train_file)
    samples = read_goo(file, _images_dir(dataset), dataset.on_error)
    if split in ("train", "test"):
        return samples
    ratio, seed = _ratio_split(cfg, "GOO")
    labeled, unlabeled = split_persons(samples, ratio, seed)
    return labeled if split == "labeled" else unlabeled


def _load_headboxes(dataset: DatasetConfig, split: str) -> list[PersonSample]:
    if split == "labeled":
        raise ValueError("a head-box folder (dataset.format: headboxes) has no gaze labels: no 'labeled' split")
    if not dataset.images_dir or not dataset.heads:
        raise ValueError("dataset.format headboxes needs dataset.images_dir and dataset.heads")
    heads = [dataset.path(h) for h in ([dataset.heads] if isinstance(dataset.heads, str) else dataset.heads)]
    return read_headbox_folder(dataset.path(dataset.images_dir), heads, dataset.on_error)
