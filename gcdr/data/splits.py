"""Labeled / unlabeled splits of the training people (docs/formats.md#label-splits), reproducible with a seed.

GazeFollow (as GCDR's get_weak_annt.py, but seeded):
1. rows of the train file that become samples: inout != -1 and a usable head box (the reader's rule:
   inverted boxes are repaired and kept, empty boxes dropped; ``inverted_boxes="drop"`` = GCDR's rule);
2. N = number of those rows (per person row, not per image); n_labeled = round(N * ratio);
3. permutation = ``numpy.random.default_rng(seed).permutation(N)``; its first n_labeled rows are labeled;
4. labeled rows -> ``train_annotations_weak_ratio{r}_use.txt``, the rest -> ``..._left.txt``
   (r = Python float text, e.g. 0.1), each row byte-identical to its line in the train file, in the
   train file's order (GCDR writes permuted order; membership is all that matters).
Membership when reading: a sample is labeled iff its (path, eye_x) key is in the ``_use`` file, else
unlabeled iff its key is in the ``_left`` file (GCDR's rule, so GCDR's released 21-column files work too).

VideoAttentionTarget: whole person tracks are labeled or not, either by show (GCDR's four shows) or by
a seeded ratio of tracks.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gcdr.config import RunConfig
from gcdr.data.gazefollow import (
    InvertedBoxes,
    OnError,
    key_of_sample_id,
    read_gazefollow_table,
    usable_train_rows,
    write_gazefollow_rows,
)
from gcdr.data.sample import PersonSample
from gcdr.data.videoattention import normalise_show_name, show_of, track_id_of
from gcdr.errors import UserError
from gcdr.fingerprints import file_sha256
from gcdr.paths import ratio_text, split_files
from gcdr.stage_output import StageOutput

log = logging.getLogger(__name__)


def split_file_names(ratio: float) -> tuple[str, str]:
    """GCDR's file names: (``train_annotations_weak_ratio{r}_use.txt``, ``..._left.txt``)."""
    stem = f"train_annotations_weak_ratio{ratio_text(ratio)}"
    return f"{stem}_use.txt", f"{stem}_left.txt"


def labeled_count(n_rows: int, ratio: float) -> int:
    """round(N * ratio), Python rounding as GCDR."""
    return int(round(n_rows * float(ratio)))


@dataclass
class SplitConfig:
    """The ``split:`` config section (``make split``; read as a dict by ``gcdr.paths`` and ``load_samples``).

    ratio: labeled fraction of the training persons, 0 < ratio <= 1 (GCDR: 0.05 | 0.1 | 0.2).
    seed:  NumPy ``default_rng`` seed of the permutation (>= 0).
    dir:   folder of the split files; they go to ``<dir>/seed<seed>/``.
    """

    ratio: float = 0.1
    seed: int = 0
    dir: str = "data/synthgaze/splits"

    def __post_init__(self) -> None:
        if isinstance(self.ratio, bool) or not isinstance(self.ratio, (int, float)) or not 0.0 < self.ratio <= 1.0:
            raise ValueError(f"split.ratio must be a number in (0, 1], got {self.ratio!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"split.seed must be an integer >= 0, got {self.seed!r}")


@dataclass
class SplitResult:
    """What make_split wrote: the two files and the row counts."""

    use_file: Path
    left_file: Path
    n_labeled: int
    n_unlabeled: int
    counts: dict[str, int] = field(default_factory=dict)


def make_split(train_file: str | os.PathLike, ratio: float, seed: int, out_dir: str | os.PathLike, *,
               inverted_boxes: InvertedBoxes = "repair", on_error: OnError = "raise") -> SplitResult:
    """Split the usable rows of a GazeFollow train file into labeled / unlabeled files (module docstring).

    train_file: 17- or 21-column GazeFollow train file. ratio: labeled fraction, 0 < ratio <= 1.
    seed: NumPy default_rng seed (same seed and file -> byte-identical outputs). out_dir: folder of the two
    files (written atomically). Returns the paths and counts.
    """
    ratio = float(ratio)
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"split ratio must be in (0, 1], got {ratio}")
    table = read_gazefollow_table(train_file, on_error)
    if table.layout.is_test:
        raise ValueError(f"{train_file}: a {table.layout.kind} file ({table.layout.n_columns} columns); "
                         "splits are made from the train file")
    usable, counts = usable_train_rows(table, inverted_boxes)
    usable_rows = np.flatnonzero(usable)  # [N] row indices into the table
    n_labeled = labeled_count(len(usable_rows), ratio)
    permutation = np.random.default_rng(seed).permutation(len(usable_rows))
    is_labeled = np.zeros(len(usable_rows), bool)
    is_labeled[permutation[:n_labeled]] = True
    use_name, left_name = split_file_names(ratio)
    out_dir = Path(out_dir)
    use_file, left_file = out_dir / use_name, out_dir / left_name
    write_gazefollow_rows(use_file, [table.lines[r] for r in usable_rows[is_labeled].tolist()])
    write_gazefollow_rows(left_file, [table.lines[r] for r in usable_rows[~is_labeled].tolist()])
    counts = {"skipped_malformed_rows": table.n_skipped, **counts,
              "labeled": n_labeled, "unlabeled": len(usable_rows) - n_labeled}
    log.info("split %s ratio=%s seed=%d: %s", train_file, ratio_text(ratio), seed,
             ", ".join(f"{k}={v}" for k, v in counts.items()))
    return SplitResult(use_file, left_file, n_labeled, len(usable_rows) - n_labeled, counts)


