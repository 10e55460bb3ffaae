"""Stage 1 (`make gradcam`): BLIP VQA Grad-CAM pseudo-labels for one split.

    python -m pipelines.gradcam --config configs/synthgaze.yaml [--set gradcam.split=unlabeled] [--per-person]
    accelerate launch --num_processes 2 -m pipelines.gradcam ...      (NPROC=2 make gradcam; GPUs)
    torchrun --nproc_per_node 2 -m pipelines.gradcam ...              (several CPU processes)

For every person of ``gradcam.split``: draw the person's box in green, ask ``vqa.question``, take the answer's
key noun and store the Grad-CAM of its token (``gradcam.method`` / ``layer`` / ``target``) in the pseudo-label
folder ``<out_root>/pseudo/gradcam-<split>/`` (raw patch-grid maps + normalised 64x64 maps + manifest with
answer, key noun and validity). The folder belongs to one request (the persons, the VQA model, question and
Grad-CAM settings; gcdr/vqa/annotate.py): the same request resumes a partial run or, once done, does nothing;
another one is refused with one line, ``--restart`` empties the folder and starts over.
"""

from __future__ import annotations

import argparse
import logging

from gcdr.config import add_config_args, config_from_args
from gcdr.locking import run_stage
from gcdr.stage_output import add_restart_arg


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    parser.add_argument("--per-person", action="store_true",
                        help="one person per forward/backward (the reference path; slower)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N persons of the split")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_restart_arg(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = config_from_args(args)

    from gcdr.vqa.annotate import annotate_split  # torch and transformers: after --help and config errors

    return annotate_split(cfg, limit=args.limit, per_person=args.per_person, progress=not args.no_progress,
                          restart=args.restart)


if __name__ == "__main__":
    run_stage(main)
