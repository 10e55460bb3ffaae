"""Write the SynthGaze dataset (GazeFollow format) into ``dataset.root``.

    python -m pipelines.data_synth --config configs/synthgaze.yaml [--set synth.train_persons=500] [--force]

Skips the work when the folder already holds a SynthGaze dataset made with the same ``synth:`` config.
"""

from __future__ import annotations

import argparse
import logging

from gcdr.config import add_config_args, config_from_args, section
from gcdr.locking import run_stage
from gcdr_tools.synthgaze import SynthConfig, generate_synthgaze

log = logging.getLogger("pipelines.data_synth")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    parser.add_argument("--force", action="store_true", help="regenerate even if the same dataset already exists")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    cfg = config_from_args(args)
    synth = section(cfg, "synth", SynthConfig)
    out_dir = cfg["dataset"]["root"]
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
