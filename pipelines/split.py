"""Stage 0: labeled / unlabeled split of the GazeFollow-format train file (``make split``).

    python -m pipelines.split --config configs/gazefollow.yaml --set split.ratio=0.1 --set split.seed=0

Writes ``<split.dir>/seed<S>/train_annotations_weak_ratio<R>_{use,left}.txt`` (gcdr.paths.split_files)
and records each ratio's request, counts and file hashes in ``provenance.json`` beside them. A second
run with the same request (train file content, ratio, seed, box rule) finds the files and does nothing;
``--force`` rewrites them. Files already there without a record of this stage (e.g. GCDR's released
split files) are kept and used as they are.
VideoAttentionTarget splits whole tracks on the fly (``dataset.labeled_shows`` or the ratio): nothing to
write.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from gcdr.config import add_config_args, config_from_args, section
from gcdr.data import DatasetConfig
from gcdr.data.splits import make_split
from gcdr.locking import run_stage
from gcdr.paths import ratio_text, split_files
from gcdr.provenance import PROVENANCE_FILE, write_provenance

log = logging.getLogger("pipelines.split")
STAGE = "split"


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _recorded_splits(folder: Path) -> dict[str, Any]:
    """The per-ratio records of earlier runs in this folder ({} when none)."""
    record_file = folder / PROVENANCE_FILE
    if not record_file.is_file():
        return {}
    try:
        record = json.loads(record_file.read_text())
    except json.JSONDecodeError:
        log.warning("%s is not valid JSON; ignoring it", record_file)
        return {}
    return record.get("splits", {}) if record.get("stage") == STAGE else {}


def run(cfg: dict[str, Any], force: bool = False) -> dict[str, Any] | None:
    """Make (or find) the split files of ``cfg``; returns this ratio's record, None when nothing to do."""
    dataset = section(cfg, "dataset", DatasetConfig)
    if dataset.format != "gazefollow":
        log.info("dataset.format=%s: labeled / unlabeled tracks are chosen when loading "
                 "(dataset.labeled_shows or split.ratio); no split files to write", dataset.format)
        return None
    ratio, seed = float(cfg["split"]["ratio"]), int(cfg["split"]["seed"])
    use_file, left_file = split_files(cfg)
    folder = use_file.parent
    train_file = dataset.path(dataset.train_file)
    request = {"train_sha256": file_sha256(train_file), "ratio": ratio_text(ratio), "seed": seed,
               "inverted_boxes": dataset.inverted_boxes}
    splits = _recorded_splits(folder)
    previous = splits.get(ratio_text(ratio))
    if use_file.is_file() and left_file.is_file() and not force:
        if previous is None:
            log.warning("%s and %s exist without a record of this stage (e.g. GCDR's released files): "
                        "using them as they are (--force to overwrite)", use_file, left_file)
            return None
        unchanged = (previous.get("request") == request
                     and previous.get("use_sha256") == file_sha256(use_file)
                     and previous.get("left_sha256") == file_sha256(left_file))
        if unchanged:
            log.info("split files up to date: %s (%d labeled), %s (%d unlabeled)", use_file,
                     previous["counts"]["labeled"], left_file, previous["counts"]["unlabeled"])
            return previous
        raise SystemExit(f"{use_file} / {left_file} exist but were made from another request or edited since "
                         f"(recorded {previous.get('request')}, now {request}); run with --force to redo them")

    result = make_split(train_file, ratio, seed, folder, inverted_boxes=dataset.inverted_boxes,
                        on_error=dataset.on_error)
    record = {"request": request, "train_file": str(train_file), "use_file": result.use_file.name,
              "left_file": result.left_file.name, "use_sha256": file_sha256(result.use_file),
              "left_sha256": file_sha256(result.left_file), "counts": result.counts}
    splits[ratio_text(ratio)] = record
    write_provenance(folder, STAGE, cfg, splits=splits)
    log.info("wrote %s (%d labeled) and %s (%d unlabeled)", result.use_file, result.n_labeled,
             result.left_file, result.n_unlabeled)
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.split", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    parser.add_argument("--force", action="store_true", help="rewrite the split files even if they exist")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run(config_from_args(args), force=args.force)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_stage(main))
