"""`make inspect PSEUDO=<folder> [VS="<folder> <folder>"]`: look at pseudo-labels by eye.

Writes into <PSEUDO>/inspect/ (or --out): index.html (opens from disk), thumbs/, contact_sheet.png, summary.json,
provenance.json. The first folder defines the persons; every --vs folder adds a heatmap column. Ground truth
comes from the config's dataset; a head-box dataset (make inspect IMAGES=<frames> HEADS=<files>) has none.
Example: python -m pipelines.inspect --pseudo outputs/synthgaze/pseudo/gradcam-unlabeled --all --sort invalid
"""

from __future__ import annotations

import argparse
import dataclasses
import logging

from gcdr.config import add_config_args, config_from_args
from gcdr.locking import run_stage
from gcdr_tools.gallery import GROUND_TRUTH_SPLITS, SORT_ORDERS, inspect_from_config

OPTIONS = {  # command-line option -> config key inspect.<key>, with its help
    "max_persons": (int, "show a seeded random sample of at most N persons; 0 = all"),
    "seed": (int, "seed of that sample and of the random order"),
    "sort": (str, "initial order of the page and the contact sheet"),
    "per_page": (int, "persons per HTML page"), "thumb_px": (int, "longer side of each tile, pixels"),
    "contact_sheet_persons": (int, "persons on the contact sheet (the first K of the order)")}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    parser.add_argument("--pseudo", required=True, help="the pseudo-label folder to inspect (its persons are shown)")
    parser.add_argument("--vs", action="append", default=[], metavar="FOLDER", help="another folder to compare")
    parser.add_argument("--out", default=None, help="output folder (default: <pseudo>/inspect)")
    for key, (kind, text) in OPTIONS.items():
        flags = ["--" + key.replace("_", "-")] + (["--contact-sheet"] if key == "contact_sheet_persons" else [])
        parser.add_argument(*flags, dest=key, type=kind, default=None, metavar="N" if kind is int else None,
                            choices=SORT_ORDERS if key == "sort" else None, help=f"{text} (inspect.{key})")
    parser.add_argument("--all", action="store_true", help="show every person (--max-persons 0)")
    parser.add_argument("--gt-split", action="append", default=None, choices=GROUND_TRUTH_SPLITS,
                        help=f"split(s) to take ground truth from (default: try {', '.join(GROUND_TRUTH_SPLITS)})")
    parser.add_argument("--no-gt", action="store_true", help="do not look for ground truth")
    parser.add_argument("--no-auc", action="store_true", help="skip the AUC (avg L2 is always computed)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    cfg = config_from_args(args)
    chosen = {key: getattr(args, key) for key in OPTIONS if getattr(args, key) is not None}
    if args.all:
        chosen["max_persons"] = 0
    if args.no_auc:
        chosen["auc"] = False
    splits = None if args.no_gt else (args.gt_split or GROUND_TRUTH_SPLITS)
    return inspect_from_config(cfg, [args.pseudo, *args.vs], args.out, dataclasses.replace(cfg.inspect, **chosen),
                               ground_truth_splits=splits)


if __name__ == "__main__":
    run_stage(main)
