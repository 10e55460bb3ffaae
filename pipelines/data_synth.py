"""Write the SynthGaze dataset (GazeFollow format) into ``dataset.root``.

    python -m pipelines.data_synth --config configs/synthgaze.yaml [--set synth.train_persons=500] [--force]

Skips the work when the folder already holds a SynthGaze dataset made with the same ``synth:`` config; a
dataset of another config is refused with one line naming what differs (``--restart`` regenerates it: its splits
and everything made from it then no longer match and are refused by their own stages).
"""

from __future__ import annotations

import argparse
import logging

from gcdr.config import add_config_args, config_from_args, section
from gcdr.errors import UserError
from gcdr.locking import run_stage
from gcdr_tools.synthgaze import SynthConfig, config_differences, generate_synthgaze

log = logging.getLogger("pipelines.data_synth")


class SynthGazeRequestError(UserError):
    """The dataset folder holds SynthGaze of another config; one line."""


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    parser.add_argument("--restart", "--force", dest="force", action="store_true",
                        help="regenerate the dataset, even when the folder holds one of another config")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    cfg = config_from_args(args)
    synth = section(cfg, "synth", SynthConfig)
    out_dir = cfg["dataset"]["root"]
    differences = config_differences(out_dir, synth)
    if differences and not args.force:
        raise SynthGazeRequestError(f"{out_dir} holds a SynthGaze dataset of another config ({'; '.join(differences[:4])}); "
                                    "write elsewhere (DATA=...) or pass --restart (make data-synth RESTART=1) to regenerate it")
    summary = generate_synthgaze(out_dir, synth, force=args.force, progress=not args.no_progress,
                                 provenance_config=cfg)
    for split in ("train", "test"):
        stats = summary[split]
        log.info("%s: %d images, %d persons, %d rows, %d out of frame, %d body boxes absent", split,
                 stats["images"], stats["persons"], stats["rows"], stats["out_of_frame_persons"],
                 stats["body_boxes_absent"])
    log.info("dataset in %s%s", summary["out_dir"], " (unchanged)" if summary["skipped"] else "")
    return summary


if __name__ == "__main__":
    run_stage(main)
