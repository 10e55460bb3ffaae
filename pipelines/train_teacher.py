"""Stage 2a (`make train-teacher`): train the GCDR diffusion teacher on the labeled split (gcdr.teacher.training).

    make train-teacher RATIO=0.1 [MEAN_TEACHER=1]
    python -m pipelines.train_teacher --config configs/synthgaze.yaml --set split.ratio=0.1
    accelerate launch --num_processes 2 -m pipelines.train_teacher ...        (NPROC=2 make train-teacher)

Writes model/, checkpoint.pt, log.csv, tb/, request.json and provenance.json into gcdr.paths.teacher_dir(cfg)
(``--out`` overrides). A rerun resumes from checkpoint.pt; epochs and validation settings may change between
runs, any other change of the ``teacher:`` section or of the labeled split is refused (``--restart`` empties
the folder and starts over). Ctrl-C ends the stage with one line (exit code 130) and the next run resumes.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from gcdr import paths
from gcdr.config import add_config_args, config_from_args
from gcdr.locking import run_stage
from gcdr.stage_output import add_restart_arg
from gcdr.teacher.training import fingerprint, train

__all__ = ["fingerprint", "main", "train"]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    parser.add_argument("--out", default=None, help="output folder (default: gcdr.paths.teacher_dir)")
    add_restart_arg(parser)
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = config_from_args(args)
    out_dir = Path(args.out) if args.out else paths.teacher_dir(cfg)
    return train(cfg, out_dir, restart=args.restart, progress=not args.no_progress)


if __name__ == "__main__":
    run_stage(main)
