"""Stage 0: labeled / unlabeled split of the GazeFollow-format train file (``make split``).

    python -m pipelines.split --config configs/gazefollow.yaml --set split.ratio=0.1 --set split.seed=0

Writes ``<split.dir>/seed<S>/train_annotations_weak_ratio<R>_{use,left}.txt`` (gcdr.paths.split_files,
gcdr.data.splits.make_split). The folder ``seed<S>/`` is claimed (gcdr.stage_output) for one request: the train
file's sha256, the seed and the box rule; its ratios are written one by one beside each other, each recorded
(counts, file hashes) in ``provenance.json``. A rerun of a ratio already written does nothing; a folder made
from another train file (or box rule) is refused with one line naming what differs, as is a split file edited
since it was written; ``--restart`` empties the folder and writes the split again. Files already there that no
gcdr request claims (e.g. GCDR's released split files) are kept and used as they are.
VideoAttentionTarget splits whole tracks on the fly (``dataset.labeled_shows`` or the ratio): nothing to
write.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from gcdr.config import RunConfig, add_config_args, config_from_args
from gcdr.data.splits import make_split
from gcdr.errors import UserError
from gcdr.fingerprints import file_sha256
from gcdr.locking import run_stage
from gcdr.paths import ratio_text, split_files
from gcdr.stage_output import StageOutput, add_restart_arg

log = logging.getLogger("pipelines.split")
STAGE = "split"


class SplitEditedError(UserError, RuntimeError):
    """A split file differs from what this stage wrote; one line."""


def run(cfg: dict[str, Any], restart: bool = False) -> dict[str, Any] | None:
    """Make (or find) the split files of ``cfg``; returns this ratio's record, None when nothing to do."""
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.split", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    add_restart_arg(parser)
    parser.add_argument("--force", dest="restart", action="store_true", help="the former name of --restart")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run(config_from_args(args), restart=args.restart)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_stage(main))