def read_split_keys(path: str | os.PathLike) -> set[str]:
    """The (path, eye_x) person keys (``"<path>|<eye_x:.6f>"``) of a ``_use`` / ``_left`` file (17 or 21 columns)."""
    return set(read_gazefollow_table(path).keys())


def split_gazefollow(samples: Sequence[PersonSample], use_file: str | os.PathLike,
                     left_file: str | os.PathLike) -> tuple[list[PersonSample], list[PersonSample]]:
    """(labeled, unlabeled) train samples by the key sets of the split files (GCDR's rule, module docstring).

    Samples in neither file are left out (logged with a count), as are file keys without a sample.
    """
    for file in (use_file, left_file):
        if not Path(file).is_file():
            raise FileNotFoundError(f"split file not found: {file} (make it with `make split` / "
                                    "`python -m pipelines.split`, or put GCDR's released file there)")
    use_keys, left_keys = read_split_keys(use_file), read_split_keys(left_file)
    labeled: list[PersonSample] = []
    unlabeled: list[PersonSample] = []
    sample_keys: set[str] = set()
    n_neither = 0
    for sample in samples:
        key = key_of_sample_id(sample.sample_id)
        sample_keys.add(key)
        if key in use_keys:
            labeled.append(sample)
        elif key in left_keys:
            unlabeled.append(sample)
        else:
            n_neither += 1
    n_unmatched = len((use_keys | left_keys) - sample_keys)
    if n_neither or n_unmatched:
        log.warning("split %s / %s: %d train samples in neither file, %d file keys without a train sample",
                    use_file, left_file, n_neither, n_unmatched)
    log.info("split: %d labeled, %d unlabeled samples", len(labeled), len(unlabeled))
    return labeled, unlabeled


