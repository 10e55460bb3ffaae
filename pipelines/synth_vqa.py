"""`make synth-vqa`: train the small SynthGaze VQA model (BLIP architecture, from scratch) into ``vqa.model``.

    python -m pipelines.synth_vqa --config configs/synthgaze.yaml [--set synth_vqa.epochs=4] [--restart]

It stands in for the pretrained BLIP VQA model offline (see gcdr_tools/synth_vqa.py for which persons it learns
from). The folder ``vqa.model`` is claimed for the request (gcdr_tools.synth_vqa.synth_vqa_request: the
``synth_vqa:`` and ``vqa:`` settings and the data the model is a function of): the same request, done, does
nothing; another request is refused with one line naming what differs (``--restart`` empties the folder and
trains again). Writes model + processor (save_pretrained), metrics.json (test accuracy), request.json and
provenance.json.
"""

from __future__ import annotations

import argparse
import logging

from gcdr.config import add_config_args, config_from_args
from gcdr.locking import run_stage
from gcdr.stage_output import add_restart_arg
from gcdr_tools.synth_vqa import run_synth_vqa


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    add_restart_arg(parser)
    parser.add_argument("--force", dest="restart", action="store_true", help="the former name of --restart")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run_synth_vqa(config_from_args(args), restart=args.restart, progress=not args.no_progress)


if __name__ == "__main__":
    run_stage(main)
