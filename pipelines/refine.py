"""Stage 2b (`make refine`): Grad-CAM maps -> pseudo-labels, by GCDR diffusion refinement or a baseline.

    make refine T=250 [STEPS=2] [SAMPLES=1] [SRC=<gradcam folder>] [METHOD=gcdr|none|argmax]
    python -m pipelines.refine --config configs/synthgaze.yaml --set refine.T=250 [--src DIR] [--out DIR]
    accelerate launch --num_processes 2 -m pipelines.refine ...          (NPROC=2 make refine)

Reads the final Grad-CAM folder ``--src`` (default gcdr.paths.gradcam_dir) and writes every person of the split
into ``--out`` (default gcdr.paths.refined_dir). The method, the teacher and the request that claims the output
folder are described in gcdr/teacher/refine.py. A folder of another request is refused; ``--restart`` empties
it and starts over; a finished folder of the same request is left as it is.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from gcdr.config import add_config_args, config_from_args
from gcdr.locking import run_stage
from gcdr.stage_output import add_restart_arg


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    parser.add_argument("--src", default=None, help="source pseudo-label folder (default: the split's Grad-CAM)")
    parser.add_argument("--out", default=None, help="output folder (default: gcdr.paths.refined_dir)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N persons of the split")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_restart_arg(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = config_from_args(args)

    from gcdr.teacher.refine import refine_split  # torch and the data layer: after --help and config errors

    return refine_split(cfg, src=args.src, out=args.out, limit=args.limit, progress=not args.no_progress,
                        restart=args.restart)


if __name__ == "__main__":
    run_stage(main)