def split_videoattention(samples: Sequence[PersonSample], *, labeled_shows: Sequence[str] | None = None,
                         ratio: float | None = None, seed: int = 0
                         ) -> tuple[list[PersonSample], list[PersonSample]]:
    """(labeled, unlabeled) VideoAttentionTarget samples, whole tracks at a time.

    labeled_shows: every track of these shows is labeled (GCDR: GCDR_LABELED_SHOWS), all others unlabeled.
    Otherwise ``ratio``: round(n_tracks * ratio) tracks, the first of default_rng(seed).permutation over
    the tracks in sorted order, are labeled.
    """
    if labeled_shows is not None:
        wanted = {normalise_show_name(show) for show in labeled_shows}
        is_labeled = [normalise_show_name(show_of(sample)) in wanted for sample in samples]
        found = {normalise_show_name(show_of(sample)) for sample in samples}
        if missing := sorted(wanted - found):
            log.warning("labeled shows not in the data: %s", missing)
    else:
        if ratio is None or not 0.0 < float(ratio) <= 1.0:
            raise ValueError(f"give labeled_shows or a ratio in (0, 1], got ratio={ratio}")
        tracks = sorted({track_id_of(sample) for sample in samples})
        permutation = np.random.default_rng(seed).permutation(len(tracks))
        labeled_tracks = {tracks[i] for i in permutation[:labeled_count(len(tracks), float(ratio))].tolist()}
        is_labeled = [track_id_of(sample) in labeled_tracks for sample in samples]
    labeled = [s for s, flag in zip(samples, is_labeled) if flag]
    unlabeled = [s for s, flag in zip(samples, is_labeled) if not flag]
    log.info("VideoAttentionTarget split: %d labeled, %d unlabeled samples", len(labeled), len(unlabeled))
    return labeled, unlabeled


# ------------------------------------------------------------------------------------------ the stage
STAGE = "split"


class SplitEditedError(UserError, RuntimeError):
    """A split file differs from what this stage wrote; one line."""


def write_split_files(cfg: dict[str, Any], restart: bool = False) -> dict[str, Any] | None:
    """``make split``: make (or find) the split files of ``cfg`` in their folder, claimed for the request (the
    train file's sha256, the seed, the box rule; gcdr.stage_output), each ratio recorded (counts, file hashes)
    in provenance.json. Returns this ratio's record, None when there is nothing to write (VideoAttentionTarget,
    or split files found that no gcdr request claims, e.g. GCDR's released ones: used as they are)."""
    cfg = RunConfig(cfg)
    dataset, split = cfg.dataset, cfg.split
    if dataset.format != "gazefollow":
        log.info("dataset.format=%s: labeled / unlabeled tracks are chosen when loading "
                 "(dataset.labeled_shows or split.ratio); no split files to write", dataset.format)
        return None
    ratio = ratio_text(split.ratio)
    use_file, left_file = split_files(cfg)
    folder = use_file.parent
    train_file = dataset.path(dataset.train_file)
    request = {"train_sha256": file_sha256(train_file), "seed": split.seed, "inverted_boxes": dataset.inverted_boxes}
    output = StageOutput(folder, STAGE, request, config=cfg, restart=restart, out_option="another split.dir")
    if not restart and use_file.is_file() and left_file.is_file() and output.recorded_request() is None:
        log.warning("%s and %s exist without a record of this stage (e.g. GCDR's released files): "
                    "using them as they are (--restart to overwrite)", use_file, left_file)
        return None
    with output:
        recorded = output.provenance()
        splits = dict(recorded.get("splits", {})) if recorded.get("request") == output.request else {}
        previous = splits.get(ratio)
        if previous is not None and use_file.is_file() and left_file.is_file():
            if previous["use_sha256"] != file_sha256(use_file) or previous["left_sha256"] != file_sha256(left_file):
                raise SplitEditedError(f"{use_file} / {left_file} were edited since this stage wrote them; pass "
                                       "--restart to write the split again")
            log.info("split files up to date: %s (%d labeled), %s (%d unlabeled)", use_file,
                     previous["counts"]["labeled"], left_file, previous["counts"]["unlabeled"])
            return previous
        output.start(splits=splits)
        result = make_split(train_file, split.ratio, split.seed, folder, inverted_boxes=dataset.inverted_boxes,
                            on_error=dataset.on_error)
        splits[ratio] = {"train_file": str(train_file), "use_file": result.use_file.name,
                         "left_file": result.left_file.name, "use_sha256": file_sha256(result.use_file),
                         "left_sha256": file_sha256(result.left_file), "counts": result.counts}
        output.finish(splits=splits)
    log.info("wrote %s (%d labeled) and %s (%d unlabeled)", result.use_file, result.n_labeled,
             result.left_file, result.n_unlabeled)
    return splits[ratio]
