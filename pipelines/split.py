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

from gcdr.config import add_config_args, config_from_args
from gcdr.data.splits import SplitEditedError, write_split_files
from gcdr.locking import run_stage
from gcdr.stage_output import add_restart_arg

__all__ = ["SplitEditedError", "main", "run"]
run = write_split_files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.split", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    add_restart_arg(parser)
    parser.add_argument("--force", dest="restart", action="store_true", help="the former name of --restart")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    write_split_files(config_from_args(args), restart=args.restart)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_stage(main))
